"""`make demo`: train the intent models on the synthetic benchmarks and compare them.

python -m mmfuse_jax.demo --workdir=runs/demo
Runs (each in ``<workdir>/<name>``, resumed if already there; evaluated from its best checkpoint):
  * synthetic MIntRec layout: text_only, early_fusion, dyken_hyena (and mvcl_daf with
    ``--suites=intent,intent_more,open_intent``, what `make demo-all` runs);
  * synthetic MIntRec2.0 layout with out-of-scope intents: dyken_hyena and its
    ``dynamic_short_conv=False`` ablation, with in-scope and open-intent (DOC) tables.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (run name, config file, preset, overrides)
RUNS = {
    "intent": [("text_only", "text_only", "demo", {}),
               ("early_fusion", "early_fusion", "demo", {}),
               ("dyken_hyena", "dyken_hyena", "demo", {})],
    # `make demo-all` (kept out of `make demo`, which must finish in about 5 minutes on 2 cores).
    "intent_more": [("mvcl_daf", "mvcl_daf", "demo", {})],
    "open_intent": [("dyken_hyena_oos", "dyken_hyena", "demo_mintrec2", {}),
                    ("dyken_hyena_oos_static", "dyken_hyena", "demo_mintrec2",
                     {"model.dynamic_short_conv": False})],
}

# The printed tables' columns: (split, metric); 'test (open intent)' is printed as 'open'.
INTENT_COLUMNS = [(split, m) for split in ("dev", "test") for m in ("acc", "f1", "weighted_f1")]
OPEN_INTENT_COLUMNS = [("test", "acc"), ("test", "f1")] + [("test (open intent)", m) for m in
                                                          ("acc", "f1", "f1_known", "f1_oos")]


def load_config(model: str, preset: str, overrides: dict | None = None):
    path = os.path.join(REPO, "configs", f"{model}.py")
    spec = importlib.util.spec_from_file_location(f"configs_{model}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    config = mod.get_config(preset)
    for key, value in (overrides or {}).items():
        *path_, leaf = key.split(".")
        target = config
        for part in path_:
            target = target[part]
        target[leaf] = value
    return config


def _table(title: str, rows: dict, columns: list[tuple[str, str]]) -> str:
    header = [f"{s.replace('test (open intent)', 'open'):s} {m}" for s, m in columns]
    lines = [title, f"{'run':<24}" + "".join(f"{h:>18}" for h in header)]
    for name, res in rows.items():
        lines.append(f"{name:<24}" + "".join(f"{100 * res[s][m]:>18.2f}" for s, m in columns))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # before JAX starts its threads
    from mmfuse_jax import cli, report
    from mmfuse_jax.training import identity, loop

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/demo")
    p.add_argument("--suites", default="intent,open_intent", help=f"comma-separated, from {sorted(RUNS)}")
    args = p.parse_args(argv)
    runtime.compilation_cache()  # after the arguments: --help creates no folder

    def run():
        t_start = time.perf_counter()
        results = {}
        for suite in args.suites.split(","):
            for name, model, preset, overrides in RUNS[suite]:
                config = load_config(model, preset, overrides)
                workdir = os.path.join(args.workdir, name)
                print(f"\n=== {name}: {model} on {config.dataset.name} -> {workdir}", flush=True)
                loop.run(config, workdir)
                ev = loop.run_evaluation(config, workdir)
                report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train,
                                      checkpoint_step=ev.checkpoint_step)
                results[name] = ev.results
        print()
        suites = args.suites.split(",")
        if "intent" in suites:
            intent = [n for suite in ("intent", "intent_more") if suite in suites for n, *_ in RUNS[suite]]
            print(_table("Synthetic MIntRec layout (x100):", {n: results[n] for n in intent}, INTENT_COLUMNS))
        if "open_intent" in suites:
            print()
            print(_table("Synthetic MIntRec2.0 layout, test: in-scope, and 'open' = open intent with DOC (x100):",
                         {n: results[n] for n, *_ in RUNS["open_intent"]}, OPEN_INTENT_COLUMNS))
        env = identity.environment()
        print(f"\nenvironment: jax {env['jax']} (jaxlib {env['jaxlib']}), {env['backend']} {env['device_kind']}, "
              f"{env['usable_cpus']} usable CPU cores, {env['machine']}: the same numbers come back on the same "
              "environment; another core count or jax version shifts the last bits (README, Determinism)")
        print(f"demo finished in {time.perf_counter() - t_start:.0f} s; runs in {args.workdir}")

    cli.run_user_facing(run)


if __name__ == "__main__":
    main()
