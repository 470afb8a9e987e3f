"""Padding waste of the length buckets on a MIntRec-like text length distribution.

python -m benchmarks.padding [--n=1334 --batch_size=16 --max_len=48 --seeds=0,1,2 --out=...]

Lengths (BERT tokens with [CLS]/[SEP]) are drawn from a log-normal with median 12.5 and sigma 0.45,
clipped to [3, max_len]: mean ~14, max 48 over MIntRec's 1334 train utterances (a stand-in: no real
release here). For each seed, the padded share of the text batch tensors (padding rows of a short
batch included) over one training epoch, by the same code the loader runs (`data/buckets.py`):
  * ``fixed``: today's default, 4 buckets at k/4 of max_len, batches of the shuffled order;
  * ``auto``: 4 buckets chosen from this train histogram, batches grouped by bucket;
  * ``longest``: padding to each batch's longest row (Hugging Face's dynamic padding; one shape per
    distinct batch maximum, i.e. up to max_len compilations for XLA), for reference;
  * ``auto6``: ``auto`` with 6 buckets (``dataset.num_buckets=6``), for reference.
Each seed also records ``bound``: the least padded share of the rows that ANY set of ``k`` lengths
(the last one max_len) can give, k = 4, 5, 6 (exact, `least_padding`), without the short batches'
padding rows, so no 4-shape scheme can go below it.
JSON lines (one per seed and scheme, then a summary of the means) to stdout and ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from benchmarks.common import emit
from mmfuse_jax.data import buckets

DEFAULT_OUT = os.path.join("benchmarks", "results", "padding_cpu.jsonl")
SCHEMES = ("fixed", "auto", "longest", "auto6")


def mintrec_like_lengths(n: int, max_len: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.lognormal(np.log(12.5), 0.45, n)), 3, max_len).astype(np.int64)


def least_padding(lengths: np.ndarray, max_len: int, k: int) -> float:
    """The least padded share of ``lengths`` padded to the smallest of ``k`` lengths (the largest
    ``max_len``), over every choice of the other ``k - 1``: exact dynamic programming on the histogram."""
    count = np.bincount(np.minimum(lengths, max_len), minlength=max_len + 1).astype(float)
    rows, tokens = np.cumsum(count), np.cumsum(count * np.arange(max_len + 1))

    def pad(lo: int, hi: int) -> float:  # rows with length in (lo, hi] padded to hi
        return hi * (rows[hi] - rows[lo]) - (tokens[hi] - tokens[lo])

    best = [pad(0, b) for b in range(max_len + 1)]  # one bucket ending at b
    for _ in range(k - 1):
        best = [min([best[b]] + [best[a] + pad(a, b) for a in range(1, b)]) for b in range(max_len + 1)]
    return float(best[max_len] / (best[max_len] + lengths.sum()))


def measure(lengths: np.ndarray, scheme: str, batch_size: int, max_len: int, seed: int) -> dict:
    lens = {"text": lengths}
    order = np.random.default_rng([seed, 0]).permutation(len(lengths))
    if scheme in ("auto", "auto6"):
        bk = buckets.auto_buckets(lens, {"text": max_len}, 6 if scheme == "auto6" else 4)
        batches = buckets.group_batches(order, buckets.bucket_of(bk, lens), batch_size,
                                        np.random.default_rng([seed, 0, 1]))
    else:
        if scheme == "fixed":
            bk = buckets.fixed_buckets({"text": max_len}, 4)
        else:  # longest: one bucket per possible length
            bk = [{"text": n} for n in range(1, max_len + 1)]
        batches = [(idx, int(buckets.bucket_of(bk, {"text": lengths[idx]}).max()))
                   for idx in (order[i:i + batch_size] for i in range(0, len(order), batch_size))]
    frac = buckets.padded_fraction(batches, bk, lens, batch_size)["text"]
    shapes = sorted({bk[k]["text"] for _, k in batches})
    return {"scheme": scheme, "seed": seed, "padded_fraction": frac, "batches": len(batches),
            "shapes": shapes, "buckets": [b["text"] for b in bk] if scheme != "longest" else None}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1334)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--max_len", type=int, default=48)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--out", default=DEFAULT_OUT)
    a = p.parse_args(argv)
    run = time.strftime("%Y-%m-%dT%H:%M:%S")
    records = []
    for seed in (int(s) for s in a.seeds.split(",")):
        lengths = mintrec_like_lengths(a.n, a.max_len, seed)
        bound = {str(k): least_padding(lengths, a.max_len, k) for k in (4, 5, 6)}
        for scheme in SCHEMES:
            rec = {"run": run, "n": a.n, "batch_size": a.batch_size, "max_len": a.max_len,
                   "mean_len": float(lengths.mean()), "max_seen": int(lengths.max()), "bound": bound,
                   **measure(lengths, scheme, a.batch_size, a.max_len, seed)}
            records.append(rec)
    summary = {"run": run, "summary": True, **{
        f"mean_padded_fraction_{s}": float(np.mean([r["padded_fraction"] for r in records if r["scheme"] == s]))
        for s in SCHEMES}}
    auto = [r for r in records if r["scheme"] == "auto"]
    summary.update({f"mean_bound_{k}": float(np.mean([r["bound"][k] for r in auto])) for k in ("4", "5", "6")})
    records.append(summary)
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "a") as f:
            for rec in records:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
    for rec in records:
        emit(rec)
    return records


if __name__ == "__main__":
    main()
