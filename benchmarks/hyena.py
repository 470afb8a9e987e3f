"""Hyena convolutions: FFT long conv vs direct depthwise conv, and the dynamic short convs.

python -m benchmarks.hyena [--batch=32 --dim=256 --lengths=64,256,1024,4096,8192 --max_direct=4096]
One JSON line per measurement, then one summary line with the FFT/direct ratios side by side
(measured in the same run). Peak memory is XLA's compiled memory analysis (temporary bytes).
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import compiled_memory, emit, machine, time_fn
from mmfuse_jax.layers import hyena


def direct_causal_conv(u_bld, h_ld):
    """Depthwise causal conv through XLA's convolution (the O(L^2) baseline)."""
    length, d = h_ld.shape
    y = jax.lax.conv_general_dilated(u_bld.transpose(0, 2, 1), h_ld[::-1].T[:, None, :], (1,),
                                     [(length - 1, 0)], feature_group_count=d)
    return y.transpose(0, 2, 1)


def unfold_einsum_dynamic_conv(x_blc, kernel_blgk):
    """Per-token conv by stacking the K shifted copies and one einsum (the third implementation)."""
    b, length, c = x_blc.shape
    g, k = kernel_blgk.shape[2:]
    x_pad = jnp.pad(x_blc, ((0, 0), (k - 1, 0), (0, 0)))
    windows = jnp.stack([x_pad[:, j:j + length] for j in range(k)], axis=2)  # [B, L, K, C]
    windows = windows.reshape(b, length, k, g, c // g)
    return jnp.einsum("blkgc,blgk->blgc", windows, kernel_blgk).reshape(b, length, c)


def _fwd_bwd(fn):
    def loss(*args):
        return jnp.sum(fn(*args) ** 2)
    return jax.grad(loss, argnums=tuple(range(2)))


def measure(name: str, fn, args, extra: dict, reps: int) -> dict:
    rec = {"bench": "hyena", "impl": name, **extra}
    for mode, f in (("fwd", fn), ("fwd_bwd", _fwd_bwd(fn))):
        jitted = jax.jit(f)
        rec[mode] = {**time_fn(jitted, *args, reps=reps), **compiled_memory(f, *args)}
    emit(rec)
    return rec


def main(argv: list[str] | None = None) -> None:
    from mmfuse_jax import runtime

    runtime.tune_host()  # as our CLIs do (mmfuse_jax/runtime.py)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--lengths", default="64,256,1024,4096,8192")
    p.add_argument("--max_direct", type=int, default=4096, help="skip the direct conv above this length")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--short_len", type=int, default=30, help="token length for the dynamic short convs")
    args = p.parse_args(argv)
    emit({"bench": "hyena", "machine": machine(), "batch": args.batch, "dim": args.dim})
    rng = np.random.default_rng(0)
    ratios = {}
    for length in [int(x) for x in args.lengths.split(",")]:
        u = jnp.asarray(rng.standard_normal((args.batch, length, args.dim)), jnp.float32)
        h = jnp.asarray(rng.standard_normal((length, args.dim)) / length, jnp.float32)
        extra = {"length": length, "batch": args.batch, "dim": args.dim}
        fft = measure("fft_causal_conv", hyena.fft_causal_conv, (u, h), extra, args.reps)
        if length <= args.max_direct:
            direct = measure("direct_depthwise_conv", direct_causal_conv, (u, h), extra, args.reps)
            ratios[length] = {m: direct[m]["median_s"] / fft[m]["median_s"] for m in ("fwd", "fwd_bwd")}
    # Dynamic short conv on the 3·dim Hyena channels: three implementations of one convolution.
    k, groups = 3, 3
    x = jnp.asarray(rng.standard_normal((args.batch, args.short_len, 3 * args.dim)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((args.batch, args.short_len, groups, k)), jnp.float32)
    extra = {"length": args.short_len, "batch": args.batch, "channels": 3 * args.dim, "kernel_size": k,
             "groups": groups}
    short = {name: measure(name, fn, (x, w), extra, args.reps) for name, fn in (
        ("dynamic_shift_add", hyena.dynamic_short_conv), ("dynamic_vmap_reference", hyena.dynamic_short_conv_reference),
        ("dynamic_unfold_einsum", unfold_einsum_dynamic_conv))}
    emit({"bench": "hyena", "summary": True, "direct_over_fft": ratios,
          "vmap_over_shift_add": {m: short["dynamic_vmap_reference"][m]["median_s"] /
                                  short["dynamic_shift_add"][m]["median_s"] for m in ("fwd", "fwd_bwd")},
          "unfold_over_shift_add": {m: short["dynamic_unfold_einsum"][m]["median_s"] /
                                    short["dynamic_shift_add"][m]["median_s"] for m in ("fwd", "fwd_bwd")}})


if __name__ == "__main__":
    main()
