"""Run reports: ``<workdir>/report.md`` with the metrics (beside the paper's when the run is a paper
benchmark), a confusion matrix, per-class F1, learning curves and the analyses the model's spec
declares (`mmfuse_jax.analysis`), as PNG files under ``plots/``.

`after_evaluate` is called once the ``eval_<split>.json`` files are written: it saves what the
report and the `Predictor` need (predictions, DOC thresholds) and writes the report from the run's
files alone (`mmfuse_jax.runfiles`), so ``python -m mmfuse_jax.report --workdir=DIR`` redraws it at
any time. Nothing here names a model: what differs per model comes from its `registry.ModelSpec`.
"""
from __future__ import annotations

import argparse
import json
import os
from typing import Any

import numpy as np

from mmfuse_jax import analysis, ood, plots, runfiles
from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax.analysis.common import Section
from mmfuse_jax.paper_results import comparison_table, format_metric
from mmfuse_jax.training.logging import read_metrics

__all__ = ["after_evaluate", "class_predictions", "format_metric", "write_report"]


def _as_dict(config: Any) -> dict:
    """A resolved config (`ml_collections.ConfigDict` or the dict of ``config.json``) as a dict."""
    return config if isinstance(config, dict) else json.loads(config.to_json_best_effort())


def after_evaluate(run_dir: str, config, preds: dict[str, dict[str, np.ndarray]], *,
                   train: dict[str, np.ndarray] | None = None, checkpoint_step: int | None = None,
                   write: bool = True) -> str:
    """Save each split's predictions, and the DOC thresholds fitted on ``train`` (the training split's
    predictions, open-intent datasets only) for ``checkpoint_step``; then write the report (``write=False``:
    a caller that writes it once more files are in, e.g. perturbed evaluations; returns its path)."""
    config = _as_dict(config)
    for split, pred in preds.items():
        runfiles.save_predictions(run_dir, split, pred)
    if train is not None:
        if checkpoint_step is None:
            raise ValueError("after_evaluate: DOC thresholds need the checkpoint_step they were fitted for")
        scale = runfiles.config_value(config, "dataset.doc_scale")
        scale = 1.0 if scale is None else scale
        ood.save_doc_thresholds(run_dir, ood.fit_doc_thresholds(train["logits"], train["label"], scale),
                                scale=scale, checkpoint_step=checkpoint_step)
    return write_report(run_dir, config) if write else os.path.join(run_dir, "report.md")


# ------------------------------------------------------------------------- labels and predictions

def class_predictions(config: dict, pred: dict[str, np.ndarray], thresholds: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, list[str], str] | None:
    """(y_true, y_pred, names, kind) for single-label classification, None otherwise.

    Open-intent datasets with thresholds: DOC predictions on every row, OOS = the last name (the
    official open-intent table); otherwise argmax on the rows with a known label.
    """
    logits = pred.get("logits")
    if logits is None or logits.ndim != 2:
        return None
    c = logits.shape[1]
    names = runfiles.class_names(config, c)
    _, oos = runfiles.label_names(config)
    label = pred["label"].astype(np.int64)
    if oos is not None and thresholds is not None:
        return label, ood.doc_predict(logits, thresholds, c), names + [oos], "open intent, DOC"
    known = label < c
    return label[known], logits[known].argmax(-1), names, "argmax"


# ------------------------------------------------------------------------- the task's plots

def _classification_plots(config: dict, split: str, classes: tuple, out_dir: str) -> list[Section]:
    y_true, y_pred, names, kind = classes
    title = f"{runfiles.run_title(config, split)} ({kind})"
    cm = metrics_lib.confusion(y_true, y_pred, np.arange(len(names)))
    pc = metrics_lib.per_class(y_true, y_pred)
    return [
        Section(f"Confusion matrix, {split} ({kind}; colour: share of each true class, numbers: counts)",
                plots.confusion_matrix(cm, names, os.path.join(out_dir, f"confusion_{split}.png"), title)),
        Section(f"Per-class F1, {split} ({kind}; classes present in labels or predictions; red: F1 = 0)",
                plots.bars([names[i] for i in pc["labels"]], pc["f1"],
                           os.path.join(out_dir, f"per_class_f1_{split}.png"), title, "F1 (x100)")),
    ]


def _multilabel_plot(config: dict, split: str, pred: dict[str, np.ndarray], out_dir: str) -> list[Section]:
    """One binary decision per head (IEMOCAP: logits [N, H, 2]): weighted F1 of each head."""
    heads = pred["logits"].shape[1]
    per_head = [metrics_lib.per_class(pred["label"][:, h], pred["logits"][:, h].argmax(-1)) for h in range(heads)]
    values = np.asarray([np.average(p["f1"], weights=p["support"]) for p in per_head])
    path = plots.bars(runfiles.class_names(config, heads), values, os.path.join(out_dir, f"per_class_f1_{split}.png"),
                      runfiles.run_title(config, split), "weighted F1 (x100)")
    return [Section(f"Weighted F1 per class, {split} (red: F1 = 0)", path)]


