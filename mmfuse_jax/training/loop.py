"""The training loop: setup, data, sharded init, jitted steps, evaluation, checkpoints.

`train_and_evaluate(config, workdir)` trains with early stopping on the dev metric and resumes
from ``workdir`` if a checkpoint is there. `evaluate(config, workdir)` restores the best
checkpoint and evaluates dev and test.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax import ood, registry
from mmfuse_jax import report as report_lib
from mmfuse_jax.batch import UNIMODAL_LABELS
from mmfuse_jax.data import ensure_dataset, pipeline
from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.encoders import bert as bert_lib
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import distributed, sharding
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.checkpoint import Checkpoints
from mmfuse_jax.training.logging import MetricsWriter

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ------------------------------------------------------------------------------------- setup

@dataclasses.dataclass
class Experiment:
    config: Any
    spec: registry.ModelSpec
    model: Any
    prepared: pipeline.Prepared
    mesh: Any
    labels: tuple[str, ...]
    compute_dtype: Any

    def loader(self, split: str, *, train: bool) -> pipeline.Loader:
        c, ds = self.config, self.config.dataset
        host, hosts = sharding.data_slice(self.mesh)  # this host's slice of every global batch
        return pipeline.Loader(self.prepared, split, batch_size=c.batch_size if train else c.eval_batch_size,
                               max_len=ds.max_len, dims=ds.feat_dims, num_buckets=ds.num_buckets,
                               shuffle=train, seed=c.seed, label_dtype=self.label_dtype,
                               process_index=host, process_count=hosts,
                               num_threads=c.num_threads, cache_mb=c.get("loader_cache_mb", 0))

    def shardings(self, tree: Any) -> Any:
        """The layout of params / a TrainState (or their shapes) on the mesh: replicated, or split
        on the ``model`` axis (config.mesh)."""
        return sharding.tree_shardings(tree, self.mesh, sharding.min_shard_size(self.config))

    @property
    def label_dtype(self):
        return np.float32 if self.config.dataset.task == "regression" else np.int32

    def dummy_batch(self) -> dict[str, np.ndarray]:
        ds = self.config.dataset
        lens = pipeline.bucket_lengths(dict(ds.max_len), ds.num_buckets)[-1]
        return pipeline.collate([], batch_size=self.mesh.size, lens=lens, dims=dict(ds.feat_dims))


def build(config, *, data: bool = True) -> Experiment:
    """The model, mesh and labels of ``config``; ``data=False`` skips preparing the dataset (the
    `Predictor` needs only the config, the BERT config and the labels; `Experiment.loader` then fails)."""
    if config.compute_dtype not in _DTYPES:
        raise ConfigError(f"config.compute_dtype={config.compute_dtype!r}: expected one of {list(_DTYPES)}")
    spec = registry.get(config.model_name)
    if data:  # multi-host: process 0 writes/prepares the data first, the others then reuse it
        distributed.primary_first(lambda: ensure_dataset(config.dataset), "ensure_dataset")
    if config.dataset.format not in FORMATS:
        raise ConfigError(f"config.dataset.format={config.dataset.format!r}: expected one of {sorted(FORMATS)}")
    labels = tuple(FORMATS[config.dataset.format].LABELS)
    prepared = distributed.primary_first(lambda: pipeline.Prepared.open(config.dataset), "prepare") \
        if data else None
    bert_cfg = bert_lib.BertConfig.from_json(os.path.join(config.dataset.bert_path, "config.json")) \
        if spec.uses_bert else None
    model = spec.build(config.model, {"num_classes": len(labels), "bert": bert_cfg})
    mesh = sharding.mesh_from_config(config)
    sharding.check_batch_size(config.batch_size, mesh)
    sharding.check_batch_size(config.eval_batch_size, mesh, "eval_batch_size")
    return Experiment(config, spec, model, prepared, mesh, labels, _DTYPES[config.compute_dtype])


def init_params(exp: Experiment) -> Any:
    """Sharded init from the seed (replicated, or split on the ``model`` axis by `Experiment.shardings`),
    with the pretrained BERT loaded if configured."""
    key = jax.random.fold_in(jax.random.PRNGKey(exp.config.seed), 0)
    batch = {k: jnp.asarray(v) for k, v in exp.dummy_batch().items()}
    init_fn = lambda k: exp.model.init(k, batch, train=False)["params"]
    init = jax.jit(init_fn, out_shardings=exp.shardings(jax.eval_shape(init_fn, key)))
    params = init(key)
    if exp.spec.uses_bert and exp.config.model.pretrained_bert and "bert" in params:
        _, pretrained = bert_lib.load_pretrained(exp.config.dataset.bert_path)
        params = dict(params)
        params["bert"] = sharding.put(pretrained, exp.mesh, sharding.min_shard_size(exp.config))
    return params


# ------------------------------------------------------------------------------------- evaluation

def predict_split(exp: Experiment, params, split: str, eval_step) -> dict[str, np.ndarray]:
    """Logits (or predictions), labels and embeddings of every example of ``split`` on this host."""
    loader = exp.loader(split, train=False)
    outs: dict[str, list] = {}
    labels = []
    # disable=None: a bar on a terminal, none in logs/CI (tqdm checks isatty).
    for batch in tqdm(loader.epoch(0), total=len(loader), desc=f"predict {split}", unit="batch", leave=False,
                      dynamic_ncols=True, disable=None):
        res = jax.device_get(eval_step(params, sharding.to_global(batch, exp.mesh)))
        batch = sharding.gather_rows(batch, exp.mesh, ("valid", "label", *UNIMODAL_LABELS))  # all hosts' rows
        keep = batch["valid"] > 0
        for k, v in res.items():
            outs.setdefault(k, []).append(np.asarray(v)[keep])
        labels.append(batch["label"][keep])
        for k in UNIMODAL_LABELS:  # unimodal labels travel along for scorers that use them
            if k in batch:
                outs.setdefault(k, []).append(batch[k][keep])
    result = {k: np.concatenate(v) for k, v in outs.items()}
    result["label"] = np.concatenate(labels)
    return result


def score(exp: Experiment, pred: dict[str, np.ndarray]) -> dict[str, float]:
    """The dataset's official metrics (config.dataset.metric names a `metrics.SCORERS` entry)."""
    return metrics_lib.score(_metric_set(exp), pred)


