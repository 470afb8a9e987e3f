"""The sequence encoder for acoustic and visual frames, shared by every model that encodes frames.

``SequenceEncoder``: frames [B,T,D_in] -> projection to ``features`` -> a stack of ``block`` layers
-> [B,T,features] (or, with ``pooling='mean_max'``, [B, 2·features]). ``block`` picks the layers:

  * ``'crossmodal'`` (MVCL-DAF++): ``proj`` Dense, then MulT's pre-norm self-attention transformer
    (layers/crossmodal.py: sqrt(d) scale, sinusoidal positions, final LayerNorm) without the future
    mask, named ``transformer``; ``num_layers=0`` leaves the projection alone.
  * ``'torch'`` (KuDA's ``TfEncoder``): ``proj`` as ``torch.nn.Linear``, learned positions
    ``position_embeddings`` [1, max_len, features] (zeros at init), then ``num_layers`` post-LN
    `TorchEncoderLayer` s (FFN ``ffn_dim``; heads-first attention, hashed dropout) ``layer_<i>``.
  * ``'conv'`` (the early-fusion baseline): ``proj`` Dense -> GELU -> Conv1D(``kernel_size``, 'SAME')
    ``conv`` -> GELU -> dropout; masked frames are zeroed after each step.

Masked frames never reach a real frame's output (the attention masks them as keys; the conv sees
zeros); ``mean_max`` pooling gives an all-masked (missing) modality a zero vector. `hidden_states`
returns the intermediate outputs, for models that tap them: a subclass calls it from its own
``@nn.compact __call__`` (KuDA's ``UniEncoder`` feeds them to its adapters), so the parameter paths
stay those of the encoder.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.attention import masked_max, masked_mean
from mmfuse_jax.layers.crossmodal import CrossmodalTransformer
from mmfuse_jax.layers.linear import Dense, Linear
from mmfuse_jax.layers.transformer import TorchEncoderLayer

BLOCKS = ("crossmodal", "torch", "conv")
POOLINGS = ("none", "mean_max")


class SequenceEncoder(nn.Module):
    """Frames [B,T,D_in] and mask [B,T] (1 = real frame) -> [B,T,features] (see the module docstring)."""

    features: int
    num_heads: int = 1
    num_layers: int = 0
    dropout: float = 0.1
    block: str = "crossmodal"
    max_len: int = 0           # 'torch': length of the learned position table (inputs are padded to it)
    ffn_dim: int = 0           # 'torch': FFN width (0: features // 2, KuDA's)
    kernel_size: int = 3       # 'conv'
    pooling: str = "none"

    @nn.compact
    def __call__(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> jax.Array:
        h = self.hidden_states(x_btd, mask_bt, train=train)[-1]
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}: expected one of {list(POOLINGS)}")
        if self.pooling == "mean_max":
            return jnp.concatenate([masked_mean(h, mask_bt), masked_max(h, mask_bt)], axis=-1)
        return h

    def hidden_states(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> list[jax.Array]:
        """[projection (+ positions), output of each layer] ('crossmodal': of the whole transformer)."""
        if self.block == "torch":
            return self._torch_layers(x_btd, mask_bt, train=train)
        if self.block == "conv":
            m = mask_bt.astype(x_btd.dtype)[..., None]
            h = nn.gelu(Dense(self.features, name="proj")(x_btd)) * m
            h = nn.gelu(nn.Conv(self.features, (self.kernel_size,), padding="SAME", name="conv")(h)) * m
            return [nn.Dropout(self.dropout)(h, deterministic=not train)]
        if self.block != "crossmodal":
            raise ValueError(f"block={self.block!r}: expected one of {list(BLOCKS)}")
        h = Dense(self.features, name="proj")(x_btd)
        if self.num_layers == 0:
            return [h]
        out = CrossmodalTransformer(self.num_heads, self.num_layers, relu_dropout=self.dropout,
                                    res_dropout=self.dropout, use_future_mask=False, name="transformer")(
            h, mask_bt, train=train)
        return [h, out]

    def _torch_layers(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> list[jax.Array]:
        if x_btd.shape[1] != self.max_len:
            raise ValueError(f"block='torch' has {self.max_len} learned positions; got {x_btd.shape[1]} frames")
        h = Linear(self.features, name="proj")(x_btd)
        h = h + self.param("position_embeddings", nn.initializers.zeros, (1, self.max_len, self.features))
        hidden = [h]  # KuDA: Dropout(p=0) after the positions, omitted
        for i in range(self.num_layers):
            h = TorchEncoderLayer(self.num_heads, self.ffn_dim or self.features // 2, self.dropout,
                                  name=f"layer_{i}")(h, mask_bt, train=train)
            hidden.append(h)
        return hidden
