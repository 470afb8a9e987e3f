"""Run reports: ``<workdir>/report.md`` with the metrics (beside the paper's when the run is a paper
benchmark), a confusion matrix, per-class F1, learning curves and the models' analysis plots
(embedding PCA, HCT-DMG's gate, KuDA's ratios) as PNG files (matplotlib, Agg).

`after_evaluate` is called by `loop.evaluate` once the ``eval_<split>.json`` files are written. It
keeps what the report and the `Predictor` need and writes the report from the files alone, so
``python -m mmfuse_jax.report --workdir=DIR`` redraws it at any time:

    config.json, metrics.jsonl, eval_<split>.json     written by the loop
    predictions_<split>.npz    ``logits`` [N, C] (or [N, H, 2], or ``prediction`` [N]), ``label``, and
                               ``embedding`` (float16; PCA plot), KuDA's ``ratio`` where the model has them
    doc_thresholds.json        open-intent datasets: the DOC thresholds fitted on the training split
    report.md, plots/*.png     this module
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

import numpy as np

from mmfuse_jax import metrics as metrics_lib
from mmfuse_jax import ood

PLOTS = "plots"
DOC_FILE = "doc_thresholds.json"
RAW = ("mae", "corr")  # printed as fractions, as the papers do; every other metric x100


def format_metric(name: str, value: float | None) -> str:
    """``value`` as the tables print it: x100 with 2 decimals, or 3 decimals for mae and corr."""
    if value is None:
        return "–"
    return f"{value:.3f}" if name.removeprefix("open_") in RAW else f"{100 * value:.2f}"


# ------------------------------------------------------------------------- the papers' numbers

@dataclasses.dataclass(frozen=True)
class PaperResult:
    """Numbers a paper reports for (model, dataset), as printed (x100 but mae/corr), named as our
    metrics; ``table``: which of our rows they compare with (``test`` or ``test (open intent)``)."""

    model: str
    dataset: str
    table: str
    metrics: dict
    source: str
    when: tuple = ()   # (config path, value) pairs that must hold, e.g. an ablation switch


# From the paper summaries and REFERENCE_NOTES in shared/papers (only numbers stated there).
PAPER_RESULTS = (
    PaperResult("mvcl_daf", "mintrec", "test",
                {"acc": 76.18, "weighted_f1": 75.66, "weighted_prec": 76.17, "rec": 74.39},
                "MVCL-DAF++ (arXiv 2509.17446), MIntRec results"),
    PaperResult("mvcl_daf", "mintrec2", "test", {"acc": 60.40, "weighted_f1": 59.23},
                "MVCL-DAF++ (arXiv 2509.17446), MIntRec2.0 results"),
    PaperResult("mag_bert", "mintrec", "test", {"acc": 72.65, "f1": 68.64},
                "MIntRec baseline MAG-BERT (thuiar/MIntRec), as quoted in REFERENCE_NOTES"),
    PaperResult("mult", "mintrec", "test", {"acc": 72.52, "f1": 69.25},
                "MIntRec baseline MulT (thuiar/MIntRec), as quoted in REFERENCE_NOTES"),
    PaperResult("dyken_hyena", "mintrec2", "test (open intent)", {"f1_oos": 22.73},
                "DyKen-Hyena (arXiv 2509.09940), ablation table, full model",
                (("model.dynamic_short_conv", True),)),
    PaperResult("dyken_hyena", "mintrec2", "test (open intent)", {"f1_oos": 0.0},
                "DyKen-Hyena (arXiv 2509.09940), ablation table, w/o dynamic short conv",
                (("model.dynamic_short_conv", False),)),
)


def _get(config: dict, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(config, dict) or part not in config:
            return None
        config = config[part]
    return config


def paper_results(config: dict) -> list[PaperResult]:
    """The `PAPER_RESULTS` entries that match ``config`` (a resolved config as a dict)."""
    model, dataset = config.get("model_name"), _get(config, "dataset.name")
    return [p for p in PAPER_RESULTS if p.model == model and p.dataset == dataset
            and all(_get(config, k) == v for k, v in p.when)]


# ------------------------------------------------------------------------- files in the workdir

def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def save_predictions(workdir: str, split: str, pred: dict[str, np.ndarray]) -> str:
    """``predictions_<split>.npz``: every output (embeddings in float16, for the PCA plot) and the labels."""
    path = os.path.join(workdir, f"predictions_{split}.npz")
    np.savez(path, **{k: np.asarray(v, np.float16) if k == "embedding" else np.asarray(v) for k, v in pred.items()})
    return path


def load_predictions(workdir: str, split: str) -> dict[str, np.ndarray] | None:
    path = os.path.join(workdir, f"predictions_{split}.npz")
    if not os.path.exists(path):
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save_doc_thresholds(workdir: str, thresholds: np.ndarray, *, scale: float, checkpoint_step: int) -> str:
    """``doc_thresholds.json``: per-class DOC thresholds of the best checkpoint (see `mmfuse_jax.ood`)."""
    path = os.path.join(workdir, DOC_FILE)
    with open(path, "w") as f:
        json.dump({"checkpoint_step": int(checkpoint_step), "scale": float(scale),
                   "thresholds": [float(t) for t in thresholds]}, f, indent=2)
    return path


def load_doc_thresholds(workdir: str, checkpoint_step: int | None = None) -> np.ndarray | None:
    """The saved thresholds, or None when absent or fitted for another checkpoint step."""
    path = os.path.join(workdir, DOC_FILE)
    if not os.path.exists(path):
        return None
    rec = _read_json(path)
    if checkpoint_step is not None and rec.get("checkpoint_step") != checkpoint_step:
        return None
    return np.asarray(rec["thresholds"], np.float64)


def fit_doc_thresholds(train: dict[str, np.ndarray], scale: float) -> np.ndarray:
    """DOC thresholds from the training split's logits and labels (as `ood.open_intent_scores`)."""
    return ood.doc_thresholds(ood.doc_sigma(train["logits"], train["label"]), scale)


