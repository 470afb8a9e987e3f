"""Heads-first attention: the cache-chunked path (custom backward) equals the one-shot path and
autodiff, with and without dropout, whatever the chunk size; it matches `dot_product_attention`."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.attention import dot_product_attention
from mmfuse_jax.layers.heads_first import heads_first_attention

B, H, T, S, DH = 6, 2, 7, 5, 3


@pytest.fixture(scope="module")
def qkvm():
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.standard_normal((B, H, n, DH)), jnp.float32) for n in (T, S, S))
    mask = jnp.asarray(np.arange(S)[None] < np.array([[5], [3], [1], [0], [4], [2]]))
    return q, k, v, mask


def test_matches_dot_product_attention(qkvm):
    q, k, v, mask = qkvm
    out = heads_first_attention(q, k, v, mask)
    chex.assert_shape(out, (B, H, T, DH))
    ref = dot_product_attention(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v)), mask)
    np.testing.assert_allclose(out, jnp.swapaxes(ref, 1, 2), atol=1e-6)


@pytest.mark.parametrize("rate", [0.0, 0.3])
@pytest.mark.parametrize("rows", [1, 2, 3])
def test_chunks_equal_the_one_shot_path_forward_and_backward(qkvm, rate, rows):
    q, k, v, mask = qkvm
    key = jax.random.key(4) if rate else None
    chunk_bytes = rows * H * T * S * 4  # `rows` batch rows per chunk

    def loss(q, k, v, chunk_bytes):
        out = heads_first_attention(q, k, v, mask, dropout_rate=rate, dropout_key=key, chunk_bytes=chunk_bytes)
        return jnp.sum(jnp.sin(out)), out

    (_, o_one), g_one = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, 2 ** 40)
    (_, o_chk), g_chk = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True),
                                    static_argnums=3)(q, k, v, chunk_bytes)
    np.testing.assert_allclose(o_chk, o_one, atol=1e-6)  # the dropout mask does not depend on the chunking
    chex.assert_tree_all_finite(g_chk)
    chex.assert_trees_all_close(g_chk, g_one, atol=1e-5, rtol=1e-5)


def test_chunked_dropout_computes_its_element_index_in_each_chunk(qkvm):
    """The dropout masks' element index (`dropout._element_index`) depends on the chunk's offset, so XLA
    cannot hoist it out of the scans: no loop carries a [chunk, H, T, S] uint32 array, which every
    iteration would read back from memory (10 MB a chunk at KuDA's audio shapes). The old form,
    `iota(n).reshape(shape) + offset`, is hoisted (checked by hand, 2026-12-07)."""
    q, k, v, mask = qkvm

    def loss(q, k, v):
        out = heads_first_attention(q, k, v, mask, dropout_rate=0.3, dropout_key=jax.random.key(4),
                                    chunk_bytes=2 * H * T * S * 4)  # chunks of 2 batch rows
        return jnp.sum(jnp.sin(out))

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v).compile().as_text()
    loops = [line for line in hlo.splitlines() if " while(" in line]
    assert len(loops) >= 2, loops  # the forward and the backward scan (and the suite's rolled Threefry's)
    assert f"u32[2,{H},{T},{S}]" not in "".join(loops)
    assert f"f32[2,{H},{T},{S}]" in hlo  # the chunks are [2, H, T, S] (the check above looks for the right shape)