def task_plots(run_dir: str, config: dict, split: str, pred: dict[str, np.ndarray], out_dir: str) -> list[Section]:
    """The plots every model of a task gets: confusion + per-class F1, per-head F1, or prediction vs label."""
    step = runfiles.eval_records(run_dir).get(split, {}).get("checkpoint_step")
    classes = class_predictions(config, pred, ood.load_doc_thresholds(run_dir, step))
    if classes is not None:
        return _classification_plots(config, split, classes, out_dir)
    if "logits" in pred and pred["logits"].ndim == 3:
        return _multilabel_plot(config, split, pred, out_dir)
    if "prediction" in pred:
        path = os.path.join(out_dir, f"regression_{split}.png")
        plots.prediction_scatter(pred["label"], pred["prediction"], path, runfiles.run_title(config, split))
        return [Section(f"Prediction against label, {split}", path)]
    return []


# ------------------------------------------------------------------------- report.md

def _metrics_table(rows: dict[str, dict[str, float]]) -> list[str]:
    names = list(next(iter(rows.values())))
    lines = ["| " + ("perturbation" if "none" in rows else "split") + " | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for split, res in rows.items():
        lines.append(f"| {split} | " + " | ".join(format_metric(n, res.get(n)) for n in names) + " |")
    return lines


def _metrics_section(run_dir: str, config: dict, evals: dict[str, dict]) -> list[str]:
    if not evals:
        return ["No `eval_<split>.json` in the workdir yet: run eval.py."]
    first = next(iter(evals.values()))
    lines = [f"Best checkpoint: step {first.get('checkpoint_step')}; workdir `{os.path.abspath(run_dir)}`.", ""]
    lines += ["## Metrics (x100; mae and corr as fractions)", ""]
    lines += _metrics_table({s: r["metrics"] for s, r in evals.items()})
    open_rows = {s: r["open_intent"] for s, r in evals.items() if "open_intent" in r}
    if open_rows:
        lines += ["", "### Open intent: known intents + out-of-scope, DOC decisions (x100)", ""]
        lines += _metrics_table(open_rows)
    return lines + _robustness(run_dir, evals) + ["", "## The paper's numbers", ""] + comparison_table(config, evals)


def _robustness(run_dir: str, evals: dict[str, dict]) -> list[str]:
    """The test metrics under each evaluation perturbation (eval.py --perturb) beside the clean ones."""
    perturbed = runfiles.perturbed_records(run_dir, "test")
    if not perturbed or "test" not in evals:
        return []
    rows = {"none": evals["test"]["metrics"], **{p: r["metrics"] for p, r in perturbed.items()}}
    lines = ["", "## Robustness: test metrics with inputs perturbed at evaluation (x100; eval.py --perturb)", ""]
    return lines + _metrics_table(rows)


def _sections(run_dir: str, config: dict, evals: dict[str, dict]) -> list[Section]:
    """Learning curves, the task's plots of the reported split (test if evaluated), the model's analyses."""
    out_dir = os.path.join(run_dir, runfiles.PLOTS_DIR)
    out = []
    run_name = os.path.join(*os.path.abspath(run_dir).split(os.sep)[-2:])  # e.g. runs/ef, or <run>/stage2
    curves = plots.learning_curves(read_metrics(run_dir), os.path.join(out_dir, "learning_curves.png"),
                                   f"{runfiles.run_title(config)} (run {run_name})", config.get("early_stop_metric"))
    if curves:
        out.append(Section("Learning curves (metrics.jsonl)", curves))
    split = "test" if "test" in evals else next(iter(evals), None)
    pred = runfiles.load_predictions(run_dir, split) if split else None
    preds = {split: pred} if pred is not None else {}
    if pred is not None:
        out += task_plots(run_dir, config, split, pred, out_dir)
    return out + analysis.run_all(run_dir, config, preds, out_dir)


def _render(run_dir: str, sections: list[Section]) -> list[str]:
    lines = []
    for s in sections:
        lines += [f"**{s.title}**", ""]
        if s.path:
            rel = os.path.relpath(s.path, run_dir)
            lines += [f"![{s.title}]({rel})", ""]
        if s.markdown:
            lines += [s.markdown, ""]
    return lines


def write_report(run_dir: str, config: dict | None = None) -> str:
    """Write ``report.md`` and ``plots/*.png`` from the files in ``run_dir``; returns the report path."""
    config = runfiles.read_config(run_dir) if config is None else _as_dict(config)
    evals = runfiles.eval_records(run_dir)
    lines = [f"# {runfiles.run_title(config)} (preset {config.get('preset')})", ""]
    stale = runfiles.stale_outputs(run_dir)
    lines += [f"> **Stale:** {why}" for why in stale] + ([""] if stale else [])
    lines += _metrics_section(run_dir, config, evals)
    sections = _sections(run_dir, config, evals)
    if sections:
        lines += ["", "## Plots", ""] + _render(run_dir, sections)
    path = os.path.join(run_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Redraw <workdir>/report.md and its plots from the run's files.")
    p.add_argument("--workdir", required=True)
    args = p.parse_args(argv)
    from mmfuse_jax import cli  # defines absl flags: only for the command

    cli.run_user_facing(lambda: print(write_report(args.workdir)))


if __name__ == "__main__":
    main()
