"""Timing and memory helpers shared by the benchmarks."""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
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
            "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model()}


def cpu_model() -> str:
    """The host CPU's model name (/proc/cpuinfo), '' where unknown: this project's CPU machines change
    model between sessions (AMD EPYC one day, Intel Xeon another), and timings only compare on one."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return ""


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


def git_commit() -> str:
    """The checkout's commit (``+dirty`` with uncommitted changes), or '' outside git."""
    try:
        def git(*a):
            return subprocess.run(["git", *a], check=False, capture_output=True, text=True, timeout=10,
                                  cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if commit and git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return ""


def preset_config(spec: str, data: str):
    """``config:preset`` (e.g. ``kuda:tiny``) from configs/, its synthetic benchmark (if any) under ``data``."""
    import importlib

    name, preset = spec.split(":")
    config = importlib.import_module(f"configs.{name}").get_config(preset)
    if len(config.dataset.get("synthetic", {})):
        config.dataset.root = os.path.join(data, spec.replace(":", "_"))
        config.dataset.bert_path = os.path.join(config.dataset.root, "bert")
    return config


def fresh_rounds(module: str, models: list[str], modes: tuple[str, str], rounds: int, info: dict, out: str,
                 args: tuple[str, ...] = ()) -> dict[tuple[str, str], list[dict]]:
    """Each (model, mode) measured by ``python -m module --child=model --mode=mode *args`` in a new
    interpreter without a persistent compilation cache (what a user's first run pays), round by round,
    the two modes' order alternating between rounds; the child prints its record as its last stdout line.
    Every record (``info`` + the child's + the round) is emitted and appended to ``out``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
    runs: dict[tuple[str, str], list[dict]] = {}
    for r in range(rounds):
        for spec in models:
            for mode in (modes if r % 2 == 0 else modes[::-1]):
                done = subprocess.run([sys.executable, "-m", module, f"--child={spec}", f"--mode={mode}", *args],
                                      capture_output=True, text=True, env=env, check=False)
                if done.returncode:
                    raise SystemExit(f"{spec} {mode} failed:\n{done.stderr[-3000:]}")
                record = {**info, **json.loads(done.stdout.strip().splitlines()[-1]), "round": r}
                runs.setdefault((spec, mode), []).append(record)
                emit_and_append(record, out)
    return runs


def fresh_parser(doc: str, models: tuple[str, ...], out: str, mode: str):
    """The flags of a fresh-process benchmark (`fresh_rounds`): --models, --rounds, --data, --out, and the
    hidden --child/--mode a timed child process gets."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--models", default=",".join(models), help="comma-separated config:preset")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--data", default="", help="where the synthetic datasets are written (default: a temp folder)")
    p.add_argument("--out", default=out, help="JSON lines appended here ('' = stdout only)")
    p.add_argument("--child", default="", help=argparse.SUPPRESS)
    p.add_argument("--mode", default=mode, help=argparse.SUPPRESS)
    return p


def fresh_setup(benchmark: str, args) -> tuple[str, list[str], dict]:
    """(data folder, models, the records' common fields): every model's synthetic dataset written once,
    before the timed processes."""
    import tempfile

    from mmfuse_jax.data import ensure_dataset

    data = args.data or tempfile.mkdtemp(prefix=f"{benchmark}-")
    models = [m for m in args.models.split(",") if m]
    for spec in models:
        ensure_dataset(preset_config(spec, data).dataset)
    info = {"benchmark": benchmark, "xla_flags": os.environ.get("XLA_FLAGS", ""), "date": time.strftime("%Y-%m-%d"),
            **machine()}
    return data, models, info
