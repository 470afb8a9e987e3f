"""`SequenceEncoder`: shapes per block, parameter layout, masked frames never matter, pooling of a
missing modality, composition parity (projection + the layer stack), hidden states, errors, gradients."""
from __future__ import annotations

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.encoders.sequence import SequenceEncoder
from mmfuse_jax.layers.crossmodal import CrossmodalTransformer
from mmfuse_jax.layers.transformer import TorchEncoderLayer

B, T, DIN, D, H = 3, 7, 5, 12, 2
ENCODERS = {
    "crossmodal": SequenceEncoder(D, H, 2, dropout=0.1),
    "crossmodal_projection_only": SequenceEncoder(D, H, 0),
    "torch": SequenceEncoder(D, H, 2, dropout=0.1, block="torch", max_len=T),
    "conv": SequenceEncoder(D, dropout=0.1, block="conv", kernel_size=3),
}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((B, T, DIN)), jnp.float32)
    mask = jnp.asarray((np.arange(T)[None] < np.array([[7], [4], [0]])).astype(np.int32))
    return x, mask


@pytest.fixture(scope="module")
def initialised(data):
    return {k: jax.jit(lambda m=m: m.init(jax.random.key(0), *data, train=False))() for k, m in ENCODERS.items()}


@pytest.mark.parametrize("name", list(ENCODERS))
def test_shapes_masks_and_gradients(data, initialised, name):
    x, mask = data
    enc, params = ENCODERS[name], initialised[name]
    run = jax.jit(lambda p, x: enc.apply(p, x, mask, train=False))
    out = run(params, x)
    chex.assert_shape(out, (B, T, D))
    chex.assert_tree_all_finite(out)
    noisy = jnp.where(mask[..., None] > 0, x, 1e3)  # padded frames hold garbage
    valid = np.asarray(mask, bool)
    np.testing.assert_allclose(np.asarray(run(params, noisy))[valid], np.asarray(out)[valid], atol=1e-4)
    grads = jax.jit(jax.grad(  # one program (op by op, each op would compile one of its own)
        lambda p: jnp.sum(enc.apply(p, x, mask, train=True, rngs={"dropout": jax.random.key(1)}) ** 2)))(params)
    chex.assert_tree_all_finite(grads)


def test_parameter_layouts(initialised):
    top = {k: sorted(v["params"]) for k, v in initialised.items()}
    assert top == {"crossmodal": ["proj", "transformer"], "crossmodal_projection_only": ["proj"],
                   "torch": ["layer_0", "layer_1", "position_embeddings", "proj"], "conv": ["conv", "proj"]}
    torch_layer = initialised["torch"]["params"]["layer_0"]
    assert sorted(torch_layer) == ["linear1", "linear2", "norm1", "norm2", "self_attn"]
    chex.assert_shape(torch_layer["linear1"]["kernel"], (D, D // 2))  # KuDA's FFN: width / 2


def test_crossmodal_block_is_the_projection_then_the_transformer(data, initialised):
    x, mask = data
    p = initialised["crossmodal"]["params"]
    h = x @ p["proj"]["kernel"] + p["proj"]["bias"]
    ref = CrossmodalTransformer(H, 2, relu_dropout=0.1, res_dropout=0.1, use_future_mask=False).apply(
        {"params": p["transformer"]}, h, mask)
    np.testing.assert_allclose(ENCODERS["crossmodal"].apply(initialised["crossmodal"], x, mask, train=False), ref,
                               atol=1e-5)


class HiddenStates(SequenceEncoder):
    """A model that taps the layers (as KuDA's ``UniEncoder``) calls `hidden_states` from its own ``__call__``."""

    @nn.compact
    def __call__(self, x_btd, mask_bt, *, train: bool):
        return self.hidden_states(x_btd, mask_bt, train=train)


def test_torch_block_hidden_states_are_each_layer(data, initialised):
    x, mask = data
    params = initialised["torch"]
    hidden = HiddenStates(D, H, 2, dropout=0.1, block="torch", max_len=T).apply(params, x, mask, train=False)
    assert len(hidden) == 3
    p = params["params"]
    h0 = x @ p["proj"]["kernel"] + p["proj"]["bias"] + p["position_embeddings"]
    np.testing.assert_allclose(hidden[0], h0, atol=1e-6)
    h1 = TorchEncoderLayer(H, D // 2, 0.1).apply({"params": p["layer_0"]}, h0, mask, train=False)
    np.testing.assert_allclose(hidden[1], h1, atol=1e-5)


def test_mean_max_pooling_and_a_missing_modality(data, initialised):
    x, mask = data
    enc = SequenceEncoder(D, dropout=0.1, block="conv", pooling="mean_max")
    out = enc.apply(initialised["conv"], x, mask, train=False)
    chex.assert_shape(out, (B, 2 * D))
    frames = np.asarray(ENCODERS["conv"].apply(initialised["conv"], x, mask, train=False))
    np.testing.assert_allclose(out[1, :D], frames[1, :4].mean(0), atol=1e-6)
    np.testing.assert_allclose(out[1, D:], frames[1, :4].max(0), atol=1e-6)
    assert not np.asarray(out[2]).any()  # all frames masked: zeros, never NaN


def test_bad_settings_are_errors(data):
    x, mask = data
    with pytest.raises(ValueError, match="block="):
        SequenceEncoder(D, block="lstm").init(jax.random.key(0), x, mask, train=False)
    with pytest.raises(ValueError, match="pooling="):
        SequenceEncoder(D, pooling="sum").init(jax.random.key(0), x, mask, train=False)
    with pytest.raises(ValueError, match="learned positions"):
        SequenceEncoder(D, H, 1, block="torch", max_len=T + 2).init(jax.random.key(0), x, mask, train=False)
