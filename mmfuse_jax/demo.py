"""`make demo`: train text_only and early_fusion on the synthetic benchmark and compare them.

python -m mmfuse_jax.demo --workdir=runs/demo [--models=text_only,early_fusion]
Each model trains in ``<workdir>/<model>`` (resumed if already there), is evaluated on dev and
test from its best checkpoint, and one table compares them.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(model: str, preset: str):
    path = os.path.join(REPO, "configs", f"{model}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{model}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import cli
    from mmfuse_jax.training import loop

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--models", default="text_only,early_fusion")
    p.add_argument("--preset", default="demo")
    args = p.parse_args(argv)
    rows = {}

    def run():
        for model in args.models.split(","):
            config = load_config(model, args.preset)
            workdir = os.path.join(args.workdir, model)
            print(f"\n=== {model}: training on {config.dataset.name} -> {workdir}")
            t0 = time.perf_counter()
            loop.train_and_evaluate(config, workdir)
            res = loop.evaluate(config, workdir)
            rows[model] = (res, time.perf_counter() - t0)
        metrics = ("acc", "f1", "weighted_f1")
        print(f"\nResults on the synthetic benchmark (x100; {args.workdir}):")
        print(f"{'model':<14}" + "".join(f"{s + ' ' + m:>18}" for s in ("dev", "test") for m in metrics)
              + f"{'seconds':>10}")
        for model, (res, secs) in rows.items():
            print(f"{model:<14}" + "".join(f"{100 * res[s][m]:>18.2f}" for s in ("dev", "test") for m in metrics)
                  + f"{secs:>10.0f}")

    cli.run_user_facing(run)


if __name__ == "__main__":
    main()
