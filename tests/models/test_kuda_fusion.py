"""KuDA ``fusion`` switch: 'concat' / 'add' replace the dynamic modality attention fusion (DyRout blocks)."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_kuda import B, build, make_batch  # noqa: E402  (tests/models is on sys.path under pytest)

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models import kuda
from mmfuse_jax.training import init_pieces


@pytest.fixture(scope="module")
def variants():
    out = {}
    for fusion in ("attention", "concat", "add"):
        m = build(fusion=fusion)
        params = init_pieces.call(lambda k, m=m: m.init(k, make_batch(), train=False), jax.random.key(0))["params"]
        out[fusion] = (m, params, jax.jit(lambda p, b, m=m: m.apply({"params": p}, b, train=False)))
    return out


@pytest.mark.parametrize("fusion", ["concat", "add"])
def test_fusion_variant_shapes_and_parameters(variants, fusion):
    m, params, evaluate = variants[fusion]
    out = evaluate(params, make_batch())
    chex.assert_shape(out["prediction"], (B,))
    chex.assert_shape(out["embedding"], (B, m.hidden))
    chex.assert_shape(out["nce_b"], (B,))
    chex.assert_shape(out["unimodal_prediction"], (B, 3))
    chex.assert_tree_all_finite(out)
    assert "ratio" not in out
    assert not [k for k in params if k.startswith("block_")]  # the DyRout blocks are gone
    assert ("concat_fusion" in params) == (fusion == "concat")
    others = set(variants["attention"][1]) - {k for k in variants["attention"][1] if k.startswith("block_")}
    assert set(params) - {"concat_fusion"} == others  # every other module is the attention model's


def test_add_changes_only_the_fusion(variants):
    """Same weights for everything but the fusion: unimodal outputs equal, fused prediction differs."""
    _, p_att, eval_att = variants["attention"]
    _, _, eval_add = variants["add"]
    p_add = {k: v for k, v in p_att.items() if not k.startswith("block_")}
    att, add = eval_att(p_att, make_batch()), eval_add(p_add, make_batch())
    np.testing.assert_array_equal(att["unimodal_prediction"], add["unimodal_prediction"])
    assert np.max(np.abs(np.asarray(att["prediction"]) - np.asarray(add["prediction"]))) > 1e-4


def test_concat_with_stacked_identities_equals_add(variants):
    """Linear([h_T; h_V; h_A]) with kernel [I; I; I] and zero bias is h_T + h_V + h_A."""
    m, p_cat, eval_cat = variants["concat"]
    _, _, eval_add = variants["add"]
    eye = jnp.eye(m.hidden)
    chex.assert_shape(p_cat["concat_fusion"]["kernel"], (3 * m.hidden, m.hidden))
    p_cat = dict(p_cat)
    p_cat["concat_fusion"] = {k: (jnp.concatenate([eye] * 3, 0) if k == "kernel" else jnp.zeros_like(v))
                              for k, v in p_cat["concat_fusion"].items()}
    p_add = {k: v for k, v in p_cat.items() if k != "concat_fusion"}
    cat, add = eval_cat(p_cat, make_batch()), eval_add(p_add, make_batch())
    np.testing.assert_allclose(cat["prediction"], add["prediction"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cat["embedding"], add["embedding"], rtol=1e-5, atol=1e-6)


def test_fusion_switch_errors():
    with pytest.raises(ConfigError, match="config.model.fusion='sum'"):
        build(fusion="sum").init(jax.random.key(0), make_batch(), train=False)
    with pytest.raises(ConfigError, match="ratio_mode='paper'"):
        build(fusion="concat", ratio_mode="paper").init(jax.random.key(0), make_batch(), train=False)


def test_concat_variant_trains(variants):
    """Tiny-preset model, fusion='concat': gradients reach the fusion Linear and a few steps fit a batch."""
    m, params, _ = variants["concat"]
    batch = make_batch()

    def objective(p):
        return kuda.loss_fn(m.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(1)}), batch)[0]
    tx = optax.adam(3e-3)

    @jax.jit  # one program: Adam's update run op by op would compile a program per op and leaf shape
    def step(p, opt):
        loss, g = jax.value_and_grad(objective)(p)
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt, loss, g

    params, opt, loss0, grads = step(params, jax.jit(tx.init)(params))
    assert np.any(np.asarray(grads["concat_fusion"]["kernel"]))
    for _ in range(14):  # 15 updates in all; the last loss is after 14
        params, opt, loss, _ = step(params, opt)
    assert float(loss) < 0.5 * float(loss0), (float(loss0), float(loss))
