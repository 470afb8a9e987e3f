"""PCA scatter of a run's embeddings, coloured by class.

python -m mmfuse_jax.analysis.embeddings --config=configs/mvcl_daf.py:demo --workdir=runs/mvcl --out=plot.png

Restores the best checkpoint of ``workdir``, runs the eval step over ``--split`` (default test) and
plots every example's ``embedding`` output on its first two principal components (numpy SVD of the
centred embeddings), coloured by class; out-of-scope rows (label >= number of classes) are grey.
Works for any registered model that returns an ``embedding``. The title and the printed line give
the class separation of the full embeddings, trace(S_between) / trace(S_within) over the in-scope
rows (higher = tighter, further-apart classes): the number to compare two runs, e.g. MVCL-DAF++
with and without its prototype loss (train a second run with ``--config.model.prototype_weight=0``
and plot it with the same flag).
"""
from __future__ import annotations

import os

import numpy as np


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


def plot(coords: np.ndarray, labels: np.ndarray, names: tuple[str, ...], ratio: np.ndarray, out: str,
         title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20" if len(names) <= 20 else "gist_ncar", max(len(names), 1))
    fig, ax = plt.subplots(figsize=(9, 6.5))
    oos = labels >= len(names)
    if oos.any():
        ax.scatter(coords[oos, 0], coords[oos, 1], s=12, c="0.7", marker="x", label="out of scope")
    for c in np.unique(labels[~oos]):
        sel = labels == c
        ax.scatter(coords[sel, 0], coords[sel, 1], s=14, color=cmap(int(c)), label=names[int(c)])
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f} % of variance)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def embed_split(config, workdir: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """(embeddings [N, D], labels [N], class names) of ``split`` from ``workdir``'s best checkpoint."""
    from mmfuse_jax.errors import ConfigError
    from mmfuse_jax.training import loop
    from mmfuse_jax.training import step as step_lib

    best = os.path.join(workdir, "best")
    if not os.path.isdir(best) or not any(d.isdigit() for d in os.listdir(best)):
        raise ConfigError(f"no best checkpoint in {best}: train first with train.py --workdir={workdir}")
    exp = loop.build(config)
    restored = loop.restore_best(exp, workdir)
    eval_step = step_lib.make_eval_step(exp.model, exp.mesh, compute_dtype=exp.compute_dtype)
    pred = loop.predict_split(exp, restored[0], split, eval_step)
    if "embedding" not in pred:
        raise ConfigError(f"model {config.model_name!r} returns no 'embedding' to plot")
    return pred["embedding"].reshape(len(pred["label"]), -1), np.asarray(pred["label"]).astype(np.int64), exp.labels


def run(config, workdir: str, out: str, split: str = "test") -> dict:
    """Embed ``split``, write the PCA plot to ``out``; returns {'out', 'separation', 'explained', 'n'}."""
    emb, labels, names = embed_split(config, workdir, split)
    known = labels < len(names)
    separation = class_separation(emb[known], labels[known]) if known.any() else float("nan")
    coords, ratio = pca_2d(emb)
    title = (f"{config.model_name} on {config.dataset.name} ({split}, {len(labels)} examples): PCA of the "
             f"embeddings\nclass separation tr(S_between)/tr(S_within) = {separation:.3f}  [{workdir}]")
    plot(coords, labels, tuple(names), ratio, out, title)
    return {"out": out, "separation": separation, "explained": ratio.tolist(), "n": len(labels)}


def main() -> None:
    """The command: --config/--workdir as train.py and eval.py (overrides included), --out, --split."""
    from absl import app, flags

    from mmfuse_jax import cli  # defines --config and --workdir

    out = flags.DEFINE_string("out", None, "PNG to write", required=True)
    split = flags.DEFINE_string("split", "test", "split to embed: train, dev or test")

    def go(argv):
        del argv

        def work():
            res = run(cli.CONFIG.value, cli.WORKDIR.value, out.value, split.value)
            print(f"wrote {res['out']}: {res['n']} {split.value} embeddings, class separation "
                  f"{res['separation']:.4f}; PC1+PC2 explain {100 * sum(res['explained']):.1f} % of the variance")

        cli.run_user_facing(work)

    app.run(go)


if __name__ == "__main__":
    main()
