"""`benchmarks.train_step` for every registered model, one fresh process each, and a markdown table.

python -m benchmarks.all_models [--preset=demo --batch_size=32 --steps=10 --models=a,b
                                 --out=benchmarks/results/all_models_cpu.jsonl]

Each model runs on its config's ``--preset`` (``kuda`` uses its ``bench`` preset when
``--kuda_preset`` says so), at the same batch size, in its own process so compile counts and peak
memory are its own. The JSON lines of every run are appended to ``--out``; the table printed at the
end (and written beside it as ``.md``) is what `benchmarks/README.md` shows.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from benchmarks.common import emit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fmt(x, scale=1.0, digits=1) -> str:
    return "–" if x is None else f"{scale * x:.{digits}f}"


def table(records: list[dict]) -> str:
    rows = ["| model | preset | batch | step median (ms) | examples/s | compiles (buckets) | GFLOP/step | MFU | "
            "pipeline / step (1st epoch) | host RSS (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        rows.append(
            f"| {r['model']} | {r['preset']} | {r['batch_size']} | {_fmt(r['step_median_s'], 1e3)} | "
            f"{_fmt(r['examples_per_s'], digits=0)} | {r['compile_count']} ({r['num_buckets']}) | "
            f"{_fmt(r['flops_per_step'], 1e-9, 2)} | {_fmt(r['mfu'], 100)} % | "
            f"{_fmt(r['pipeline_over_step'])}x ({_fmt(r.get('pipeline_first_epoch_over_step'))}x) | "
            f"{_fmt(r['host_peak_rss_mb'], digits=0)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="demo")
    p.add_argument("--kuda_preset", default="demo", help="kuda's preset (bench = SIMS shapes, slow on CPU)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--models", default="", help="comma-separated subset (default: every registered model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to every run (repeatable)")
    p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "all_models_cpu.jsonl"))
    args = p.parse_args(argv)
    from mmfuse_jax import registry

    models = args.models.split(",") if args.models else registry.names()
    records = []
    for m in models:
        preset = args.kuda_preset if m == "kuda" else args.preset
        cmd = [sys.executable, "-m", "benchmarks.train_step", f"--config=configs/{m}.py:{preset}",
               f"--steps={args.steps}", f"--batch_size={args.batch_size}", *(f"--set={kv}" for kv in args.set)]
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        if r.returncode or not lines:
            emit({"bench": "all_models", "model": m, "error": r.stderr[-1500:]})
            continue
        rec = json.loads(lines[-1])
        rec["load_average"] = os.getloadavg()
        records.append(rec)
        emit(rec)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "a") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table(records) + "\n")
    print(table(records))


if __name__ == "__main__":
    main()
