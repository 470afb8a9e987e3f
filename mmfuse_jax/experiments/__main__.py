"""python -m mmfuse_jax.experiments NAME [--preset=demo] [--seeds=0,1,2] --out=DIR [--store=DIR] [--runs=a,b]
    [--set field=value ...]
python -m mmfuse_jax.experiments --list
"""
from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # before JAX starts its threads
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m mmfuse_jax.experiments", description=__doc__.splitlines()[0])
    p.add_argument("name", nargs="?", help="the experiment (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments, one line each, and exit")
    p.add_argument("--preset", default="", help="demo | tiny | a real-data preset the experiment accepts "
                   "(default: its first, demo)")
    p.add_argument("--seeds", default="0,1,2", help="seeds, e.g. 0,1,2 or 0-4 (default 0,1,2)")
    p.add_argument("--out", default="", help="output folder (runs are reused from it; required)")
    p.add_argument("--store", default="", help="a folder of runs shared by experiments: a config trained for "
                   "one (every seed) is reused by the others (default: none, runs live in OUT/runs)")
    p.add_argument("--runs", default="", help="train only these runs (comma-separated names, see results.json); "
                   "the table shows what the others already have (default: every run)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a config field set in every run, e.g. --set num_epochs=1 (repeatable)")
    args = p.parse_args(argv)
    from mmfuse_jax import cli, experiments
    from mmfuse_jax.experiments import runner

    if args.list:
        names = experiments.names()
        width = max(map(len, names)) + 2
        for name in names:
            print(f"{name:<{width}}{experiments.get(name).summary}")
        return
    if not args.name or not args.out:
        cli.fail("give an experiment name and --out=DIR (or --list)")
    failures: list = []

    def go():
        from mmfuse_jax import sweep

        exp = experiments.get(args.name)
        runtime.compilation_cache(default=os.path.join(args.store or args.out, ".xla_cache"))
        table, failed = runner.run_experiment(exp, preset=args.preset or exp.presets[0],
                                              seeds=sweep.parse_seeds(args.seeds), out=args.out,
                                              sets=runner.parse_sets(args.set), argv=argv, store=args.store or None,
                                              only=[n for n in args.runs.split(",") if n] or None)
        failures.extend(failed)
        print("\n" + "\n".join(runner.to_markdown(table)))
        print(f"results: {args.out}/results.md")

    cli.run_user_facing(go)
    if failures:
        cli.fail(f"{len(failures)} run seed(s) failed: " + "; ".join(failures), code=1)


if __name__ == "__main__":
    main()