def _metric_set(exp: Experiment) -> str:
    # config.metric (optional) overrides the dataset's set for one run without touching
    # config.dataset (whose fields fingerprint the prepared data), e.g. KuDA stage 1's unimodal scores.
    return exp.config.get("metric") or exp.config.dataset.get("metric", "classification")


# ------------------------------------------------------------------------------------- training

def _save_log_window(acc: dict | None, steps: int) -> dict | None:
    """The running train-metric sums as JSON (float32 values survive the round trip exactly)."""
    if acc is None:
        return None
    host = jax.device_get(acc)
    return {"steps": steps, "sums": {k: [float(v), str(np.asarray(v).dtype)] for k, v in host.items()}}


def _restore_log_window(meta: dict) -> tuple[dict | None, int]:
    window = meta.get("log_window")
    if not window:
        return None, 0
    return {k: jnp.asarray(v, dtype) for k, (v, dtype) in window["sums"].items()}, int(window["steps"])


def _check_workdir(workdir: str) -> None:
    """Fail before any work if ``workdir`` cannot be created or written (no space, a file, read-only)."""
    probe = os.path.join(workdir, f".write_test.{jax.process_index()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ConfigError(f"workdir {workdir!r} is not writable: {e}") from None


def _better(metric: float, best: float | None, mode: str) -> bool:
    if mode not in ("max", "min"):
        raise ConfigError(f"config.early_stop_mode={mode!r}: expected 'max' or 'min'")
    return best is None or (metric > best if mode == "max" else metric < best)


def train_and_evaluate(config, workdir: str, *, stop_after_steps: int | None = None,
                       counter: step_lib.TraceCounter | None = None,
                       init_fn: Any = None) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if possible); returns the final dev metrics and state.

    ``stop_after_steps`` ends the process loop early (used to simulate an interruption in tests).
    ``init_fn(params) -> params`` edits the fresh initial params (a warm start, e.g. KuDA stage 2
    from its stage-1 runs); a resumed run's checkpoint replaces them as usual.
    """
    _check_workdir(workdir)
    if distributed.is_primary():  # multi-host: process 0 writes the files, all save checkpoints
        with open(os.path.join(workdir, "config.json"), "w") as f:
            f.write(config.to_json_best_effort(indent=2))
    exp = build(config)
    train_loader = exp.loader("train", train=True)
    steps_per_epoch = len(train_loader)
    total_steps = steps_per_epoch * config.num_epochs
    tx = state_lib.make_optimizer(config.optimizer, total_steps)
    schedule = state_lib.learning_rate_schedule(config.optimizer, total_steps)
    params = init_params(exp)
    if init_fn is not None:
        params = init_fn(params)
    create = lambda p: state_lib.create(p, tx, config.seed + 1)
    state_sharding = exp.shardings(jax.eval_shape(create, params))
    state = jax.jit(create, out_shardings=state_sharding)(params)
    del params

    ckpt = Checkpoints(workdir, keep=config.keep_checkpoints)
    meta = {"epoch": 0, "next_batch": 0, "best": None, "bad_epochs": 0, "done": False}
    restored = ckpt.restore_latest(jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
    if restored is not None:
        state, meta = restored
        print(f"resumed from step {int(state.step)} (epoch {meta['epoch']}, batch {meta['next_batch']})")
    writer = MetricsWriter(workdir, resume_step=int(state.step) if restored is not None else None) \
        if distributed.is_primary() else distributed.NullWriter()

    counter = counter or step_lib.TraceCounter()
    train_step = step_lib.make_train_step(exp.model, exp.spec.make_loss(exp.config), tx, exp.mesh,
                                          compute_dtype=exp.compute_dtype, counter=counter,
                                          state_sharding=state_sharding)
    eval_step = step_lib.make_eval_step(exp.model, exp.mesh, compute_dtype=exp.compute_dtype,
                                        params_sharding=state_sharding.params)
    metric_name = config.early_stop_metric
    if metric_name not in _metric_names(exp):
        raise ConfigError(f"config.early_stop_metric={metric_name!r}: expected one of {_metric_names(exp)}")
    steps_run = 0
    try:
        while not meta["done"] and meta["epoch"] < config.num_epochs:
            epoch, start = meta["epoch"], meta["next_batch"]
            bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.num_epochs}",
                       unit="step", leave=False, dynamic_ncols=True, disable=None)
            # On-device sums since the last log step; a run resumed mid-epoch continues the window
            # saved with its checkpoint, so it logs the same records as an uninterrupted run.
            acc, since_log = _restore_log_window(meta) if start else (None, 0)
            t0, seen = time.perf_counter(), 0
            for b, batch in enumerate(train_loader.epoch(epoch, start), start=start):
                state, m = train_step(state, sharding.to_global(batch, exp.mesh))
                acc = m if acc is None else jax.tree_util.tree_map(jnp.add, acc, m)
                seen += config.batch_size
                bar.update(1)
                steps_run += 1
                since_log += 1
                # Log at global step multiples: a resumed run logs at the same steps as an uninterrupted one.
                step = int(state.step) if int(state.step) % config.log_every == 0 else None
                if step is not None:
                    rec = _train_record(jax.device_get(acc), since_log, step=step, epoch=epoch + 1,
                                        lr=float(schedule(step)), eps=seen / (time.perf_counter() - t0))
                    writer.write(rec)
                    bar.set_postfix(loss=f"{rec['train_loss']:.4f}", ex_s=f"{rec['examples_per_sec']:.0f}")
                    _check_nonfinite(config, state, ckpt, workdir)
                    acc, t0, seen, since_log = None, time.perf_counter(), 0, 0
                if config.checkpoint_every_steps and int(state.step) % config.checkpoint_every_steps == 0 \
                        and b + 1 < steps_per_epoch:
                    ckpt.save_latest(state, {**meta, "epoch": epoch, "next_batch": b + 1,
                                             "log_window": _save_log_window(acc, since_log)})
                if stop_after_steps is not None and steps_run >= stop_after_steps:
                    bar.close()
                    return {"interrupted": True, "step": int(state.step)}
            bar.close()
            _check_nonfinite(config, state, ckpt, workdir)
            dev = score(exp, predict_split(exp, state.params, "dev", eval_step))
            step = int(state.step)
            writer.write({"step": step, "epoch": epoch + 1, "split": "dev", **dev})
            improved = _better(dev[metric_name], meta["best"], config.get("early_stop_mode", "max"))
            meta = {**meta, "epoch": epoch + 1, "next_batch": 0, "log_window": None,
                    "best": dev[metric_name] if improved else meta["best"],
                    "bad_epochs": 0 if improved else meta["bad_epochs"] + 1}
            if meta["bad_epochs"] >= config.patience:
                meta["done"] = True
            if improved:
                ckpt.save_best(state, {"epoch": epoch + 1, "step": step, "dev": dev})
            ckpt.save_latest(state, meta)
            print(f"epoch {epoch + 1}: dev {metric_name} {dev[metric_name]:.4f} "
                  f"(best {meta['best']:.4f}{', early stop' if meta['done'] else ''})")
    finally:
        ckpt.close()
    return {"interrupted": False, "step": int(state.step), "best": meta["best"],
            "compiles": counter.count, "epochs": meta["epoch"]}


def _train_record(sums: dict, steps: int, **fields) -> dict[str, Any]:
    """A metrics.jsonl line from summed step metrics: the mean loss and every scalar aux term
    (``train_<name>``, e.g. ce, oe, gate weights) over ``steps`` steps, and accuracy over examples."""
    rec = {"step": fields["step"], "epoch": fields["epoch"], "steps": steps, "lr": fields["lr"],
           "examples_per_sec": fields["eps"], "train_loss": float(sums["loss"]) / steps,
           "train_acc": float(sums["correct"]) / max(float(sums["count"]), 1)}
    for k, v in sums.items():
        if k not in ("loss", "correct", "count") and np.ndim(v) == 0:
            rec[f"train_{k}"] = float(v) / steps
    return rec


def _metric_names(exp: Experiment) -> list[str]:
    return metrics_lib.metric_names(_metric_set(exp))


def _staged(config) -> bool:
    return bool(config.get("stage1")) and config.stage1.get("enabled", True)


def run(config, workdir: str) -> dict[str, Any]:
    """What train.py calls: a model's declared stages (KuDA: config.stage1) or one training run."""
    if _staged(config):
        from mmfuse_jax.models import kuda_stages

        return kuda_stages.train(config, workdir)
    return train_and_evaluate(config, workdir)


