"""Heads-first, cache-chunked attention with hashed dropout and a flash-attention style backward pass.

The fast implementation behind ``MultiHeadAttention(implementation='heads_first')`` (layers/attention.py),
tuned for CPUs (KuDA's encoders attend over 400 audio frames; benchmarks/kuda_vs_official.py). Same
arithmetic as `attention.dot_product_attention`: float32 logits and softmax, a masked key gets the
float32 minimum (so an all-masked row is uniform); dropout on the probabilities uses
`dropout.hashed_dropout`, whose mask does not depend on the chunking.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from mmfuse_jax.layers.dropout import hashed_dropout, index_bits, keep_threshold

ATTENTION_CHUNK_BYTES = 12 * 2 ** 20  # float32 probabilities per chunk of `heads_first_attention`
_MASKED = float(jnp.finfo(jnp.float32).min)  # the logit of a masked key (as `attention.dot_product_attention`)


def _attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, rate: float, key) -> jax.Array:
    logits = jnp.einsum("bhtk,bhsk->bhts", q_bhtk, k_bhsk, preferred_element_type=jnp.float32)
    logits = logits * q_bhtk.shape[-1] ** -0.5
    if mask_bs is not None:
        logits = jnp.where(mask_bs[:, None, None, :], logits, _MASKED)
    probs = hashed_dropout(jax.nn.softmax(logits, axis=-1), rate, key)
    return jnp.einsum("bhts,bhsk->bhtk", probs.astype(v_bhsk.dtype), v_bhsk)


def heads_first_attention(q_bhtk: jax.Array, k_bhsk: jax.Array, v_bhsk: jax.Array, mask_bs: jax.Array | None, *,
                          dropout_rate: float = 0.0, dropout_key: jax.Array | None = None,
                          chunk_bytes: int | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(Dh), masked keys) v with dropout on the probabilities -> [B, H, T, Dh].

    The arithmetic of `layers.attention.dot_product_attention` (float32 logits and softmax; a masked
    key gets the float32 minimum, so an all-masked row is uniform), arranged for a CPU:
      * heads first, so XLA's batched dots need no layout copies;
      * when the [B, H, T, S] probabilities exceed ``chunk_bytes`` (default `ATTENTION_CHUNK_BYTES`),
        `_chunked_attention`: a scan over batch chunks that fit in cache, with a hand-written
        backward pass (flash-attention style), so the mask, softmax and dropout passes stay in cache
        instead of streaming 160 MB arrays through memory (KuDA's audio layers: T = S = 400, 8 heads
        of 16). The dropout mask is the same whatever the chunking.
    Forward + backward at the audio shapes (B 32, 8 heads) on 2 CPU cores (Intel Xeon): 0.19 s, against
    0.32 s for `dot_product_attention` with the same hashed dropout and 0.66 s with its threefry
    dropout; on an AMD EPYC 0.177 s, and 0.145 s since `_contract_rows`. The dropout masks' element index
    is computed in each chunk (`dropout._element_index`; XLA had hoisted it out of the scans and every
    chunk read it back): 0.184 -> 0.166 s on the Intel Xeon (2026-12-07).
    """
    b, h, t, _ = q_bhtk.shape
    s = k_bhsk.shape[2]
    if dropout_key is None or dropout_rate == 0.0:
        dropout_key, dropout_rate = None, 0.0
    rows = max(1, (chunk_bytes or ATTENTION_CHUNK_BYTES) // (h * t * s * 4))
    chunk = max(c for c in range(1, min(rows, b) + 1) if b % c == 0)
    mask_bs = None if mask_bs is None else mask_bs.astype(bool)
    if chunk == b:
        return _attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, dropout_rate, dropout_key)
    mask_bs = jnp.ones((b, s), bool) if mask_bs is None else mask_bs
    key_bits = jnp.zeros((2,), jnp.uint32) if dropout_key is None else jax.random.bits(dropout_key, (2,), jnp.uint32)
    return _chunked_attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, key_bits, dropout_rate, chunk)


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def _chunk_probs(q, k, mask, key_bits, i, rate: float, stats=None):
    """Masked logits of one chunk -> (softmax p, dropout keep mask or None, (row max, row sum))."""
    b, h, t, dh = q.shape
    logits = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32) * dh ** -0.5
    logits = jnp.where(mask[:, None, None, :], logits, _MASKED)
    if stats is None:
        stats = (logits.max(-1), None)
        e = jnp.exp(logits - stats[0][..., None])
        stats = (stats[0], e.sum(-1))
    else:
        e = jnp.exp(logits - stats[0][..., None])
    p = e / stats[1][..., None]
    keep = None
    if rate > 0.0:  # the chunk's slice of the whole [B, H, T, S] array's mask
        keep = index_bits(key_bits, p.shape, i * (b * h * t * k.shape[2])) < keep_threshold(rate)
    return p, keep, stats


