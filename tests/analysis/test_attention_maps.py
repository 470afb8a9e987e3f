"""Attention maps (the 'attention' collection of MultiHeadAttention) and the KL between attention maps."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mult_fixtures import feature_batch, load_config

from mmfuse_jax import registry
from mmfuse_jax.analysis.attention_maps import attention_kl, attention_maps, per_example_kl
from mmfuse_jax.layers.attention import ATTENTION_COLLECTION, MultiHeadAttention
from mmfuse_jax.training import init_pieces

SMALL = {"dim": 8, "num_layers": 1, "mem_layers": 1, "num_heads": 2, "embed_dropout": 0.0, "attn_dropout": 0.0,
         "relu_dropout": 0.0, "res_dropout": 0.0, "out_dropout": 0.0}
LENS = {"text": 7, "audio": 11, "video": 5}


def _inputs():
    rng = np.random.default_rng(0)
    q, kv = rng.standard_normal((2, 4, 6)).astype(np.float32), rng.standard_normal((2, 5, 3)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], np.int32)
    return jnp.asarray(q), jnp.asarray(kv), jnp.asarray(mask)


@pytest.mark.parametrize("layout,implementation", [("flax", "xla"), ("to_qkv", "heads_first")])
def test_sown_probabilities_are_the_ones_the_attention_uses(layout, implementation):
    q, kv, mask = _inputs()
    mha = MultiHeadAttention(2, features=6, head_dim=3, layout=layout, implementation=implementation)
    params = mha.init(jax.random.key(0), q, kv, mask)["params"]
    y, state = mha.apply({"params": params}, q, kv, mask, mutable=[ATTENTION_COLLECTION])
    (probs,) = state[ATTENTION_COLLECTION]["cross_attention"]
    chex.assert_shape(probs, (2, 2, 4, 5))
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs[0, :, :, 3:], 0.0)  # masked keys get no weight
    names = {"flax": ("query", "key", "value", "out"), "to_qkv": ("to_q", "to_k", "to_v", "to_out")}[layout]
    lin = lambda x, n: x @ params[n]["kernel"] + (params[n]["bias"] if "bias" in params[n] else 0.0)
    qh, kh, vh = (lin(x, n).reshape(*x.shape[:2], 2, 3) for x, n in zip((q, kv, kv), names[:3]))
    logits = np.einsum("bthd,bshd->bhts", qh, kh) / np.sqrt(3.0)
    logits = np.where(np.asarray(mask)[:, None, None] > 0, logits, -np.inf)
    want = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(probs, want / want.sum(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    ctx = np.einsum("bhts,bshd->bthd", probs, vh).reshape(2, 4, 6)
    np.testing.assert_allclose(y, lin(ctx, names[3]), rtol=1e-4, atol=1e-5)  # y is built from these weights


def test_maps_cost_nothing_unless_requested():
    q, kv, mask = _inputs()
    mha = MultiHeadAttention(2, features=6)
    params = mha.init(jax.random.key(0), q, kv, mask)
    assert set(params) == {"params"}  # init sows no maps
    plain = jax.make_jaxpr(lambda p: mha.apply(p, q, kv, mask))(params)
    sown = jax.make_jaxpr(lambda p: mha.apply(p, q, kv, mask, mutable=[ATTENTION_COLLECTION]))(params)
    assert len(plain.eqns) < len(sown.eqns)  # the explicit softmax is traced only when asked
    _, state = mha.apply(mha.init(jax.random.key(1), q, q), q, q, None, mutable=[ATTENTION_COLLECTION])
    assert set(state[ATTENTION_COLLECTION]) == {"self_attention"}  # keys from the query's own input


def _model(name):
    c = load_config(name, "mosi")
    c.model.update(SMALL)
    c.dataset.feat_dims = {"text": 12, "audio": 5, "video": 6}
    m = registry.get(name).build(c.model, {"num_classes": 1})
    batch = feature_batch(c.dataset)
    return m, batch, init_pieces.call(lambda: m.init(jax.random.key(0), batch)["params"])


@pytest.mark.parametrize("name", ["mult", "hct_dmg"])
def test_crossmodal_maps_of_mult_and_hct_dmg(name):
    m, batch, params = _model(name)
    primary = {"primary": 0} if name == "hct_dmg" else {}

    @jax.jit  # one program for the four forwards (op by op, each op would compile a program of its own)
    def forwards(b):
        out, _ = m.apply({"params": params}, b, mutable=[ATTENTION_COLLECTION], **primary)
        return (attention_maps(m, params, b), attention_maps(m, params, b, kind="self_attention"),
                m.apply({"params": params}, b), out)

    maps, self_maps, plain, out = forwards(batch)
    if name == "mult":  # six crossmodal transformers target_with_source (the memories are self-attention)
        want = {f"{t}_with_{s}/layer_0/attn": (LENS[t], LENS[s]) for t in LENS for s in LENS if s != t}
    else:  # primary = argmax(gate_logits) = text at init (equal logits): stage 1 between A1/A2, stage 2 into text
        want = {"stage1_a/transformer/layer_0/attn": (11, 5), "stage1_b/transformer/layer_0/attn": (5, 11),
                "stage2_a/transformer/layer_0/attn": (7, 11), "stage2_b/transformer/layer_0/attn": (7, 5)}
    assert set(maps) == set(want)
    for k, (t, s) in want.items():
        chex.assert_shape(maps[k], (3, 2, t, s))
        np.testing.assert_allclose(maps[k].sum(-1), 1.0, rtol=1e-5)
    assert not set(self_maps) & set(want)
    # asking for the maps leaves the forward unchanged
    np.testing.assert_allclose(out["prediction"], plain["prediction"], rtol=1e-5, atol=1e-6)


def test_kl_against_the_hand_formula():
    rng = np.random.default_rng(1)
    p, q = rng.dirichlet(np.ones(6), (3, 4)), rng.dirichlet(np.ones(6), (3, 4))
    want = (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(attention_kl(p, q), want, rtol=1e-5)
    np.testing.assert_allclose(attention_kl(p, p), 0.0, atol=1e-6)
    p0 = np.array([0.5, 0.5, 0.0]), np.array([0.25, 0.25, 0.5])  # 0 log 0 = 0
    assert float(attention_kl(*p0)) == pytest.approx(np.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="must match"):
        attention_kl(p, q[..., :5])


def test_per_example_kl_averages_heads_and_valid_queries():
    rng = np.random.default_rng(2)
    p, q = rng.dirichlet(np.ones(5), (2, 3, 4)), rng.dirichlet(np.ones(5), (2, 3, 4))  # [B, H, T, S]
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    kl = (p * np.log(p / q)).sum(-1).mean(1)  # [B, T]
    want = np.array([kl[0, :2].mean(), kl[1].mean()])
    np.testing.assert_allclose(per_example_kl(p, q, mask), want, rtol=1e-5)
    np.testing.assert_allclose(per_example_kl(p, q), kl.mean(-1), rtol=1e-5)
