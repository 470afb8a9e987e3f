"""Timing and memory helpers shared by the benchmarks."""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import jax


def time_fn(fn: Callable, *args, warmup: int = 1, reps: int = 5) -> dict[str, float]:
    """Median and min seconds of ``fn(*args)`` (results blocked on) after ``warmup`` calls."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def compiled_memory(fn: Callable, *args) -> dict[str, int]:
    """XLA's memory analysis of the compiled program: argument, output and temporary bytes."""
    mem = jax.jit(fn).lower(*args).compile().memory_analysis()
    if mem is None:
        return {}
    return {"argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
            "temp_bytes": int(mem.temp_size_in_bytes)}


def machine() -> dict[str, str]:
    dev = jax.devices()[0]
    return {"backend": jax.default_backend(), "device": getattr(dev, "device_kind", str(dev)),
            "device_count": jax.device_count(), "python": platform.python_version(), "jax": jax.__version__,
            "cpu": platform.processor() or platform.machine()}


def emit(record: dict, out=None) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, file=out or sys.stdout, flush=True)


def emit_and_append(record: dict, path: str) -> None:
    """`emit`, then append the line to ``path`` at once ('' = stdout only), so an interrupted run keeps
    the records it made."""
    emit(record)
    if path:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