def _contract_rows(x_bhtk, y_bhts):
    """einsum('bhtk,bhts->bhsk', x, y): the two backward products that contract the probabilities' row
    axis t (d_v = p_drop^T d_o, d_k = d_logits^T q).

    Computed as (x^T y)^T with x^T [B, H, Dh, T] materialised: XLA:CPU's fast (YNNPACK) dots need the
    left operand's contracted axis minor, and without the barriers XLA folds the transposes back into a
    dot that it runs on its slower generic path (2x the time at KuDA's audio shapes; only the small
    [B, H, T, Dh] operand and result are transposed). Same products, another summation order. On a
    GPU, whose dots take either operand transposed, the barriers cost those two small transposes.
    """
    x_t = jax.lax.optimization_barrier(jnp.swapaxes(x_bhtk, 2, 3))
    return jnp.swapaxes(jax.lax.optimization_barrier(jnp.einsum("bhkt,bhts->bhks", x_t, y_bhts)), 2, 3)


def _drop(x, keep, rate: float):
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _chunked_attention(q, k, v, mask, key_bits, rate: float, chunk: int) -> jax.Array:
    """`_attention` over batch chunks of ``chunk`` rows (q, k, v heads-first; mask [B, S] bool)."""
    return _chunked_attention_fwd(q, k, v, mask, key_bits, rate, chunk)[0]


def _chunked_attention_fwd(q, k, v, mask, key_bits, rate, chunk):
    def body(_, xs):
        i, qc, kc, vc, mc = xs
        p, keep, (row_max, row_sum) = _chunk_probs(qc, kc, mc, key_bits, i, rate)
        out = jnp.einsum("bhts,bhsk->bhtk", _drop(p, keep, rate).astype(vc.dtype), vc)
        return None, (out, row_max, row_sum)

    n = q.shape[0] // chunk
    _, (out, row_max, row_sum) = jax.lax.scan(
        body, None, (jnp.arange(n, dtype=jnp.uint32), *(_chunks(x, chunk) for x in (q, k, v, mask))))
    out = out.reshape(q.shape[:3] + v.shape[3:])
    return out, (q, k, v, mask, key_bits, out, row_max, row_sum)


def _chunked_attention_bwd(rate, chunk, residuals, d_out):
    """Recompute each chunk's probabilities from the saved row max and sum (no reductions over keys),
    then d_v = p_drop^T d_o, d_p = drop(d_o v^T), d_logits = p (d_p - rowsum(d_o * o)) on real keys."""
    q, k, v, mask, key_bits, out, row_max, row_sum = residuals
    d_rows = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # = rowsum(p * d_p)
    scale = q.shape[-1] ** -0.5

    def body(_, xs):
        i, qc, kc, vc, mc, doc, mx, sm, dr = xs
        p, keep, _ = _chunk_probs(qc, kc, mc, key_bits, i, rate, stats=(mx, sm))
        d_v = _contract_rows(doc, _drop(p, keep, rate).astype(doc.dtype))
        d_p = _drop(jnp.einsum("bhtk,bhsk->bhts", doc, vc, preferred_element_type=jnp.float32), keep, rate)
        d_logits = jnp.where(mc[:, None, None, :], p * (d_p - dr[..., None]), 0.0) * scale
        d_q = jnp.einsum("bhts,bhsk->bhtk", d_logits.astype(kc.dtype), kc)
        d_k = _contract_rows(qc, d_logits.astype(qc.dtype))
        return None, (d_q, d_k, d_v)

    n = q.shape[0] // chunk
    xs = (jnp.arange(n, dtype=jnp.uint32), *(_chunks(x, chunk) for x in (q, k, v, mask, d_out)), row_max, row_sum,
          _chunks(d_rows, chunk))  # row max / sum: stacked per chunk by the forward scan
    _, grads = jax.lax.scan(body, None, xs)
    d_q, d_k, d_v = (g.reshape(x.shape).astype(x.dtype) for g, x in zip(grads, (q, k, v)))
    return d_q, d_k, d_v, None, None


_chunked_attention.defvjp(_chunked_attention_fwd, _chunked_attention_bwd)
