"""``torch.nn.Linear`` with PyTorch's default initialisation, and a parameter-only affine map.

PyTorch initialises ``nn.Linear`` weight and bias as U(+-1/sqrt(fan_in)); ports of PyTorch models
(KuDA) start at the official scale with these. Our kernel is ``weight.T`` ([in, out]).
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
        y = x @ kernel.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", torch_bias_init(fan_in), (self.features,)).astype(x.dtype)
        return y
