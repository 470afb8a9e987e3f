"""Hyena operator pieces (HazyResearch/safari ``standalone_hyena.py``) and per-token dynamic kernels.

* `fft_causal_conv`: y = irfft(rfft(u)·rfft(h))[:L] + u·D, zero-padded to a fast FFT size >= 2L,
  always in float32 (``rfft`` rejects bfloat16).
* `implicit_filter` (`HyenaFilter` module): positional features (t, complex-exponential bands)
  -> Linear -> Sin -> [Linear -> Sin] x num_inner -> Linear(no bias) -> exponential decay.
* `short_causal_conv`: the static depthwise causal short convolution (shift-and-add).
* `dynamic_short_conv` (fast, shift-and-add) and `dynamic_short_conv_reference` (jax.vmap over
  batch and time): a kernel of size K for every token and channel group (G = C: every channel).
* `low_rank_kernels`: per-token, per-channel kernels w[b,t,c,:] = Σ_r a[b,t,r]·U[r,c,:] + w0[c,:]
  from R coefficients per token; `low_rank_dynamic_short_conv_reference` is the vmap reference of
  ``dynamic_short_conv(x, low_rank_kernels(...))``.
* `HyenaOperator`: order-2 Hyena (in_proj d->3d, short conv, x0, x1, v split, v·x1, long conv
  + D skip, ·x0, out_proj), whose short convolution may take per-token kernels, either as *the*
  kernels (``dynamic_kernels='replace'``) or added to the static ones (``'add'``).

Differences from safari, all deliberate: the positional features ``z`` are a fixed buffer (safari
trains them with lr 1e-5); the FFT length is rounded up to a 2·3·5-smooth size; each Sin layer
has its own frequency (safari's Sequential reuses one Sin module, sharing one frequency vector).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers.linear import Dense, matmul_rows


def fast_fft_size(n: int) -> int:
    """Smallest 2^a·3^b·5^c >= n (FFTs of such sizes are fast on every backend)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_causal_conv(u_bld: jax.Array, h_ld: jax.Array, d_d: jax.Array | None = None) -> jax.Array:
    """Causal long convolution along time: y[t] = sum_{s<=t} h[t-s]·u[s] (+ D·u[t]); [B,L,D]."""
    length = u_bld.shape[1]
    n = fast_fft_size(2 * length)
    u32, h32 = u_bld.astype(jnp.float32), h_ld.astype(jnp.float32)
    y = jnp.fft.irfft(jnp.fft.rfft(u32, n=n, axis=1) * jnp.fft.rfft(h32, n=n, axis=0)[None], n=n, axis=1)
    y = y[:, :length]
    if d_d is not None:
        y = y + u32 * d_d.astype(jnp.float32)
    return y.astype(u_bld.dtype)


def _shift_right(x_bl: jax.Array, s: int) -> jax.Array:
    """x[t - s] along axis 1 with zeros for t < s."""
    if s == 0:
        return x_bl
    pad = [(0, 0)] * x_bl.ndim
    pad[1] = (s, 0)
    return jnp.pad(x_bl, pad)[:, : x_bl.shape[1]]


def short_causal_conv(x_blc: jax.Array, kernel_ck: jax.Array) -> jax.Array:
    """Depthwise causal conv: y[t,c] = sum_j k[c,j]·x[t-(K-1)+j, c] (torch Conv1d(padding=K-1)[:L])."""
    k = kernel_ck.shape[1]
    return sum(_shift_right(x_blc, k - 1 - j) * kernel_ck[:, j] for j in range(k))


