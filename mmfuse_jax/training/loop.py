"""The training loop: a model's stages, each trained with early stopping on the dev metric.

`run(config, workdir)` trains every stage of the model's recipe (`registry.ModelSpec.stages`; one
stage, in ``workdir`` itself, for most models) and `run_evaluation(config, workdir)` evaluates the
final stage. `train_and_evaluate(config, run_dir)` is one stage: it resumes from ``run_dir`` if a
checkpoint is there, and a finished run is not trained again. The hot loop keeps the host out:
the step number is counted on the host (read once from the restored state), the summed train
metrics are fetched only at log steps (the places that read the devices on purpose are marked with
`prefetch.host_sync`), the next batches are already on the devices while a step runs
(`prefetch.to_device`), and checkpoints are written in the background (`Checkpoints`, waited for
before the process ends, on interruption and before anything reads them).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import distributed, identity, plateau, prefetch
from mmfuse_jax.training import stages as stages_lib
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.checkpoint import Checkpoints
from mmfuse_jax.training.evaluation import Evaluation, evaluate, format_table, restore_best  # noqa: F401
from mmfuse_jax.training.experiment import (
    Experiment,
    abstract_params,
    build,
    init_params,
    make_eval_step,
    metric_names,
    predict_split,
    score,
)
from mmfuse_jax.training.lock import RunLock
from mmfuse_jax.training.logging import MetricsWriter


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training at a step boundary after saving a resumable checkpoint."""

    def __init__(self, step: int, workdir: str):
        super().__init__(f"interrupted at step {step}; a checkpoint is saved in {workdir}: run the same "
                         "command to resume")
        self.step = step

# ------------------------------------------------------------------------------------- stages

def run(config, workdir: str) -> dict[str, Any]:
    """What train.py calls: every stage of the model's recipe, in order, each in its run folder
    (resumable; a finished stage is not trained again). Returns ``{stage name: loop result}``
    (``'run'`` for the unnamed stage of a one-stage model)."""
    planned = stages_lib.plan(config, workdir)
    results = {}
    with _lock(workdir) if len(planned) > 1 else contextlib.nullcontext():  # stage folders are locked one by one
        for p in planned:
            if len(planned) > 1:
                print(f"\n=== {config.model_name} {p.label} -> {p.run_dir}", flush=True)
            results[p.label] = train_and_evaluate(p.config, p.run_dir, frozen=p.stage.frozen,
                                                  init_fn=stages_lib.warm_start_fn(p, planned))
    return results


def abstract_run(config, total_steps: int = 100) -> dict[str, Any]:
    """Every stage's train step of ``config`` traced (forward, backward, update), not compiled or run:
    ``{stage: (state, metrics)}`` as shapes (`jax.eval_shape`), from abstract params and a batch of the largest
    bucket. Finds what a switch, shape or dtype would break without XLA's compile and without reading the
    data (a BERT model needs ``dataset.bert_path``'s config.json): how the experiments' tests check the runs
    they configure but do not train."""
    from mmfuse_jax.batch import UNIMODAL_LABELS
    from mmfuse_jax.data import pipeline

    out = {}
    for p in stages_lib.plan(config, ""):
        c, ds = p.config, p.config.dataset
        exp = build(c, data=False)
        tx = state_lib.make_optimizer(c.optimizer, total_steps, tuple(p.stage.frozen))
        state = jax.eval_shape(functools.partial(state_lib.create, tx=tx, seed=c.seed + 1), abstract_params(exp))
        train_step, _ = _train_step(exp, c, tx, (total_steps, tuple(p.stage.frozen)), exp.shardings(state),
                                    step_lib.TraceCounter())  # a counter of its own: not kept by `step_lib.memo`
        lens = pipeline.bucket_lengths(dict(ds.max_len), ds.num_buckets)[-1]
        batch = pipeline.collate([], batch_size=c.batch_size, lens=lens, dims=dict(ds.feat_dims),
                                 label_dtype=exp.label_dtype, label_shape=tuple(ds.get("label_shape", ())),
                                 extra_labels=UNIMODAL_LABELS if ds.task == "regression" else ())
        batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}  # arrays would be placed
        out[p.label] = jax.eval_shape(train_step, state, batch)
    return out


def _lock(workdir: str):
    """The run folder's lock (process 0 only: the other hosts of a multi-host run share its folder)."""
    _check_workdir(workdir)
    return RunLock(workdir) if distributed.is_primary() else contextlib.nullcontext()



