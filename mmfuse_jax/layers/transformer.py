"""PyTorch's ``nn.TransformerEncoderLayer`` (post-LN, GELU, ``batch_first=True``) on `MultiHeadAttention`.

Used by ports of PyTorch models (KuDA's encoders and adapters), whose weights must map one-to-one:
the attention is ``layout='torch'`` under the name ``self_attn`` (``self_attn.in_proj_weight`` ->
``self_attn/in_proj/kernel``), the rest are ``linear1``, ``linear2``, ``norm1``, ``norm2``. GELU is the
exact (erf) form of ``nn.GELU``; LayerNorm eps is PyTorch's 1e-5.
"""
from __future__ import annotations

import flax.linen as nn
import jax

from mmfuse_jax.layers.attention import MultiHeadAttention
from mmfuse_jax.layers.dropout import HashedDropout
from mmfuse_jax.layers.linear import Linear


def gelu(x: jax.Array) -> jax.Array:
    """``torch.nn.GELU()``: the exact (erf) GELU."""
    return nn.gelu(x, approximate=False)


def layer_norm(name: str, eps: float = 1e-5) -> nn.LayerNorm:
    """``torch.nn.LayerNorm`` (eps 1e-5 unless the reference sets it)."""
    return nn.LayerNorm(epsilon=eps, name=name)


class TorchEncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer(d, heads, ff, dropout, activation='gelu', batch_first=True)``: post-LN.

    x = norm1(x + drop(MHA(x, key_padding_mask))); x = norm2(x + drop(linear2(drop(gelu(linear1(x)))))).
    ``mask_bt`` True = real frame (PyTorch's key_padding_mask is its negation); padded queries are
    still computed, as in PyTorch. Attention probabilities get dropout too. Dropout masks are hashed
    (`HashedDropout`) and the attention runs heads first (``implementation``), the CPU speed path.
    """

    heads: int
    ff: int
    dropout: float
    implementation: str = "heads_first"

    @nn.compact
    def __call__(self, x_btd: jax.Array, mask_bt: jax.Array, *, train: bool) -> jax.Array:
        att = MultiHeadAttention(self.heads, dropout=self.dropout, layout="torch", implementation=self.implementation,
                                 name="self_attn")(x_btd, x_btd, mask_bt, train=train)
        drop = lambda y: HashedDropout(self.dropout)(y, deterministic=not train)
        x_btd = layer_norm("norm1")(x_btd + drop(att))
        h = Linear(x_btd.shape[-1], name="linear2")(drop(gelu(Linear(self.ff, name="linear1")(x_btd))))
        return layer_norm("norm2")(x_btd + drop(h))
