"""Multi-head attention (one module for every model), scaled dot-product attention, masked pooling.

`MultiHeadAttention` options, for what genuinely differs between the models we port:
  * ``layout``: the parameters' names, shapes and initialisers, those of the reference code whose
    weights the model must read (`LAYOUTS`):
      - ``'flax'``: separate ``query``/``key``/``value``/``out`` ``nn.Dense`` (Flax init, biases);
        DyKen-Hyena's context, MVCL-DAF++'s alignment.
      - ``'fairseq'``: fairseq/MulT ``in_proj_kernel`` [D, 3, H·Dh] + ``in_proj_bias`` [3, H·Dh]
        (Xavier-uniform over the stacked matrix, zero biases) and an ``out_proj`` Dense (Xavier);
        MulT, HCT-DMG, MVCL-DAF++'s transformers (layers/crossmodal.py).
      - ``'torch'``: ``torch.nn.MultiheadAttention``: ``in_proj`` {kernel [D, 3·H·Dh] = in_proj_weight.T
        (q|k|v), bias} (Xavier, zeros) and ``out_proj`` (``nn.Linear`` init); KuDA's encoder layers.
      - ``'to_qkv'``: bias-free ``to_q``/``to_k``/``to_v`` and ``to_out`` (``nn.Linear`` init); KuDA's
        ``MultiHAtten`` (heads x 64 inner width whatever the model width: ``head_dim``).
  * ``implementation``: ``'xla'`` (`dot_product_attention`, [B, T, H, Dh], threefry dropout, per-query
    masks allowed) or ``'heads_first'`` (layers/heads_first.py: heads-first, cache-chunked, custom
    backward, hashed dropout; key masks only), the CPU speed path KuDA uses. Same maths.
  * ``dropout`` on the attention probabilities; ``features`` (output width, default the query's);
    ``head_dim`` (default features / heads).
Projections that read the same input (self-attention; keys and values) run as one matmul.

Attention maps: when the caller applies the model with ``mutable=[ATTENTION_COLLECTION]`` (the
``'attention'`` collection, separate from ``'intermediates'`` so that code capturing intermediates
never pays for it), every `MultiHeadAttention` sows its softmax probabilities [B, H, T, S] (before
attention dropout, float32; masked keys 0) as ``cross_attention`` (keys from another input) or
``self_attention``. Otherwise (and in ``init``, where every collection is mutable) nothing is
computed: the check is made at trace time.

`dot_product_attention` uses `jax.nn.dot_product_attention` (XLA's fused path) for float32 inputs
without attention dropout, and an explicit float32 softmax otherwise (attention dropout, or
bfloat16 compute). Tests check the two paths agree.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmfuse_jax.layers.heads_first import heads_first_attention
from mmfuse_jax.layers.linear import AffineParams, matmul_rows, torch_bias_init, torch_kernel_init


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


def attention_probs(q_bthd: jax.Array, k_bshd: jax.Array, key_mask: jax.Array | None) -> jax.Array:
    """softmax(q k^T / sqrt(Dh)) over valid keys -> [B, H, T, S] float32 (the explicit path's weights)."""
    logits = jnp.einsum("bthd,bshd->bhts", q_bthd, k_bshd, preferred_element_type=jnp.float32)
    logits = logits * q_bthd.shape[-1] ** -0.5
    if key_mask is not None:
        mask = key_mask.astype(bool)[:, None] if key_mask.ndim == 3 else key_mask.astype(bool)[:, None, None]
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    return jax.nn.softmax(logits, axis=-1)


ATTENTION_COLLECTION = "attention"
LAYOUTS = ("flax", "fairseq", "torch", "to_qkv")
IMPLEMENTATIONS = ("xla", "heads_first")
_QKV = ("q", "k", "v")


def _packed_xavier(key, shape, dtype=jnp.float32):
    """Xavier-uniform over the stacked [3·inner, D] matrix (torch's init of in_proj_weight)."""
    init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2))
    return init(key, shape, dtype)


