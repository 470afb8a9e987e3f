"""PCA scatter of a run's embeddings, coloured by class.

python -m mmfuse_jax.analysis.embeddings --workdir=runs/mvcl [--split=test --out=plot.png]

Reads the ``embedding`` output eval.py saved in ``predictions_<split>.npz`` and plots every example
on the first two principal components (numpy SVD of the centred embeddings), coloured by class;
out-of-scope rows (label >= number of classes) are grey. Works for any classifier that returns an
``embedding``. The title gives the class separation of the full embeddings, trace(S_between) /
trace(S_within) over the in-scope rows (higher = tighter, further-apart classes): the number to
compare two runs, e.g. MVCL-DAF++ with and without its prototype loss (train a second run with
``--config.model.prototype_weight=0``, evaluate it and plot it the same way).
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from mmfuse_jax import plots, runfiles
from mmfuse_jax.analysis.common import Section


def pca_2d(x_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates [N, 2] on the first two principal components and their explained-variance ratios."""
    x = np.asarray(x_nd, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    coords = np.zeros((len(x), 2))
    k = min(2, vt.shape[0])
    coords[:, :k] = x @ vt[:k].T
    var = s ** 2
    ratio = np.zeros(2)
    ratio[:k] = var[:k] / max(var.sum(), 1e-30)
    return coords, ratio


def class_separation(x_nd: np.ndarray, labels_n: np.ndarray) -> float:
    """trace(S_between) / trace(S_within): Σ_c n_c |μ_c - μ|² / Σ_i |x_i - μ_{y_i}|² (inf if within is 0)."""
    x = np.asarray(x_nd, np.float64)
    mu = x.mean(axis=0)
    between = within = 0.0
    for c in np.unique(labels_n):
        xc = x[labels_n == c]
        between += len(xc) * float(np.sum((xc.mean(0) - mu) ** 2))
        within += float(np.sum((xc - xc.mean(0)) ** 2))
    return between / within if within > 0 else float("inf")


def applies(pred: dict[str, np.ndarray]) -> bool:
    """A classifier's predictions with embeddings (single-label logits [N, C], more than 2 rows)."""
    return "embedding" in pred and "logits" in pred and pred["logits"].ndim == 2 and len(pred["label"]) > 2


def plot_split(config: dict, pred: dict[str, np.ndarray], split: str, path: str) -> dict:
    """Draw the PCA of ``pred['embedding']`` to ``path``; returns {'path', 'separation', 'explained', 'n'}."""
    labels = np.asarray(pred["label"]).astype(np.int64).reshape(-1)
    emb = np.asarray(pred["embedding"], np.float32).reshape(len(labels), -1)
    names = runfiles.class_names(config, pred["logits"].shape[1])
    known = labels < len(names)
    separation = class_separation(emb[known], labels[known]) if known.any() else float("nan")
    coords, ratio = pca_2d(emb)
    title = (f"{runfiles.run_title(config, split)} ({len(labels)} examples): PCA of the embeddings\n"
             f"class separation tr(S_between)/tr(S_within) = {separation:.3f}")
    plots.class_scatter(coords, labels, names, path, title, xlabel=f"PC 1 ({100 * ratio[0]:.1f} % of variance)",
                        ylabel=f"PC 2 ({100 * ratio[1]:.1f} % of variance)")
    return {"path": path, "separation": separation, "explained": ratio.tolist(), "n": len(labels)}


def analysis(run_dir: str, config: dict, preds: dict[str, dict[str, np.ndarray]], out_dir: str) -> list[Section]:
    """The registered analysis ``embeddings``: one PCA plot per split whose predictions have embeddings."""
    del run_dir
    out = []
    for split, pred in preds.items():
        if applies(pred):
            res = plot_split(config, pred, split, os.path.join(out_dir, f"embeddings_{split}.png"))
            out.append(Section(f"Embeddings, {split}: PCA coloured by class; tr(S_between)/tr(S_within) = "
                               f"{res['separation']:.3f}", res["path"]))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="PCA of a finished run's saved test embeddings, coloured by class.")
    p.add_argument("--workdir", required=True)
    p.add_argument("--split", default="test", help="train, dev or test (the predictions eval.py saved)")
    p.add_argument("--out", default=None, help="PNG path (default <workdir>/plots/embeddings_<split>.png)")
    args = p.parse_args(argv)
    from mmfuse_jax import cli
    from mmfuse_jax.errors import DataError

    def work():
        config = runfiles.read_config(args.workdir)
        pred = runfiles.require_predictions(args.workdir, args.split, "embedding", "the model's embeddings [N, D]")
        if not applies(pred):
            raise DataError(runfiles.predictions_path(args.workdir, args.split), "logits",
                            "single-label class logits [N, C] and more than 2 rows", "a regression or multi-label run")
        out = args.out or os.path.join(args.workdir, runfiles.PLOTS_DIR, f"embeddings_{args.split}.png")
        res = plot_split(config, pred, args.split, out)
        print(f"wrote {out}: {res['n']} {args.split} embeddings, class separation {res['separation']:.4f}; "
              f"PC1+PC2 explain {100 * sum(res['explained']):.1f} % of the variance")

    cli.run_user_facing(work)


if __name__ == "__main__":
    main()
