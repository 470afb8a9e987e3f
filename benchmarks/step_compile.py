"""A model's train step with the per-leaf vs the grouped optimizer update (`optimizer.update`), fresh processes.

python -m benchmarks.step_compile [--models=kuda:tiny,mvcl_daf:tiny,... --rounds=2 --steps=5 --out=...]

Each (model, mode) runs in a new interpreter with no persistent compilation cache, interleaved round by
round: ``per_leaf`` = optax's update array by array (the default), ``grouped`` = the same transformations
over one concatenated vector per weight-decay group (`mmfuse_jax/training/grouped_update.py`). Timed apart:
trace + lower, XLA compile, and the median of ``--steps`` steps after the first; also the optimised
program's HLO lines, and the parameters after the steps (saved under ``--data``), so that each model's
summary reports the largest difference between the two modes' parameters (0 = bit for bit). The
synthetic datasets are written once, before the timed processes. JSON lines to stdout and ``--out``.
"""
from __future__ import annotations

import json
import os
import statistics
import time

DEFAULT_OUT = os.path.join("benchmarks", "results", "step_compile_cpu.jsonl")
MODELS = ("kuda:tiny", "mvcl_daf:tiny", "mag_bert:tiny", "hct_dmg:tiny", "mult:tiny", "dyken_hyena:tiny",
          "early_fusion:tiny", "text_only:tiny")


def child(spec: str, mode: str, data: str, steps: int) -> dict:
    """One model's step with ``mode`` in this (fresh) process: timings, and its parameters after the steps."""
    import jax
    import numpy as np

    from benchmarks.common import preset_config
    from benchmarks.train_step import setup

    config = preset_config(spec, data)
    config.optimizer.update = mode
    _, _, _, state, train_step, _, batches = setup(config, total_steps=100)
    t0 = time.perf_counter()
    lowered = train_step.lower(state, batches[0])
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        state, _ = compiled(state, batches[i % len(batches)])
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
    np.savez(os.path.join(data, f"params_{spec.replace(':', '_')}_{mode}.npz"), *leaves)
    return {"model": spec, "mode": mode, "trace_lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3),
            "step_s": round(statistics.median(times[1:]), 5), "hlo_lines": len(compiled.as_text().splitlines()),
            "param_arrays": len(leaves), "params": int(sum(x.size for x in leaves)), "steps": steps}


def max_difference(data: str, spec: str) -> float:
    """The largest absolute difference between the two modes' parameters of ``spec`` (latest round)."""
    import numpy as np

    a, b = (np.load(os.path.join(data, f"params_{spec.replace(':', '_')}_{m}.npz")) for m in ("per_leaf", "grouped"))
    return float(max(np.max(np.abs(a[k].astype(np.float64) - b[k])) for k in a.files))


def main(argv=None) -> None:
    from benchmarks.common import emit_and_append, fresh_parser, fresh_rounds, fresh_setup

    p = fresh_parser(__doc__, MODELS, DEFAULT_OUT, "grouped")
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first (same batches both modes)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.data, args.steps)))
        return
    data, models, info = fresh_setup("step_compile", args)
    runs = fresh_rounds("benchmarks.step_compile", models, ("per_leaf", "grouped"), args.rounds, info, args.out,
                        (f"--data={data}", f"--steps={args.steps}"))
    for spec in models:
        med = {(mode, k): statistics.median(x[k] for x in runs[spec, mode])
               for mode in ("per_leaf", "grouped") for k in ("trace_lower_s", "compile_s", "step_s", "hlo_lines")}
        emit_and_append({**info, "model": spec, "summary": True,
                         **{f"{mode}_{k}": v for (mode, k), v in med.items()},
                         **{f"{k}_speedup": round(med["per_leaf", f"{k}_s"] / med["grouped", f"{k}_s"], 2)
                            for k in ("compile", "trace_lower", "step")},
                         "max_param_difference": max_difference(data, spec)}, args.out)


if __name__ == "__main__":
    main()