def dynamic_short_conv(x_blc: jax.Array, kernel_blgk: jax.Array) -> jax.Array:
    """Per-token causal conv: y[b,t,c] = sum_j w[b,t,g(c),j]·x[b,t-(K-1)+j,c], g(c) = c // (C/G).

    Shift-and-add: K shifted copies of x, each scaled by that tap's per-token group weights.
    """
    b, length, c = x_blc.shape
    g, k = kernel_blgk.shape[2:]
    xg = x_blc.reshape(b, length, g, c // g)
    y = sum(_shift_right(xg, k - 1 - j) * kernel_blgk[..., j, None] for j in range(k))
    return y.reshape(b, length, c)


def dynamic_short_conv_reference(x_blc: jax.Array, kernel_blgk: jax.Array) -> jax.Array:
    """The same convolution written per (batch, token) with `jax.vmap` and `dynamic_slice`."""
    _, length, c = x_blc.shape
    g, k = kernel_blgk.shape[2:]
    x_pad = jnp.pad(x_blc, ((0, 0), (k - 1, 0), (0, 0)))

    def one_token(x_lc, w_gk, t):
        window_kc = jax.lax.dynamic_slice(x_lc, (t, 0), (k, c))  # x[t-(K-1) .. t]
        w_ck = jnp.repeat(w_gk, c // g, axis=0)
        return jnp.sum(window_kc.T * w_ck, axis=1)

    per_seq = jax.vmap(one_token, in_axes=(None, 0, 0))
    return jax.vmap(per_seq, in_axes=(0, 0, None))(x_pad, kernel_blgk, jnp.arange(length))


def low_rank_kernels(coeff_blr: jax.Array, basis_rck: jax.Array, bias_ck: jax.Array | None = None) -> jax.Array:
    """Per-token depthwise kernels [B,L,C,K]: w[b,t,c,j] = sum_r a[b,t,r]·U[r,c,j] (+ w0[c,j])."""
    w = matmul_rows(coeff_blr, basis_rck.astype(coeff_blr.dtype))  # einsum("blr,rck->blck"); layers/linear.py
    return w if bias_ck is None else w + bias_ck.astype(w.dtype)


def low_rank_dynamic_short_conv_reference(x_blc: jax.Array, coeff_blr: jax.Array, basis_rck: jax.Array,
                                          bias_ck: jax.Array | None = None) -> jax.Array:
    """``dynamic_short_conv(x, low_rank_kernels(a, U, w0))`` written per (batch, token) with `jax.vmap`."""
    b, length, c = x_blc.shape
    k = basis_rck.shape[-1]
    x_pad = jnp.pad(x_blc, ((0, 0), (k - 1, 0), (0, 0)))
    w0 = jnp.zeros((c, k), x_blc.dtype) if bias_ck is None else bias_ck

    def one_token(x_lc, a_r, t):
        window_kc = jax.lax.dynamic_slice(x_lc, (t, 0), (k, c))  # x[t-(K-1) .. t]
        w_ck = jnp.tensordot(a_r, basis_rck, axes=1) + w0
        return jnp.sum(window_kc.T * w_ck, axis=1)

    per_seq = jax.vmap(one_token, in_axes=(None, 0, 0))
    return jax.vmap(per_seq, in_axes=(0, 0, None))(x_pad, coeff_blr, jnp.arange(length))


def positional_features(seq_len: int, emb_dim: int) -> np.ndarray:
    """safari PositionalEmbedding: [t, Re z, Im z] with z = exp(-i f w), shape [seq_len, emb_dim]."""
    if emb_dim < 3 or emb_dim % 2 == 0:
        raise ValueError(f"emb_dim must be odd and >= 3 (time, cosine and sine bands), got {emb_dim}")
    bands = (emb_dim - 1) // 2
    t = np.linspace(0, 1, seq_len)[:, None]
    w = 2 * math.pi * np.arange(seq_len)[:, None] / seq_len
    f = np.linspace(1e-4, bands - 1, bands)[None]
    z = np.exp(-1j * f * w)
    return np.concatenate([t, z.real, z.imag], axis=-1).astype(np.float32)


class Sin(nn.Module):
    """sin(freq ⊙ x) with a trainable frequency per feature (safari `Sin`, w = 1)."""

    features: int
    w: float = 1.0

    @nn.compact
    def __call__(self, x):
        freq = self.param("freq", nn.initializers.constant(self.w), (self.features,))
        return jnp.sin(freq * x)


class HyenaFilter(nn.Module):
    """Implicit long filter h [L, channels] for sequences of at most ``max_len``; D skip as ``bias``."""

    channels: int
    max_len: int
    emb_dim: int = 3
    width: int = 64          # safari `filter_order`
    num_inner: int = 2       # safari `num_inner_mlps`
    fast_decay_pct: float = 0.3
    slow_decay_pct: float = 1.5
    target: float = 1e-2

    @nn.compact
    def __call__(self, length: int) -> tuple[jax.Array, jax.Array]:
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds the filter's max_len {self.max_len}")
        z = jnp.asarray(positional_features(self.max_len, self.emb_dim)[:length])
        t = z[:, :1]
        h = Sin(self.width, name="sin_0")(Dense(self.width, name="in")(z))
        for i in range(self.num_inner):
            h = Sin(self.width, name=f"sin_{i + 1}")(Dense(self.width, name=f"inner_{i}")(h))
        h = Dense(self.channels, use_bias=False, name="out")(h)
        # ExponentialModulation: deltas from log(target)/slow to log(target)/fast, a fixed buffer.
        deltas = jnp.linspace(math.log(self.target) / self.slow_decay_pct,
                              math.log(self.target) / self.fast_decay_pct, self.channels)
        h = h * jnp.exp(-t * jnp.abs(deltas))
        bias = self.param("bias", nn.initializers.normal(1.0), (self.channels,))  # safari: randn(d)
        return h, bias


def conv_kernel_init(key, shape, dtype=jnp.float32):
    # torch Conv1d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = K for a depthwise conv.
    bound = 1 / math.sqrt(shape[-1])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


DYNAMIC_KERNELS = ("replace", "add")


class HyenaOperator(nn.Module):
    """Order-2 Hyena on [B,L,D]; ``kernel_blgk`` [B,L,G,K] (optional): per-token short conv kernels.

    Without ``kernel_blgk`` the short convolution is Hyena's static depthwise one (param
    ``short_kernel`` [3D,K]). With it, the weight of channel c at token t is
    ``kernel_blgk[t, g(c)]`` for ``dynamic_kernels='replace'`` (the paper: the generated kernels
    *are* the short conv kernels; no static kernel param exists), or
    ``short_kernel[c] + kernel_blgk[t, g(c)]`` for ``'add'`` (the generated part modulates a
    static filter). The short conv output is sown as ``intermediates/short_conv``.
    """

    d_model: int
    max_len: int
    kernel_size: int = 3
    long_conv: bool = True
    filter_width: int = 64
    dropout: float = 0.0
    dynamic_kernels: str = "replace"

    @nn.compact
    def __call__(self, u_bld, mask_bl, kernel_blgk=None, *, train: bool = False):
        d, k = self.d_model, self.kernel_size
        if self.dynamic_kernels not in DYNAMIC_KERNELS:
            raise ValueError(f"dynamic_kernels={self.dynamic_kernels!r}: expected one of {DYNAMIC_KERNELS}")
        m = mask_bl.astype(u_bld.dtype)[..., None]
        x = Dense(3 * d, name="in_proj")(u_bld) * m
        if kernel_blgk is None:
            x = short_causal_conv(x, self.param("short_kernel", conv_kernel_init, (3 * d, k)))
        elif self.dynamic_kernels == "replace":
            x = dynamic_short_conv(x, kernel_blgk)
        else:
            x = short_causal_conv(x, self.param("short_kernel", conv_kernel_init, (3 * d, k))) + \
                dynamic_short_conv(x, kernel_blgk)
        self.sow("intermediates", "short_conv", x)
        x0, x1, v = jnp.split(x * m, 3, axis=-1)
        v = nn.Dropout(self.dropout)(v * x1, deterministic=not train)
        if self.long_conv:
            h, bias = HyenaFilter(d, self.max_len, width=self.filter_width, name="filter")(u_bld.shape[1])
            v = fft_causal_conv(v, h, bias)
        return Dense(d, name="out_proj")(v * x0) * m
