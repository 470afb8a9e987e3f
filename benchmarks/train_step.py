"""Train-step speed, memory and MFU of a model config, with the input pipeline beside it.

python -m benchmarks.train_step --config=configs/<model>.py:<preset> [--steps=20 --warmup=3]

Measured in one run and printed as one JSON line:
  * train step (jit, donated state) on the preset's data: median/min seconds, examples/s;
  * compile count (traces of the step function: at most the number of length buckets);
  * model FLOPs per step from XLA's cost analysis, and MFU = FLOPs/s / matmul peak, where the
    peak is a float32 (or compute_dtype) matmul measured in the same process;
  * input pipeline: examples/s of the grain loader alone, and its ratio to the step's rate, for the
    first epoch (reads and decodes every example) and later epochs (decoded-row cache);
  * peak host memory (ru_maxrss) and device memory where the backend reports it.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.common import emit, machine, time_fn
from mmfuse_jax.training import loop, sharding
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib


def matmul_peak_flops(dtype=jnp.float32, n: int = 2048) -> float:
    """FLOP/s of an n x n matmul on the default device (the MFU denominator)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    t = time_fn(f, a, warmup=2, reps=5)["min_s"]
    return 2 * n ** 3 / t


def load_config(spec: str):
    path, _, preset = spec.partition(":")
    import importlib.util

    mod_spec = importlib.util.spec_from_file_location("bench_config", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.get_config(preset or None)


def apply_overrides(config, items: list[str]) -> None:
    """``a.b=value`` strings onto ``config`` (values parsed as Python literals when they are one)."""
    import ast

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set={item!r}: expected KEY=VALUE")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        with config.unlocked() if hasattr(config, "unlocked") else _nullcontext():
            node[leaf] = value


def _nullcontext():
    import contextlib

    return contextlib.nullcontext()


def setup(config, total_steps: int, specialise: bool = True):
    """(experiment, train loader, optimizer, state, jitted train step, its trace counter, <= 8 global batches).
    The step of the recipe's final stage, as the loop builds it: ``specialise`` on its frozen params
    (`Experiment.specialised`; False: the model as built, e.g. HCT-DMG's switch over every primary)."""
    exp = loop.build(config)
    loader = exp.loader("train", train=True)
    if config.optimizer.get("schedule") == "warmup_cosine_epochs":  # KuDA's per-epoch schedule needs
        config.optimizer.epochs = 1  # whole epochs; the benchmark's steps make one (the rate is irrelevant)
    frozen = exp.spec.stages(config)[-1].frozen  # the final stage of the model's recipe (KuDA: stage 2)
    tx = state_lib.make_optimizer(config.optimizer, total_steps, frozen)
    st = jax.jit(lambda p: state_lib.create(p, tx, config.seed), out_shardings=sharding.replicated(exp.mesh))(
        loop.init_params(exp))
    exp = exp.specialised(st.params, tuple(frozen)) if specialise else exp
    counter = step_lib.TraceCounter()
    train_step = step_lib.make_train_step(exp.model, exp.spec.make_loss(exp.config), tx, exp.mesh,
                                          compute_dtype=exp.compute_dtype, counter=counter,
                                          update=state_lib.make_update(config.optimizer, total_steps, frozen))
    batches = [sharding.to_global(b, exp.mesh) for _, b in zip(range(min(len(loader), 8)), loader.epoch(0))]
    return exp, loader, tx, st, train_step, counter, batches


def run(config, *, steps: int, warmup: int) -> dict:
    exp, loader, _, st, train_step, counter, batches = setup(config, steps + warmup)
    flops = None
    try:
        cost = train_step.lower(st, batches[0]).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # some backends do not report a cost analysis
        pass
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        st, m = train_step(st, batches[i % len(batches)])
        jax.block_until_ready(m["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    # The input pipeline alone (host side, grain threads): the first full epoch reads and decodes
    # every example (cold); later epochs pad rows from the decoded-row cache (config.loader_cache_mb).
    def epoch_rate(e: int) -> float:
        t0, n = time.perf_counter(), 0
        for b in loader.epoch(e):
            n += b["valid"].shape[0]
        return n / (time.perf_counter() - t0)

    cold_eps = epoch_rate(1)
    pipeline_eps = statistics.median(epoch_rate(e) for e in (2, 3, 4))
    med = statistics.median(times)
    step_eps = config.batch_size / med
    peak = matmul_peak_flops(exp.compute_dtype)
    dev_mem = getattr(jax.devices()[0], "memory_stats", lambda: None)()
    return {"bench": "train_step", "model": config.model_name, "preset": config.preset,
            "batch_size": config.batch_size, "compute_dtype": config.compute_dtype, "machine": machine(),
            "step_median_s": med, "step_min_s": min(times), "examples_per_s": step_eps,
            "compile_count": counter.count, "num_buckets": config.dataset.num_buckets,
            "flops_per_step": flops, "matmul_peak_flops_per_s": peak,
            "mfu": (flops / med / peak) if flops else None,
            "pipeline_examples_per_s": pipeline_eps, "pipeline_over_step": pipeline_eps / step_eps,
            "pipeline_first_epoch_examples_per_s": cold_eps, "pipeline_first_epoch_over_step": cold_eps / step_eps,
            "host_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "device_peak_bytes": (dev_mem or {}).get("peak_bytes_in_use")}


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="configs/<model>.py:<preset>")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch_size", type=int, default=0, help="override config.batch_size")
    p.add_argument("--compute_dtype", default="", help="override config.compute_dtype")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set=dataset.root=/data/x (repeatable)")
    args = p.parse_args(argv)
    config = load_config(args.config)
    apply_overrides(config, args.set)
    if args.batch_size:
        config.batch_size = args.batch_size
    if args.compute_dtype:
        config.compute_dtype = args.compute_dtype
    emit(run(config, steps=args.steps, warmup=args.warmup))


if __name__ == "__main__":
    main()
