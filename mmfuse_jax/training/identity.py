"""A run folder knows which model and data it holds.

The first ``train.py`` into a workdir saves the resolved config once (``config.json``) with a
fingerprint of the fields that define the model and data (``identity.json``). Every later command
on that folder (a resumed ``train.py``, ``eval.py``, ``predict.py``) compares its config against
the saved one before touching anything:

* a field that defines the run (model, dataset, optimizer, seed, ...) differs: stop with one line
  naming every differing key, e.g. ``runs/ef was trained with model.hidden=16, you asked for 32``;
* only fields that may change on resume differ (`RESUMABLE`: epochs, patience, logging, eval batch
  size, threads, ...): accepted, and the change is appended to ``config_history.jsonl``;
  ``config.json`` is never rewritten, so the folder keeps describing its model.

``identity.json`` also records the software and hardware the run started on (`environment`). They
are not part of the identity, but XLA's CPU backend splits reductions and long dot products over
the usable cores, so the same seed and config give the same numbers only on the same jax/jaxlib
versions, CPU and core count; a resume on a different environment says so in one ``note:`` line.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from typing import Any

from mmfuse_jax.errors import ConfigError

CONFIG_FILE = "config.json"
IDENTITY_FILE = "identity.json"
HISTORY_FILE = "config_history.jsonl"

# Fields a resumed run or an evaluation may change: how long and how verbosely to train, how to
# evaluate, how to read the data. Everything else defines the model and data the folder holds.
RESUMABLE = (
    "num_epochs", "patience", "log_every", "eval_batch_size", "checkpoint_every_steps", "keep_checkpoints",
    "num_threads", "loader_cache_mb", "nonfinite_policy", "preset",
    "mesh",  # how params are laid out over devices (the same numbers on 1, 2 or 4 devices: tested)
    "compiler_options",  # how XLA compiles the steps (may change float rounding, not the model)
)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{'model.hidden': 16, ...}`` from a nested dict (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _as_dict(config) -> dict:
    # Through JSON so tuples/lists and ConfigDicts compare as they were saved.
    return json.loads(config.to_json_best_effort()) if hasattr(config, "to_json_best_effort") else \
        json.loads(json.dumps(config))


def _resumable(key: str) -> bool:
    return key.split(".")[0] in RESUMABLE


def identity_fields(config) -> dict[str, Any]:
    """The flattened fields that define the run (everything but `RESUMABLE`)."""
    return {k: v for k, v in flatten(_as_dict(config)).items() if not _resumable(k)}


def fingerprint(config) -> str:
    """A short hash of `identity_fields` (equal configs, equal fingerprints)."""
    text = json.dumps(identity_fields(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The environment fields that change floating-point results (summation order, kernels).
NUMERIC_ENVIRONMENT = ("jax", "jaxlib", "backend", "device_kind", "device_count", "usable_cpus", "machine")


def environment() -> dict[str, Any]:
    """Software and hardware this process computes on (recorded with a new run)."""
    import flax
    import jax
    import jaxlib

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__, "flax": flax.__version__,
            "python": platform.python_version(), "backend": jax.default_backend(),
            "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
            "usable_cpus": cpus, "machine": platform.machine()}


def environment_note(workdir: str, now: dict[str, Any]) -> str | None:
    """One line when the run's recorded environment differs from ``now`` where numbers depend on it."""
    try:
        with open(os.path.join(workdir, IDENTITY_FILE)) as f:
            then = json.load(f).get("environment") or {}
    except (OSError, ValueError):
        return None
    changed = [f"{k} {then[k]} -> {now.get(k)}" for k in NUMERIC_ENVIRONMENT if k in then and then[k] != now.get(k)]
    if not changed:
        return None
    return (f"note: {workdir} was started on another environment ({', '.join(changed)}); resuming is "
            "fine, but the numbers will not match a run done entirely on either one bit for bit")


def saved_config(workdir: str) -> dict | None:
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is unreadable ({type(e).__name__}: {e}): the run's config is lost; "
                          "use a new --workdir") from None