def run_evaluation(config, workdir: str) -> dict[str, dict[str, float]]:
    """What eval.py calls: the final stage's best checkpoint (``workdir/stage2`` for KuDA) or `evaluate`."""
    if _staged(config):
        from mmfuse_jax.models import kuda_stages

        return kuda_stages.evaluate(config, workdir)
    return evaluate(config, workdir)


def _check_nonfinite(config, state, ckpt, workdir) -> None:
    n = int(jax.device_get(state.nonfinite))
    if n and config.get("nonfinite_policy", "stop") == "stop":
        ckpt.close()
        raise FloatingPointError(
            f"{n} train step(s) had a non-finite loss or gradient; training stopped. Those steps were "
            f"not applied and the last good checkpoint in {workdir}/checkpoints is intact "
            "(set config.nonfinite_policy='skip' to skip such steps and continue).")


def restore_best(exp: Experiment, workdir: str) -> tuple[Any, dict]:
    """(params, meta) of the best checkpoint in ``workdir/best``; a clear error if there is none."""
    ckpt = Checkpoints(workdir, keep=exp.config.keep_checkpoints)
    try:
        restored = ckpt.restore_best(jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), init_params(exp)))
    finally:
        ckpt.close()
    if restored is None:
        raise ConfigError(f"no best checkpoint in {os.path.join(workdir, 'best')}: train first with "
                          f"train.py --workdir={workdir}")
    return restored


