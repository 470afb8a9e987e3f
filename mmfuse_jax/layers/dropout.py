"""Dropout whose mask comes from a counter-based integer hash instead of threefry.

On CPU, drawing dropout masks with threefry (`jax.random.bernoulli`) is a large part of a step for
attention-heavy models (KuDA's audio attention drops ~300 M probabilities per step); a hash of the
element index is one fused elementwise pass (benchmarks/kuda_vs_official.py). Same seed => same mask.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _mix32(x: jax.Array) -> jax.Array:
    """``lowbias32`` (C. Wellons, 2018): a bijective 32-bit integer hash with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hashed_bits(key: jax.Array, shape: tuple[int, ...], offset: jax.Array | int = 0) -> jax.Array:
    """uint32 [shape]: ``mix(mix(i + k0) ^ k1)`` of the element index i (+ ``offset``), k0, k1 from ``key``.

    A counter-based generator (as XLA's RngBitGenerator) for dropout masks: one fused elementwise pass,
    ~25x faster on CPU than threefry (`jax.random.bernoulli`), which would make a third of a bench
    step (KuDA's audio attention drops ~300 M probabilities per step). ``offset`` lets a chunk of a
    larger array draw that array's bits for its elements.
    """
    return index_bits(jax.random.bits(key, (2,), jnp.uint32), shape, offset)


def index_bits(k: jax.Array, shape: tuple[int, ...], offset: jax.Array | int = 0) -> jax.Array:
    """`hashed_bits` from the two uint32 key words ``k`` [2] (already drawn from a key)."""
    return _mix32(_mix32(_element_index(shape, offset) + k[0]) ^ k[1])


def _element_index(shape: tuple[int, ...], offset: jax.Array | int) -> jax.Array:
    """uint32 [shape]: each element's row-major index in the array plus ``offset`` (mod 2^32).

    Built so that it is not loop-invariant where ``offset`` is not: with the offset added to the whole
    index (``iota(n).reshape(shape) + offset``), XLA hoists the iota out of a scan (the chunked attention
    of `layers.heads_first`) and every iteration reads it back from memory, 10 MB per chunk at KuDA's
    audio shapes. Here the offset's multiple of the trailing size enters the leading axis's term and
    the rest is added last, so the index is computed where it is used: the chunked attention's forward +
    backward 0.184 -> 0.166 s (benchmarks/README, KuDA). The same integers, so the same dropout masks."""
    offset = jnp.asarray(offset, jnp.uint32)
    if not shape:  # a scalar's one element: index 0
        return offset
    inner = math.prod(shape[1:])
    index = jax.lax.broadcasted_iota(jnp.uint32, shape, 0) + offset // jnp.uint32(inner)
    for axis in range(1, len(shape)):
        index = index * jnp.uint32(shape[axis]) + jax.lax.broadcasted_iota(jnp.uint32, shape, axis)
    return index + offset % jnp.uint32(inner)


def keep_threshold(rate: float) -> jax.Array:
    """uint32 t with P(bits < t) = 1 - rate (to 2^-32)."""
    return jnp.uint32(min(round((1.0 - rate) * 2 ** 32), 2 ** 32 - 1))


def hashed_dropout(x: jax.Array, rate: float, key: jax.Array | None, offset: jax.Array | int = 0) -> jax.Array:
    """Dropout with a `hashed_bits` mask: keep with probability 1 - rate (exact to 2^-32), scale kept
    values by 1 / (1 - rate); ``key=None`` or rate 0 = identity."""
    if key is None or rate == 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = hashed_bits(key, x.shape, offset) < keep_threshold(rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class HashedDropout(nn.Module):
    """``nn.Dropout`` (same field and call) with the `hashed_dropout` mask instead of threefry's."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if x.size >= 2 ** 32:  # the element index must fit in 32 bits
            return nn.Dropout(self.rate)(x, deterministic=False)
        return hashed_dropout(x, self.rate, self.make_rng("dropout"))
