"""Compare runs: python -m mmfuse_jax.compare runs/* [--split=test] [--metrics=acc,f1] [--out=table.md].

The ``seed_<k>`` folders of one seed sweep (train.py --seeds; given as the sweep folder or as the seed
folders themselves) make one row: each metric as mean ± sample std (ddof=1) over the evaluated seeds.

One row per run folder (one with ``config.json``): model, dataset, the key metrics of
``eval_<split>.json`` (x100; ``mae`` and ``corr`` as they are, as the papers print them; open-intent
metrics prefixed ``open_``), the parameter count (of the best checkpoint's arrays, read through
`training.checkpoint.read_checkpoint`) and the median time of a train step (``batch_size / examples_per_sec`` of the
``metrics.jsonl`` log records). Printed as an aligned table; ``--out`` writes it as markdown.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from mmfuse_jax import aggregate, runfiles
from mmfuse_jax.paper_results import format_metric

# Which metrics a row shows by default, in this order (those that any run has).
KEY_METRICS = ("acc", "f1", "weighted_f1", "has0_acc_2", "non0_acc_2", "non0_f1_2", "acc_2", "f1_2", "acc_5",
               "acc_7", "binary_f1", "mae", "corr", "open_acc", "open_f1", "open_f1_known", "open_f1_oos")


def count_params(workdir: str) -> int | None:
    """Parameters of the newest best checkpoint (the sizes of its arrays); None without one."""
    import math

    from mmfuse_jax.errors import DataError
    from mmfuse_jax.training.checkpoint import checkpoint_steps, read_checkpoint

    if not checkpoint_steps(workdir, "best"):
        return None
    try:
        params, _ = read_checkpoint(workdir, "best")
    except DataError as e:  # an unreadable checkpoint leaves the cell empty, not the table
        print(f"warning: {e}", file=sys.stderr)
        return None
    import jax

    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def step_time(records: list[dict], batch_size: int) -> float | None:
    """Median seconds per train step over the log records (compilation lands in one record only)."""
    import numpy as np

    times = [batch_size / r["examples_per_sec"] for r in records if r.get("examples_per_sec")]
    return float(np.median(times)) if times else None


def run_row(workdir: str, split: str = "test") -> dict[str, Any] | None:
    """The row of one run folder, or None when it has no config.json."""
    from mmfuse_jax.training.logging import read_metrics

    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        config = json.load(f)
    row: dict[str, Any] = {"run": os.path.basename(os.path.normpath(workdir)), "model": config.get("model_name"),
                           "dataset": config.get("dataset", {}).get("name"), "metrics": {}}
    eval_path = os.path.join(workdir, f"eval_{split}.json")
    if os.path.exists(eval_path):
        with open(eval_path) as f:
            rec = json.load(f)
        row["metrics"] = {**rec.get("metrics", {}), **{f"open_{k}": v for k, v in rec.get("open_intent", {}).items()}}
    row["stale"] = bool(runfiles.stale_outputs(workdir))
    row["params"] = count_params(workdir)
    row["step_s"] = step_time(read_metrics(workdir), int(config.get("batch_size", 0) or 0))
    return row


def table(rows: list[dict], metrics: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the comparison; ``metrics`` None = the `KEY_METRICS` any row has."""
    if metrics is None:
        present = {m for r in rows for m in r["metrics"]}
        metrics = [m for m in KEY_METRICS if m in present] or sorted(present)
    header = ["run", "model", "dataset", *metrics, "params", "ms/step"]
    # A run whose eval files no longer match its best checkpoint or config is marked (run eval.py again).
    cells = [[r["run"] + (" (stale)" if r.get("stale") else ""), str(r["model"]), str(r["dataset"]),
              *(_metric_cell(r, m) for m in metrics),
              f"{r['params']:,}" if r["params"] is not None else "–",
              f"{1000 * r['step_s']:.1f}" if r["step_s"] is not None else "–"] for r in rows]
    return header, cells


