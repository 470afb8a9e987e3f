"""Temporal aligners: linear interpolation against np.interp; the CTC aligner's shapes and masking."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

from mmfuse_jax.layers import align


def _masks(lengths, width):
    return (np.arange(width)[None] < np.asarray(lengths)[:, None]).astype(np.int32)


def test_interpolate_equals_np_interp_per_channel():
    rng = np.random.default_rng(0)
    frames, tokens = [9, 1, 4, 0], [5, 3, 1, 4]          # also one frame, one token, a missing modality
    x = rng.standard_normal((4, 11, 3)).astype(np.float32)
    fmask, tmask = _masks(frames, 11), _masks(tokens, 7)
    got = np.asarray(align.interpolate_align(jnp.asarray(x), jnp.asarray(fmask), jnp.asarray(tmask)))
    chex.assert_shape(got, (4, 7, 3))
    for b, (n, m) in enumerate(zip(frames, tokens)):
        want = np.zeros((7, 3))
        if n:
            at = np.linspace(0, n - 1, m) if m > 1 else np.zeros(1)  # first/last token on first/last frame
            for c in range(3):
                want[:m, c] = np.interp(at, np.arange(n), x[b, :n, c])
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-5)


def test_interpolate_ignores_padded_frames():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 8, 3)), jnp.float32)
    fmask, tmask = jnp.asarray(_masks([5, 8], 8)), jnp.asarray(_masks([4, 6], 6))
    noisy = jnp.where(fmask[..., None] > 0, x, 1e4)
    np.testing.assert_array_equal(align.interpolate_align(x, fmask, tmask),
                                  align.interpolate_align(noisy, fmask, tmask))


def test_ctc_align_shapes_and_padded_frames_do_not_matter():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((3, 9, 5)), jnp.float32)
    fmask = jnp.asarray(_masks([9, 4, 0], 9))
    mod = align.CTCAlign(out_len=6)
    params = mod.init(jax.random.key(0), x, fmask)
    y = mod.apply(params, x, fmask)
    chex.assert_shape(y, (3, 6, 5))
    noisy = jnp.where(fmask[..., None] > 0, x, -1e3)
    np.testing.assert_allclose(mod.apply(params, noisy, fmask), y, rtol=1e-5, atol=1e-5)
    assert float(jnp.abs(y[2]).max()) == 0.0  # a missing modality aligns to zeros
    # Each real frame spreads a softmax over out_len positions + blank: total weight in (0, #frames).
    total = np.asarray(mod.apply(params, jnp.ones_like(x), fmask)[:, :, 0].sum(1))
    assert 0 < total[0] < 9 and 0 < total[1] < 4
