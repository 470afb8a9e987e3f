"""Temporal alignment of a frame sequence to the text tokens: [B,S,D] frames -> [B,L,D], one row per token.

* `CTCAlign`: thuiar's AlignSubNet ``'ctc'`` (thuiar/MIntRec backbones/SubNets/AlignNets.py
  ``CTCModule``, taken from yaohungt/Multimodal-Transformer): a 2-layer LSTM over the
  frames with ``out_len + 1`` outputs, softmax over them (index 0 = blank), and the aligned sequence
  a_j = Σ_i p[i, j+1]·x_i (a soft, unnormalised sum; no CTC loss is trained). p is multiplied by the
  frame mask, so padded frames add nothing whatever they hold (thuiar pads at the end and its LSTM is
  causal, so real frames see the same inputs). ``out_len`` is the dataset's maximum text length (the
  LSTM width must not depend on the batch's bucket); callers crop to the bucket length.
* `interpolate_align`: parameter-free linear interpolation of each example's n real frames onto its
  l real tokens: token i samples frame position p_i = i·(n−1)/(l−1) (p = 0 when l = 1), i.e.
  ``np.interp`` per channel with the first and last token on the first and last frame. Padded tokens
  and a missing modality (n = 0) get zeros.

Used by DyKen-Hyena (``align``) and MAG-BERT (its AlignSubNet).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

ALIGNMENTS = ("none", "ctc", "interpolate")


def _torch_lstm_init(k: float):
    def init(key, shape, dtype=jnp.float32):  # torch.nn.LSTM's default U(-k, k), k = 1/sqrt(hidden)
        return jax.random.uniform(key, shape, dtype, -k, k)
    return init


class CTCAlign(nn.Module):
    """x [B,S,D], mask [B,S] -> [B,out_len,D] (module docstring)."""

    out_len: int
    num_layers: int = 2

    @nn.compact
    def __call__(self, x_bsd: jax.Array, mask_bs: jax.Array) -> jax.Array:
        width = self.out_len + 1  # + the blank position
        init = _torch_lstm_init(1 / math.sqrt(width))
        logits = x_bsd
        for i in range(self.num_layers):
            cell = nn.OptimizedLSTMCell(width, kernel_init=init, recurrent_kernel_init=init, bias_init=init,
                                        name=f"lstm_{i}")
            logits = nn.RNN(cell)(logits)
        p_bsl = jax.nn.softmax(logits.astype(jnp.float32), -1)[..., 1:] * mask_bs[..., None]
        return jnp.einsum("bsl,bsd->bld", p_bsl.astype(x_bsd.dtype), x_bsd)


def interpolate_align(x_bsd: jax.Array, mask_bs: jax.Array, text_mask_bl: jax.Array) -> jax.Array:
    """Linear interpolation of the real frames onto the real tokens -> [B,L,D] (module docstring).

    Frames and tokens are padded at the end (masks are prefixes).
    """
    n = mask_bs.astype(jnp.int32).sum(-1)[:, None]                  # [B,1] real frames
    tokens = text_mask_bl.astype(jnp.int32).sum(-1)[:, None]        # [B,1] real tokens
    i = jnp.arange(text_mask_bl.shape[1], dtype=jnp.float32)[None]  # [1,L]
    pos = i * (jnp.maximum(n - 1, 0) / jnp.maximum(tokens - 1, 1)).astype(jnp.float32)
    lo = jnp.clip(jnp.floor(pos).astype(jnp.int32), 0, jnp.maximum(n - 1, 0))
    hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
    frac = (pos - lo.astype(jnp.float32))[..., None].astype(x_bsd.dtype)
    take = lambda idx: jnp.take_along_axis(x_bsd, idx[..., None], axis=1)
    y = take(lo) * (1 - frac) + take(hi) * frac
    keep = (text_mask_bl > 0) & (n > 0)
    return jnp.where(keep[..., None], y, 0.0)