# Fields added after run folders existed, by key suffix, with the value that reproduces a run saved
# without them, so an older run still resumes and evaluates: the synthetic data knobs (0 = the data
# as before), the length buckets, shared model switches (a model's own: `ModelSpec.added_fields`),
# the schedule (a run without it trained with 'linear'). `_ASKED`: no effect on a run saved without
# it (the plateau settings only act with schedule='plateau', compared on its own).
_ASKED = object()
ADDED_FIELDS: dict[str, Any] = {
    ".synthetic.incongruity": 0.0, ".synthetic.audio_noise": 0.0, ".synthetic.video_noise": 0.0,
    ".synthetic.text_encoder": "bert",
    "dataset.buckets": "fixed", "dataset.read_options.tokenize_raw_text": False,
    "model.coarse_view": "text_queried",
    "model.text_input": "tokens", "model.output": "classification", "model.bert_dropout": "threefry",
    "optimizer.schedule": "linear", "optimizer.update": "per_leaf", "optimizer.guard": "where",
    "compiler_options": "",
    "init_from.run": "", "init_from.select": "best", "init_from.exclude": [],
    **{f"optimizer.plateau.{k}": _ASKED for k in ("cooldown", "factor", "metric", "mode", "patience", "threshold")},
}


def _old_value(key: str, model_name: Any, asked: Any) -> Any:
    """What a run saved before ``key`` existed used for it (`ADDED_FIELDS`), or a marker for unknown."""
    from mmfuse_jax import registry

    own = registry.get(model_name).added_fields if model_name in registry.names() else {}
    for suffix, value in {**ADDED_FIELDS, **own}.items():
        if key.endswith(suffix):
            return asked if value is _ASKED else value
    return "<unset>"


def stable_fingerprint(config) -> str:
    """A hash of every field (resumable ones too) except those at the value a config had before the
    field existed (`ADDED_FIELDS`, `ModelSpec.added_fields`): adding a field later, with a default
    that keeps the old behaviour, leaves the hash of an unchanged run as it was."""
    flat = flatten(_as_dict(config))
    unset = object()
    kept = {k: v for k, v in flat.items() if _old_value(k, flat.get("model_name"), unset) != v}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:12]


def differences(saved: dict, asked: dict) -> tuple[list[tuple[str, Any, Any]], list[tuple[str, Any, Any]]]:
    """(identity differences, resumable differences) as ``(key, saved, asked)`` rows."""
    a, b = flatten(saved), flatten(asked)
    for key in set(b) - set(a):  # a field added later reads as its old behaviour in an older run
        a[key] = _old_value(key, saved.get("model_name"), b[key])
    rows = [(k, a.get(k, "<unset>"), b.get(k, "<unset>")) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return [r for r in rows if not _resumable(r[0])], [r for r in rows if _resumable(r[0])]


def _mismatch_message(workdir: str, rows: list[tuple[str, Any, Any]]) -> str:
    shown = ", ".join(f"{k}={old!r}, you asked for {new!r}" for k, old, new in rows[:4])
    more = f" (and {len(rows) - 4} more)" if len(rows) > 4 else ""
    return f"{workdir} was trained with {shown}{more}: use a new --workdir, or the run's own config"


def check(workdir: str, config) -> str:
    """Compare ``config`` with the run saved in ``workdir`` (eval/predict/resume); returns the saved
    fingerprint. Raises `ConfigError` naming the differing keys; writes nothing."""
    saved = saved_config(workdir)
    if saved is None:
        raise ConfigError(f"{workdir} has no {CONFIG_FILE}: it is not a run folder (train first with "
                          f"train.py --workdir={workdir})")
    bad, _ = differences(saved, _as_dict(config))
    if bad:
        raise ConfigError(_mismatch_message(workdir, bad))
    return fingerprint(saved)


def record(workdir: str, config, *, primary: bool = True) -> str:
    """What train.py does first: save the config of a new run, or check a resumed one against it and
    append accepted changes to the history. Returns the fingerprint."""
    asked = _as_dict(config)
    saved = saved_config(workdir)
    if saved is None:
        if primary:
            _write_json(os.path.join(workdir, CONFIG_FILE), asked)
            _write_json(os.path.join(workdir, IDENTITY_FILE), {"fingerprint": fingerprint(config),
                                                              "fields": identity_fields(config),
                                                              "environment": environment()})
        return fingerprint(config)
    bad, changed = differences(saved, asked)
    if bad:
        raise ConfigError(_mismatch_message(workdir, bad))
    note = environment_note(workdir, environment()) if primary else None
    if note:
        print(note, file=sys.stderr, flush=True)
    if changed and primary:
        with open(os.path.join(workdir, HISTORY_FILE), "a") as f:
            f.write(json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                "changed": {k: {"saved": old, "now": new} for k, old, new in changed}}) + "\n")
    return fingerprint(saved)


def _write_json(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