def after_evaluate(workdir: str, config, preds: dict[str, dict[str, np.ndarray]], *,
                   train: dict[str, np.ndarray] | None, checkpoint_step: int) -> str:
    """Save the predictions (and DOC thresholds when ``train`` is given), write the report."""
    for split, pred in preds.items():
        save_predictions(workdir, split, pred)
    if train is not None:
        save_doc_thresholds(workdir, fit_doc_thresholds(train, config.dataset.get("doc_scale", 1.0)),
                            scale=config.dataset.get("doc_scale", 1.0), checkpoint_step=checkpoint_step)
    return write_report(workdir, json.loads(config.to_json_best_effort()))


# ------------------------------------------------------------------------- labels and predictions

def label_names(config: dict) -> tuple[list[str], str | None]:
    """Class names of the dataset format and the out-of-scope name (None without OOS)."""
    from mmfuse_jax.data.formats import FORMATS

    fmt = FORMATS.get(_get(config, "dataset.format"))
    names = list(getattr(fmt, "LABELS", ()))
    oos = getattr(fmt, "OOS_NAME", "OOS") if _get(config, "dataset.oos_label") is not None else None
    return names, oos


def class_predictions(config: dict, pred: dict[str, np.ndarray], thresholds: np.ndarray | None
                      ) -> tuple[np.ndarray, np.ndarray, list[str], str] | None:
    """(y_true, y_pred, names, kind) for single-label classification, None otherwise.

    Open-intent datasets with thresholds: DOC predictions on every row, OOS = the last name (the
    official open-intent table); otherwise argmax on the rows with a known label.
    """
    logits = pred.get("logits")
    if logits is None or logits.ndim != 2:
        return None
    names, oos = label_names(config)
    c = logits.shape[1]
    names = names[:c] if len(names) >= c else [str(i) for i in range(c)]
    label = pred["label"].astype(np.int64)
    if oos is not None and thresholds is not None:
        return label, ood.doc_predict(logits, thresholds, c), names + [oos], "open intent, DOC"
    known = label < c
    return label[known], logits[known].argmax(-1), names, "argmax"


