"""Plot primitives for every PNG the project draws (the run report and the analyses).

Figures are built on matplotlib's `Figure` with an Agg canvas, never pyplot, so no global
backend is set (safe inside notebooks) and no figure is left open. Every function writes one PNG
to ``path`` (creating its folder) and returns ``path``.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

DPI = 100
ZERO_BAR = 1.0  # height (in y units) of the stub drawn for a bar whose value is exactly 0


def figure(width: float, height: float):
    """An empty `matplotlib.figure.Figure` of ``width`` x ``height`` inches on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str, *, dpi: int = DPI) -> str:
    """Lay out ``fig`` and write it to ``path`` (PNG); returns ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path


# ------------------------------------------------------------------------- classification

def row_normalise(counts_cc: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its sum (the recall of each true class); rows
    without examples stay 0."""
    counts = np.asarray(counts_cc, np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)


def confusion_matrix(counts_cc: np.ndarray, names: Sequence[str], path: str, title: str) -> str:
    """Confusion matrix [C, C] (rows true, columns predicted) coloured by the row-normalised share
    (recall), so a large class (e.g. out-of-scope) does not wash out the others; each non-empty
    cell shows its count (up to 40 classes)."""
    counts = np.asarray(counts_cc, np.int64)
    share = row_normalise(counts)
    n = len(names)
    size = max(4.0, 0.35 * n + 2)
    fig = figure(size + 1.2, size)
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class (row-normalised)")
    ax.set_xticks(range(n), names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), [f"{name} ({int(s)})" for name, s in zip(names, counts.sum(1))], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (examples)")
    ax.set_title(title, fontsize=10)
    if n <= 40:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=6 if n > 12 else 8,
                    color="white" if share[i, j] > 0.5 else "black")
    return save(fig, path)


def bars(names: Sequence[str], values: np.ndarray, path: str, title: str, ylabel: str,
         *, scale: float = 100.0) -> str:
    """One bar per name, ``values`` x ``scale`` on a 0..scale axis. A value of exactly 0 gets a
    red stub and a "0" label, so a class the model never gets right stands out instead of vanishing."""
    shown = scale * np.asarray(values, np.float64)
    fig = figure(max(5.0, 0.3 * len(names) + 2), 4)
    ax = fig.add_subplot()
    zero = shown == 0
    heights = np.where(zero, ZERO_BAR * scale / 100, shown)
    colours = np.where(zero, "tab:red", "tab:blue")
    ax.bar(range(len(names)), heights, color=list(colours))
    for i in np.nonzero(zero)[0]:
        ax.text(i, heights[i], "0", ha="center", va="bottom", fontsize=7, color="tab:red")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(0, scale * 1.05)
    ax.set_xlabel("class")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f"\n{int(zero.sum())} of {len(names)} at 0 (red)" if zero.any() else ""), fontsize=10)
    return save(fig, path)


def class_scatter(coords_n2: np.ndarray, labels_n: np.ndarray, names: Sequence[str], path: str, title: str,
                  *, xlabel: str, ylabel: str) -> str:
    """2-D points coloured by class; labels >= len(names) (out of scope) are grey crosses."""
    import matplotlib

    labels = np.asarray(labels_n).astype(np.int64)
    if len(names) <= 20:
        colours = [matplotlib.colormaps["tab20"](i) for i in range(len(names))]
    else:  # gist_ncar ends in near-white: stop before it
        colours = [matplotlib.colormaps["gist_ncar"](x) for x in np.linspace(0.0, 0.9, len(names))]
    fig = figure(9, 6.5)
    ax = fig.add_subplot()
    oos = labels >= len(names)
    if oos.any():
        ax.scatter(coords_n2[oos, 0], coords_n2[oos, 1], s=12, c="0.7", marker="x", label="out of scope")
    for c in np.unique(labels[~oos]):
        sel = labels == c
        ax.scatter(coords_n2[sel, 0], coords_n2[sel, 1], s=14, color=colours[int(c)], label=names[int(c)])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return save(fig, path, dpi=120)


# ------------------------------------------------------------------------- regression and curves

def prediction_scatter(label_n: np.ndarray, prediction_n: np.ndarray, path: str, title: str) -> str:
    """Prediction against label with the identity line."""
    label, prediction = np.asarray(label_n).reshape(-1), np.asarray(prediction_n).reshape(-1)
    fig = figure(5, 5)
    ax = fig.add_subplot()
    ax.scatter(label, prediction, s=6, alpha=0.6)
    lo, hi = float(min(label.min(), prediction.min())), float(max(label.max(), prediction.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", lw=1, label="prediction = label")
    ax.set_xlabel("label")
    ax.set_ylabel("prediction")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)


CURVE_METRICS = ("acc", "f1", "weighted_f1", "mae", "corr", "has0_acc_2", "acc_2")


def learning_curves(records: list[dict], path: str, title: str, early_stop_metric: str | None = None) -> str | None:
    """Train loss per log step (left) and up to three dev metrics per evaluation, x100 (right),
    from ``metrics.jsonl`` records; ``title`` (the run) above both. None without records."""
    train = [r for r in records if "train_loss" in r]
    dev = [r for r in records if r.get("split") == "dev"]
    if not train and not dev:
        return None
    fig = figure(10, 4.2)
    ax_loss, ax_dev = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    if train:
        ax_loss.plot([r["step"] for r in train], [r["train_loss"] for r in train], label="train loss")
    else:
        ax_loss.text(0.5, 0.5, "no train log records\n(config.log_every > steps per epoch)", ha="center",
                     va="center", transform=ax_loss.transAxes)
    ax_loss.set_xlabel("training step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("train loss (mean over each log window)", fontsize=10)
    names = [early_stop_metric] if early_stop_metric else []
    names += [m for m in CURVE_METRICS if m not in names]
    shown = [m for m in names if dev and m in dev[0]][:3]
    for m in shown:
        ax_dev.plot([r["step"] for r in dev], [100 * r[m] for r in dev], marker="o", label=f"dev {m}")
    if train and "train_acc" in train[0]:
        ax_dev.plot([r["step"] for r in train], [100 * r["train_acc"] for r in train], alpha=0.5, label="train acc")
    ax_dev.set_xlabel("training step")
    ax_dev.set_ylabel("metric (x100)")
    ax_dev.set_title("dev metrics per evaluation" + (f" (early stop: {early_stop_metric})"
                                                     if early_stop_metric else ""), fontsize=10)
    if ax_dev.lines:
        ax_dev.legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    return save(fig, path)