def evaluate(config, workdir: str, splits=("dev", "test")) -> dict[str, dict[str, float]]:
    """Restore the best checkpoint of ``workdir`` and evaluate; writes ``eval_<split>.json``."""
    exp = build(config)
    params, meta = restore_best(exp, workdir)
    eval_step = step_lib.make_eval_step(exp.model, exp.mesh, compute_dtype=exp.compute_dtype)
    oos_label = config.dataset.get("oos_label")
    # Open-intent datasets: DOC thresholds are fitted on the in-scope training split's scores.
    train = predict_split(exp, params, "train", eval_step) if oos_label is not None else None
    results, preds = {}, {}
    for split in splits:
        pred = preds[split] = predict_split(exp, params, split, eval_step)
        res = score(exp, pred)
        results[split] = res
        record = {"model": config.model_name, "dataset": config.dataset.name, "split": split,
                  "checkpoint_step": meta["step"], "metrics": res}
        if train is not None:
            tables = ood.open_intent_scores(train["logits"], train["label"], pred["logits"], pred["label"],
                                            scale=config.dataset.get("doc_scale", 1.0))
            results[f"{split} (open intent)"] = record["open_intent"] = tables["open_intent"]
        if distributed.is_primary():  # multi-host: every process has every prediction; one writes
            with open(os.path.join(workdir, f"eval_{split}.json"), "w") as f:
                json.dump(record, f, indent=2)
    # predictions_<split>.npz, doc_thresholds.json (open intent), report.md and its plots
    if distributed.is_primary():
        report_lib.after_evaluate(workdir, config, preds, train=train, checkpoint_step=meta["step"])
    return results


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
