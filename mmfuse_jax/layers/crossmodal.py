"""Crossmodal transformer (MulT, Tsai et al. 2019; yaohungt/Multimodal-Transformer modules/).

A target sequence queries a source sequence (or itself, for the self-attention "memory"):

    x   = sqrt(d)·x_target + pos(x_target);   s = sqrt(d)·x_source + pos(x_source)
    per layer (pre-norm, as the official ``normalize_before = True``):
        x = x + Dropout_res(MHA(LN0(x), LN0(s), LN0(s)))      # one LayerNorm for query AND keys
        x = x + Dropout_res(W2 Dropout_relu(ReLU(W1 LN1(x))))  # W1: d -> 4d
    out = LN(x)

Faithful details of the official code (modules/transformer.py, multihead_attention.py,
position_embedding.py): the input scale sqrt(d); fairseq/tensor2tensor sinusoidal positions
([sin | cos] halves, not interleaved; row 0 is the zero "padding" row, real steps get rows 1..T);
the shared LayerNorm of query and source inside a layer; one in-projection [d, 3d] with biases,
Xavier-uniform initialised (so its bound uses fan 4d as PyTorch's does), zero biases
(`attention.MultiHeadAttention`, ``layout='fairseq'``); the
attention dropout on the softmax weights; LayerNorm eps 1e-5 (PyTorch's default); and the
optional "future" mask (``--attn_mask``, on by default in main.py): query i may attend to key j
iff j <= i + |S - T|.

Deliberate differences: padding comes from the masks, not from "first feature == 0" (the official
`make_positions` treats a real frame whose first feature is exactly 0 as padding); the future
mask's offset |S - T| uses each example's valid lengths, so bucket padding does not change the
result (identical to the official offset for full-length sequences, as in the MulT pickles); the
source's embedding dropout is drawn once for keys and values (the official code draws two masks
for the same tensor).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.layers.linear import Dense

_LN_EPS = 1e-5  # torch.nn.LayerNorm default, as in the official code


def sinusoidal_table(num_positions: int, dim: int) -> np.ndarray:
    """fairseq ``SinusoidalPositionalEmbedding.get_embedding`` with padding_idx 0 -> [num_positions, dim].

    Row p = [sin(p·f_0..f_{h-1}) | cos(p·f_0..f_{h-1})], f_i = exp(-i·log(10000)/(h-1)), h = dim//2;
    an odd ``dim`` gets a zero last column; row 0 is all zeros.
    """
    half = dim // 2
    freq = np.exp(np.arange(half, dtype=np.float64) * -(math.log(10000.0) / max(half - 1, 1)))
    angles = np.arange(num_positions, dtype=np.float64)[:, None] * freq[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if dim % 2:
        table = np.concatenate([table, np.zeros((num_positions, 1))], axis=1)
    table[0] = 0.0
    return table.astype(np.float32)


def positions(mask_bt: jax.Array, dim: int) -> jax.Array:
    """Positional embeddings [B,T,dim]: step t gets row t+1 of the table, masked steps get zeros."""
    t = mask_bt.shape[1]
    table = jnp.asarray(sinusoidal_table(t + 1, dim))
    return table[1:][None] * mask_bt.astype(table.dtype)[..., None]


def future_mask(query_mask_bt: jax.Array, key_mask_bs: jax.Array) -> jax.Array:
    """MulT's ``buffered_future_mask`` per example: allowed[b,i,j] = j <= i + |len_k - len_q|."""
    lq = query_mask_bt.astype(jnp.int32).sum(1)
    lk = key_mask_bs.astype(jnp.int32).sum(1)
    offset = jnp.abs(lk - lq)[:, None, None]
    i = jnp.arange(query_mask_bt.shape[1])[None, :, None]
    j = jnp.arange(key_mask_bs.shape[1])[None, None, :]
    return j <= i + offset


def last_valid(x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """The output at the last valid step of each row -> [B,D] (MulT's ``h[-1]`` for padded batches).

    An all-masked row gives zeros.
    """
    t = x_btd.shape[1]
    idx = jnp.max(jnp.where(mask_bt.astype(bool), jnp.arange(t)[None], -1), axis=1)
    out = jnp.take_along_axis(x_btd, jnp.maximum(idx, 0)[:, None, None], axis=1)[:, 0]
    return jnp.where((idx >= 0)[:, None], out, 0.0)


class CrossmodalLayer(nn.Module):
    """One pre-norm encoder layer; ``src`` None means self-attention."""

    num_heads: int
    attn_dropout: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1

    @nn.compact
    def __call__(self, x_btd, src_bsd, mask, *, train: bool):
        d = x_btd.shape[-1]
        ln0 = nn.LayerNorm(epsilon=_LN_EPS, name="ln_attn")  # shared by query and source (official)
        q = ln0(x_btd)
        kv = q if src_bsd is None else ln0(src_bsd)
        h = MultiHeadAttention(self.num_heads, dropout=self.attn_dropout, layout="fairseq", name="attn")(
            q, kv, mask, train=train)
        x_btd = x_btd + nn.Dropout(self.res_dropout)(h, deterministic=not train)
        h = nn.LayerNorm(epsilon=_LN_EPS, name="ln_ffn")(x_btd)
        dense = lambda n, name: Dense(n, kernel_init=nn.initializers.xavier_uniform(), name=name)
        h = nn.relu(dense(4 * d, "fc1")(h))
        h = nn.Dropout(self.relu_dropout)(h, deterministic=not train)
        h = nn.Dropout(self.res_dropout)(dense(d, "fc2")(h), deterministic=not train)
        return x_btd + h


class CrossmodalTransformer(nn.Module):
    """MulT ``TransformerEncoder``: [B,T,d] target (+ optional [B,S,d] source) -> [B,T,d].

    ``mask_bt`` / ``src_mask_bs``: 1 = real step. Keys are the source's valid steps (the
    target's own for self-attention); ``future_mask`` adds MulT's attn_mask.
    """

    num_heads: int
    num_layers: int
    attn_dropout: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.0
    use_future_mask: bool = True

    @nn.compact
    def __call__(self, x_btd, mask_bt, src_bsd=None, src_mask_bs=None, *, train: bool = False):
        d = x_btd.shape[-1]
        embed_drop = nn.Dropout(self.embed_dropout)

        def embed(x, m):
            return embed_drop(math.sqrt(d) * x + positions(m, d).astype(x.dtype), deterministic=not train)

        x = embed(x_btd, mask_bt)
        src = None if src_bsd is None else embed(src_bsd, src_mask_bs)
        key_mask = mask_bt if src_bsd is None else src_mask_bs
        attn_mask = key_mask.astype(bool)[:, None, :]
        if self.use_future_mask:
            attn_mask = attn_mask & future_mask(mask_bt, key_mask)
        for i in range(self.num_layers):
            x = CrossmodalLayer(self.num_heads, self.attn_dropout, self.relu_dropout, self.res_dropout,
                                name=f"layer_{i}")(x, src, attn_mask, train=train)
        return nn.LayerNorm(epsilon=_LN_EPS, name="ln_out")(x)

