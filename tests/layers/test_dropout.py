"""Hashed dropout: keep rate, scaling, determinism per key, identity when off, offsets address a larger mask."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.dropout import HashedDropout, hashed_bits, hashed_dropout


def test_keep_rate_and_scale():
    x = jnp.ones((3, 7, 1000))
    y = np.asarray(hashed_dropout(x, 0.3, jax.random.key(0)))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)


def test_same_key_same_mask_other_key_other_mask():
    x = jnp.ones((3, 7, 12))
    a, b = hashed_dropout(x, 0.5, jax.random.key(1)), hashed_dropout(x, 0.5, jax.random.key(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, hashed_dropout(x, 0.5, jax.random.key(2)))


def test_identity_when_off_and_zeros_at_rate_one():
    x = jnp.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(hashed_dropout(x, 0.0, jax.random.key(0)), x)
    np.testing.assert_array_equal(hashed_dropout(x, 0.5, None), x)
    assert not np.asarray(hashed_dropout(x, 1.0, jax.random.key(0))).any()


def test_offset_reads_a_slice_of_the_whole_mask():
    key = jax.random.key(3)
    whole = hashed_bits(key, (6, 5))
    np.testing.assert_array_equal(hashed_bits(key, (2, 5), offset=10), whole[2:4])


def test_element_index_is_the_row_major_index_plus_the_offset_modulo_2_32():
    """`_element_index` (written so that XLA cannot hoist it out of a scan) gives NumPy's row-major index
    plus the offset in uint32 arithmetic, for every rank, traced offsets and offsets that wrap."""
    from mmfuse_jax.layers.dropout import _element_index

    index = jax.jit(_element_index, static_argnums=0)
    for shape in [(), (5,), (3, 4), (2, 3, 5), (1, 7, 1, 3)]:
        for offset in [0, 17, 123_456_789, 2**32 - 5]:
            want = (np.arange(int(np.prod(shape)), dtype=np.uint64) + offset) % 2**32
            np.testing.assert_array_equal(index(shape, np.uint32(offset)), want.astype(np.uint32).reshape(shape))


def test_module_follows_nn_dropout_call():
    x = jnp.ones((3, 7, 12))
    drop = HashedDropout(0.25)
    np.testing.assert_array_equal(drop.apply({}, x, deterministic=True), x)
    y = drop.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
    assert 0 < float((y == 0).mean()) < 0.5
    assert isinstance(drop, nn.Module)
