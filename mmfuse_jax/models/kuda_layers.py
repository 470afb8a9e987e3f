"""Building blocks of KuDA, each a port of one class of the official PyTorch code.

Sources (github:MKMaS-GUET/KuDA @ e60ef6b): ``models/Encoder_KIAdapter.py`` (`TorchEncoderLayer`,
`MixDomainAdapter`, `Decoder`), ``models/DyRoutFusion_CLS.py`` (`MultiHAtten`, `FeedForward`,
`CrossTransformer`, `cpc_nce`, `SentiHead`), ``core/utils.py`` (`sentiment_ratio`). Initialisers follow
PyTorch's defaults (``nn.Linear``: U(+-1/sqrt(fan_in)) for weight and bias; ``nn.MultiheadAttention``:
Xavier-uniform packed in-projection, zero biases) so a fresh model starts at the same scale. GELU is the
exact (erf) form of ``nn.GELU``; LayerNorm eps is PyTorch's 1e-5 unless the official code sets it.

Speed (benchmarks/kuda_vs_official.py; on CPU the audio encoder, attention over 400 frames, is half
of a train step): dropout masks come from a counter-based hash (`hashed_dropout`), not threefry;
attention runs heads-first and, for large T x S, over cache-sized batch chunks with a flash-attention
style backward pass (`heads_first_attention`); projections that share an input are one matmul. Parameter
names, shapes and initialisers are those of the plain layers (official weights still map one-to-one).
"""
from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def gelu(x: jax.Array) -> jax.Array:
    return nn.gelu(x, approximate=False)


