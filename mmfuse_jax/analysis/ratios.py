"""Which modality dominated each prediction: KuDA's per-sample sentiment ratios.

In ``ratio_mode='paper'`` KuDA weights the text, video and audio streams of every sample by
``r_m = softmax_m(-k (u_m - y_hat)^2)`` (unimodal prediction u_m against the model's own first-pass
prediction). The eval step returns these ratios, eval.py saves them in ``predictions_<split>.npz``
and the run report draws `plot_ratios` from them:

* left: every sample's three weights as a stacked bar, samples sorted by their dominant modality
  and then by that modality's weight (a wide block of one colour = that modality led many samples);
* right: how many samples each modality dominated, with the mean absolute error of those samples.

python -m mmfuse_jax.analysis.ratios --workdir=runs/kuda_paper [--split=test --out=ratios.png]
redraws it from a finished run (no model needed: only the saved predictions).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

MODALITY_ORDER = ("text", "video", "audio")  # mmfuse_jax.models.kuda.MODALITIES (official T, V, A)
_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def dominance(ratio_bm: np.ndarray, label_b: np.ndarray | None = None,
              prediction_b: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    """Per modality: the share of samples it dominated (argmax ratio), its mean weight, and the
    mean absolute error of the samples it dominated (when labels and predictions are given)."""
    r = np.asarray(ratio_bm, np.float64)
    if r.ndim != 2 or r.shape[1] != len(MODALITY_ORDER):
        raise ValueError(f"ratios must be [N, {len(MODALITY_ORDER)}], got shape {r.shape}")
    top = r.argmax(axis=1)
    err = None
    if label_b is not None and prediction_b is not None:
        err = np.abs(np.asarray(prediction_b, np.float64).reshape(-1) - np.asarray(label_b, np.float64).reshape(-1))
    out = {}
    for i, m in enumerate(MODALITY_ORDER):
        won = top == i
        row = {"share": float(won.mean()) if len(r) else 0.0, "mean_weight": float(r[:, i].mean()) if len(r) else 0.0,
               "count": int(won.sum())}
        if err is not None:
            row["mae_when_dominant"] = float(err[won].mean()) if won.any() else float("nan")
        out[m] = row
    return out


def plot_ratios(ratio_bm: np.ndarray, path: str, title: str, label_b: np.ndarray | None = None,
                prediction_b: np.ndarray | None = None) -> str:
    """Draw the two panels described in the module docstring to ``path`` (PNG); returns ``path``."""
    from mmfuse_jax.report import _figure, _save

    r = np.asarray(ratio_bm, np.float64)
    stats = dominance(r, label_b, prediction_b)
    top = r.argmax(axis=1)
    order = np.lexsort((-r[np.arange(len(r)), top], top))  # by dominant modality, then its weight
    fig = _figure(11, 4)
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    x, bottom = np.arange(len(r)), np.zeros(len(r))
    for i, m in enumerate(MODALITY_ORDER):
        ax.bar(x, r[order, i], bottom=bottom, width=1.0, color=_COLOURS[i], label=m, linewidth=0)
        bottom += r[order, i]
    ax.set_xlim(-0.5, len(r) - 0.5)
    ax.set_ylim(0, 1)
    ax.set_xlabel("sample (sorted by dominant modality)")
    ax.set_ylabel("ratio r_m")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    shares = [100 * stats[m]["share"] for m in MODALITY_ORDER]
    bars = bx.bar(MODALITY_ORDER, shares, color=_COLOURS)
    for bar, m in zip(bars, MODALITY_ORDER):
        note = f"n={stats[m]['count']}"
        if "mae_when_dominant" in stats[m] and stats[m]["count"]:
            note += f"\nMAE {stats[m]['mae_when_dominant']:.3f}"
        bx.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
    bx.set_ylim(0, 115)
    bx.set_ylabel("samples it dominated (%)")
    bx.set_title("dominant modality (argmax ratio)")
    return _save(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Plot KuDA's per-sample modality ratios of a finished run.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--out", default=None, help="PNG path (default <workdir>/plots/ratios_<split>.png)")
    args = p.parse_args(argv)
    from mmfuse_jax import cli
    from mmfuse_jax.errors import DataError
    from mmfuse_jax.report import load_predictions

    def run():
        pred = load_predictions(args.workdir, args.split)
        where = os.path.join(args.workdir, f"predictions_{args.split}.npz")
        if pred is None:
            raise DataError(where, None, "the predictions eval.py saves", "no such file: run eval.py first")
        if "ratio" not in pred:
            raise DataError(where, "ratio", "per-sample ratios [N, 3]",
                            "absent: only KuDA with --config.model.ratio_mode=paper computes them at evaluation")
        out = args.out or os.path.join(args.workdir, "plots", f"ratios_{args.split}.png")
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        plot_ratios(pred["ratio"], out, f"KuDA per-sample ratios, {args.split}", pred["label"], pred.get("prediction"))
        for m, row in dominance(pred["ratio"], pred["label"], pred.get("prediction")).items():
            print(f"{m:>6}: dominant in {100 * row['share']:.1f}% of samples, mean weight {row['mean_weight']:.3f}")
        print(out)

    cli.run_user_facing(run)


if __name__ == "__main__":
    main()
