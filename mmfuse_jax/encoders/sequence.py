"""Encoders for acoustic and visual frame sequences."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.attention import masked_max, masked_mean


class PooledSequenceEncoder(nn.Module):
    """Frames [B,T,D] -> Dense -> GELU -> Conv1D(kernel_size) -> GELU -> [mean; max] pool.

    Returns [B, 2*hidden]. Masked frames never contribute; an all-masked (missing) modality
    gives a zero vector.
    """

    hidden: int = 64
    kernel_size: int = 3
    dropout: float = 0.1

    @nn.compact
    def __call__(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> jax.Array:
        m = mask_bt.astype(x_btd.dtype)[..., None]
        h = nn.gelu(nn.Dense(self.hidden, name="proj")(x_btd)) * m
        h = nn.gelu(nn.Conv(self.hidden, (self.kernel_size,), padding="SAME", name="conv")(h)) * m
        h = nn.Dropout(self.dropout)(h, deterministic=not train)
        return jnp.concatenate([masked_mean(h, mask_bt), masked_max(h, mask_bt)], axis=-1)
