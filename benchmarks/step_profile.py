"""Where a model's train step goes, op by op: a `jax.profiler` trace of a few steps, summed per HLO op.

python -m benchmarks.step_profile --config=configs/<model>.py:<preset> [--steps=2 --warmup=2 --timed=4 --top=25
    --set=KEY=VALUE ... --keep_trace=DIR --out=benchmarks/results/step_profile_cpu.jsonl]

The step is compiled once, for the first batch's length bucket, and runs only batches of that bucket
(``lower().compile()``: its HLO text names every op and the model code it came from), as training runs
it (donated state, our CLIs' host settings: `runtime.tune_host`): ``--warmup`` steps, ``--timed`` steps
timed untraced, then ``--steps`` traced. Printed, and one JSON line appended to ``--out``:
  * the step's seconds (traced and untraced), minor page faults and system CPU seconds per untraced step
    (getrusage: a step that maps and first-touches memory afresh shows here);
  * op time per step, summed over the threads that ran the ops: dots XLA runs with YNNPACK
    (``ynn_fusion``), dots on its generic path (``dot``), copies, everything else;
  * how much of the step 0, 1 or 2+ threads spent inside an op (a dot run by both cores counts once);
  * the ``--top`` op groups: the op's source path in the model (``op_name`` metadata; layer and block
    numbers folded), forward or backward (``transpose(jvp(...))``), summed per step.
The trace's op events are XLA:CPU's thunk events; other backends' traces may lack them (then the op
tables are empty). benchmarks/README.md, "KuDA vs the official PyTorch code", has what it found.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import resource
import statistics
import tempfile
import time

import jax

from benchmarks.common import emit_and_append, git_commit, machine
from benchmarks.train_step import apply_overrides, load_config, setup

DEFAULT_OUT = os.path.join("benchmarks", "results", "step_profile_cpu.jsonl")
_OP_LINE = re.compile(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name=\"([^\"]*)\"")


def op_names(hlo_text: str) -> dict[str, str]:
    """HLO instruction name -> its op_name metadata (the JAX source path), from a compiled module's text."""
    return {m.group(1): m.group(2) for m in map(_OP_LINE.match, hlo_text.splitlines()) if m}


def op_kind(op: str) -> str:
    if op.startswith("ynn_fusion"):
        return "dot (YNNPACK)"
    if re.fullmatch(r"(dot|dot_general)(\.\d+)?", op):
        return "dot (generic)"
    if op.startswith("copy"):
        return "copy"
    return "other"


def group_of(op_name: str) -> str:
    """A readable, layer-folded group: 'bwd ' or 'fwd ' + the op_name without jit wrappers and numbers."""
    side = "bwd" if "transpose(jvp(" in op_name else "fwd"
    path = re.sub(r"(layer|block|adapter)_\d+", r"\1_N", op_name)
    path = re.sub(r"\b(jit|jvp|transpose)\(|\)", "", path)
    return f"{side} {path}" if op_name else "(no op_name: parameter copies, the update's loops)"


def summarize(events: list[dict], names: dict[str, str], steps: int, top: int) -> dict:
    """Per-step op totals, kinds, groups and thread concurrency from trace events with an ``hlo_op``."""
    leaf = [e for e in events if not re.match(r"(while|call|conditional)\b", e["args"]["hlo_op"])]
    kinds, groups = collections.Counter(), collections.Counter()
    for e in leaf:
        op = e["args"]["hlo_op"]
        kinds[op_kind(op)] += e["dur"]
        groups[group_of(names.get(op, ""))] += e["dur"]
    points = sorted(p for e in leaf for p in ((e["ts"], 1), (e["ts"] + e["dur"], -1)))
    busy, active, last = collections.Counter(), 0, points[0][0] if points else 0.0
    for ts, delta in points:
        busy[min(active, 2)] += ts - last
        active, last = active + delta, ts

    def per_step(microseconds: float) -> float:
        return round(microseconds / steps / 1e6, 4)

    return {"op_seconds_per_step": per_step(sum(kinds.values())),
            "by_kind_s": {k: per_step(v) for k, v in kinds.most_common()},
            "threads_in_ops_s": {f"{k}{'+' if k == 2 else ''}": per_step(v) for k, v in sorted(busy.items())},
            "top_groups_s": [[g, per_step(v)] for g, v in groups.most_common(top)]}


