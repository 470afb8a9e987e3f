"""A model's train step built two ways, fresh processes: the optimizer update per leaf vs grouped, or the
model as built vs specialised on its frozen params.

python -m benchmarks.step_compile [--compare=update|specialise --models=kuda:tiny,... --rounds=2 --steps=5]

Each (model, mode) runs in a new interpreter with no persistent compilation cache, interleaved round by
round. ``--compare=update`` (`optimizer.update`): ``per_leaf`` = optax's update array by array (the
default), ``grouped`` = the same transformations over one concatenated vector per weight-decay group
(`mmfuse_jax/training/grouped_update.py`). ``--compare=specialise``: the final stage's step with the model
as built (``as_built``; HCT-DMG: ``nn.switch`` over the three primaries) vs ``specialised`` on the stage's
frozen params as the training loop builds it (`Experiment.specialised`; HCT-DMG's frozen gate: one
branch). Timed apart: trace + lower, XLA compile, and the median of ``--steps`` steps after the first;
also the optimised program's HLO lines and temporary buffer bytes, and the parameters after the steps
(saved under ``--data``), so that each model's summary reports the largest difference between the two
modes' parameters (0 = bit for bit). The synthetic datasets are written once, before the timed
processes. JSON lines to stdout and ``--out``.
"""
from __future__ import annotations

import json
import os
import statistics
import time

DEFAULT_OUT = os.path.join("benchmarks", "results", "step_compile_cpu.jsonl")
MODELS = ("kuda:tiny", "mvcl_daf:tiny", "mag_bert:tiny", "hct_dmg:tiny", "mult:tiny", "dyken_hyena:tiny",
          "early_fusion:tiny", "text_only:tiny")
# --compare -> (baseline mode, other mode, default models)
COMPARE = {"update": ("per_leaf", "grouped", MODELS), "specialise": ("as_built", "specialised", ("hct_dmg:tiny",
                                                                                              "hct_dmg:demo"))}


def child(spec: str, mode: str, data: str, steps: int) -> dict:
    """One model's step with ``mode`` in this (fresh) process: timings, and its parameters after the steps."""
    import jax
    import numpy as np

    from benchmarks.common import preset_config
    from benchmarks.train_step import setup

    config = preset_config(spec, data)
    if mode in COMPARE["update"][:2]:
        config.optimizer.update = mode
    _, _, _, state, train_step, _, batches = setup(config, total_steps=100, specialise=mode != "as_built")
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
    memory = compiled.memory_analysis()
    return {"model": spec, "mode": mode, "trace_lower_s": round(t1 - t0, 3), "compile_s": round(t2 - t1, 3),
            "step_s": round(statistics.median(times[1:]), 5), "hlo_lines": len(compiled.as_text().splitlines()),
            "temp_bytes": int(memory.temp_size_in_bytes) if memory is not None else None,
            "param_arrays": len(leaves), "params": int(sum(x.size for x in leaves)), "steps": steps}


def max_difference(data: str, spec: str, modes: tuple[str, str]) -> float:
    """The largest absolute difference between the two modes' parameters of ``spec`` (latest round)."""
    import numpy as np

    a, b = (np.load(os.path.join(data, f"params_{spec.replace(':', '_')}_{m}.npz")) for m in modes)
    return float(max(np.max(np.abs(a[k].astype(np.float64) - b[k])) for k in a.files))


def main(argv=None) -> None:
    from benchmarks.common import emit_and_append, fresh_parser, fresh_rounds, fresh_setup

    p = fresh_parser(__doc__, (), DEFAULT_OUT, "grouped")
    p.add_argument("--compare", choices=sorted(COMPARE), default="update", help="which two builds of the step")
    p.add_argument("--steps", type=int, default=5, help="timed steps after the first (same batches both modes)")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.data, args.steps)))
        return
    base, other, default_models = COMPARE[args.compare]
    args.models = args.models or ",".join(default_models)
    data, models, info = fresh_setup("step_compile", args)
    info = {**info, "compare": args.compare}
    runs = fresh_rounds("benchmarks.step_compile", models, (base, other), args.rounds, info, args.out,
                        (f"--data={data}", f"--steps={args.steps}"))
    keys = ("trace_lower_s", "compile_s", "step_s", "hlo_lines", "temp_bytes")
    for spec in models:
        med = {(mode, k): statistics.median(x[k] for x in runs[spec, mode] if x.get(k) is not None)
               for mode in (base, other) for k in keys if any(x.get(k) is not None for x in runs[spec, mode])}
        emit_and_append({**info, "model": spec, "summary": True,
                         **{f"{mode}_{k}": v for (mode, k), v in med.items()},
                         **{f"{k}_speedup": round(med[base, f"{k}_s"] / med[other, f"{k}_s"], 2)
                            for k in ("compile", "trace_lower", "step")},
                         "max_param_difference": max_difference(data, spec, (base, other))}, args.out)


if __name__ == "__main__":
    main()
