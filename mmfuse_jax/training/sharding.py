"""One code path from 1 CPU to many hosts: a mesh over all devices, batch split on ``data``.

Params and optimizer state are replicated (``P()``); every batch array is sharded along its
first axis (``P('data')``). Each host passes its own rows and
`jax.make_array_from_process_local_data` assembles the global array.
"""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmfuse_jax.errors import ConfigError


def make_mesh() -> Mesh:
    # Auto axes: XLA propagates shardings inside the step (newer JAX defaults to Explicit).
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    if batch_size % mesh.size:
        raise ConfigError(f"config.{what}={batch_size} must be divisible by the {mesh.size} devices of "
                          f"the mesh (e.g. {mesh.size * max(1, round(batch_size / mesh.size))})")


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows -> global arrays sharded on ``data``."""
    sharding = data_sharded(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local_batch.items()}
