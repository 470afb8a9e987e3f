"""Dense maps on rows (layers/linear.py): `Dense` and `matmul_rows` against ``nn.Dense`` / ``x @ w``
(parameters, outputs, gradients), and the backward pass they exist for: no transposed copy of the
output gradient before the kernel's gradient (XLA's dot canonicalisation makes one for x [B, T, in])."""
from __future__ import annotations

import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.attention import project_heads
from mmfuse_jax.layers.linear import Dense, Linear, flat_dot_general, matmul_rows

B, T, D, E = 4, 24, 16, 8


def _data(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


@pytest.mark.parametrize("shape", [(D,), (B, D), (B, T, D), (2, B, T, D)])
def test_dense_matches_flax_dense(shape):
    x = _data(*shape)
    ours, ref = Dense(E, name="proj"), nn.Dense(E, name="proj")
    params = ours.init(jax.random.key(0), x)
    chex.assert_trees_all_equal(params, ref.init(jax.random.key(0), x))  # names, shapes, initial values
    y = ours.apply(params, x)
    chex.assert_shape(y, (*shape[:-1], E))
    np.testing.assert_array_equal(y, ref.apply(params, x))

    def loss(module):
        return lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)
    g_ours = jax.grad(loss(ours), argnums=(0, 1))(params, x)
    g_ref = jax.grad(loss(ref), argnums=(0, 1))(params, x)
    chex.assert_trees_all_close(g_ours, g_ref, rtol=1e-5, atol=1e-6)


def test_matmul_rows_any_trailing_kernel_axes():
    x, w = _data(B, T, D), _data(D, 3, 2, seed=1)
    y = matmul_rows(x, w)
    chex.assert_shape(y, (B, T, 3, 2))
    np.testing.assert_allclose(y, np.einsum("btd,dij->btij", np.asarray(x, np.float64), np.asarray(w, np.float64)),
                               rtol=1e-5, atol=1e-5)


def test_flat_dot_general_passes_other_contractions_through():
    a, b = _data(B, T, D), _data(B, D, E, seed=1)
    dims = (((2,), (1,)), ((0,), (0,)))  # a batched matmul: not `nn.Dense`'s form, computed as given
    np.testing.assert_array_equal(flat_dot_general(a, b, dims), jax.lax.dot_general(a, b, dims))


@pytest.mark.parametrize("heads_first", [True, False])
@pytest.mark.parametrize("count,bias", [(1, True), (2, True), (3, True), (3, False)])
def test_project_heads_matches_einsum(heads_first, count, bias):
    x = _data(B, T, D)
    packed = _data(D, count, E, seed=1)  # q|k|v slices of one packed matrix, as the fairseq layout reads them
    kernels = [packed[:, i] for i in range(count)]
    biases = [_data(E, seed=10 + i) if bias else None for i in range(count)]
    got = project_heads(x, kernels, biases, num_heads=2, heads_first=heads_first)
    assert len(got) == count
    for w, b, y in zip(kernels, biases, got):
        ref = np.einsum("btd,de->bte", np.asarray(x, np.float64), np.asarray(w, np.float64))
        ref = (ref if b is None else ref + np.asarray(b)).reshape(B, T, 2, E // 2)
        np.testing.assert_allclose(y, ref.transpose(0, 2, 1, 3) if heads_first else ref, rtol=1e-5, atol=1e-5)


def _transposed_gradient_copies(module) -> list[str]:
    """Ops of the kernel gradient compiled for XLA:CPU (the inputs committed to a CPU device, whatever the
    default backend) that write an [E, B·T] array: the output gradient copied into a transposed layout."""
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(_data(B, T, D), cpu)
    params = jax.device_put(module.init(jax.random.key(0), x), cpu)
    hlo = jax.jit(jax.grad(lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x))))).lower(params, x).compile().as_text()
    return [line for line in hlo.splitlines() if re.search(rf"= f32\[{E},{B * T}\]\S* (fusion|copy|transpose)\(", line)]


def test_kernel_gradient_reads_the_output_gradient_in_place():
    assert _transposed_gradient_copies(nn.Dense(E)), "XLA no longer copies for nn.Dense: this test checks nothing"
    assert _transposed_gradient_copies(Dense(E)) == []
    assert _transposed_gradient_copies(Linear(E)) == []
