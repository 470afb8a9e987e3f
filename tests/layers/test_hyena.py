"""Hyena layers against direct formulas; the fast dynamic conv against the vmap reference."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers import hyena


def direct_causal_conv(u, h, d=None):
    """float64 loops: y[b,t,c] = sum_{s<=t} h[t-s,c] u[b,s,c] (+ d[c] u[b,t,c])."""
    u, h = np.asarray(u, np.float64), np.asarray(h, np.float64)
    y = np.zeros_like(u)
    for t in range(u.shape[1]):
        for s in range(t + 1):
            y[:, t] += h[t - s] * u[:, s]
    return y if d is None else y + u * np.asarray(d, np.float64)


@pytest.mark.parametrize("length", [1, 7, 31, 64, 100, 257])
def test_fft_conv_equals_direct_causal_conv(length):
    rng = np.random.default_rng(length)
    u, h, d = rng.standard_normal((3, length, 5)), rng.standard_normal((length, 5)), rng.standard_normal(5)
    y = hyena.fft_causal_conv(jnp.asarray(u, jnp.float32), jnp.asarray(h, jnp.float32), jnp.asarray(d, jnp.float32))
    ref = direct_causal_conv(u, h, d)
    assert np.abs(np.asarray(y) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fft_conv_equals_xla_depthwise_conv():
    rng = np.random.default_rng(0)
    u, h = rng.standard_normal((2, 45, 6)).astype(np.float32), rng.standard_normal((45, 6)).astype(np.float32)
    # conv_general_dilated is cross-correlation: flip the filter, pad L-1 on the left for causality.
    direct = jax.lax.conv_general_dilated(u.transpose(0, 2, 1), h[::-1].T[:, None, :], (1,), [(44, 0)],
                                          feature_group_count=6).transpose(0, 2, 1)
    np.testing.assert_allclose(hyena.fft_causal_conv(u, h), direct, rtol=1e-4, atol=1e-4)


def test_fft_conv_computes_in_float32_under_bfloat16():
    rng = np.random.default_rng(1)
    u, h = rng.standard_normal((2, 33, 4)), rng.standard_normal((33, 4))
    y = hyena.fft_causal_conv(jnp.asarray(u, jnp.bfloat16), jnp.asarray(h, jnp.bfloat16))
    assert y.dtype == jnp.bfloat16
    ref = direct_causal_conv(np.asarray(jnp.asarray(u, jnp.bfloat16), np.float64),
                             np.asarray(jnp.asarray(h, jnp.bfloat16), np.float64))
    assert np.abs(np.asarray(y, np.float64) - ref).max() <= 2e-2 * np.abs(ref).max()


def test_fast_fft_size_is_the_smallest_smooth_size():
    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 600):
        got = hyena.fast_fft_size(n)
        assert got >= n and smooth(got)
        assert not any(smooth(m) for m in range(n, got))


def test_static_short_conv_matches_torch_conv1d_semantics():
    rng = np.random.default_rng(2)
    x, k = rng.standard_normal((2, 9, 4)), rng.standard_normal((4, 3))
    # torch Conv1d(groups=C, padding=K-1)[..., :L]: y[t] = sum_j k[c,j] x[t+j-(K-1)]
    ref = np.zeros_like(x)
    for t in range(9):
        for j in range(3):
            if 0 <= t + j - 2:
                ref[:, t] += k[:, j] * x[:, t + j - 2]
    np.testing.assert_allclose(hyena.short_causal_conv(jnp.asarray(x, jnp.float32), jnp.asarray(k, jnp.float32)),
                               ref, rtol=1e-5, atol=1e-5)


def values_and_grads(fast, ref, probe, *args):
    """fast(*args), ref(*args) and the gradients of (f(*args) * probe).sum() for both with respect to every
    argument, as one jitted program (op by op: ~50 programs to compile)."""
    @jax.jit
    def run(*args):
        grad = lambda f: jax.grad(lambda *a: (f(*a) * probe).sum(), argnums=tuple(range(len(args))))(*args)
        return fast(*args), ref(*args), grad(fast), grad(ref)
    return run(*args)


@pytest.mark.parametrize("kernel_size,groups", [(1, 1), (3, 4), (3, 12), (5, 2)])
def test_fast_dynamic_conv_equals_vmap_reference_in_values_and_gradients(kernel_size, groups):
    rng = np.random.default_rng(kernel_size * 10 + groups)
    x = jnp.asarray(rng.standard_normal((3, 7, 12)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 7, groups, kernel_size)), jnp.float32)
    probe = jnp.asarray(rng.standard_normal((3, 7, 12)), jnp.float32)
    fast, ref, g_fast, g_ref = values_and_grads(hyena.dynamic_short_conv, hyena.dynamic_short_conv_reference,
                                                probe, x, w)
    chex.assert_shape(fast, (3, 7, 12))
    np.testing.assert_allclose(fast, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_fast, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_token_independent_kernels_reduce_to_the_static_conv():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 6, 8)), jnp.float32)
    w_gk = jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)
    dyn = hyena.dynamic_short_conv(x, jnp.broadcast_to(w_gk, (2, 6, 4, 3)))
    np.testing.assert_allclose(dyn, hyena.short_causal_conv(x, jnp.repeat(w_gk, 2, axis=0)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kernel_size,rank", [(1, 1), (3, 4), (5, 2)])
def test_low_rank_channel_kernels_fast_equals_vmap_reference_in_values_and_gradients(kernel_size, rank):
    rng = np.random.default_rng(kernel_size * 10 + rank)
    x = jnp.asarray(rng.standard_normal((3, 7, 12)), jnp.float32)
    a = jnp.asarray(rng.standard_normal((3, 7, rank)), jnp.float32)
    basis = jnp.asarray(rng.standard_normal((rank, 12, kernel_size)), jnp.float32)
    bias = jnp.asarray(rng.standard_normal((12, kernel_size)), jnp.float32)

    def fast(x, a, basis, bias):
        return hyena.dynamic_short_conv(x, hyena.low_rank_kernels(a, basis, bias))

    probe = jnp.asarray(rng.standard_normal((3, 7, 12)), jnp.float32)
    got, ref, *grads = values_and_grads(fast, hyena.low_rank_dynamic_short_conv_reference, probe, x, a, basis, bias)
    chex.assert_shape((got, hyena.low_rank_kernels(a, basis, bias)), ((3, 7, 12), (3, 7, 12, kernel_size)))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    for g_fast, g_ref in zip(*grads):
        np.testing.assert_allclose(g_fast, g_ref, rtol=1e-4, atol=1e-4)


def test_channel_kernels_equal_a_per_channel_numpy_reference():
    rng = np.random.default_rng(5)
    x, a = rng.standard_normal((2, 6, 10)), rng.standard_normal((2, 6, 3))
    basis, bias = rng.standard_normal((3, 10, 3)), rng.standard_normal((10, 3))
    got = hyena.dynamic_short_conv(jnp.asarray(x, jnp.float32),
                                   hyena.low_rank_kernels(*(jnp.asarray(v, jnp.float32) for v in (a, basis, bias))))
    ref = np.zeros_like(x)
    for b in range(2):
        for t in range(6):
            for c in range(10):  # every channel its own kernel at every token
                w = a[b, t] @ basis[:, c, :] + bias[c]
                ref[b, t, c] = sum(w[j] * x[b, t + j - 2, c] for j in range(3) if t + j - 2 >= 0)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_positional_features_and_filter():
    z = hyena.positional_features(10, 5)
    assert z.shape == (10, 5)
    np.testing.assert_allclose(z[:, 0], np.linspace(0, 1, 10))
    np.testing.assert_allclose(z[3, 2], np.cos(2 * np.pi * 3 / 10 * 1.0), rtol=1e-4)  # band f = 1
    with pytest.raises(ValueError, match="odd"):
        hyena.positional_features(10, 4)
    filt = hyena.HyenaFilter(channels=6, max_len=40, width=8)
    params = filt.init(jax.random.key(0), 40)
    h, bias = filt.apply(params, 17)
    chex.assert_shape((h, bias), ((17, 6), (6,)))
    # The same filter evaluated for a shorter sequence is a prefix (positions scale with max_len).
    np.testing.assert_allclose(filt.apply(params, 40)[0][:17], h, rtol=1e-6)
    with pytest.raises(ValueError, match="exceeds the filter's max_len"):
        filt.apply(params, 41)


@pytest.fixture(scope="module")
def operator():
    op = hyena.HyenaOperator(d_model=12, max_len=32, kernel_size=3, filter_width=8, dynamic_kernels="add")
    rng = np.random.default_rng(4)
    u = jnp.asarray(rng.standard_normal((3, 11, 12)), jnp.float32)
    mask = jnp.asarray(np.arange(11)[None] < np.array([[11], [8], [4]]), jnp.int32)
    kernels = jnp.asarray(0.3 * rng.standard_normal((3, 11, 4, 3)), jnp.float32)
    params = op.init(jax.random.key(0), u, mask, kernels)
    return op, params, u, mask, kernels


def test_operator_shapes_and_padding(operator):
    op, params, u, mask, kernels = operator
    apply = jax.jit(op.apply)  # one program per kernel choice (op by op: ~40 programs each)
    for k in (None, kernels):
        y = apply(params, u, mask, k)
        chex.assert_shape(y, (3, 11, 12))
        assert float(jnp.abs(y * (1 - mask[..., None])).max()) == 0.0  # padded tokens output 0
        garbage = jnp.where(mask[..., None] > 0, u, 1e3)
        np.testing.assert_allclose(apply(params, garbage, mask, k), y, rtol=1e-5, atol=1e-5)


def test_operator_is_causal(operator):
    op, params, u, mask, kernels = operator
    full = jnp.ones_like(mask)
    grad = jax.jit(jax.grad(lambda x, p: op.apply(p, x, full, kernels)[:, 5].sum()))(u, params)  # one program
    past, future = float(jnp.abs(grad[:, :6]).max()), float(jnp.abs(grad[:, 6:]).max())
    assert past > 0 and future <= 1e-6 * past  # FFT round-off only


def test_operator_without_long_conv_has_no_filter():
    op = hyena.HyenaOperator(d_model=12, max_len=32, long_conv=False)
    u = jnp.ones((2, 5, 12))
    params = op.init(jax.random.key(0), u, jnp.ones((2, 5)))
    assert "filter" not in params["params"]


def _short_conv(op, params, u, mask, kernels):
    y, state = op.apply(params, u, mask, kernels, mutable=["intermediates"])
    return y, state["intermediates"]["short_conv"][0]


def test_replace_uses_only_the_generated_kernels_and_add_is_static_plus_dynamic(operator):
    op_add, params, u, mask, kernels = operator
    p = params["params"]
    x = (u @ p["in_proj"]["kernel"] + p["in_proj"]["bias"]) * mask[..., None]  # the short conv's input
    op_rep = op_add.clone(dynamic_kernels="replace")
    rep_params = {"params": {k: v for k, v in p.items() if k != "short_kernel"}}
    # 'replace' has no static kernel at all: the short conv is exactly the dynamic one.
    assert "short_kernel" not in op_rep.init(jax.random.key(0), u, mask, kernels)["params"]
    y_rep, conv_rep = _short_conv(op_rep, rep_params, u, mask, kernels)
    np.testing.assert_allclose(conv_rep, hyena.dynamic_short_conv(x, kernels), rtol=1e-5, atol=1e-5)
    # 'add': static + dynamic; with the static kernel at zero it equals 'replace' end to end.
    _, conv_add = _short_conv(op_add, params, u, mask, kernels)
    np.testing.assert_allclose(conv_add, hyena.short_causal_conv(x, p["short_kernel"])
                               + hyena.dynamic_short_conv(x, kernels), rtol=1e-5, atol=1e-5)
    zero_static = {"params": dict(p, short_kernel=jnp.zeros_like(p["short_kernel"]))}
    np.testing.assert_allclose(op_add.apply(zero_static, u, mask, kernels), y_rep, rtol=1e-5, atol=1e-5)
    assert not np.allclose(op_add.apply(params, u, mask, kernels), y_rep, atol=1e-4)
    with pytest.raises(ValueError, match="dynamic_kernels='sum'"):
        op_add.clone(dynamic_kernels="sum").apply(params, u, mask, kernels)
