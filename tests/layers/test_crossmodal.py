"""Crossmodal transformer: parity with a float64 numpy transcription of the official MulT layer,
positions, the future mask, masks respected, last-valid pooling."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.crossmodal import CrossmodalTransformer, future_mask, last_valid, positions, sinusoidal_table

B, T, S, D, H = 3, 7, 5, 12, 2


def fairseq_embedding(num, dim):
    """fairseq get_embedding, transcribed element by element (padding_idx 0)."""
    half = dim // 2
    out = np.zeros((num, dim))
    for p in range(num):
        for i in range(half):
            f = math.exp(i * -(math.log(10000) / (half - 1)))
            out[p, i], out[p, half + i] = math.sin(p * f), math.cos(p * f)
    out[0] = 0
    return out


@pytest.mark.parametrize("dim", [12, 7])
def test_sinusoidal_table_matches_fairseq(dim):
    np.testing.assert_allclose(sinusoidal_table(9, dim), fairseq_embedding(9, dim), atol=1e-6)


def test_positions_start_at_one_and_skip_padding():
    mask = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    pos = np.asarray(positions(mask, 6))
    table = fairseq_embedding(5, 6)
    np.testing.assert_allclose(pos[0, :3], table[1:4], atol=1e-6)
    np.testing.assert_allclose(pos[1, 0], table[1], atol=1e-6)
    assert not pos[0, 3].any() and not pos[1, 1:].any()


def official_future_mask(tq, tk):
    """modules/transformer.py buffered_future_mask: -inf above diagonal 1 + |tk - tq| -> allowed = finite."""
    return np.triu(np.full((tq, tk), -np.inf), 1 + abs(tk - tq)) == 0


@pytest.mark.parametrize("tq,tk", [(7, 5), (5, 7), (6, 6)])
def test_future_mask_matches_official_on_full_length(tq, tk):
    got = future_mask(jnp.ones((2, tq)), jnp.ones((2, tk)))
    np.testing.assert_array_equal(got[0], official_future_mask(tq, tk))


def test_future_mask_uses_valid_lengths():
    qm = jnp.array([[1, 1, 1, 0, 0, 0]])
    km = jnp.array([[1, 1, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(np.asarray(future_mask(qm, km))[0, :3, :5], official_future_mask(3, 5))


def test_last_valid():
    x = jnp.arange(2 * 4 * 3, dtype=jnp.float32).reshape(2, 4, 3)
    out = last_valid(x, jnp.array([[1, 1, 0, 0], [0, 0, 0, 0]]))
    np.testing.assert_array_equal(out, np.stack([np.asarray(x[0, 1]), np.zeros(3)]))


# ----------------------------------------------------------------------------- the whole transformer

def _ln(x, p, eps=1e-5):
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def reference_transformer(params, x, xm, src, sm, *, heads, future):
    """Official TransformerEncoder.forward (eval mode), float64, one example at a time, no JAX."""
    d = x.shape[-1]
    table = fairseq_embedding(max(x.shape[1], src.shape[1]) + 1, d)
    outs = []
    for b in range(x.shape[0]):
        lq, lk = int(xm[b].sum()), int(sm[b].sum())
        h = math.sqrt(d) * x[b, :lq] + table[1:lq + 1]
        s = math.sqrt(d) * src[b, :lk] + table[1:lk + 1]
        allowed = official_future_mask(lq, lk) if future else np.ones((lq, lk), bool)
        for i in range(len([k for k in params if k.startswith("layer_")])):
            p = params[f"layer_{i}"]
            w, bias = p["attn"]["in_proj_kernel"], p["attn"]["in_proj_bias"]
            q_in, kv_in = _ln(h, p["ln_attn"]), _ln(s, p["ln_attn"])
            q, k, v = q_in @ w[:, 0] + bias[0], kv_in @ w[:, 1] + bias[1], kv_in @ w[:, 2] + bias[2]
            dh = d // heads
            att = []
            for j in range(heads):
                sl = slice(j * dh, (j + 1) * dh)
                logits = (q[:, sl] * dh ** -0.5) @ k[:, sl].T
                logits = np.where(allowed, logits, -np.inf)
                a = np.exp(logits - logits.max(-1, keepdims=True))
                att.append((a / a.sum(-1, keepdims=True)) @ v[:, sl])
            o = np.concatenate(att, -1) @ p["attn"]["out_proj"]["kernel"] + p["attn"]["out_proj"]["bias"]
            h = h + o
            f = np.maximum(_ln(h, p["ln_ffn"]) @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
            h = h + f @ p["fc2"]["kernel"] + p["fc2"]["bias"]
        outs.append(_ln(h, params["ln_out"]))
    return outs


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    x, src = rng.standard_normal((B, T, D)), rng.standard_normal((B, S, D))
    xm = (np.arange(T)[None] < np.array([[7], [4], [2]])).astype(np.int32)
    sm = (np.arange(S)[None] < np.array([[5], [5], [3]])).astype(np.int32)
    return x, xm, src, sm


@pytest.mark.parametrize("future", [True, False])
def test_matches_the_official_layer_in_float64(data, future):
    x, xm, src, sm = data
    ct = CrossmodalTransformer(H, 2, use_future_mask=future)
    args = [jnp.asarray(a, jnp.float32) for a in (x, xm, src, sm)]
    params = jax.jit(ct.init)(jax.random.key(0), *args)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(3), p.shape), params)
    out = np.asarray(jax.jit(lambda p: ct.apply({"params": p}, *args))(params))
    chex.assert_shape(out, (B, T, D))
    ref = reference_transformer(jax.tree_util.tree_map(lambda p: np.asarray(p, np.float64), params),
                                x, xm, src, sm, heads=H, future=future)
    for b, r in enumerate(ref):
        np.testing.assert_allclose(out[b, :len(r)], r, atol=1e-4, rtol=1e-4)


def test_masked_steps_never_matter(data):
    x, xm, src, sm = data
    ct = CrossmodalTransformer(H, 1)
    args = [jnp.asarray(a, jnp.float32) for a in (x, xm, src, sm)]
    params = jax.jit(ct.init)(jax.random.key(0), *args)
    f = jax.jit(lambda x, s: ct.apply(params, x, args[1], s, args[3]))
    noisy_x = jnp.where(args[1][..., None] > 0, args[0], 1e3)
    noisy_s = jnp.where(args[3][..., None] > 0, args[2], -1e3)
    a, b = np.asarray(f(args[0], args[2])), np.asarray(f(noisy_x, noisy_s))
    valid = np.asarray(xm, bool)
    np.testing.assert_allclose(a[valid], b[valid], atol=1e-5)


def test_self_attention_and_dropout_need_a_key(data):
    x, xm, _, _ = data
    ct = CrossmodalTransformer(H, 1, attn_dropout=0.3, embed_dropout=0.3)
    xs = jnp.asarray(x, jnp.float32)
    params = jax.jit(ct.init)(jax.random.key(0), xs, jnp.asarray(xm))
    run = jax.jit(lambda k: ct.apply(params, xs, jnp.asarray(xm), train=True, rngs={"dropout": k}))
    a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        CrossmodalTransformer(5, 1).init(jax.random.key(0), xs, jnp.asarray(xm))
