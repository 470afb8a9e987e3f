"""Scaled dot-product attention with key masks, and masked pooling.

`dot_product_attention` uses `jax.nn.dot_product_attention` (XLA's fused path) for float32 inputs
without attention dropout, and an explicit float32 softmax otherwise (attention dropout, or
bfloat16 compute). Tests check the two paths agree.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def dot_product_attention(q_bthd: jax.Array, k_bshd: jax.Array, v_bshd: jax.Array,
                          key_mask_bs: jax.Array | None, *, dropout: nn.Dropout | None = None,
                          deterministic: bool = True) -> jax.Array:
    """Attention of queries [B,T,H,Dh] over keys/values [B,S,H,Dh]; ``key_mask_bs`` True = attend.

    ``key_mask_bs`` is [B,S] (one key mask for every query) or [B,T,S] (a mask per query, e.g.
    MulT's future mask). Returns [B,T,H,Dh]. A query whose keys are all masked attends uniformly
    (as BERT's additive mask does); callers mask such rows downstream.
    """
    use_dropout = dropout is not None and dropout.rate > 0 and not deterministic
    if key_mask_bs is None:
        mask = None
    elif key_mask_bs.ndim == 3:
        mask = key_mask_bs.astype(bool)[:, None, :, :]
    else:
        mask = key_mask_bs.astype(bool)[:, None, None, :]
    if not use_dropout and q_bthd.dtype == jnp.float32:
        return jax.nn.dot_product_attention(q_bthd, k_bshd, v_bshd, mask=mask)
    # Explicit path (attention dropout, or reduced precision): logits and softmax in float32.
    scale = q_bthd.shape[-1] ** -0.5
    logits = jnp.einsum("bthd,bshd->bhts", q_bthd, k_bshd, preferred_element_type=jnp.float32) * scale
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if use_dropout:
        probs = dropout(probs, deterministic=deterministic)
    probs = probs.astype(v_bshd.dtype)
    return jnp.einsum("bhts,bshd->bthd", probs, v_bshd)


def masked_mean(x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Mean over valid steps -> [B,D]; an all-masked row gives zeros (never NaN)."""
    m = mask_bt.astype(x_btd.dtype)[..., None]
    return (x_btd * m).sum(1) / jnp.maximum(m.sum(1), 1.0)


def masked_max(x_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
    """Max over valid steps -> [B,D]; an all-masked row gives zeros."""
    neg = jnp.finfo(x_btd.dtype).min
    out = jnp.where(mask_bt[..., None].astype(bool), x_btd, neg).max(1)
    return jnp.where(mask_bt.any(1)[:, None], out, 0.0)


class MultiHeadAttention(nn.Module):
    """Queries [B,T,Dq] attend over keys/values [B,S,Dkv] with a key mask [B,S] -> [B,T,features]."""

    features: int
    num_heads: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, q_btd, kv_bsd, key_mask_bs, *, train: bool = False):
        if self.features % self.num_heads:
            raise ValueError(f"features {self.features} not divisible by {self.num_heads} heads")
        head_dim = self.features // self.num_heads
        split = lambda y: y.reshape(*y.shape[:2], self.num_heads, head_dim)
        q = split(nn.Dense(self.features, name="query")(q_btd))
        k = split(nn.Dense(self.features, name="key")(kv_bsd))
        v = split(nn.Dense(self.features, name="value")(kv_bsd))
        out = dot_product_attention(q, k, v, key_mask_bs, dropout=nn.Dropout(self.dropout),
                                    deterministic=not train)
        return nn.Dense(self.features, name="out")(out.reshape(*q_btd.shape[:2], self.features))