def project_heads(x_btd: jax.Array, kernels: list[jax.Array], biases: list[jax.Array | None], num_heads: int, *,
                  heads_first: bool) -> list[jax.Array]:
    """x @ W_c + b_c for each kernel [D, H·Dh] in one matmul -> [B, H, T, Dh] (heads first) or [B, T, H, Dh]."""
    d, inner = kernels[0].shape
    c = len(kernels)
    w = (kernels[0] if c == 1 else jnp.concatenate(kernels, axis=1)).astype(x_btd.dtype)
    # [B, T, C·H·Dh] as one row-major matmul (layers/linear.py: a faster weight gradient on CPU), then
    # the heads' layout; the same maths as einsum("btd,dchk->cbhtk").
    y = matmul_rows(x_btd, w)
    if biases[0] is not None:
        y = y + (biases[0] if c == 1 else jnp.concatenate(biases)).astype(x_btd.dtype)
    y = y.reshape(*x_btd.shape[:2], c, num_heads, inner // num_heads)
    y = jnp.transpose(y, (2, 0, 3, 1, 4) if heads_first else (2, 0, 1, 3, 4))
    return [y[i] for i in range(c)]


class MultiHeadAttention(nn.Module):
    """Queries [B,T,Dq] attend over keys/values [B,S,Dkv] -> [B,T,features] (options: module docstring).

    ``mask``: None, [B,S] (True = a real key) or [B,T,S] (per query, 'xla' only).
    """

    num_heads: int
    features: int | None = None
    head_dim: int | None = None
    dropout: float = 0.0
    layout: str = "flax"
    implementation: str = "xla"

    def _check(self, features: int) -> int:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout={self.layout!r}: expected one of {list(LAYOUTS)}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation={self.implementation!r}: expected one of {list(IMPLEMENTATIONS)}")
        if self.head_dim is not None:
            return self.head_dim
        if features % self.num_heads:
            raise ValueError(f"features {features} not divisible by num_heads {self.num_heads}")
        return features // self.num_heads

    def _parameters(self, d_q: int, d_kv: int, inner: int, features: int):
        """({q,k,v: (kernel [D, inner], bias)}, (out kernel [inner, features], out bias)) of ``layout``."""
        if self.layout == "fairseq":
            w = self.param("in_proj_kernel", _packed_xavier, (d_q, 3, inner))
            b = self.param("in_proj_bias", nn.initializers.zeros, (3, inner))
            qkv = {n: (w[:, i], b[i]) for i, n in enumerate(_QKV)}
            out = AffineParams((inner, features), nn.initializers.xavier_uniform(), name="out_proj")()
        elif self.layout == "torch":
            w, b = AffineParams((d_q, 3 * inner), nn.initializers.xavier_uniform(), name="in_proj")()
            qkv = {n: (w[:, i * inner:(i + 1) * inner], b[i * inner:(i + 1) * inner]) for i, n in enumerate(_QKV)}
            out = AffineParams((inner, features), torch_kernel_init, torch_bias_init(inner), name="out_proj")()
        elif self.layout == "to_qkv":
            qkv = {n: AffineParams((d, inner), torch_kernel_init, None, name=f"to_{n}")()
                   for n, d in zip(_QKV, (d_q, d_kv, d_kv))}
            out = AffineParams((inner, features), torch_kernel_init, torch_bias_init(inner), name="to_out")()
        else:
            qkv = {n: AffineParams((d, inner), name=name)()
                   for n, d, name in zip(_QKV, (d_q, d_kv, d_kv), ("query", "key", "value"))}
            out = AffineParams((inner, features), name="out")()
        return qkv, out

    @nn.compact
    def __call__(self, q_btd: jax.Array, kv_bsd: jax.Array, mask: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        features = self.features or q_btd.shape[-1]
        head_dim = self._check(features)
        qkv, (w_out, b_out) = self._parameters(q_btd.shape[-1], kv_bsd.shape[-1], self.num_heads * head_dim, features)
        heads_first = self.implementation == "heads_first"
        groups = [("q", "k", "v")] if q_btd is kv_bsd else [("q",), ("k", "v")]
        proj = {}
        for names, x in zip(groups, (q_btd, kv_bsd)):
            proj.update(zip(names, project_heads(x, [qkv[n][0] for n in names], [qkv[n][1] for n in names],
                                                 self.num_heads, heads_first=heads_first)))
        if self.is_mutable_collection(ATTENTION_COLLECTION) and not self.is_initializing():  # requested (docstring)
            q, k = (jnp.swapaxes(proj[n], 1, 2) if heads_first else proj[n] for n in ("q", "k"))
            self.sow(ATTENTION_COLLECTION, "self_attention" if q_btd is kv_bsd else "cross_attention",
                     attention_probs(q, k, mask))
        if heads_first:
            if mask is not None and mask.ndim != 2:
                raise ValueError(f"implementation='heads_first' takes a key mask [B,S], got shape {mask.shape}")
            key = self.make_rng("dropout") if train and self.dropout > 0 else None
            out = heads_first_attention(proj["q"], proj["k"], proj["v"], mask, dropout_rate=self.dropout,
                                        dropout_key=key)
            out = jnp.swapaxes(out, 1, 2)  # [B, T, H, Dh]: rows of the output projection (`matmul_rows`)
        else:
            out = dot_product_attention(proj["q"], proj["k"], proj["v"], mask, dropout=nn.Dropout(self.dropout),
                                        deterministic=not train)
        y = matmul_rows(out.reshape(*out.shape[:2], -1), w_out.astype(out.dtype))
        return y if b_out is None else y + b_out.astype(y.dtype)
