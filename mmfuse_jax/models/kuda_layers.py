"""Building blocks of KuDA, each a port of one class of the official PyTorch code.

Sources (github:MKMaS-GUET/KuDA @ e60ef6b): ``models/Encoder_KIAdapter.py`` (`TorchEncoderLayer`,
`MixDomainAdapter`, `Decoder`), ``models/DyRoutFusion_CLS.py`` (`MultiHAtten`, `FeedForward`,
`CrossTransformer`, `cpc_nce`, `SentiHead`), ``core/utils.py`` (`sentiment_ratio`). Initialisers follow
PyTorch's defaults (``nn.Linear``: U(+-1/sqrt(fan_in)) for weight and bias; ``nn.MultiheadAttention``:
Xavier-uniform packed in-projection, zero biases) so a fresh model starts at the same scale. GELU is the
exact (erf) form of ``nn.GELU``; LayerNorm eps is PyTorch's 1e-5 unless the official code sets it.

Attention is the shared `layers.attention.MultiHeadAttention`: ``layout='torch'`` in the encoder layers
(`layers.transformer.TorchEncoderLayer`), ``layout='to_qkv'`` for ``MultiHAtten``, both with
``implementation='heads_first'``. Speed (benchmarks/kuda_vs_official.py; on CPU the audio encoder,
attention over 400 frames, is half of a train step): dropout masks come from a counter-based hash
(`layers.dropout.HashedDropout`), not threefry; attention runs heads first and, for large T x S, over
cache-sized batch chunks with a flash-attention style backward pass (layers/heads_first.py); projections
that share an input are one matmul. Parameter names, shapes and initialisers are the official ones.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.layers.dropout import HashedDropout
from mmfuse_jax.layers.linear import Linear
from mmfuse_jax.layers.transformer import TorchEncoderLayer, gelu, layer_norm


class MixDomainAdapter(nn.Module):
    """x + up(TE(down(x))): ``MixDomainAdapter(P, P/2)`` with 2 encoder layers of width P/2, FFN P/4."""

    heads: int = 4
    layers: int = 2
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x_btp: jax.Array, mask_bt: jax.Array, *, train: bool) -> jax.Array:
        p = x_btp.shape[-1]
        h = Linear(p // 2, name="down_project")(x_btp)
        for i in range(self.layers):
            h = TorchEncoderLayer(self.heads, p // 4, self.dropout, name=f"layer_{i}")(h, mask_bt, train=train)
        return Linear(p, name="up_project")(h) + x_btp


class Decoder(nn.Module):
    """``Classifier(2P, [P/2, P/4, P/8], 1)``: mean over time (pads included) -> MLP with GELU -> [B]."""

    width: int  # P

    @nn.compact
    def __call__(self, u_btd: jax.Array) -> jax.Array:
        h = u_btd.mean(axis=-2)  # Dropout(p=0) in the official code: omitted
        for i, f in enumerate((self.width // 2, self.width // 4, self.width // 8)):
            h = gelu(Linear(f, name=f"linear_{i}")(h))
        return Linear(1, name="linear_3")(h)[..., 0]


def multi_h_atten(heads: int, head_dim: int, name: str) -> MultiHeadAttention:
    """``MultiHAtten(dim, heads=8, dim_head=64)``: bias-free q/k/v to heads*64, softmax, no mask, ``to_out``.

    Its output Dropout (``to_out[1]``) is the caller's. Keys and values always share a source here.
    """
    return MultiHeadAttention(heads, head_dim=head_dim, layout="to_qkv", implementation="heads_first", name=name)


class FeedForward(nn.Module):
    """``FeedForward(dim, hidden)``: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    hidden: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        drop = lambda y: HashedDropout(self.dropout)(y, deterministic=not train)
        h = drop(gelu(Linear(self.hidden, name="linear1")(layer_norm("norm")(x))))
        return drop(Linear(x.shape[-1], name="linear2")(h))


class CrossTransformer(nn.Module):
    """Target queries source: t = LN1(MHA(target, source, source) + target); LN2(FFN(t) + t)."""

    ffn: int
    heads: int = 8
    head_dim: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, target_btd, source_bsd, *, train: bool) -> jax.Array:
        att = multi_h_atten(self.heads, self.head_dim, "cross_attn")(target_btd, source_bsd, train=train)
        att = HashedDropout(self.dropout)(att, deterministic=not train)  # to_out = Linear + Dropout
        x = layer_norm("layernorm1")(att + target_btd)
        return layer_norm("layernorm2")(FeedForward(self.ffn, self.dropout, name="ffn")(x, train=train) + x)


class SentiHead(nn.Module):
    """``SentiCLS``: mean over time -> Linear(H, 64) GELU Linear(64, 32) GELU Linear(32, 1) -> [B]."""

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> jax.Array:
        h = x_btd.mean(axis=-2)
        h = gelu(Linear(64, name="linear_0")(h))
        h = gelu(Linear(32, name="linear_1")(h))
        return Linear(1, name="linear_2")(h)[..., 0]


def sentiment_ratio(uni_bm: jax.Array, reference_b: jax.Array, k: float) -> jax.Array:
    """``calculate_ratio_senti``: s_m = exp(-k (u_m - y)^2), r_m = s_m / sum_m s_m -> [B, M]."""
    s = jnp.exp(-k * jnp.square(uni_bm - reference_b[:, None]))
    return s / s.sum(-1, keepdims=True)


def cpc_nce(x_btd: jax.Array, y_btd: jax.Array, valid_b: jax.Array) -> jax.Array:
    """Per-row NCE of the official ``CPC`` (tau = 1, the batch as negatives) -> [B].

    x = mean_t(x) / |.|, x_hat = mean_t(y) / |.|; nce_b = -(x_b . x_hat_b - logsumexp_j x_b . x_hat_j).
    The official loss is the mean over the (unpadded) batch; rows with valid = 0 pad our fixed-size
    batch, so they are no negatives here and the caller weights the mean by ``valid``.
    """
    def unit(z):
        z = z.mean(axis=-2).astype(jnp.float32)
        return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-30)

    x, x_hat = unit(x_btd), unit(y_btd)
    pos = (x * x_hat).sum(-1)
    scores = jnp.where(valid_b[None, :] > 0, x @ x_hat.T, -jnp.inf)
    return -(pos - jax.nn.logsumexp(scores, axis=-1))
