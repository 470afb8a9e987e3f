"""Table helpers the experiment modules share."""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.experiments import Results, Run, Table

REGRESSION = ("mae", "corr", "acc_2", "f1_2")   # KuDA's synthetic/SIMS metric set (metrics.SCORERS 'sims')
CLASSIFICATION = ("acc", "f1", "weighted_f1")
OPEN_INTENT = ("open_acc", "open_f1", "open_f1_known", "open_f1_oos")  # DOC decisions incl. OOS (MIntRec2.0)
# The intent experiments' two layouts: experiment preset -> its MIntRec2.0 config preset, and the
# (layout, presets) pairs their runs loop over; one table shows both (in-scope acc/f1, open-intent F1s).
MINTREC2 = {"demo": "demo_mintrec2", "tiny": "tiny_mintrec2", "mintrec": "mintrec2"}
INTENT_LAYOUTS = (("mintrec", {}), ("mintrec2", MINTREC2))
INTENT_METRICS = ["acc", "f1", "open_f1", "open_f1_oos"]
INTENT_NOTE = ("mintrec2 rows: acc/f1 on the in-scope test rows; open_f1 / open_f1_oos: DOC decisions over known "
               "intents + OOS (thresholds fitted on the training split)")


def metrics_of(results: Results, name: str, wanted: tuple[str, ...]) -> list[str]:
    """The metrics of ``wanted`` that run ``name`` has on test (regression sets differ per dataset); if it has
    none (it failed, or ``--runs`` left it out), those of the first run that has some."""
    for n in [name, *results.names]:
        have = results[n].aggregate.get("splits", {}).get("test", {})
        if have:
            return [m for m in wanted if m in have] or sorted(have)[:4]
    return []


def layout_runs(model: str, field: str, values: tuple[str, ...]) -> list[Run]:
    """``<layout>_<value>``: ``model`` with config ``field`` at each value, on both intent layouts."""
    return [Run(f"{data}_{v}", model, {field: v}, presets=presets) for data, presets in INTENT_LAYOUTS for v in values]


def layout_table(results: Results, values: tuple[str, ...], metrics: dict[str, str], says: str) -> Table:
    """`metric_table` of `layout_runs` with, per layout, ``values[0]`` minus ``values[1]`` on its metric
    (``metrics``: layout -> metric; ``says``: what a positive difference means) and `INTENT_NOTE`."""
    t = metric_table(results, INTENT_METRICS, plot_metric="acc")
    notes = []
    for data, metric in metrics.items():
        first, second = (results[f"{data}_{v}"].mean(metric) for v in values[:2])
        if None not in (first, second):
            notes.append(f"{data}: test {metric} {values[0]} minus {values[1]} {100 * (first - second):+.2f} "
                         f"points (positive: {says})")
    t.notes = notes + [INTENT_NOTE]
    return t


def metric_table(results: Results, metrics: list[str], *, label=lambda n: n, extra=None,
                 plot_metric: str | None = None, names: list[str] | None = None) -> Table:
    """One row per run: ``label(name)``, each metric's mean ± std on test, ``extra(name) -> [cells]``."""
    names = names or results.names
    extra_header = extra(None) if extra else []
    rows = [[label(n), *(results[n].cell(m) for m in metrics), *(extra(n) if extra else [])] for n in names]
    table = Table(["run", *metrics, *extra_header], rows)
    if plot_metric:
        table.plot = bar_data(results, names, plot_metric, label)
    return table


def bar_data(results: Results, names: list[str], metric: str, label=lambda n: n, perturbation: str = "") -> dict:
    summaries = [results[n].summary(metric, perturbation=perturbation) for n in names]
    scale = 1.0 if metric.removeprefix("open_") in ("mae", "corr") else 100.0
    return {"labels": [label(n) for n in names],
            "means": [None if s is None else scale * s["mean"] for s in summaries],
            "stds": [None if s is None or s["std"] is None else scale * s["std"] for s in summaries],
            "ylabel": f"test {metric}" + (" (x100)" if scale == 100 else "")}


def gate_probabilities(run_dirs: dict[int, str]) -> dict[int, np.ndarray]:
    """softmax(gate_logits) of each seed's best checkpoint (HCT-DMG's modality gate), by seed."""
    from mmfuse_jax.analysis.gates import gate_logits
    from mmfuse_jax.training.checkpoint import read_checkpoint

    out = {}
    for seed, run_dir in run_dirs.items():
        params, _ = read_checkpoint(run_dir, "best")
        logits = gate_logits(params, os.path.join(run_dir, "best"))
        p = np.exp(logits - logits.max())
        out[seed] = p / p.sum()
    return out


def mean_std_cell(values: list[float], scale: float = 1.0, digits: int = 3) -> str:
    if not values:
        return "–"
    v = np.asarray(values, float) * scale
    return f"{v.mean():.{digits}f}" + (f" ± {v.std(ddof=1):.{digits}f}" if len(v) > 1 else "")


def split_keys(config, split: str = "test") -> list[str]:
    """The example ids of ``split`` in the order evaluation predicts them (the prepared source's order:
    ``predictions_<split>.npz`` row i is example ``split_keys(...)[i]``)."""
    from mmfuse_jax.data import pipeline

    source = pipeline.Prepared.open(config.dataset).source(split)
    keys = [source[i]["key"] for i in range(len(source))]
    return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
