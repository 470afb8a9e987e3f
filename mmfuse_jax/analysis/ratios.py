"""Which modality dominated each prediction: per-sample modality ratios (KuDA).

In ``ratio_mode='paper'`` KuDA weights its modality streams by ``r_m = softmax_m(-k (u_m - y_hat)^2)``
(unimodal prediction u_m against the model's own first-pass prediction). The eval step returns
these ratios as the ``ratio`` output, eval.py saves them in ``predictions_<split>.npz``, and the
column order is the model spec's ``output_labels['ratio']``. `plot_ratios` draws:

* left: every sample's weights as a stacked bar, samples sorted by their dominant modality and
  then by that modality's weight (a wide block of one colour = that modality led many samples);
* right: how many samples each modality dominated, with the mean absolute error of those samples.

python -m mmfuse_jax.analysis.ratios --workdir=runs/kuda_paper/stage2 [--split=test --out=ratios.png]
redraws it from a finished run (no model needed: the saved predictions and config.json).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np

from mmfuse_jax import plots, runfiles
from mmfuse_jax.analysis.common import Section, output_labels

_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")


def dominance(ratio_bm: np.ndarray, modalities: Sequence[str], label_b: np.ndarray | None = None,
              prediction_b: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per modality (column of ``ratio_bm``): the share of samples it dominated (argmax ratio), its
    mean weight, and the mean absolute error of the samples it dominated (given labels and predictions)."""
    r = np.asarray(ratio_bm, np.float64)
    if r.ndim != 2 or r.shape[1] != len(modalities):
        raise ValueError(f"ratios must be [N, {len(modalities)}] (one column per {tuple(modalities)}), "
                         f"got shape {r.shape}")
    top = r.argmax(axis=1)
    err = None
    if label_b is not None and prediction_b is not None:
        err = np.abs(np.asarray(prediction_b, np.float64).reshape(-1) - np.asarray(label_b, np.float64).reshape(-1))
    out = {}
    for i, m in enumerate(modalities):
        won = top == i
        row = {"share": float(won.mean()) if len(r) else 0.0, "mean_weight": float(r[:, i].mean()) if len(r) else 0.0,
               "count": int(won.sum())}
        if err is not None:
            row["mae_when_dominant"] = float(err[won].mean()) if won.any() else float("nan")
        out[m] = row
    return out


def plot_ratios(ratio_bm: np.ndarray, modalities: Sequence[str], path: str, title: str,
                label_b: np.ndarray | None = None, prediction_b: np.ndarray | None = None) -> str:
    """Draw the two panels described in the module docstring to ``path`` (PNG); returns ``path``."""
    r = np.asarray(ratio_bm, np.float64)
    stats = dominance(r, modalities, label_b, prediction_b)
    top = r.argmax(axis=1)
    order = np.lexsort((-r[np.arange(len(r)), top], top))  # by dominant modality, then its weight
    fig = plots.figure(11, 4)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x, bottom = np.arange(len(r)), np.zeros(len(r))
    for i, m in enumerate(modalities):
        ax.bar(x, r[order, i], bottom=bottom, width=1.0, color=_COLOURS[i % len(_COLOURS)], label=m, linewidth=0)
        bottom += r[order, i]
    ax.set_xlim(-0.5, len(r) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sample (sorted by dominant modality)")
    ax.set_ylabel("ratio r_m")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    shares = [100 * stats[m]["share"] for m in modalities]
    bars = bx.bar(list(modalities), shares, color=[_COLOURS[i % len(_COLOURS)] for i in range(len(modalities))])
    for bar, m in zip(bars, modalities):
        note = f"n={stats[m]['count']}"
        if "mae_when_dominant" in stats[m] and stats[m]["count"]:
            note += f"\nMAE {stats[m]['mae_when_dominant']:.3f}"
        bx.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    bx.set_ylim(0, 115)
    bx.set_ylabel("samples it dominated (%)")
    bx.set_title("dominant modality (argmax ratio)", fontsize=10)
    return plots.save(fig, path)


def dominance_table(stats: dict[str, dict[str, float]]) -> str:
    """`dominance` as a markdown table."""
    lines = ["| modality | dominant in | mean weight | MAE when dominant |", "|---|---:|---:|---:|"]
    for m, row in stats.items():
        mae = row.get("mae_when_dominant", float("nan"))
        lines.append(f"| {m} | {100 * row['share']:.1f} % ({row['count']}) | {row['mean_weight']:.3f} | "
                     + ("–" if np.isnan(mae) else f"{mae:.3f}") + " |")
    return "\n".join(lines)


def analysis(run_dir: str, config: dict, preds: dict[str, dict[str, np.ndarray]], out_dir: str) -> list[Section]:
    """The registered analysis ``ratios``: the plot and a table per split whose predictions have ratios."""
    del run_dir
    out = []
    for split, pred in preds.items():
        if "ratio" not in pred:
            continue  # e.g. KuDA in its 'official' ratio mode: no per-sample ratios at evaluation
        modalities = output_labels(config, "ratio", np.shape(pred["ratio"])[-1])
        path = plot_ratios(pred["ratio"], modalities, os.path.join(out_dir, f"ratios_{split}.png"),
                           runfiles.run_title(config, split), pred["label"], pred.get("prediction"))
        stats = dominance(pred["ratio"], modalities, pred["label"], pred.get("prediction"))
        out.append(Section(f"Per-sample modality ratios, {split} (stacked {', '.join(modalities)}; right: "
                           "samples each modality dominated, with their MAE)", path, dominance_table(stats)))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Plot the per-sample modality ratios of a finished run.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="PNG path (default <workdir>/plots/ratios_<split>.png)")
    args = p.parse_args(argv)
    from mmfuse_jax import cli

    def work():
        config = runfiles.read_config(args.workdir)
        pred = runfiles.require_predictions(args.workdir, args.split, "ratio", "per-sample ratios [N, M] (only KuDA "
                                            "with --config.model.ratio_mode=paper computes them at evaluation)")
        modalities = output_labels(config, "ratio", pred["ratio"].shape[-1])
        out = args.out or os.path.join(args.workdir, runfiles.PLOTS_DIR, f"ratios_{args.split}.png")
        plot_ratios(pred["ratio"], modalities, out, runfiles.run_title(config, args.split), pred["label"],
                    pred.get("prediction"))
        for m, row in dominance(pred["ratio"], modalities, pred["label"], pred.get("prediction")).items():
            print(f"{m:>6}: dominant in {100 * row['share']:.1f}% of samples, mean weight {row['mean_weight']:.3f}")
        print(out)

    cli.run_user_facing(work)


if __name__ == "__main__":
    main()
