"""One code path from 1 CPU to many hosts: a ('data', 'model') mesh over all devices.

Every batch array is sharded along its first axis on ``data`` (``P('data')``) and replicated
along ``model``. Params and optimizer state are replicated (``P()``) while the ``model`` axis has
size 1 (the default, ``config.mesh.model = 1``). With ``config.mesh.model = M > 1`` each param
(and its Adam moments) with at least ``config.mesh.min_shard_size`` elements is split in M
pieces along its largest dimension divisible by M (FSDP-style: XLA gathers a weight where it is
used and reduce-scatters its gradient), so a model too big for one device fits on M of them.
The rule looks at shapes only, so a param and its optimizer moments always agree.

Each host passes its own rows of a batch (`data_slice`: which rows) and `to_global` assembles the
global array with `jax.make_array_from_process_local_data`; `gather_rows` brings every host's
rows back (to score an evaluation on all examples).
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmfuse_jax.errors import ConfigError

MIN_SHARD_SIZE = 2 ** 18  # elements: BERT-base's 768x768 kernels and embeddings split, biases and norms not


def make_mesh(model: int = 1, devices=None) -> Mesh:
    """The ('data', 'model') mesh over ``devices`` (default: every device of every host).

    ``model`` devices hold one copy of the (sharded) params; the other axis splits the batch.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1 or len(devices) % model:
        raise ConfigError(f"config.mesh.model={model} must be >= 1 and divide the {len(devices)} devices")
    # Auto axes: XLA propagates shardings inside the step (newer JAX defaults to Explicit).
    return jax.make_mesh((len(devices) // model, model), ("data", "model"),
                         axis_types=(AxisType.Auto, AxisType.Auto), devices=devices)


def mesh_from_config(config) -> Mesh:
    """``config.mesh``: ``model`` (above) over every device, or over the first ``devices`` of them (one host;
    0 or absent: all), e.g. 1 for a model so small that splitting its batch costs more than it saves."""
    mesh_cfg = config.get("mesh") or {}
    n = int(mesh_cfg.get("devices", 0))
    devices = jax.devices()
    if n:
        if jax.process_count() > 1:
            raise ConfigError(f"config.mesh.devices={n}: only for one host (this run has {jax.process_count()} "
                              "processes); use 0 (every device)")
        if n > len(devices):
            raise ConfigError(f"config.mesh.devices={n}: only {len(devices)} devices here")
        devices = devices[:n]
    return make_mesh(int(mesh_cfg.get("model", 1)), devices)


def min_shard_size(config) -> int:
    return int((config.get("mesh") or {}).get("min_shard_size", MIN_SHARD_SIZE))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P("data"))


def data_size(mesh: Mesh) -> int:
    return mesh.shape["data"]


def model_size(mesh: Mesh) -> int:
    return dict(mesh.shape).get("model", 1)


def param_spec(shape: tuple[int, ...], mesh: Mesh, min_size: int = MIN_SHARD_SIZE) -> P:
    """``P()`` or the spec putting ``model`` on the largest dimension of ``shape`` it divides."""
    m = model_size(mesh)
    if m == 1 or math.prod(shape) < min_size:
        return P()
    for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):  # ties: the earlier axis
        if shape[axis] % m == 0:
            return P(*(["model" if a == axis else None for a in range(len(shape))]))
    return P()


def tree_shardings(tree: Any, mesh: Mesh, min_size: int = MIN_SHARD_SIZE) -> Any:
    """The NamedSharding of every leaf of ``tree`` (params, a TrainState, or their shapes)."""
    return jax.tree_util.tree_map(lambda x: NamedSharding(mesh, param_spec(tuple(np.shape(x)), mesh, min_size)),
                                  tree)


def put(tree: Any, mesh: Mesh, min_size: int = MIN_SHARD_SIZE) -> Any:
    """Host arrays (identical on every host, e.g. pretrained weights) -> arrays laid out by the rule."""
    return jax.device_put(tree, tree_shardings(tree, mesh, min_size))


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> None:
    n = data_size(mesh)
    if batch_size % n:
        axis = f" (the mesh's data axis; model axis {model_size(mesh)})" if model_size(mesh) > 1 else " of the mesh"
        raise ConfigError(f"config.{what}={batch_size} must be divisible by the {n} devices{axis} "
                          f"(e.g. {n * max(1, round(batch_size / n))})")


@functools.lru_cache(maxsize=16)
def data_slice(mesh: Mesh) -> tuple[int, int]:
    """``(index, count)``: this host feeds slice ``index`` of ``count`` equal slices of each batch.

    One host per slice of the ``data`` axis; hosts whose devices hold the same ``data`` positions
    (a ``model`` group spanning hosts) feed the same rows. `pipeline.Loader` takes these as its
    ``process_index`` / ``process_count``.
    """
    me = jax.process_index()
    devs = mesh.devices.reshape(mesh.devices.shape[0], -1)  # data x (everything else)
    mine = [i for i in range(devs.shape[0]) if any(d.process_index == me for d in devs[i])]
    n = devs.shape[0]
    k = len(mine)
    if mine != list(range(mine[0], mine[0] + k)) or n % k or mine[0] % k:
        raise ConfigError(f"the devices of process {me} hold data positions {mine} of {n}: expected one "
                          "contiguous, equal-sized block per process (check the device order of the mesh)")
    return mine[0] // k, n // k


def to_global(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's rows (its `data_slice`) -> global arrays sharded on ``data``."""
    sharding = data_sharded(mesh)
    _, count = data_slice(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, v, (v.shape[0] * count, *v.shape[1:]))
            for k, v in local_batch.items()}


def gather_rows(local_batch: dict[str, np.ndarray], mesh: Mesh, keys=None) -> dict[str, np.ndarray]:
    """Every host's rows of ``local_batch`` (``keys`` only), in global batch order; on one host,
    ``local_batch`` itself. Every host must call it (a collective)."""
    keys = [k for k in (local_batch if keys is None else keys) if k in local_batch]
    if jax.process_count() == 1:
        return {k: local_batch[k] for k in keys}
    glob = jax.device_get(jax.jit(lambda b: b, out_shardings=replicated(mesh))(
        to_global({k: local_batch[k] for k in keys}, mesh)))
    return {k: np.asarray(v) for k, v in glob.items()}
