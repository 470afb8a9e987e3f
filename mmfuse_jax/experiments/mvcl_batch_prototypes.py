"""MVCL-DAF++ builds its class prototypes per batch (`losses.prototype_contrastive_loss`: p_c = the
normalised mean of the batch's normalised embeddings of class c; classes absent from a batch are no
candidates). How much does a prototype move from batch to batch, for rare vs frequent classes, and how
does that shrink with the batch size?

On each seed's trained model (best checkpoint, dropout off) the training split is embedded once (the
embedding of a row does not depend on its batch mates at inference), then cut into batches of each size
in `BATCH_SIZES` (``REPEATS`` random orders, the last incomplete batch dropped, as a training epoch would
see them). Per class c, over the batches that contain it:

    var_c = mean_b |p_c^b - mean_b' p_c^b'|^2          (the trace of the prototypes' covariance)

Rare / frequent: the quarter of the known classes with the fewest / most training rows (at least one
each); their mean var_c and the fraction of batches that miss them (where the loss has no prototype).
"""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.experiments import Experiment, Run, Table, register
from mmfuse_jax.experiments.common import mean_std_cell

BATCH_SIZES = (8, 16, 32, 64)
REPEATS = 10  # random orders of the training split per batch size


def runs(preset):
    return [Run("mvcl", "mvcl_daf", presets={"mintrec2": "mintrec2"})]


def train_embeddings(config, run_dir: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(embeddings [N, D], labels [N], number of known classes) of the training split under the
    run's best params; out-of-scope rows (label >= C) are left out."""
    import jax
    import jax.numpy as jnp

    from mmfuse_jax.training.evaluation import restore_best
    from mmfuse_jax.training.experiment import build

    exp = build(config)
    params, _ = restore_best(exp, run_dir)
    embed = jax.jit(lambda p, b: exp.model.apply({"params": p}, b, train=False))
    embs, labels = [], []
    for batch in exp.loader("train", train=False).epoch(0):
        out = embed(params, {k: jnp.asarray(v) for k, v in batch.items()})
        keep = np.asarray(batch["valid"]) > 0
        embs.append(np.asarray(out["embedding"], np.float64)[keep])
        labels.append(np.asarray(batch["label"])[keep])
        num_classes = int(out["logits"].shape[-1])
    emb, label = np.concatenate(embs), np.concatenate(labels)
    known = (label >= 0) & (label < num_classes)
    return emb[known], label[known].astype(np.int64), num_classes


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)  # losses.l2_normalize


