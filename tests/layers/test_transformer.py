"""`TorchEncoderLayer` against a float64 numpy transcription of ``nn.TransformerEncoderLayer`` (post-LN,
GELU, key padding mask), both attention implementations; `Linear`'s PyTorch initialisation."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmfuse_jax.layers.linear import Linear
from mmfuse_jax.layers.transformer import TorchEncoderLayer

B, T, D, H, FF = 3, 7, 12, 2, 10


def _ln(x, p, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * p["scale"] + p["bias"]


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def reference_layer(p, x, mask):
    """torch.nn.TransformerEncoderLayer.forward (eval, norm_first=False, batch_first=True), float64."""
    w, b = p["self_attn"]["in_proj"]["kernel"], p["self_attn"]["in_proj"]["bias"]
    out = np.zeros_like(x)
    dh = D // H
    for i in range(x.shape[0]):
        q, k, v = (x[i] @ w[:, j * D:(j + 1) * D] + b[j * D:(j + 1) * D] for j in range(3))
        heads = []
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            logits = np.where(mask[i][None], q[:, sl] @ k[:, sl].T / math.sqrt(dh), -np.inf)
            e = np.exp(logits - logits.max(-1, keepdims=True))
            heads.append(e / e.sum(-1, keepdims=True) @ v[:, sl])
        att = np.concatenate(heads, -1) @ p["self_attn"]["out_proj"]["kernel"] + p["self_attn"]["out_proj"]["bias"]
        y = _ln(x[i] + att, p["norm1"])
        f = _gelu(y @ p["linear1"]["kernel"] + p["linear1"]["bias"]) @ p["linear2"]["kernel"] + p["linear2"]["bias"]
        out[i] = _ln(y + f, p["norm2"])
    return out


@pytest.mark.parametrize("impl", ["heads_first", "xla"])
def test_matches_torch_encoder_layer_in_float64(impl):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, D))
    mask = np.arange(T)[None] < np.array([[7], [4], [1]])
    layer = TorchEncoderLayer(H, FF, 0.1, implementation=impl)
    args = (jnp.asarray(x, jnp.float32), jnp.asarray(mask))
    params = layer.init(jax.random.key(0), *args, train=False)["params"]
    params = jax.tree_util.tree_map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(2), p.shape), params)
    out = jax.jit(lambda p: layer.apply({"params": p}, *args, train=False))(params)
    chex.assert_shape(out, (B, T, D))
    ref = reference_layer(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params), x, mask)
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=1e-4)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply({"params": p}, *args, train=True,
                                                           rngs={"dropout": jax.random.key(1)}) ** 2)))(params)
    chex.assert_tree_all_finite(grads)


def test_linear_uses_pytorch_default_bounds():
    params = Linear(400).init(jax.random.key(0), jnp.ones((1, 100)))["params"]
    for leaf in (params["kernel"], params["bias"]):
        assert float(jnp.abs(leaf).max()) <= 0.1 and float(jnp.abs(leaf).max()) > 0.09  # U(+-1/sqrt(100))
