"""Building blocks of KuDA, each a port of one class of the official PyTorch code.

Sources (github:MKMaS-GUET/KuDA @ e60ef6b): ``models/Encoder_KIAdapter.py`` (`TorchEncoderLayer`,
`MixDomainAdapter`, `Decoder`), ``models/DyRoutFusion_CLS.py`` (`MultiHAtten`, `FeedForward`,
`CrossTransformer`, `cpc_nce`, `SentiHead`), ``core/utils.py`` (`sentiment_ratio`). Initialisers follow
PyTorch's defaults (``nn.Linear``: U(+-1/sqrt(fan_in)) for weight and bias; ``nn.MultiheadAttention``:
Xavier-uniform packed in-projection, zero biases) so a fresh model starts at the same scale. GELU is the
exact (erf) form of ``nn.GELU``; LayerNorm eps is PyTorch's 1e-5 unless the official code sets it.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.attention import dot_product_attention


def gelu(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=False)


class Linear(nn.Module):
    """``torch.nn.Linear`` (kernel [in, out] = weight.T) with PyTorch's default initialisation."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        bound = 1.0 / math.sqrt(fan_in)
        kernel = self.param("kernel", nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),
                            (fan_in, self.features))
        y = x @ kernel.astype(x.dtype)
        if self.use_bias:
            bias = self.param("bias", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound),
                              (self.features,))
            y = y + bias.astype(x.dtype)
        return y


def layer_norm(name: str, eps: float = 1e-5) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, name=name)


class TorchEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer(d, heads, ff, dropout, activation='gelu', batch_first=True)``: post-LN.

    x = norm1(x + drop(MHA(x, key_padding_mask))); x = norm2(x + drop(linear2(drop(gelu(linear1(x)))))).
    ``mask_bt`` True = real frame (the official key_padding_mask is its negation); padded queries are
    still computed, as in PyTorch. Attention probabilities get dropout too.
    """

    heads: int
    ff: int
    dropout: float

    @nn.compact
    def __call__(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> jax.Array:
        b, t, d = x_btd.shape
        qkv = nn.Dense(3 * d, kernel_init=nn.initializers.xavier_uniform(), name="in_proj")(x_btd)
        q, k, v = (y.reshape(b, t, self.heads, d // self.heads) for y in jnp.split(qkv, 3, axis=-1))
        att = dot_product_attention(q, k, v, mask_bt, dropout=nn.Dropout(self.dropout), deterministic=not train)
        att = Linear(d, name="out_proj")(att.reshape(b, t, d))
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
        x_btd = layer_norm("norm1")(x_btd + drop(att))
        h = Linear(d, name="linear2")(drop(gelu(Linear(self.ff, name="linear1")(x_btd))))
        return layer_norm("norm2")(x_btd + drop(h))


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


class MultiHAtten(nn.Module):
    """``MultiHAtten(dim, heads=8, dim_head=64)``: bias-free q/k/v to heads*64, softmax, no mask, out + drop."""

    heads: int = 8
    head_dim: int = 64
    dropout: float = 0.0

    @nn.compact
    def __call__(self, q_btd, k_bsd, v_bsd, *, train: bool) -> jax.Array:
        inner, dim = self.heads * self.head_dim, q_btd.shape[-1]
        split = lambda y: y.reshape(*y.shape[:2], self.heads, self.head_dim)
        q = split(Linear(inner, use_bias=False, name="to_q")(q_btd))
        k = split(Linear(inner, use_bias=False, name="to_k")(k_bsd))
        v = split(Linear(inner, use_bias=False, name="to_v")(v_bsd))
        out = dot_product_attention(q, k, v, None).reshape(*q_btd.shape[:2], inner)  # scale 1/sqrt(64)
        out = Linear(dim, name="to_out")(out)
        return nn.Dropout(self.dropout)(out, deterministic=not train)


class FeedForward(nn.Module):
    """``FeedForward(dim, hidden)``: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    hidden: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        drop = lambda y: nn.Dropout(self.dropout)(y, deterministic=not train)
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
        att = MultiHAtten(self.heads, self.head_dim, self.dropout, name="cross_attn")(
            target_btd, source_bsd, source_bsd, train=train)
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