def batch_prototypes(emb: np.ndarray, labels: np.ndarray, num_classes: int,
                     batches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-batch prototypes as the loss builds them: (prototypes [nb, C, D], present [nb, C]).
    ``batches`` [nb, B]: row indices of each batch. An absent class's prototype is 0 (not present)."""
    z = _normalise(emb)[batches]                                   # [nb, B, D]
    onehot = np.eye(num_classes)[labels[batches]]                  # [nb, B, C]
    counts = onehot.sum(1)                                         # [nb, C]
    protos = _normalise(np.einsum("nbc,nbd->ncd", onehot, z) / np.maximum(counts, 1.0)[..., None])
    return protos * (counts > 0)[..., None], counts > 0


def class_variance(protos: np.ndarray, present: np.ndarray) -> np.ndarray:
    """var_c [C]: mean squared distance of class c's prototypes to their mean, over the batches that
    contain c (NaN for a class in fewer than two batches)."""
    return _variance(*_moments(protos, present))


def _moments(protos: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(batches with c [C], sum of its prototypes [C, D], sum of their squared norms [C])."""
    return present.sum(0), protos.sum(0), (protos ** 2).sum(-1).sum(0)


def _variance(n: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> np.ndarray:
    mean = total / np.maximum(n, 1)[:, None]
    var = total_sq / np.maximum(n, 1) - (mean ** 2).sum(-1)     # E|p|^2 - |E p|^2
    return np.where(n >= 2, np.maximum(var, 0.0), np.nan)


def prototype_stats(emb: np.ndarray, labels: np.ndarray, num_classes: int, batch_sizes=BATCH_SIZES,
                    repeats: int = REPEATS, seed: int = 0) -> dict:
    """Per batch size: mean var_c and the fraction of batches missing the class, over the rare and the
    frequent classes (module docstring); plus the class counts and which classes those are. One random
    order of the split at a time (memory: one epoch of prototypes, [batches, C, D])."""
    counts = np.bincount(labels, minlength=num_classes)
    seen = np.flatnonzero(counts > 0)
    order = seen[np.argsort(counts[seen], kind="stable")]
    k = max(1, len(order) // 4)
    groups = {"rare": order[:k], "frequent": order[-k:]}
    rng = np.random.default_rng(seed)
    out = {"counts": counts.tolist(), "rare": groups["rare"].tolist(), "frequent": groups["frequent"].tolist(),
           "by_batch_size": {}}
    for b in batch_sizes:
        nb = len(labels) // b
        if nb < 2:
            continue
        moments, absent = None, np.zeros(num_classes)
        for _ in range(repeats):
            protos, present = batch_prototypes(emb, labels, num_classes, rng.permutation(len(labels))[: nb * b]
                                               .reshape(nb, b))
            m = _moments(protos, present)
            moments = m if moments is None else tuple(x + y for x, y in zip(moments, m))
            absent += (~present).sum(0)
        var = _variance(*moments)
        out["by_batch_size"][b] = {
            **{f"var_{g}": float(np.nanmean(var[c])) for g, c in groups.items()},
            **{f"absent_{g}": float(absent[c].mean() / (nb * repeats)) for g, c in groups.items()}}
    return out


def table(results):
    r = results["mvcl"]
    stats = {seed: prototype_stats(*train_embeddings(r.seed_configs[seed], run_dir), seed=seed)
             for seed, run_dir in r.seed_runs.items()}
    sizes = sorted({b for s in stats.values() for b in s["by_batch_size"]})
    keys = ("var_rare", "var_frequent", "absent_rare", "absent_frequent")
    values = {b: {k: [s["by_batch_size"][b][k] for s in stats.values() if b in s["by_batch_size"]] for k in keys}
              for b in sizes}
    rows = [[str(b), *(mean_std_cell(values[b][k], digits=4) for k in keys),
             mean_std_cell([x / y for x, y in zip(values[b]["var_rare"], values[b]["var_frequent"]) if y > 0],
                           digits=2)] for b in sizes]
    t = Table(["batch size", "var rare", "var frequent", "absent rare", "absent frequent", "rare / frequent"],
              rows, data={"stats": {str(s): v for s, v in stats.items()}})
    if stats:
        first = stats[min(stats)]
        counts = np.asarray(first["counts"])
        t.notes.append(f"training rows per class (seed {min(stats)}'s split): rare classes {first['rare']} have "
                       f"{counts[first['rare']].tolist()}, frequent ones {first['frequent']} have "
                       f"{counts[first['frequent']].tolist()}")
    t.notes += ["var: mean over the classes of a group of the across-batch variance of their per-batch prototype "
                "(trace of the covariance of the unit-norm prototype; 0 = the same prototype in every batch), "
                "on the training split under the trained model; absent: the fraction of batches without the class "
                "(no prototype, the loss skips it). Mean ± std over seeds",
                "the synthetic benchmarks draw intents uniformly, so there rare and frequent differ by sampling "
                "only; the real releases are imbalanced"]
    if sizes:
        path = _plot(sizes, values, results.out or next(iter(r.seed_runs.values())), len(stats))
        t.notes.append(f"![prototype variance]({os.path.relpath(path, results.out) if results.out else path})")
    return t


def _plot(sizes: list[int], values: dict, folder: str, n_seeds: int) -> str:
    from mmfuse_jax import plots

    fig = plots.figure(5.0, 3.6)
    ax = fig.add_subplot()
    for key, colour in (("var_rare", "#c44e52"), ("var_frequent", "#4c72b0")):
        v = [np.asarray(values[b][key], float) for b in sizes]
        ax.errorbar(sizes, [x.mean() for x in v], yerr=[x.std(ddof=1) if len(x) > 1 else 0.0 for x in v],
                    marker="o", capsize=3, color=colour, label=key.removeprefix("var_") + " classes")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("across-batch prototype variance")
    ax.set_title(f"MVCL-DAF++ batch prototypes ({n_seeds} seeds)", fontsize=9)
    ax.legend(fontsize=8)
    os.makedirs(folder, exist_ok=True)
    return plots.save(fig, os.path.join(folder, "prototype_variance.png"))


register(Experiment("mvcl_batch_prototypes", "MVCL-DAF++: across-batch variance of the per-batch class prototypes "
                    "vs batch size, rare vs frequent classes", runs, table,
                    presets=("demo", "tiny", "mintrec", "mintrec2")))
