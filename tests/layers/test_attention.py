"""`MultiHeadAttention`: every layout and implementation against a float64 numpy reference, parameter
names and shapes per layout, masks, dropout, errors, gradients; `dot_product_attention`; pooling."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.attention import MultiHeadAttention, dot_product_attention, masked_max, masked_mean

B, T, S, D, H = 3, 7, 5, 12, 2
DKV = 9  # a key/value width unlike the query's (separate-projection layouts)


def reference_attention(params, layout, q, kv, mask, *, heads, head_dim):
    """softmax((x_q W_q + b_q)(x_kv W_k + b_k)^T / sqrt(Dh), masked) (x_kv W_v + b_v) W_o + b_o, float64."""
    p = {k: np.asarray(v, np.float64) if not isinstance(v, dict) else
         {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in params.items()}
    inner = heads * head_dim
    if layout == "fairseq":
        w, b = p["in_proj_kernel"], p["in_proj_bias"]
        qkv = [(w[:, i], b[i]) for i in range(3)]
        out = (p["out_proj"]["kernel"], p["out_proj"]["bias"])
    elif layout == "torch":
        w, b = p["in_proj"]["kernel"], p["in_proj"]["bias"]
        qkv = [(w[:, i * inner:(i + 1) * inner], b[i * inner:(i + 1) * inner]) for i in range(3)]
        out = (p["out_proj"]["kernel"], p["out_proj"]["bias"])
    elif layout == "to_qkv":
        qkv = [(p[f"to_{n}"]["kernel"], 0.0) for n in "qkv"]
        out = (p["to_out"]["kernel"], p["to_out"]["bias"])
    else:
        qkv = [(p[n]["kernel"], p[n]["bias"]) for n in ("query", "key", "value")]
        out = (p["out"]["kernel"], p["out"]["bias"])
    (wq, bq), (wk, bk), (wv, bv) = qkv
    result = np.zeros((q.shape[0], q.shape[1], out[0].shape[1]))
    for b_ in range(q.shape[0]):
        qq, kk, vv = q[b_] @ wq + bq, kv[b_] @ wk + bk, kv[b_] @ wv + bv
        heads_out = []
        for h in range(heads):
            sl = slice(h * head_dim, (h + 1) * head_dim)
            logits = qq[:, sl] @ kk[:, sl].T / np.sqrt(head_dim)
            if mask is not None:
                allowed = mask[b_] if mask.ndim == 3 else np.broadcast_to(mask[b_][None], logits.shape)
                logits = np.where(allowed, logits, -np.inf)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            heads_out.append(e / e.sum(-1, keepdims=True) @ vv[:, sl])
        result[b_] = np.concatenate(heads_out, -1) @ out[0] + out[1]
    return result


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((B, T, D))
    kv = rng.standard_normal((B, S, D))
    kv_narrow = rng.standard_normal((B, S, DKV))
    mask = (np.arange(S)[None] < np.array([[5], [3], [1]])).astype(np.int32)
    return q, kv, kv_narrow, mask


def _perturbed(params):  # zero biases at init would hide a wrong bias
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [p + 0.1 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)])


CASES = [(layout, impl) for layout in ("flax", "fairseq", "torch", "to_qkv") for impl in ("xla", "heads_first")]


@pytest.mark.parametrize("layout,impl", CASES)
@pytest.mark.parametrize("self_attention", [False, True])
def test_matches_the_float64_reference(data, layout, impl, self_attention):
    q, kv, kv_narrow, mask = data
    if self_attention:
        kv_in, m = q, (np.arange(T)[None] < np.array([[7], [4], [2]])).astype(np.int32)
    else:
        kv_in = kv_narrow if layout in ("flax", "to_qkv") else kv
        m = mask
    head_dim = 5 if layout == "to_qkv" else None  # MultiHAtten: inner width heads x head_dim != D
    mha = MultiHeadAttention(H, head_dim=head_dim, layout=layout, implementation=impl)
    qj = jnp.asarray(q, jnp.float32)
    kvj = qj if self_attention else jnp.asarray(kv_in, jnp.float32)
    params = _perturbed(mha.init(jax.random.key(0), qj, kvj, jnp.asarray(m))["params"])
    out = jax.jit(lambda p, x, y: mha.apply({"params": p}, x, x if self_attention else y, jnp.asarray(m)))(
        params, qj, kvj)
    chex.assert_shape(out, (B, T, D))
    ref = reference_attention(params, layout, q, kv_in, m.astype(bool), heads=H, head_dim=head_dim or D // H)
    np.testing.assert_allclose(np.asarray(out), ref, atol=2e-5, rtol=2e-5)


PARAM_SHAPES = {
    "flax": {"query": {"kernel": (D, D), "bias": (D,)}, "key": {"kernel": (DKV, D), "bias": (D,)},
             "value": {"kernel": (DKV, D), "bias": (D,)}, "out": {"kernel": (D, D), "bias": (D,)}},
    "fairseq": {"in_proj_kernel": (D, 3, D), "in_proj_bias": (3, D), "out_proj": {"kernel": (D, D), "bias": (D,)}},
    "torch": {"in_proj": {"kernel": (D, 3 * D), "bias": (3 * D,)}, "out_proj": {"kernel": (D, D), "bias": (D,)}},
    "to_qkv": {"to_q": {"kernel": (D, 2 * 5)}, "to_k": {"kernel": (DKV, 2 * 5)}, "to_v": {"kernel": (DKV, 2 * 5)},
               "to_out": {"kernel": (2 * 5, D), "bias": (D,)}},
}


@pytest.mark.parametrize("layout", list(PARAM_SHAPES))
def test_parameter_names_and_shapes_per_layout(data, layout):
    q, kv, kv_narrow, _ = data
    kv_in = kv_narrow if layout in ("flax", "to_qkv") else kv
    mha = MultiHeadAttention(H, head_dim=5 if layout == "to_qkv" else None, layout=layout)
    shapes = jax.eval_shape(lambda: mha.init(jax.random.key(0), jnp.asarray(q, jnp.float32),
                                             jnp.asarray(kv_in, jnp.float32))["params"])
    assert jax.tree_util.tree_map(lambda s: s.shape, shapes) == PARAM_SHAPES[layout]


def test_implementations_agree_with_dropout_off_and_gradients_are_finite(data):
    q, kv, _, mask = data
    args = (jnp.asarray(q, jnp.float32), jnp.asarray(kv, jnp.float32), jnp.asarray(mask))
    xla = MultiHeadAttention(H, layout="torch")
    fast = MultiHeadAttention(H, layout="torch", implementation="heads_first")
    params = _perturbed(xla.init(jax.random.key(0), *args)["params"])

    def loss(m, p, x):
        return jnp.sum(jnp.sin(m.apply({"params": p}, x, args[1], args[2])))
    grads = jax.jit(lambda p, x: [jax.grad(lambda p, x, m=m: loss(m, p, x), argnums=(0, 1))(p, x) for m in (xla, fast)])
    g_xla, g_fast = grads(params, args[0])  # one program (op by op: ~140)
    chex.assert_tree_all_finite(g_fast)
    chex.assert_trees_all_close(g_xla, g_fast, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("impl", ["xla", "heads_first"])
def test_attention_dropout_needs_a_key_and_is_reproducible(data, impl):
    q, kv, _, mask = data
    mha = MultiHeadAttention(H, dropout=0.4, layout="fairseq", implementation=impl)
    args = (jnp.asarray(q, jnp.float32), jnp.asarray(kv, jnp.float32), jnp.asarray(mask))
    params = mha.init(jax.random.key(0), *args)
    run = jax.jit(lambda k: mha.apply(params, *args, train=True, rngs={"dropout": k}))
    a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(mha.apply(params, *args), mha.apply(params, *args, train=False))


def test_masked_keys_never_matter(data):
    q, kv, _, mask = data
    for impl in ("xla", "heads_first"):
        mha = MultiHeadAttention(H, layout="torch", implementation=impl)
        args = [jnp.asarray(q, jnp.float32), jnp.asarray(kv, jnp.float32), jnp.asarray(mask)]
        params = mha.init(jax.random.key(0), *args)
        noisy = jnp.where(args[2][..., None] > 0, args[1], 1e3)
        np.testing.assert_allclose(mha.apply(params, args[0], noisy, args[2]), mha.apply(params, *args), atol=1e-5)


def test_bad_options_are_errors(data):
    q, _, _, _ = data
    x = jnp.asarray(q, jnp.float32)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        MultiHeadAttention(5).init(jax.random.key(0), x, x)
    with pytest.raises(ValueError, match="layout="):
        MultiHeadAttention(H, layout="keras").init(jax.random.key(0), x, x)
    with pytest.raises(ValueError, match="implementation="):
        MultiHeadAttention(H, implementation="cuda").init(jax.random.key(0), x, x)
    with pytest.raises(ValueError, match="key mask"):
        MultiHeadAttention(H, implementation="heads_first").init(jax.random.key(0), x, x, jnp.ones((B, T, T), bool))


def test_per_query_mask(data):
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((B, T, H, 4), (B, S, H, 4), (B, S, H, 4)))
    mask = rng.random((B, T, S)) > 0.3
    mask[..., 0] = True
    out = dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask))
    logits = np.where(mask[:, None], np.einsum("bthd,bshd->bhts", q, k) / 2.0, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(out, np.einsum("bhts,bshd->bthd", w, v), atol=1e-5)


def test_masked_pooling():
    x = jnp.arange(B * T * 2, dtype=jnp.float32).reshape(B, T, 2)
    mask = jnp.asarray(np.arange(T)[None] < np.array([[7], [3], [0]]))
    np.testing.assert_allclose(masked_mean(x, mask)[1], np.asarray(x[1, :3]).mean(0))
    np.testing.assert_allclose(masked_max(x, mask)[1], np.asarray(x[1, 2]))
    assert not np.asarray(masked_mean(x, mask)[2]).any() and not np.asarray(masked_max(x, mask)[2]).any()
