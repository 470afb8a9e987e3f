"""Mean ± std of every metric over the seed runs of one sweep (``<workdir>/seed_<k>``), from their files.

A seed folder's run is the folder itself, or for a staged model (KuDA) the one sub-folder holding its
``eval_<split>.json`` (the final stage). The spread is the sample standard deviation (``ddof=1``;
``None`` with one seed). Open-intent metrics are named ``open_<metric>``, as `mmfuse_jax.compare` does.

    aggregate.json  {"seeds": [...], "failed": {seed: reason}, "std": "sample (ddof=1)",
                     "splits": {split: {metric: {"mean", "std", "n", "values"}}}}
    aggregate.md    the same as a table (x100; mae and corr as fractions)
"""
from __future__ import annotations

import json
import os
import re
from typing import Any

import numpy as np

from mmfuse_jax.paper_results import format_metric

SEED_DIR = "seed_{}"
STD_KIND = "sample (ddof=1)"
_SEED_RE = re.compile(r"^seed_(-?\d+)$")


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, SEED_DIR.format(seed))


def seed_dirs(parent: str) -> dict[int, str]:
    """``{seed: folder}`` of the ``seed_<k>`` folders directly under ``parent`` (sorted by seed)."""
    if not os.path.isdir(parent):
        return {}
    found = {int(m.group(1)): os.path.join(parent, n) for n in os.listdir(parent)
             if (m := _SEED_RE.match(n)) and os.path.isdir(os.path.join(parent, n))}
    return dict(sorted(found.items()))


def is_seed_dir(path: str) -> bool:
    return bool(_SEED_RE.match(os.path.basename(os.path.normpath(path))))


def evaluated_run(folder: str, split: str = "test") -> str | None:
    """The run folder of a seed: ``folder`` if it holds ``eval_<split>.json``, else its one sub-folder that
    does (a staged model's final stage); None when neither."""
    name = f"eval_{split}.json"
    if os.path.exists(os.path.join(folder, name)):
        return folder
    subs = sorted(d for d in os.listdir(folder) if os.path.exists(os.path.join(folder, d, name))) \
        if os.path.isdir(folder) else []
    return os.path.join(folder, subs[-1]) if subs else None


def read_metrics(run_dir: str, split: str, suffix: str = "") -> dict[str, float] | None:
    """The metrics of ``eval_<split><suffix>.json`` (open-intent ones as ``open_<name>``), or None."""
    path = os.path.join(run_dir, f"eval_{split}{suffix}.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rec = json.load(f)
    return {**rec.get("metrics", {}), **{f"open_{k}": v for k, v in rec.get("open_intent", {}).items()}}


def summarise(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std" (ddof=1, None for n=1), "n", "values"}`` of finite or non-finite floats."""
    arr = np.asarray(values, np.float64)
    std = float(np.std(arr, ddof=1)) if len(arr) > 1 else None
    return {"mean": float(np.mean(arr)), "std": std, "n": len(arr), "values": [float(v) for v in arr]}


def aggregate_metrics(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """``{metric: summarise(values over the seeds that have it)}``, metrics in first-seen order."""
    names: list[str] = []
    for metrics in per_seed.values():
        names += [m for m in metrics if m not in names]
    return {m: summarise([metrics[m] for metrics in per_seed.values() if m in metrics]) for m in names}


def aggregate(parent: str, splits=("dev", "test"), *, failed: dict | None = None,
              suffix: str = "") -> dict[str, Any]:
    """The aggregate of every evaluated ``seed_<k>`` folder under ``parent`` (``suffix``: a perturbation's
    eval files, `mmfuse_jax.perturb.file_suffix`)."""
    out: dict[str, Any] = {"seeds": [], "failed": {str(k): v for k, v in (failed or {}).items()},
                           "std": STD_KIND, "splits": {}}
    for split in splits:
        per_seed = {}
        for seed, folder in seed_dirs(parent).items():
            run = evaluated_run(folder, split)
            metrics = read_metrics(run, split, suffix) if run else None
            if metrics is not None and str(seed) not in out["failed"]:
                per_seed[seed] = metrics
        if per_seed:
            out["splits"][split] = aggregate_metrics(per_seed)
            out["seeds"] = sorted(set(out["seeds"]) | set(per_seed))
    return out


def cell(name: str, summary: dict[str, Any]) -> str:
    """``mean ± std`` as the tables print the metric (just the mean with one seed)."""
    mean = format_metric(name, summary["mean"])
    return mean if summary["std"] is None else f"{mean} ± {format_metric(name, summary['std'])}"


def to_markdown(agg: dict[str, Any], title: str = "") -> str:
    lines = [f"# {title}", ""] if title else []
    lines += [f"Seeds {agg['seeds']} (n = {len(agg['seeds'])}); mean ± std, std = {agg['std']}; "
              "x100, mae and corr as fractions.", ""]
    for split, metrics in agg["splits"].items():
        names = list(metrics)
        lines += [f"## {split}", "", "| " + " | ".join(names) + " |", "|" + "---:|" * len(names),
                  "| " + " | ".join(cell(n, metrics[n]) for n in names) + " |", ""]
    robust = {p: splits["test"] for p, splits in agg.get("perturbations", {}).items() if "test" in splits}
    if robust and "test" in agg["splits"]:
        names = list(agg["splits"]["test"])
        lines += ["## Robustness (test, perturbed at evaluation)", "", "| perturbation | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        for p, metrics in {"none": agg["splits"]["test"], **robust}.items():
            lines.append(f"| {p} | " + " | ".join(cell(n, metrics[n]) if n in metrics else "–" for n in names) + " |")
        lines.append("")
    if agg["failed"]:
        lines += ["## Failed seeds", ""] + [f"- seed {s}: {why}" for s, why in agg["failed"].items()]
    return "\n".join(lines).rstrip() + "\n"


def write(parent: str, agg: dict[str, Any], title: str = "") -> tuple[str, str]:
    """``aggregate.json`` and ``aggregate.md`` under ``parent``; returns their paths."""
    paths = os.path.join(parent, "aggregate.json"), os.path.join(parent, "aggregate.md")
    with open(paths[0], "w") as f:
        json.dump(agg, f, indent=2)
    with open(paths[1], "w") as f:
        f.write(to_markdown(agg, title))
    return paths