def _metric_cell(row: dict, name: str) -> str:
    std = row.get("metrics_std", {}).get(name)
    mean = format_metric(name, row["metrics"].get(name))
    return mean if std is None else f"{mean} ± {format_metric(name, std)}"


def seed_group_row(parent: str, split: str = "test") -> dict[str, Any] | None:
    """One row for the seed folders under ``parent`` (mean ± std of each metric), or None without any."""
    import numpy as np

    rows = []
    for folder in aggregate.seed_dirs(parent).values():
        run = aggregate.evaluated_run(folder, split)
        row = run_row(run, split) if run else None
        if row is not None and row["metrics"]:
            rows.append(row)
    if not rows:
        return None
    summary = aggregate.aggregate_metrics({i: r["metrics"] for i, r in enumerate(rows)})
    times = [r["step_s"] for r in rows if r["step_s"] is not None]
    return {"run": f"{os.path.basename(os.path.normpath(parent))} ({len(rows)} seeds)", "model": rows[0]["model"],
            "dataset": rows[0]["dataset"], "metrics": {m: v["mean"] for m, v in summary.items()},
            "metrics_std": {m: v["std"] for m, v in summary.items()}, "stale": any(r["stale"] for r in rows),
            "params": rows[0]["params"], "step_s": float(np.median(times)) if times else None}


def _expand(workdirs: list[str]) -> list[tuple[str, bool]]:
    """``[(folder, is a seed group)]``: seed folders of one parent become their parent, once."""
    out: list[tuple[str, bool]] = []
    for w in workdirs:
        item = (os.path.dirname(os.path.normpath(w)), True) if aggregate.is_seed_dir(w) else \
            (w, not os.path.exists(os.path.join(w, "config.json")) and bool(aggregate.seed_dirs(w)))
        if item not in out:
            out.append(item)
    return out


def to_markdown(header: list[str], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    return "\n".join(lines) + "\n"


def to_text(header: list[str], cells: list[list[str]]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *cells)]

    def fmt(row: list[str]) -> str:
        return "  ".join(x.ljust(w) if i < 3 else x.rjust(w) for i, (x, w) in enumerate(zip(row, widths)))

    return "\n".join([fmt(header), *map(fmt, cells)]) + "\n"


def compare(workdirs: list[str], *, split: str = "test", metrics: list[str] | None = None
            ) -> tuple[list[str], list[list[str]]]:
    rows = []
    for w, group in _expand(workdirs):
        row = seed_group_row(w, split) if group else run_row(w, split)
        if row is None:
            print(f"skipping {w}: no config.json (not a run folder)", file=sys.stderr)
        else:
            rows.append(row)
    if not rows:
        from mmfuse_jax.errors import ConfigError

        raise ConfigError(f"no run folders (with config.json) among {workdirs}")
    return table(rows, metrics)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m mmfuse_jax.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("workdirs", nargs="+", help="run folders")
    p.add_argument("--split", default="test", help="which eval_<split>.json to read (default test)")
    p.add_argument("--metrics", default="", help=f"comma-separated metric names (default: those of {KEY_METRICS})")
    p.add_argument("--out", default="", help="also write the table as markdown to this file")
    args = p.parse_args(argv)
    from mmfuse_jax import cli

    def run():
        metrics = [m for m in args.metrics.split(",") if m] or None
        header, cells = compare(args.workdirs, split=args.split, metrics=metrics)
        print(f"{args.split} metrics (x100; mae and corr as fractions)")
        print(to_text(header, cells), end="")
        if args.out:
            with open(args.out, "w") as f:
                f.write(f"{args.split} metrics (x100; mae and corr as fractions)\n\n" + to_markdown(header, cells))
            print(f"markdown table -> {args.out}")

    cli.run_user_facing(run)


if __name__ == "__main__":
    main()