def run_evaluation(config, workdir: str, perturb: str = "") -> Evaluation:
    """What eval.py calls: `evaluate` of the final stage (its run folder and config); ``perturb``: a
    `mmfuse_jax.perturb` spec applied to the evaluated batches (files ``eval_<split>__<slug>.json``)."""
    last = stages_lib.final(config, workdir)
    identity.check(last.run_dir, last.config)  # before anything is created or written
    with _lock(last.run_dir):
        return evaluate(last.config, last.run_dir, perturb_spec=perturb)


# ------------------------------------------------------------------------------------- training

@dataclasses.dataclass
class _Run:
    """Everything one training run holds between steps."""

    config: Any
    workdir: str
    exp: Experiment
    loader: Any
    schedule: Any
    state: Any
    meta: dict
    step: int  # host copy of state.step: no device read in the hot loop
    ckpt: Checkpoints
    writer: Any
    train_step: Any
    eval_step: Any
    counter: step_lib.TraceCounter
    traced_before: int  # the counter's count at setup (a memoised step may have traced in an earlier run)


def _setup(config, workdir: str, init_fn, frozen, counter) -> _Run:
    """Build, init (``init_fn`` edits the fresh params), resume from ``workdir`` if possible, jit.

    The run's identity comes first: a new run saves its config once; a resumed one must match it
    (`identity.record`), so a mistaken command stops before anything in the folder changes."""
    identity.record(workdir, config, primary=distributed.is_primary())
    exp = build(config)
    loader = exp.loader("train", train=True)
    if distributed.is_primary():  # once per run: how much of each batch tensor is padding (data/buckets.py)
        print(f"padding ({loader.scheme} buckets {[b['text'] for b in loader.buckets]} text): " + ", ".join(
            f"{m} {v:.1%}" for m, v in loader.padded_fraction().items()), flush=True)
    total_steps = len(loader) * config.num_epochs
    tx = state_lib.make_optimizer(config.optimizer, total_steps, tuple(frozen))
    params = init_params(exp)
    if init_fn is not None:
        params = init_fn(params)
    create = lambda p: state_lib.create(p, tx, config.seed + 1)
    state_sharding = exp.shardings(jax.eval_shape(create, params))
    state = jax.jit(create, out_shardings=state_sharding)(params)
    del params
    ckpt = Checkpoints(workdir, keep=config.keep_checkpoints, async_save=config.get("async_checkpoints", True))
    meta = {"epoch": 0, "next_batch": 0, "best": None, "bad_epochs": 0, "done": False}
    restored = ckpt.restore_latest(jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
    state, meta = restored if restored is not None else (state, meta)
    exp = exp.specialised(state.params, tuple(frozen), verbose=distributed.is_primary())  # e.g. HCT-DMG's gate
    step = int(jax.device_get(state.step))  # the one read of the device step counter
    if restored is not None:
        print(f"resumed from step {step} (epoch {meta['epoch']}, batch {meta['next_batch']})")
    writer = MetricsWriter(workdir, resume_step=step if restored is not None else None) \
        if distributed.is_primary() else distributed.NullWriter()
    train_step, counter = _train_step(exp, config, tx, (total_steps, tuple(frozen)), state_sharding, counter)
    eval_step = make_eval_step(exp, params_sharding=state_sharding.params)
    if config.early_stop_metric not in metric_names(exp):
        raise ConfigError(f"config.early_stop_metric={config.early_stop_metric!r}: expected one of "
                          f"{metric_names(exp)}")
    plateau.check_config(config.optimizer, metric_names(exp))
    return _Run(config, workdir, exp, loader, state_lib.learning_rate_schedule(config.optimizer, total_steps),
                state, meta, step, ckpt, writer, train_step, eval_step, counter, counter.count)


# The config sections a train step's program is made of: the loss reads config.model (`registry.ModelSpec.
# make_loss`), the optimizer config.optimizer, the batch shapes come from config.dataset and the batch
# size; the rest of the config (epochs, early stopping, checkpoints, logging, threads, stage recipes
# such as HCT-DMG's gate_freeze or KuDA's stage1, whose stages reach the step as their own model,
# optimizer and schedule) is the host loop's.
_PROGRAM_FIELDS = ("model", "optimizer", "dataset", "batch_size", "compute_dtype", "compiler_options", "mesh")


def _program_key(config) -> str:
    """The config fields that can change a train step's program, as text: `_PROGRAM_FIELDS`, less where
    files are (the dataset's root and BERT folder; the model itself, BERT config included, is a key of
    its own) and the synthetic benchmark's knobs (they change the data's values; its shapes reach the
    step as the batch's, which jit keys on). The seed reaches the step through the state's rng, the
    number of epochs through the schedule (total steps), a key of its own."""
    d = json.loads(config.to_json_best_effort())
    d = {k: d[k] for k in _PROGRAM_FIELDS if k in d}
    for k in ("root", "bert_path", "prepared_dir", "synthetic"):
        d.get("dataset", {}).pop(k, None)
    return json.dumps(d, sort_keys=True, default=str)


def _train_step(exp, config, tx, schedule: tuple, state_sharding, counter):
    """(jitted train step, its TraceCounter). Without a caller's ``counter``, one per model, program
    config, schedule (total steps, frozen params), mesh, dtype and layout in the process (`step_lib.memo`):
    the seeds of a sweep and a resumed run trace and compile it once (a run's ``compiles`` counts its
    own new traces: 0 when an earlier run of the process traced every shape)."""
    replicated = all(s.is_fully_replicated for s in jax.tree_util.tree_leaves(state_sharding))
    update = state_lib.make_update(config.optimizer, *schedule, replicated=replicated)

    def make(c):
        return step_lib.make_train_step(exp.model, exp.spec.make_loss(config), tx, exp.mesh,
                                        compute_dtype=exp.compute_dtype, counter=c, state_sharding=state_sharding,
                                        options=step_lib.compiler_options(config), update=update)

    if counter is not None:
        return make(counter), counter
    key = ("train_step", exp.model, _program_key(config), schedule, exp.mesh, jnp.dtype(exp.compute_dtype).name,
           step_lib.sharding_key(state_sharding))
    fresh = step_lib.TraceCounter()
    return step_lib.memo(key, lambda: (make(fresh), fresh))


def train_and_evaluate(config, workdir: str, *, stop_after_steps: int | None = None,
                       counter: step_lib.TraceCounter | None = None, init_fn: Any = None,
                       frozen: tuple[str, ...] = ()) -> dict[str, Any]:
    """Train ``config`` in ``workdir`` (resuming if possible); returns the final dev metrics and state.

    ``stop_after_steps`` ends the process loop early (used to simulate an interruption in tests).
    ``init_fn(params) -> params`` edits the fresh initial params (a stage's warm start); a resumed
    run's checkpoint replaces them as usual. ``frozen``: regexes of params the optimizer leaves as they
    are (a stage's `registry.Stage.frozen`).
    """
    with _lock(workdir), _Signals() as signals:
        with prefetch.host_sync("setup"):
            r = _setup(config, workdir, init_fn, frozen, counter)
        budget = [stop_after_steps]
        try:
            while not r.meta["done"] and r.meta["epoch"] < config.num_epochs:
                if not _train_epoch(r, budget, signals):
                    return {"interrupted": True, "step": r.step}
                with prefetch.host_sync("epoch end"):
                    _end_epoch(r)
                if signals.caught:  # after the epoch's checkpoint: nothing more to save
                    raise Interrupted(r.step, workdir)
        finally:
            r.ckpt.close()  # waits for a save still being written
    return {"interrupted": False, "step": r.step, "best": r.meta["best"],
            "compiles": r.counter.count - r.traced_before,
            "epochs": r.meta["epoch"]}


class _Signals:
    """SIGINT/SIGTERM while training set ``caught`` (the loop stops at the next step boundary and saves);
    a second one stops at once (the last saved checkpoint stays intact)."""

    def __init__(self):
        self.caught, self._old = False, {}

    def _handle(self, signum, frame):
        if self.caught:
            raise KeyboardInterrupt
        self.caught = True
        print(f"\n{signal.Signals(signum).name}: stopping after this step (again to stop at once)", flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, old in self._old.items():
            signal.signal(s, old)
        return False


def _train_epoch(r: _Run, budget: list, signals: _Signals) -> bool:
    """The rest of the current epoch; False when ``budget[0]`` steps ran out first (interrupted).

    A caught signal saves a checkpoint at the step boundary (mid-epoch position and log window, as
    ``checkpoint_every_steps`` does) and raises `Interrupted`."""
    config, meta, steps_per_epoch = r.config, r.meta, len(r.loader)
    epoch, start = meta["epoch"], meta["next_batch"]
    bar = tqdm(total=steps_per_epoch, initial=start, desc=f"epoch {epoch + 1}/{config.num_epochs}",
               unit="step", leave=False, dynamic_ncols=True, disable=None)
    # On-device sums since the last log step; a run resumed mid-epoch continues the window saved
    # with its checkpoint, so it logs the same records as an uninterrupted run.
    acc, since_log = _restore_log_window(meta) if start else (None, 0)
    t0, seen = time.perf_counter(), 0
    batches = prefetch.to_device(r.loader.epoch(epoch, start), r.exp.mesh, config.get("prefetch_batches", 2))
    try:
        for b, batch in enumerate(batches, start=start):
            r.state, m = r.train_step(r.state, batch)
            r.step += 1
            acc = m if acc is None else jax.tree_util.tree_map(jnp.add, acc, m)
            seen, since_log = seen + config.batch_size, since_log + 1
            bar.update(1)
            # Log at global step multiples: a resumed run logs at the same steps as an uninterrupted one.
            if r.step % config.log_every == 0:
                with prefetch.host_sync("log"):
                    _log_train(r, acc, since_log, epoch, seen / (time.perf_counter() - t0), bar)
                acc, t0, seen, since_log = None, time.perf_counter(), 0, 0
            every = config.checkpoint_every_steps
            if (signals.caught or (every and r.step % every == 0)) and b + 1 < steps_per_epoch:
                with prefetch.host_sync("checkpoint"):
                    r.ckpt.save_latest(r.state, {**meta, "epoch": epoch, "next_batch": b + 1,
                                                 "log_window": _save_log_window(acc, since_log)})
            if signals.caught and b + 1 < steps_per_epoch:
                raise Interrupted(r.step, r.workdir)
            if budget[0] is not None:
                budget[0] -= 1
                if budget[0] <= 0:
                    return False
    finally:
        bar.close()
    return True


def _log_train(r: _Run, acc: dict, since_log: int, epoch: int, eps: float, bar) -> None:
    """A log step: the train record of the window's summed metrics, and the non-finite check."""
    rec = _train_record(jax.device_get(acc), since_log, step=r.step, epoch=epoch + 1,
                        lr=state_lib.current_lr(r.schedule, r.state, r.step), eps=eps)
    r.writer.write(rec)
    bar.set_postfix(loss=f"{rec['train_loss']:.4f}", ex_s=f"{rec['examples_per_sec']:.0f}")
    _check_nonfinite(r.config, r.state, r.ckpt, r.workdir)


def _end_epoch(r: _Run) -> None:
    """Score dev, update early stopping, save the best and latest checkpoints."""
    config, meta = r.config, r.meta
    _check_nonfinite(config, r.state, r.ckpt, r.workdir)
    dev = score(r.exp, predict_split(r.exp, r.state.params, "dev", r.eval_step))
    epoch, name = meta["epoch"], config.early_stop_metric
    r.writer.write({"step": r.step, "epoch": epoch + 1, "split": "dev", **dev})
    r.state = plateau.after_validation(r.state, dev, config.optimizer)  # before the checkpoints below
    improved = _better(dev[name], meta["best"], config.get("early_stop_mode", "max"))
    meta = r.meta = {**meta, "epoch": epoch + 1, "next_batch": 0, "log_window": None,
                     "best": dev[name] if improved else meta["best"],
                     "bad_epochs": 0 if improved else meta["bad_epochs"] + 1}
    if meta["bad_epochs"] >= config.patience:
        meta["done"] = True
    if improved:
        r.ckpt.save_best(r.state, {"epoch": epoch + 1, "step": r.step, "dev": dev})
    r.ckpt.save_latest(r.state, meta)
    print(f"epoch {epoch + 1}: dev {name} {dev[name]:.4f} "
          f"(best {meta['best']:.4f}{', early stop' if meta['done'] else ''})")


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


def _check_nonfinite(config, state, ckpt, workdir) -> None:
    n = int(jax.device_get(state.nonfinite))
    if n and config.get("nonfinite_policy", "stop") == "stop":
        ckpt.close()
        raise FloatingPointError(
            f"{n} train step(s) had a non-finite loss or gradient; training stopped. Those steps were "
            f"not applied and the last good checkpoint in {workdir}/checkpoints is intact "
            "(set config.nonfinite_policy='skip' to skip such steps and continue).")
