"""DyKen-Hyena: are the generated kernels really input-dependent? The per-token kernels are read with
Flax ``capture_intermediates`` (the output of the ``kernel_generator`` module; the model is not edited)
on the test split of the trained model. Per example, the kernels averaged over its real tokens; then

    eta^2 = between-intent variance / total variance across examples   (0: the same for every intent)
    token share = mean within-example variance across tokens / (that + across-example variance)

and a PCA of the per-example kernels coloured by intent (kernels_pca.png)."""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.experiments import Experiment, Run, Table, register
from mmfuse_jax.experiments.common import mean_std_cell


def runs(preset):
    return [Run("dyken", "dyken_hyena")]


def capture_kernels(config, run_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per-example mean kernels [N, G*K], labels [N], token variance [N]) of the test split."""
    import jax
    import jax.numpy as jnp

    from mmfuse_jax.training.evaluation import restore_best
    from mmfuse_jax.training.experiment import build

    exp = build(config)
    params, _ = restore_best(exp, run_dir)
    only = lambda mdl, method: mdl.name == "kernel_generator" and method == "__call__"
    apply = jax.jit(lambda p, b: exp.model.apply({"params": p}, b, train=False, capture_intermediates=only,
                                                 mutable=["intermediates"])[1])
    means, labels, token_var = [], [], []
    for batch in exp.loader("test", train=False).epoch(0):
        inter = apply(params, {k: jnp.asarray(v) for k, v in batch.items()})
        k_bl = np.asarray(inter["intermediates"]["kernel_generator"]["__call__"][0], np.float64)
        k_bl = k_bl.reshape(*k_bl.shape[:2], -1)                      # [B, L, G*K]
        w = np.asarray(batch["text_mask"], np.float64)[..., None]
        mean = (k_bl * w).sum(1) / np.maximum(w.sum(1), 1.0)          # [B, G*K]
        var = (((k_bl - mean[:, None]) ** 2) * w).sum(1).sum(-1) / np.maximum(w[..., 0].sum(1), 1.0)
        keep = np.asarray(batch["valid"]) > 0
        means.append(mean[keep])
        labels.append(np.asarray(batch["label"])[keep])
        token_var.append(var[keep])
    return np.concatenate(means), np.concatenate(labels), np.concatenate(token_var)


def kernel_stats(means: np.ndarray, labels: np.ndarray, token_var: np.ndarray) -> dict[str, float]:
    mu = means.mean(0)
    total = float(((means - mu) ** 2).sum(1).mean())
    between = float(sum((labels == c).mean() * ((means[labels == c].mean(0) - mu) ** 2).sum()
                        for c in np.unique(labels)))
    tokens = float(token_var.mean())
    return {"total_var": total, "between_var": between, "within_var": total - between,
            "eta2": between / total if total > 0 else 0.0, "token_share": tokens / (tokens + total) if total else 0.0}


def table(results):
    r = results["dyken"]
    stats, first = {}, None
    for seed, run_dir in r.seed_runs.items():
        means, labels, token_var = capture_kernels(r.seed_configs[seed], run_dir)
        stats[seed] = kernel_stats(means, labels, token_var)
        if first is None:
            first = (means, labels, results.out or run_dir)
    keys = ("eta2", "token_share", "total_var", "between_var", "within_var")
    rows = [[f"seed {s}", *(f"{v[k]:.4f}" for k in keys)] for s, v in stats.items()]
    rows.append(["mean ± std", *(mean_std_cell([v[k] for v in stats.values()], digits=4) for k in keys)])
    t = Table(["", *keys], rows, data={"stats": {str(s): v for s, v in stats.items()}})
    t.plot = {"labels": [f"seed {s}" for s in stats], "means": [v["eta2"] for v in stats.values()],
              "stds": [None] * len(stats), "ylabel": "eta^2 = between-intent / total kernel variance"}
    if first is not None:
        path = _pca_plot(*first)
        t.notes.append(f"PCA of seed {min(stats)}'s per-example kernels by intent: ![kernels]"
                       f"({os.path.relpath(path, results.out) if results.out else path})")
    t.notes.append("eta^2 near 0: the kernels do not depend on the intent; token share near 1: they vary along "
                   "the utterance far more than between utterances")
    return t


def _pca_plot(means: np.ndarray, labels: np.ndarray, folder: str) -> str:
    from mmfuse_jax import plots
    from mmfuse_jax.analysis.embeddings import pca_2d

    coords, ratio = pca_2d(means.astype(np.float32))
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "kernels_pca.png")
    names = [str(i) for i in range(int(labels.max()) + 1)]
    plots.class_scatter(coords, labels, names, path, "DyKen-Hyena kernels per test example (mean over tokens)",
                        xlabel=f"PC1 ({100 * ratio[0]:.0f} %)", ylabel=f"PC2 ({100 * ratio[1]:.0f} %)")
    return path


register(Experiment("dyken_kernel_stats", "DyKen-Hyena: variance of the generated kernels between vs within "
                    "intents (captured with Flax capture_intermediates)", runs, table,
                    presets=("demo", "tiny", "mintrec")))