def run(config, *, steps: int, warmup: int, timed: int, top: int, trace_dir: str) -> dict:
    _, _, _, st, train_step, _, batches = setup(config, warmup + timed + steps)
    shapes = jax.tree_util.tree_map(lambda x: x.shape, batches[0])
    batches = [b for b in batches if jax.tree_util.tree_map(lambda x: x.shape, b) == shapes]  # one program:
    compiled = train_step.lower(st, batches[0]).compile()  # the first batch's length bucket
    names = op_names(compiled.as_text())

    def one(i: int) -> tuple[float, int, float]:
        nonlocal st
        before, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        st, metrics = compiled(st, batches[i % len(batches)])
        jax.block_until_ready(metrics["loss"])
        after = resource.getrusage(resource.RUSAGE_SELF)
        return time.perf_counter() - t0, after.ru_minflt - before.ru_minflt, after.ru_stime - before.ru_stime

    plain = [one(i) for i in range(warmup + timed)][warmup:]
    jax.profiler.start_trace(trace_dir)
    traced = [one(i)[0] for i in range(steps)]
    jax.profiler.stop_trace()
    files = sorted(glob.glob(os.path.join(trace_dir, "plugins", "profile", "*", "*.trace.json.gz")))
    events = []
    if files:
        with gzip.open(files[-1]) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and "hlo_op" in e.get("args", {})]
    return {"bench": "step_profile", "model": config.model_name, "preset": config.preset,
            "batch_size": config.batch_size, "compute_dtype": config.compute_dtype, "machine": machine(),
            "step_s_median": statistics.median(t for t, _, _ in plain),
            "traced_step_s_median": statistics.median(traced), "steps_traced": steps,
            "minor_faults_per_step": statistics.median(f for _, f, _ in plain),
            "system_s_per_step": statistics.median(s for _, _, s in plain),
            "hlo_ops_named": len(names), "op_events": len(events),
            **summarize(events, names, steps, top)}


def print_table(record: dict) -> None:
    print(f"step {record['step_s_median']:.3f} s ({record['traced_step_s_median']:.3f} s traced); "
          f"{record['minor_faults_per_step']:.0f} page faults, {record['system_s_per_step']:.3f} s system per step")
    print(f"op time {record['op_seconds_per_step']:.3f} s per step: " +
          ", ".join(f"{k} {v:.3f}" for k, v in record["by_kind_s"].items()))
    threads = record["threads_in_ops_s"]
    print("threads inside an op (s per step): " + ", ".join(f"{k}: {v:.3f}" for k, v in threads.items()))
    for group, seconds in record["top_groups_s"]:
        print(f"{seconds * 1e3:9.1f} ms  {group[-140:]}")


def main(argv: list[str] | None = None) -> dict:
    from mmfuse_jax import runtime

    host = runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="configs/<model>.py:<preset>")
    p.add_argument("--steps", type=int, default=2, help="traced steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--timed", type=int, default=4, help="untraced steps timed (with page faults, system time)")
    p.add_argument("--top", type=int, default=25, help="op groups listed")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    p.add_argument("--keep_trace", default="", help="write the trace here (TensorBoard / Perfetto) and keep it")
    p.add_argument("--out", default=DEFAULT_OUT, help="JSON line appended here ('' = stdout only)")
    args = p.parse_args(argv)
    config = load_config(args.config)
    apply_overrides(config, args.set)
    with tempfile.TemporaryDirectory() as tmp:
        record = run(config, steps=args.steps, warmup=args.warmup, timed=max(1, args.timed), top=args.top,
                     trace_dir=args.keep_trace or tmp)
    record.update({"config": args.config, "overrides": args.set, "host": host, "git": git_commit(),
                   "run": time.strftime("%Y-%m-%dT%H:%M:%S")})
    print_table(record)
    emit_and_append(record, args.out)
    return record


if __name__ == "__main__":
    main()
