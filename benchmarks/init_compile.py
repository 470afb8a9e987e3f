"""A model's init: jitted whole vs in pieces (`mmfuse_jax/training/init_pieces.py`), fresh processes.

python -m benchmarks.init_compile [--models=kuda:tiny,mvcl_daf:tiny,... --rounds=2 --out=...]

Each (model, mode) runs in a new interpreter with no persistent compilation cache (what a user's first
`train.py` pays), interleaved round by round: ``jit`` = `jax.jit` of the model's init (what
`experiment.init_params` did before), ``pieces`` = `init_pieces.evaluate` of its jaxpr (what it does now);
both return no random BERT where the checkpoint replaces it. Timed: trace + compile + run, to host arrays.
Each record carries a hash of the parameters' bytes: the two modes must agree (``equal`` in the summary).
The synthetic datasets are written once, before the timed processes, under ``--data`` (default: a
temporary folder). JSON lines to stdout and ``--out``; then one summary line per model (medians, ratio).
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import time

DEFAULT_OUT = os.path.join("benchmarks", "results", "init_cpu.jsonl")
MODELS = ("kuda:tiny", "mvcl_daf:tiny", "mag_bert:tiny", "hct_dmg:tiny", "mult:tiny", "dyken_hyena:tiny",
          "early_fusion:tiny", "text_only:tiny")


def child(spec: str, mode: str, data: str) -> dict:
    """One timed init in this (fresh) process."""
    import jax
    import numpy as np

    from benchmarks.common import preset_config
    from mmfuse_jax.training import experiment, init_pieces

    exp = experiment.build(preset_config(spec, data), data=False)
    t0 = time.perf_counter()
    key, batch = experiment._init_args(exp)
    fn = experiment._init_fn(exp.model, experiment._loads_bert(exp))
    if mode == "jit":
        params = jax.jit(fn)(key, batch)
    else:
        params = init_pieces.call(fn, key, batch)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256(b"".join(x.tobytes() for x in leaves)).hexdigest()[:16]
    return {"model": spec, "mode": mode, "seconds": round(seconds, 3), "params": len(leaves), "hash": digest}


def main(argv=None) -> None:
    from benchmarks.common import emit_and_append, fresh_parser, fresh_rounds, fresh_setup

    p = fresh_parser(__doc__, MODELS, DEFAULT_OUT, "pieces")
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.mode, args.data)))
        return
    data, models, info = fresh_setup("init_compile", args)
    runs = fresh_rounds("benchmarks.init_compile", models, ("jit", "pieces"), args.rounds, info, args.out,
                        (f"--data={data}",))
    for spec in models:
        jit_s = statistics.median(x["seconds"] for x in runs[spec, "jit"])
        pieces_s = statistics.median(x["seconds"] for x in runs[spec, "pieces"])
        hashes = {x["hash"] for mode in ("jit", "pieces") for x in runs[spec, mode]}
        emit_and_append({**info, "model": spec, "summary": True, "jit_s": jit_s, "pieces_s": pieces_s,
                         "speedup": round(jit_s / pieces_s, 2), "equal": len(hashes) == 1}, args.out)


if __name__ == "__main__":
    main()
