"""The files evaluation leaves in a run folder, read and written in one place.

    config.json                 the resolved config (written by training)
    eval_<split>.json           {model, dataset, split, checkpoint_step, config_fingerprint, metrics[, open_intent]}
    predictions_<split>.npz     every eval output: ``logits`` [N, C] (or [N, H, 2]) or ``prediction`` [N],
                                ``label``, ``embedding`` (float16, kept small) and a model's extra outputs
    plots/                      the report's and the analyses' PNG files

``metrics.jsonl`` belongs to `mmfuse_jax.training.logging` (its writer and reader) and
``doc_thresholds.json`` to `mmfuse_jax.ood`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.errors import DataError

CONFIG_FILE = "config.json"
PLOTS_DIR = "plots"
SPLITS = ("train", "dev", "test")


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def read_config(run_dir: str) -> dict:
    """The run's ``config.json`` as a dict; a `DataError` naming the file when it is missing."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise DataError(path, None, "the config a training run saves", "no such file: train first")
    return read_json(path)


def config_value(config: dict, dotted: str) -> Any:
    """``config['a']['b']`` for ``'a.b'``; None where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def run_title(config: dict, split: str | None = None) -> str:
    """"<model> on <dataset>[, <split>]": how every plot names its run."""
    title = f"{config.get('model_name')} on {config_value(config, 'dataset.name')}"
    return f"{title}, {split}" if split else title


def label_names(config: dict) -> tuple[list[str], str | None]:
    """Class names of the run's dataset format and the out-of-scope name (None without OOS)."""
    fmt = FORMATS.get(config_value(config, "dataset.format"))
    names = list(getattr(fmt, "LABELS", ()))
    oos = getattr(fmt, "OOS_NAME", "OOS") if config_value(config, "dataset.oos_label") is not None else None
    return names, oos


def class_names(config: dict, num_classes: int) -> list[str]:
    """``num_classes`` names: the format's, or ``'0'..'C-1'`` when it has fewer."""
    names, _ = label_names(config)
    return names[:num_classes] if len(names) >= num_classes else [str(i) for i in range(num_classes)]


# ------------------------------------------------------------------------- evaluation records

def eval_records(run_dir: str) -> dict[str, dict]:
    """{split: the ``eval_<split>.json`` record} for the splits evaluated, in train/dev/test order."""
    out = {}
    for split in SPLITS:
        path = os.path.join(run_dir, f"eval_{split}.json")
        if os.path.exists(path):
            out[split] = read_json(path)
    return out


def perturbed_records(run_dir: str, split: str = "test") -> dict[str, dict]:
    """{perturbation slug: the ``eval_<split>__<slug>.json`` record} (evaluations under
    `mmfuse_jax.perturb`), sorted by slug."""
    prefix = f"eval_{split}__"
    names = sorted(n for n in os.listdir(run_dir) if n.startswith(prefix) and n.endswith(".json")) \
        if os.path.isdir(run_dir) else []
    return {n[len(prefix):-len(".json")]: read_json(os.path.join(run_dir, n)) for n in names}


def stale_outputs(run_dir: str) -> list[str]:
    """Why the run's evaluation files no longer describe its model: an ``eval_<split>.json`` whose
    checkpoint step is not the newest best checkpoint, or whose config fingerprint is not the run's
    (``identity.json``). Empty when they match (or the run records neither)."""
    from mmfuse_jax.training import identity
    from mmfuse_jax.training.checkpoint import checkpoint_steps

    steps = checkpoint_steps(run_dir, "best")
    ident_path = os.path.join(run_dir, identity.IDENTITY_FILE)
    fingerprint = read_json(ident_path).get("fingerprint") if os.path.exists(ident_path) else None
    out = []
    for split, rec in eval_records(run_dir).items():
        step, fp = rec.get("checkpoint_step"), rec.get("config_fingerprint")
        if steps and step is not None and step != steps[-1]:
            out.append(f"eval_{split}.json is from checkpoint step {step}, the best checkpoint is now step "
                       f"{steps[-1]}: run eval.py again")
        if fingerprint and fp and fp != fingerprint:
            out.append(f"eval_{split}.json was written for another config (fingerprint {fp}, the run's is "
                       f"{fingerprint})")
    return out


def predictions_path(run_dir: str, split: str) -> str:
    return os.path.join(run_dir, f"predictions_{split}.npz")


def save_predictions(run_dir: str, split: str, pred: dict[str, np.ndarray]) -> str:
    """``predictions_<split>.npz``: every output (embeddings in float16) and the labels."""
    path = predictions_path(run_dir, split)
    np.savez(path, **{k: np.asarray(v, np.float16) if k == "embedding" else np.asarray(v) for k, v in pred.items()})
    return path


def load_predictions(run_dir: str, split: str) -> dict[str, np.ndarray] | None:
    """The saved predictions of ``split``, or None when there are none."""
    path = predictions_path(run_dir, split)
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def require_predictions(run_dir: str, split: str, key: str, expected: str) -> dict[str, np.ndarray]:
    """`load_predictions` for a command: a `DataError` when the file or its ``key`` is missing."""
    pred = load_predictions(run_dir, split)
    path = predictions_path(run_dir, split)
    if pred is None:
        raise DataError(path, None, "the predictions eval.py saves", "no such file: run eval.py first")
    if key not in pred:
        raise DataError(path, key, expected, f"absent (keys: {sorted(pred)})")
    return pred
