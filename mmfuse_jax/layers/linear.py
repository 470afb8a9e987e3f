"""Dense layers: ``torch.nn.Linear`` with PyTorch's default initialisation, ``nn.Dense`` with its leading
axes merged before the matmul, and a parameter-only affine map.

PyTorch initialises ``nn.Linear`` weight and bias as U(+-1/sqrt(fan_in)); ports of PyTorch models
(KuDA) start at the official scale with these. Our kernel is ``weight.T`` ([in, out]).

Every dense map of the package multiplies ``x[..., in]`` as a matrix ``[rows, in]`` (`matmul_rows`,
`flat_dot_general`), for a faster backward on CPU. With x [B, T, in] as it is, the kernel's gradient
contracts two axes (B, T), and XLA's dot canonicalisation then copies
the output gradient into a transposed [out, B·T] layout first; on CPU that copy is a transposing loop
fused with the gradient's producer (a dropout mask, a layer norm), 10-13 ms per [12800, 128] array in
KuDA's bench step, where the kernel's whole gradient matmul takes ~2 ms. With one row axis the gradient's
dot reads both operands where they lie (KuDA's bench step 5-10 % faster; benchmarks/README). The same
maths; XLA may order a matmul's sums differently, so the last bits of a gradient can differ from
``nn.Dense``'s (tests/layers/test_linear.py).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def torch_kernel_init(key, shape, dtype=jnp.float32):
    """``nn.Linear`` weight: U(+-1/sqrt(fan_in)), fan_in = shape[0] (our kernel is weight.T)."""
    return nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")(key, shape, dtype)


def torch_bias_init(fan_in: int) -> Callable:
    """``nn.Linear`` bias: U(+-1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return lambda k, s, dtype=jnp.float32: jax.random.uniform(k, s, dtype, -bound, bound)


def matmul_rows(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x[..., in] @ w[in, ...]`` computed as ``x.reshape(-1, in) @ w.reshape(in, -1)`` (module docstring)."""
    return (x.reshape(-1, x.shape[-1]) @ w.reshape(w.shape[0], -1)).reshape(*x.shape[:-1], *w.shape[1:])


def flat_dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers, precision=None,
                     preferred_element_type=None, **kwargs) -> jax.Array:
    """`jax.lax.dot_general` as ``nn.Dense`` calls it (lhs's last axis against a 2-D kernel's first,
    no batch axes) with lhs's leading axes merged (`matmul_rows`); any other contraction, or an explicit
    ``out_sharding`` (written for the N-D result), as given."""
    (contract_l, contract_r), (batch_l, batch_r) = dimension_numbers
    if (lhs.ndim > 2 and rhs.ndim == 2 and not batch_l and not batch_r and kwargs.get("out_sharding") is None
            and tuple(contract_l) == (lhs.ndim - 1,) and tuple(contract_r) == (0,)):
        y = jax.lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())), precision,
                                preferred_element_type=preferred_element_type, **kwargs)
        return y.reshape(*lhs.shape[:-1], rhs.shape[1])
    return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision,
                               preferred_element_type=preferred_element_type, **kwargs)


class Dense(nn.Dense):
    """``nn.Dense`` (same fields, parameters and automatic name) whose matmul is `flat_dot_general`."""

    dot_general: Callable | None = flat_dot_general


class AffineParams(nn.Module):
    """The parameters of an affine map, ``kernel`` [in, out] (+ ``bias`` [out]), returned, not applied.

    Same names, shapes, initialisers and creation order as ``nn.Dense`` / `Linear` (so the same
    initial values); a caller that fuses several maps into one matmul reads them with this.
    """

    shape: tuple[int, int]
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable | None = nn.initializers.zeros  # None: no bias

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array | None]:
        kernel = self.param("kernel", self.kernel_init, self.shape)
        bias = None if self.bias_init is None else self.param("bias", self.bias_init, (self.shape[1],))
        return kernel, bias


class Linear(nn.Module):
    """``torch.nn.Linear`` (kernel [in, out] = weight.T) with PyTorch's default initialisation."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", torch_kernel_init, (fan_in, self.features))
        y = matmul_rows(x, kernel.astype(x.dtype))
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(fan_in), (self.features,)).astype(x.dtype)
        return y