# ------------------------------------------------------------------------- plots

def _figure(width: float, height: float):
    # Figure + Agg canvas directly: no pyplot, so no global backend is set (safe in notebooks).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path)
    return path


def plot_confusion(cm: np.ndarray, names: list[str], path: str, title: str) -> str:
    """Counts [C, C] (rows true, columns predicted) as an image with the counts written in."""
    n = len(names)
    size = max(4.0, 0.35 * n + 2)
    fig = _figure(size + 1, size)
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 32:
        top = cm.max() if cm.size else 0
        for i, j in zip(*np.nonzero(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if cm[i, j] > top / 2 else "black")
    return _save(fig, path)


def plot_bars(names: list[str], values: np.ndarray, path: str, title: str, ylabel: str) -> str:
    fig = _figure(max(5.0, 0.3 * len(names) + 2), 4)
    ax = fig.add_subplot()
    ax.bar(range(len(names)), 100 * np.asarray(values), color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)


def plot_regression(label: np.ndarray, prediction: np.ndarray, path: str, title: str) -> str:
    fig = _figure(5, 5)
    ax = fig.add_subplot()
    ax.scatter(label, prediction, s=6, alpha=0.6)
    lo, hi = float(min(label.min(), prediction.min())), float(max(label.max(), prediction.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1)
    ax.set_xlabel("label")
    ax.set_ylabel("prediction")
    ax.set_title(title)
    return _save(fig, path)


_CURVE_METRICS = ("acc", "f1", "weighted_f1", "mae", "corr", "has0_acc_2", "acc_2")


def plot_learning_curves(records: list[dict], path: str, early_stop_metric: str | None) -> str | None:
    """Train loss per log step (left) and dev metrics per epoch, x100 (right); None without records."""
    train = [r for r in records if "train_loss" in r]
    dev = [r for r in records if r.get("split") == "dev"]
    if not train and not dev:
        return None
    fig = _figure(10, 4)
    ax_loss, ax_dev = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if train:
        ax_loss.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss")
    else:
        ax_loss.text(0.5, 0.5, "no train log records\n(config.log_every > steps per epoch)", ha="center",
                     va="center", transform=ax_loss.transAxes)
    ax_loss.set_xlabel("step")
    ax_loss.set_title("train loss")
    names = [early_stop_metric] if early_stop_metric else []
    names += [m for m in _CURVE_METRICS if m not in names]
    shown = [m for m in names if dev and m in dev[0]][:3]
    for m in shown:
        ax_dev.plot([r["step"] for r in dev], [100 * r[m] for r in dev], marker="o", label=f"dev {m}")
    if train and "train_acc" in train[0]:
        ax_dev.plot([r["step"] for r in train], [100 * r["train_acc"] for r in train], alpha=0.5,
                    label="train acc")
    ax_dev.set_xlabel("step")
    ax_dev.set_title("metrics (x100)")
    if shown or train:
        ax_dev.legend(fontsize=8)
    return _save(fig, path)


# ------------------------------------------------------------------------- the report

def _metrics_table(rows: dict[str, dict[str, float]]) -> list[str]:
    names = list(next(iter(rows.values())))
    lines = ["| split | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for split, res in rows.items():
        lines.append(f"| {split} | " + " | ".join(format_metric(n, res.get(n)) for n in names) + " |")
    return lines


def _eval_records(workdir: str) -> dict[str, dict]:
    out = {}
    for split in ("train", "dev", "test"):
        path = os.path.join(workdir, f"eval_{split}.json")
        if os.path.exists(path):
            out[split] = _read_json(path)
    return out


def _paper_section(config: dict, evals: dict[str, dict]) -> list[str]:
    found = paper_results(config)
    if not found:
        return ["No paper numbers for this model and dataset (not one of the papers' benchmark presets)."]
    lines = ["| metric | paper | ours | ours − paper |", "|---|---:|---:|---:|"]
    for p in found:
        split, _, table = p.table.partition(" (")
        rec = evals.get(split, {})
        ours = rec.get("open_intent" if table else "metrics", {})
        for name, value in p.metrics.items():
            scale = 1 if name in RAW else 100
            mine = scale * ours[name] if name in ours else None
            lines.append(f"| {name} ({p.table}) | {value:.2f} | " +
                         (f"{mine:.2f} | {mine - value:+.2f} |" if mine is not None else "– | – |"))
    lines += [""] + [f"Source: {p.source}." for p in found]
    return lines


def _plots(workdir: str, config: dict, split: str) -> list[tuple[str, str]]:
    """Draw the plots of ``split``'s predictions; returns (caption, relative path) pairs."""
    pred = load_predictions(workdir, split)
    if pred is None:
        return []
    out, plots = [], os.path.join(workdir, PLOTS)
    model, dataset = config.get("model_name"), _get(config, "dataset.name")
    step = _eval_records(workdir).get(split, {}).get("checkpoint_step")
    classes = class_predictions(config, pred, load_doc_thresholds(workdir, step))
    if classes is not None:
        y_true, y_pred, names, kind = classes
        ids = np.arange(len(names))
        cm = metrics_lib.confusion(y_true, y_pred, ids)
        title = f"{model} on {dataset}, {split} ({kind})"
        out.append((f"Confusion matrix, {split} ({kind})",
                    plot_confusion(cm, names, os.path.join(plots, f"confusion_{split}.png"), title)))
        pc = metrics_lib.per_class(y_true, y_pred)
        out.append((f"Per-class F1, {split} ({kind}; classes present in labels or predictions)",
                    plot_bars([names[i] for i in pc["labels"]], pc["f1"],
                              os.path.join(plots, f"per_class_f1_{split}.png"), title, "F1 (x100)")))
    elif "logits" in pred and pred["logits"].ndim == 3:  # one binary decision per head (IEMOCAP)
        names, _ = label_names(config)
        heads = pred["logits"].shape[1]
        names = names[:heads] if len(names) >= heads else [str(i) for i in range(heads)]
        f1 = [metrics_lib.per_class(pred["label"][:, h], pred["logits"][:, h].argmax(-1)) for h in range(heads)]
        values = [float(np.average(p["f1"], weights=p["support"])) for p in f1]
        out.append((f"Weighted F1 per class, {split}",
                    plot_bars(names, np.asarray(values), os.path.join(plots, f"per_class_f1_{split}.png"),
                              f"{model} on {dataset}, {split}", "weighted F1 (x100)")))
    elif "prediction" in pred:
        out.append((f"Prediction against label, {split}",
                    plot_regression(pred["label"].reshape(-1), pred["prediction"].reshape(-1),
                                    os.path.join(plots, f"regression_{split}.png"),
                                    f"{model} on {dataset}, {split}")))
    out += _analysis_plots(workdir, config, split, pred, plots)
    if "ratio" in pred:  # KuDA 'paper' mode: which modality dominated each sample
        from mmfuse_jax.analysis.ratios import plot_ratios

        caption = (f"Per-sample modality ratios, {split} (stacked r_text, r_video, r_audio; right: samples "
                   f"each modality dominated, with their MAE)")
        out.append((caption,
                    plot_ratios(pred["ratio"], os.path.join(plots, f"ratios_{split}.png"),
                                f"{model} on {dataset}, {split}", pred["label"], pred.get("prediction"))))
    return [(caption, os.path.relpath(path, workdir)) for caption, path in out]


def _analysis_plots(workdir: str, config: dict, split: str, pred: dict, plots: str) -> list[tuple[str, str]]:
    """A PCA of the embeddings coloured by class, for classifiers that return one (the model issues'
    analysis plot, e.g. MVCL-DAF++ with and without its prototype loss)."""
    out = []
    model, dataset = config.get("model_name"), _get(config, "dataset.name")
    if "embedding" in pred and "logits" in pred and pred["logits"].ndim == 2 and len(pred["label"]) > 2:
        from mmfuse_jax.analysis import embeddings

        emb = np.asarray(pred["embedding"], np.float32).reshape(len(pred["label"]), -1)
        labels = np.asarray(pred["label"]).astype(np.int64).reshape(-1)
        names, _ = label_names(config)
        names = names if len(names) >= pred["logits"].shape[1] else [str(i) for i in range(pred["logits"].shape[1])]
        known = labels < len(names)
        sep = embeddings.class_separation(emb[known], labels[known]) if known.any() else float("nan")
        coords, ratio = embeddings.pca_2d(emb)
        path = embeddings.plot(coords, labels, tuple(names[:pred["logits"].shape[1]]), ratio,
                               os.path.join(plots, f"embeddings_{split}.png"),
                               f"{model} on {dataset}, {split}: PCA of the embeddings (class separation {sep:.3f})")
        out.append((f"Embeddings, {split}: PCA coloured by class; tr(S_between)/tr(S_within) = {sep:.3f}", path))
    return out


def _training_plots(workdir: str, config: dict) -> list[tuple[str, str]]:
    """Plots drawn from the checkpoints alone (no evaluation needed): HCT-DMG's gate across training."""
    if config.get("model_name") != "hct_dmg" or not os.path.isdir(os.path.join(workdir, "checkpoints")):
        return []
    from mmfuse_jax.models import hct_dmg_gates

    history = hct_dmg_gates.gate_history(workdir)
    if not history:
        return []
    path = hct_dmg_gates.plot_gates(history, os.path.join(workdir, PLOTS, "gates.png"))
    return [("Modality gate across training (softmax(gate) per saved checkpoint; letters: primary modality)",
             os.path.relpath(path, workdir))]


def write_report(workdir: str, config: dict | None = None) -> str:
    """Write ``report.md`` and ``plots/*.png`` from the files in ``workdir``; returns the report path."""
    from mmfuse_jax.training.logging import read_metrics

    if config is None:
        config = _read_json(os.path.join(workdir, "config.json"))
    os.makedirs(os.path.join(workdir, PLOTS), exist_ok=True)
    evals = _eval_records(workdir)
    model, dataset = config.get("model_name"), _get(config, "dataset.name")
    lines = [f"# {model} on {dataset} (preset {config.get('preset')})", ""]
    if evals:
        first = next(iter(evals.values()))
        lines += [f"Best checkpoint: step {first.get('checkpoint_step')}; workdir `{os.path.abspath(workdir)}`.", ""]
        lines += ["## Metrics (x100; mae and corr as fractions)", ""] + _metrics_table({s: r["metrics"] for s, r in evals.items()})
        open_rows = {s: r["open_intent"] for s, r in evals.items() if "open_intent" in r}
        if open_rows:
            lines += ["", "### Open intent: known intents + out-of-scope, DOC decisions (x100)", ""]
            lines += _metrics_table(open_rows)
        lines += ["", "## The paper's numbers", ""] + _paper_section(config, evals)
    else:
        lines += ["No `eval_<split>.json` in the workdir yet: run eval.py."]
    figures = []
    curves = plot_learning_curves(read_metrics(workdir), os.path.join(workdir, PLOTS, "learning_curves.png"),
                                  config.get("early_stop_metric"))
    if curves:
        figures.append(("Learning curves (metrics.jsonl)", os.path.relpath(curves, workdir)))
    figures += _training_plots(workdir, config)
    split = "test" if "test" in evals else next(iter(evals), None)
    if split is not None:
        figures += _plots(workdir, config, split)
    if figures:
        lines += ["", "## Plots", ""]
        for caption, rel in figures:
            lines += [f"**{caption}**", "", f"![{caption}]({rel})", ""]
    path = os.path.join(workdir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Redraw <workdir>/report.md and its plots from the run's files.")
    p.add_argument("--workdir", required=True)
    args = p.parse_args(argv)
    from mmfuse_jax import cli

    cli.run_user_facing(lambda: print(write_report(args.workdir)))


if __name__ == "__main__":
    main()
