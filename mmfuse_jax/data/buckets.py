"""Length buckets: which padded shapes a split's batches take, and how much of them is padding.

``config.dataset.buckets`` picks the scheme (`SCHEMES`):
  * ``'fixed'`` (default): ``num_buckets`` lengths at k/num_buckets of every configured maximum;
    batches are consecutive runs of the seeded permutation, each padded to the smallest bucket
    that fits all its rows;
  * ``'auto'``: the lengths are chosen at prepare time from the train split's length histogram
    (`auto_buckets`: the at most ``num_buckets`` lengths, multiples of ``multiple``, that minimise
    the padded tokens of the train examples; the last one is always the configured maximum, so any
    dev/test row fits) and stored with the prepared data, so training, evaluation and prediction
    use the same shapes; the training batches are grouped by bucket (`group_batches`: the seeded
    permutation split by bucket, cut into batches, the batches then shuffled), so a batch is padded
    to its own rows' bucket instead of its longest row's. Evaluation keeps the split's order.
"""
from __future__ import annotations

import math

import numpy as np

from mmfuse_jax.errors import ConfigError

SCHEMES = ("fixed", "auto")
MULTIPLE = 4  # auto bucket lengths are multiples of this (8 wastes too much on ~10-token texts)


def check_scheme(scheme: str) -> str:
    if scheme not in SCHEMES:
        raise ConfigError(f"config.dataset.buckets={scheme!r}: expected one of {list(SCHEMES)}")
    return scheme


def fixed_buckets(max_len: dict[str, int], num_buckets: int) -> list[dict[str, int]]:
    """``num_buckets`` length sets, the k-th at k/num_buckets of every maximum (the last is the max)."""
    if num_buckets < 1:
        raise ConfigError(f"config.dataset.num_buckets={num_buckets}: expected at least 1")
    return [{m: max(1, math.ceil(n * (k + 1) / num_buckets)) for m, n in max_len.items()}
            for k in range(num_buckets)]


def _rank_key(lengths: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's highest percentile rank over the modalities: rows up to a key value fit the lengths
    of every modality at that percentile (one order in which to cut buckets for all modalities)."""
    ranks = [np.searchsorted(np.sort(v), v, side="left") / len(v) for v in lengths.values()]
    return np.max(ranks, axis=0)


def auto_buckets(lengths: dict[str, list[int]], max_len: dict[str, int], num_buckets: int,
                 multiple: int = MULTIPLE, max_cuts: int = 256) -> list[dict[str, int]]:
    """At most ``num_buckets`` length sets, increasing in every modality, the last one ``max_len``,
    the others multiples of ``multiple``, that minimise the padded share of the train rows (each
    modality's padded positions over its maximum, summed) when every row is padded to the smallest
    set that fits it. Dynamic programming over cuts of the rows ordered by `_rank_key`."""
    mods = [m for m in max_len if m in lengths and len(lengths[m])]
    lens = {m: np.minimum(np.asarray(lengths[m], np.int64), max_len[m]) for m in mods}
    if not mods:
        return [dict(max_len)]
    key = np.sort(np.unique(_rank_key(lens)))
    cuts = key if len(key) <= max_cuts else np.unique(np.quantile(key, np.linspace(0, 1, max_cuts)))
    row_key = _rank_key(lens)
    sets = []  # the length set of each cut: the rounded-up longest row up to it, per modality
    for c in cuts:
        fit = row_key <= c
        sets.append({m: min(max_len[m], multiple * -(-max(int(lens[m][fit].max(initial=1)), 1) // multiple))
                     for m in mods})
    sets[-1] = {m: max_len[m] for m in mods}
    count = np.array([(row_key <= c).sum() for c in cuts])
    tokens = {m: np.array([lens[m][row_key <= c].sum() for c in cuts]) for m in mods}

    def cost(i: int, j: int) -> float:  # rows with key in (cuts[i], cuts[j]] padded to sets[j]
        rows = count[j] - (count[i] if i >= 0 else 0)
        return sum((rows * sets[j][m] - tokens[m][j] + (tokens[m][i] if i >= 0 else 0)) / max_len[m]
                   for m in mods)

    n = len(cuts)
    best = {(1, j): (cost(-1, j), [j]) for j in range(n)}
    for k in range(2, num_buckets + 1):
        for j in range(n):
            options = [(best[(k - 1, i)][0] + cost(i, j), best[(k - 1, i)][1] + [j]) for i in range(j)]
            best[(k, j)] = min(options, default=best[(k - 1, j)])
    _, picked = min(best[(k, n - 1)] for k in range(1, num_buckets + 1))
    out = []
    for j in picked:  # equal sets (a cut inside one rounded length) count once
        s = {**max_len, **sets[j]}
        if not out or s != out[-1]:
            out.append(s)
    return out


def boundaries(lengths, max_len: int, num_buckets: int, multiple: int = MULTIPLE) -> list[int]:
    """`auto_buckets` of one modality: the lengths alone."""
    return [b["x"] for b in auto_buckets({"x": list(lengths)}, {"x": max_len}, num_buckets, multiple)]


def bucket_of(buckets: list[dict[str, int]], lengths: dict[str, np.ndarray]) -> np.ndarray:
    """Each row's bucket: the smallest whose every length fits the row (the last if none does)."""
    n = len(next(iter(lengths.values())))
    out = np.full(n, len(buckets) - 1, np.int64)
    for i in reversed(range(len(buckets))):
        fits = np.all([lengths[m] <= buckets[i][m] for m in lengths if m in buckets[i]], axis=0)
        out[fits] = i
    return out


def group_batches(order: np.ndarray, row_bucket: np.ndarray, batch_size: int,
                  rng: np.random.Generator | None) -> list[tuple[np.ndarray, int]]:
    """``order`` split by bucket (keeping its order), cut into batches of ``batch_size`` (the last of
    a bucket may be short); the batches shuffled by ``rng`` (kept in bucket order if None)."""
    batches = []
    for k in np.unique(row_bucket):
        rows = order[row_bucket[order] == k]
        batches += [(rows[i:i + batch_size], int(k)) for i in range(0, len(rows), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def padded_fraction(batches: list[tuple[np.ndarray, int]], buckets: list[dict[str, int]],
                    lengths: dict[str, np.ndarray], batch_size: int) -> dict[str, float]:
    """Per modality: padded positions / all positions of the batch tensors (padding rows included)."""
    out = {}
    for m, lens in lengths.items():
        real = sum(int(np.minimum(lens[idx], buckets[k][m]).sum()) for idx, k in batches)
        shape = sum(batch_size * buckets[k][m] for _, k in batches)
        out[m] = 1.0 - real / max(shape, 1)
    return out