def _mix32(x: jax.Array) -> jax.Array:
    """``lowbias32`` (C. Wellons, 2018): a bijective 32-bit integer hash with full avalanche."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def hashed_bits(key: jax.Array, shape: tuple[int, ...], offset: jax.Array | int = 0) -> jax.Array:
    """uint32 [shape]: ``mix(mix(i + k0) ^ k1)`` of the element index i (+ ``offset``), k0, k1 from ``key``.

    A counter-based generator (as XLA's RngBitGenerator) for dropout masks: one fused elementwise pass,
    ~25x faster on CPU than threefry (`jax.random.bernoulli`), which would make a third of a bench
    step (KuDA's audio attention drops ~300 M probabilities per step). ``offset`` lets a chunk of a
    larger array draw that array's bits for its elements.
    """
    return _index_bits(jax.random.bits(key, (2,), jnp.uint32), shape, offset)


def _index_bits(k: jax.Array, shape: tuple[int, ...], offset: jax.Array | int = 0) -> jax.Array:
    i = jax.lax.iota(jnp.uint32, math.prod(shape)).reshape(shape) + jnp.asarray(offset, jnp.uint32)
    return _mix32(_mix32(i + k[0]) ^ k[1])


def _keep_threshold(rate: float) -> jax.Array:
    """uint32 t with P(bits < t) = 1 - rate (to 2^-32)."""
    return jnp.uint32(min(round((1.0 - rate) * 2 ** 32), 2 ** 32 - 1))


def hashed_dropout(x: jax.Array, rate: float, key: jax.Array | None, offset: jax.Array | int = 0) -> jax.Array:
    """Dropout with a `hashed_bits` mask: keep with probability 1 - rate (exact to 2^-32), scale kept
    values by 1 / (1 - rate); ``key=None`` or rate 0 = identity."""
    if key is None or rate == 0.0:
        return x
    if rate >= 1.0:
        return jnp.zeros_like(x)
    keep = hashed_bits(key, x.shape, offset) < _keep_threshold(rate)
    return jnp.where(keep, x / jnp.asarray(1.0 - rate, x.dtype), jnp.zeros((), x.dtype))


class Dropout(nn.Module):
    """``nn.Dropout`` (same field and call) with the `hashed_dropout` mask instead of threefry's."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        if x.size >= 2 ** 32:  # the element index must fit in 32 bits
            return nn.Dropout(self.rate)(x, deterministic=False)
        return hashed_dropout(x, self.rate, self.make_rng("dropout"))


def _torch_kernel_init(key, shape, dtype=jnp.float32):
    """``nn.Linear`` weight: U(+-1/sqrt(fan_in)), fan_in = shape[0] (our kernel is weight.T)."""
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")(key, shape, dtype)


def _torch_bias_init(fan_in: int):
    bound = 1.0 / math.sqrt(fan_in)
    return lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound)


class Linear(nn.Module):
    """``torch.nn.Linear`` (kernel [in, out] = weight.T) with PyTorch's default initialisation."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", _torch_kernel_init, (fan_in, self.features))
        y = x @ kernel.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", _torch_bias_init(fan_in), (self.features,)).astype(x.dtype)
        return y


class _Kernel(nn.Module):
    """A bias-free `Linear`'s kernel alone (same name and init), for projections fused into one matmul."""

    shape: tuple[int, int]

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("kernel", _torch_kernel_init, self.shape)


class HeadsOutLinear(nn.Module):
    """`Linear` applied to heads-first [B, H, T, Dh] as if merged to [B, T, H*Dh] (same kernel, same init)."""

    features: int

    @nn.compact
    def __call__(self, x_bhtk: jax.Array) -> jax.Array:
        _, h, _, dh = x_bhtk.shape
        kernel = self.param("kernel", _torch_kernel_init, (h * dh, self.features))
        bias = self.param("bias", _torch_bias_init(h * dh), (self.features,))
        y = jnp.einsum("bhtk,hko->bto", x_bhtk, kernel.astype(x_bhtk.dtype).reshape(h, dh, self.features))
        return y + bias.astype(x_bhtk.dtype)


class PackedInProjection(nn.Module):
    """``nn.MultiheadAttention``'s packed in-projection (kernel [D, 3D] = in_proj_weight.T, q|k|v; Xavier
    kernel, zero bias) straight to heads-first q, k, v [B, H, T, D/H]: no transposes around the dots."""

    heads: int

    @nn.compact
    def __call__(self, x_btd: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        d = x_btd.shape[-1]
        dh = d // self.heads
        kernel = self.param("kernel", nn.initializers.xavier_uniform(), (d, 3 * d))
        bias = self.param("bias", nn.initializers.zeros, (3 * d,))
        w = kernel.astype(x_btd.dtype).reshape(d, 3, self.heads, dh)
        y = jnp.einsum("btd,dchk->cbhtk", x_btd, w) + bias.astype(x_btd.dtype).reshape(3, 1, self.heads, 1, dh)
        return y[0], y[1], y[2]


ATTENTION_CHUNK_BYTES = 12 * 2 ** 20  # float32 probabilities per chunk of `heads_first_attention`
_MASKED = float(jnp.finfo(jnp.float32).min)  # the logit of a masked key (as layers.attention)


def _attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, rate: float, key) -> jax.Array:
    logits = jnp.einsum("bhtk,bhsk->bhts", q_bhtk, k_bhsk, preferred_element_type=jnp.float32)
    logits = logits * q_bhtk.shape[-1] ** -0.5
    if mask_bs is not None:
        logits = jnp.where(mask_bs[:, None, None, :], logits, _MASKED)
    probs = hashed_dropout(jax.nn.softmax(logits, axis=-1), rate, key)
    return jnp.einsum("bhts,bhsk->bhtk", probs.astype(v_bhsk.dtype), v_bhsk)


def heads_first_attention(q_bhtk: jax.Array, k_bhsk: jax.Array, v_bhsk: jax.Array, mask_bs: jax.Array | None, *,
                          dropout_rate: float = 0.0, dropout_key: jax.Array | None = None,
                          chunk_bytes: int | None = None) -> jax.Array:
    """softmax(q k^T / sqrt(Dh), masked keys) v with dropout on the probabilities -> [B, H, T, Dh].

    The arithmetic of `layers.attention.dot_product_attention` (float32 logits and softmax; a masked
    key gets the float32 minimum, so an all-masked row is uniform), arranged for a CPU:
      * heads first, so XLA's batched dots need no layout copies;
      * when the [B, H, T, S] probabilities exceed ``chunk_bytes`` (default `ATTENTION_CHUNK_BYTES`),
        `_chunked_attention`: a scan over batch chunks that fit in cache, with a hand-written
        backward pass (flash-attention style), so the mask, softmax and dropout passes stay in cache
        instead of streaming 160 MB arrays through memory (KuDA's audio layers: T = S = 400, 8 heads
        of 16). The dropout mask is the same whatever the chunking.
    Forward + backward at the audio shapes (B 32, 8 heads) on 2 CPU cores: 0.19 s, against 0.32 s for
    `dot_product_attention` with the same hashed dropout and 0.66 s with its threefry dropout.
    """
    b, h, t, _ = q_bhtk.shape
    s = k_bhsk.shape[2]
    if dropout_key is None or dropout_rate == 0.0:
        dropout_key, dropout_rate = None, 0.0
    rows = max(1, (chunk_bytes or ATTENTION_CHUNK_BYTES) // (h * t * s * 4))
    chunk = max(c for c in range(1, min(rows, b) + 1) if b % c == 0)
    mask_bs = None if mask_bs is None else mask_bs.astype(bool)
    if chunk == b:
        return _attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, dropout_rate, dropout_key)
    mask_bs = jnp.ones((b, s), bool) if mask_bs is None else mask_bs
    key_bits = jnp.zeros((2,), jnp.uint32) if dropout_key is None else jax.random.bits(dropout_key, (2,), jnp.uint32)
    return _chunked_attention(q_bhtk, k_bhsk, v_bhsk, mask_bs, key_bits, dropout_rate, chunk)


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    return x.reshape(x.shape[0] // chunk, chunk, *x.shape[1:])


def _chunk_probs(q, k, mask, key_bits, i, rate: float, stats=None):
    """Masked logits of one chunk -> (softmax p, dropout keep mask or None, (row max, row sum))."""
    b, h, t, dh = q.shape
    logits = jnp.einsum("bhtk,bhsk->bhts", q, k, preferred_element_type=jnp.float32) * dh ** -0.5
    logits = jnp.where(mask[:, None, None, :], logits, _MASKED)
    if stats is None:
        stats = (logits.max(-1), None)
        e = jnp.exp(logits - stats[0][..., None])
        stats = (stats[0], e.sum(-1))
    else:
        e = jnp.exp(logits - stats[0][..., None])
    p = e / stats[1][..., None]
    keep = None
    if rate > 0.0:  # the chunk's slice of the whole [B, H, T, S] array's mask
        keep = _index_bits(key_bits, p.shape, i * (b * h * t * k.shape[2])) < _keep_threshold(rate)
    return p, keep, stats


def _drop(x, keep, rate: float):
    return x if keep is None else jnp.where(keep, x / (1.0 - rate), 0.0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _chunked_attention(q, k, v, mask, key_bits, rate: float, chunk: int) -> jax.Array:
    """`_attention` over batch chunks of ``chunk`` rows (q, k, v heads-first; mask [B, S] bool)."""
    return _chunked_attention_fwd(q, k, v, mask, key_bits, rate, chunk)[0]


def _chunked_attention_fwd(q, k, v, mask, key_bits, rate, chunk):
    def body(_, xs):
        i, qc, kc, vc, mc = xs
        p, keep, (row_max, row_sum) = _chunk_probs(qc, kc, mc, key_bits, i, rate)
        out = jnp.einsum("bhts,bhsk->bhtk", _drop(p, keep, rate).astype(vc.dtype), vc)
        return None, (out, row_max, row_sum)

    n = q.shape[0] // chunk
    _, (out, row_max, row_sum) = jax.lax.scan(
        body, None, (jnp.arange(n, dtype=jnp.uint32), *(_chunks(x, chunk) for x in (q, k, v, mask))))
    out = out.reshape(q.shape[:3] + v.shape[3:])
    return out, (q, k, v, mask, key_bits, out, row_max, row_sum)


def _chunked_attention_bwd(rate, chunk, residuals, d_out):
    """Recompute each chunk's probabilities from the saved row max and sum (no reductions over keys),
    then d_v = p_drop^T d_o, d_p = drop(d_o v^T), d_logits = p (d_p - rowsum(d_o * o)) on real keys."""
    q, k, v, mask, key_bits, out, row_max, row_sum = residuals
    d_rows = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)  # = rowsum(p * d_p)
    scale = q.shape[-1] ** -0.5

    def body(_, xs):
        i, qc, kc, vc, mc, doc, mx, sm, dr = xs
        p, keep, _ = _chunk_probs(qc, kc, mc, key_bits, i, rate, stats=(mx, sm))
        d_v = jnp.einsum("bhts,bhtk->bhsk", _drop(p, keep, rate).astype(doc.dtype), doc)
        d_p = _drop(jnp.einsum("bhtk,bhsk->bhts", doc, vc, preferred_element_type=jnp.float32), keep, rate)
        d_logits = jnp.where(mc[:, None, None, :], p * (d_p - dr[..., None]), 0.0) * scale
        d_q = jnp.einsum("bhts,bhsk->bhtk", d_logits.astype(kc.dtype), kc)
        d_k = jnp.einsum("bhts,bhtk->bhsk", d_logits.astype(qc.dtype), qc)
        return None, (d_q, d_k, d_v)

    n = q.shape[0] // chunk
    xs = (jnp.arange(n, dtype=jnp.uint32), *(_chunks(x, chunk) for x in (q, k, v, mask, d_out)), row_max, row_sum,
          _chunks(d_rows, chunk))  # row max / sum: stacked per chunk by the forward scan
    _, grads = jax.lax.scan(body, None, xs)
    d_q, d_k, d_v = (g.reshape(x.shape).astype(x.dtype) for g, x in zip(grads, (q, k, v)))
    return d_q, d_k, d_v, None, None


_chunked_attention.defvjp(_chunked_attention_fwd, _chunked_attention_bwd)


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
        q, k, v = PackedInProjection(self.heads, name="in_proj")(x_btd)
        key = self.make_rng("dropout") if train and self.dropout > 0 else None
        att = heads_first_attention(q, k, v, mask_bt, dropout_rate=self.dropout, dropout_key=key)
        att = HeadsOutLinear(x_btd.shape[-1], name="out_proj")(att)
        drop = lambda y: Dropout(self.dropout)(y, deterministic=not train)
        x_btd = layer_norm("norm1")(x_btd + drop(att))
        h = Linear(x_btd.shape[-1], name="linear2")(drop(gelu(Linear(self.ff, name="linear1")(x_btd))))
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
        dim = q_btd.shape[-1]
        w = {n: _Kernel((dim, self.heads * self.head_dim), name=f"to_{n}")() for n in "qkv"}

        def project(x_btd, names):  # inputs shared by several projections go through one matmul
            kernel = jnp.concatenate([w[n] for n in names], axis=1).astype(x_btd.dtype)
            y = jnp.einsum("btd,dchk->cbhtk", x_btd, kernel.reshape(dim, len(names), self.heads, self.head_dim))
            return [y[i] for i in range(len(names))]

        if q_btd is k_bsd and k_bsd is v_bsd:  # self-attention
            q, k, v = project(q_btd, "qkv")
        elif k_bsd is v_bsd:  # cross-attention: keys and values from one source
            (q,), (k, v) = project(q_btd, "q"), project(k_bsd, "kv")
        else:
            (q,), (k,), (v,) = project(q_btd, "q"), project(k_bsd, "k"), project(v_bsd, "v")
        out = heads_first_attention(q, k, v, None)  # scale 1/sqrt(64), no mask, no dropout on probs
        return Dropout(self.dropout)(HeadsOutLinear(dim, name="to_out")(out), deterministic=not train)


class FeedForward(nn.Module):
    """``FeedForward(dim, hidden)``: LayerNorm -> Linear -> GELU -> Dropout -> Linear -> Dropout."""

    hidden: int
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        drop = lambda y: Dropout(self.dropout)(y, deterministic=not train)
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
