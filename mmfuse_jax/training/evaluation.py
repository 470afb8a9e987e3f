"""Evaluation of a run's best checkpoint: `evaluate(config, run_dir)` -> `Evaluation`.

It writes ``eval_<split>.json`` and returns everything a report needs (predictions per split, the
training split's predictions for DOC on open-intent datasets, the checkpoint step); eval.py hands
that to the report. Training never imports the report or the analyses.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from typing import Any

import jax
import numpy as np

from mmfuse_jax import ood, perturb
from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import distributed, identity
from mmfuse_jax.training.checkpoint import Checkpoints
from mmfuse_jax.training.experiment import Experiment, abstract_params, build, make_eval_step, predict_split, score


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` found. ``results``: ``{split: metrics}`` (plus ``'<split> (open intent)'``
    rows on open-intent datasets); ``preds``: ``{split: predict_split output}``; ``train``: the
    training split's predictions (open intent only, for the DOC thresholds) or None; ``run_dir`` and
    ``config``: the evaluated run folder and its config (the final stage's, for a staged model)."""

    results: dict[str, dict[str, float]]
    preds: dict[str, dict[str, np.ndarray]]
    train: dict[str, np.ndarray] | None
    checkpoint_step: int
    run_dir: str
    config: Any


def restore_best(exp: Experiment, workdir: str) -> tuple[Any, dict]:
    """(params, meta) of the best checkpoint in ``workdir/best``, laid out on ``exp``'s mesh and
    checked against its model; a clear error if there is none (nothing is created)."""
    if not os.path.isdir(os.path.join(workdir, "best")):
        raise ConfigError(f"no best checkpoint in {os.path.join(workdir, 'best')}: train first with "
                          f"train.py --workdir={workdir}")
    ckpt = Checkpoints(workdir, keep=exp.config.keep_checkpoints)
    try:
        restored = ckpt.restore_best(abstract_params(exp))
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(f"no best checkpoint in {os.path.join(workdir, 'best')}: train first with "
                          f"train.py --workdir={workdir}")
    return restored


def _layout(params) -> Any:
    """The restored params' shardings: the layout the training loop's eval step was made for, so an
    evaluation in the process that trained the model reuses that step (`step_lib.memo`)."""
    return jax.tree_util.tree_map(lambda x: x.sharding, params)


def evaluate(config, workdir: str, splits=("dev", "test"), perturb_spec: str = "") -> Evaluation:
    """Restore the best checkpoint of ``workdir`` and evaluate; writes ``eval_<split>.json``.

    ``perturb_spec`` (`mmfuse_jax.perturb`): the evaluated splits' batches are perturbed (seeded by
    config.seed; the training split that fits DOC thresholds is not) and the files are
    ``eval_<split>__<slug>.json``, recording the spec."""
    transform = perturb.transform(perturb_spec, config.seed)
    suffix = perturb.file_suffix(perturb_spec)
    exp = build(config)
    params, meta = restore_best(exp, workdir)
    exp = exp.specialised(params)  # every param is fixed here (`registry.ModelSpec.specialise`)
    eval_step = make_eval_step(exp, params_sharding=_layout(params))
    oos_label = config.dataset.get("oos_label")
    # Open-intent datasets: DOC thresholds are fitted on the in-scope training split's scores.
    train = predict_split(exp, params, "train", eval_step) if oos_label is not None else None
    results, preds = {}, {}
    for split in splits:
        pred = preds[split] = predict_split(exp, params, split, eval_step, transform)
        res = score(exp, pred)
        results[split] = res
        # The checkpoint step and config fingerprint this file came from (the report and compare flag
        # outputs that no longer match the run's best checkpoint).
        record = {"model": config.model_name, "dataset": config.dataset.name, "split": split,
                  "checkpoint_step": meta["step"], "config_fingerprint": identity.fingerprint(config), "metrics": res}
        if transform is not None:
            record["perturb"] = {"spec": perturb_spec, "slug": perturb.slug(perturb_spec), "seed": config.seed}
        if train is not None:
            tables = ood.open_intent_scores(train["logits"], train["label"], pred["logits"], pred["label"],
                                            scale=config.dataset.get("doc_scale", 1.0))
            results[f"{split} (open intent)"] = record["open_intent"] = tables["open_intent"]
        if distributed.is_primary():  # multi-host: every process has every prediction; one writes
            with open(os.path.join(workdir, f"eval_{split}{suffix}.json"), "w") as f:
                json.dump(record, f, indent=2)
    return Evaluation(results, preds, train, int(meta["step"]), os.path.abspath(workdir), config)


# The dataset fields a trained model fixes: its lengths and buckets (compiled shapes, KuDA's length
# layers) and its text encoder (BERT config and tokenizer).
_MODEL_FIXED = ("max_len", "num_buckets", "buckets", "bert_path")


def on_dataset(config, dataset) -> Any:
    """A copy of ``config`` (a trained run's) that reads ``dataset`` (a ``config.dataset`` ConfigDict) with the
    trained model unchanged: no fine-tuning, so the model's fields of `_MODEL_FIXED` stay the trained run's
    (longer sequences of ``dataset`` are cut to the trained lengths and counted in its read report). A
    `ConfigError` when one model cannot read both: another task, label set or feature size."""
    src, dst = config.dataset, dataset
    where = f"cannot evaluate a model trained on {src.name!r} on {dst.name!r} without fine-tuning"
    for what, a, b in (("task", src.get("task"), dst.get("task")), ("labels", _labels(src), _labels(dst)),
                       ("label_shape", tuple(src.get("label_shape", ())), tuple(dst.get("label_shape", ())))):
        if a != b:
            raise ConfigError(f"{where}: config.dataset.{what} differ ({a!r} vs {b!r})")
    a, b = dict(src.feat_dims), dict(dst.feat_dims)
    if a != b:
        raise ConfigError(f"{where}: their feature sizes differ (config.dataset.feat_dims {a} vs {b}) and the "
                          "model's input layers have the trained sizes; the target needs features from the same "
                          "extractors (same dimensions)")
    c = copy.deepcopy(config)
    c.dataset = copy.deepcopy(dst)
    for k in _MODEL_FIXED:
        if k in src:
            c.dataset[k] = copy.deepcopy(src[k])
    return c


def _labels(ds) -> tuple[str, ...]:
    fmt = FORMATS.get(ds.get("format"))
    return tuple(ds.get("read_options", {}).get("labels", ()) or (fmt.LABELS if fmt else ()))


def evaluate_on(config, workdir: str, dataset, splits=("test",)) -> dict[str, dict[str, float]]:
    """``{split: metrics}`` of ``workdir``'s best checkpoint (trained with ``config``) on ``dataset``'s splits
    (`on_dataset`; its own metric set). Nothing is written to ``workdir``: its evaluation files stay the
    ones of its own dataset."""
    target = on_dataset(config, dataset)
    exp = build(target)
    params, _ = restore_best(exp, workdir)
    exp = exp.specialised(params)
    eval_step = make_eval_step(exp, params_sharding=_layout(params))
    return {split: score(exp, predict_split(exp, params, split, eval_step)) for split in splits}


def format_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    """Rows of metrics (x100); rows with other metric names (e.g. open intent) start a new table."""
    lines = [title] if title else []
    names = None
    width = max(len(k) for k in results) + 1
    for split, res in results.items():
        if list(res) != names:
            names = list(res)
            lines.append(f"{'split':<{width}}" + " ".join(f"{n:>13}" for n in names))
        lines.append(f"{split:<{width}}" + " ".join(f"{100 * res[n]:>13.2f}" for n in names))
    return "\n".join(lines)
