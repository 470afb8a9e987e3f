"""Joining a multi-host run: `initialize` at the start of train.py / eval.py, then one program.

Every host runs the same command; `jax.distributed.initialize` connects them (process 0 hosts the
coordinator) and from then on `jax.devices()` lists every host's devices, so the mesh, the jitted
steps and the Orbax checkpoints span all of them. Each host reads only its rows of every batch
(`sharding.data_slice`). Only process 0 writes config.json, metrics.jsonl, TensorBoard events,
eval JSON and the report; every process takes part in checkpoint saves (Orbax coordinates them).

Where the cluster comes from (``mode``):
  * ``env`` (default): a coordinator given by ``--coordinator_address`` or ``$MMFUSE_COORDINATOR``
    (with ``--num_processes``/``$MMFUSE_NUM_PROCESSES`` and ``--process_id``/``$MMFUSE_PROCESS_ID``)
    joins that cluster; none given: one process, nothing to do.
  * ``auto``: `jax.distributed.initialize()` detects the cluster (Cloud TPU pod slices, SLURM,
    Open MPI, Kubernetes, ...); values given as above override what it detects.
  * ``off``: one process whatever the environment says.
On CPU the cross-process collectives are gloo's (TCP), set before the backend starts.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

from mmfuse_jax.errors import ConfigError

MODES = ("env", "auto", "off")
ENV = {"coordinator_address": "MMFUSE_COORDINATOR", "num_processes": "MMFUSE_NUM_PROCESSES",
       "process_id": "MMFUSE_PROCESS_ID"}
T = TypeVar("T")


def _from_env(name: str, value):
    if value is not None:
        return value
    raw = os.environ.get(ENV[name])
    if raw in (None, ""):
        return None
    if name == "coordinator_address":
        return raw
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"${ENV[name]}={raw!r}: expected an integer") from None


def initialize(mode: str = "env", *, coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, timeout_s: int = 300) -> bool:
    """Join the multi-host run described by ``mode`` and the values (see the module docstring).

    Returns True if `jax.distributed` is initialized (this process is one of ``num_processes``),
    False for a plain single process. Must run before any JAX computation.
    """
    if mode not in MODES:
        raise ConfigError(f"--distributed={mode!r}: expected one of {list(MODES)}")
    if mode == "off":
        return False
    kw: dict[str, Any] = {k: _from_env(k, v) for k, v in (("coordinator_address", coordinator_address),
                                                          ("num_processes", num_processes),
                                                          ("process_id", process_id))}
    if mode == "env":
        if kw["coordinator_address"] is None:
            if kw["num_processes"] not in (None, 1):
                raise ConfigError(f"--num_processes={kw['num_processes']} needs --coordinator_address "
                                  f"(or ${ENV['coordinator_address']}): host:port of process 0")
            return False
        missing = [k for k in ("num_processes", "process_id") if kw[k] is None]
        if missing:
            raise ConfigError(f"--coordinator_address={kw['coordinator_address']} also needs "
                              + " and ".join(f"--{k} (or ${ENV[k]})" for k in missing))
    import jax  # here, not at the top: a single-process command (or a config error) need not load JAX first

    if jax.distributed.is_initialized():
        return True
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU cross-process collectives
    kw = {k: v for k, v in kw.items() if v is not None}
    try:
        jax.distributed.initialize(**kw, initialization_timeout=timeout_s)
    except ValueError as e:  # e.g. --distributed=auto outside any cluster JAX recognises
        raise ConfigError(f"--distributed={mode}: {e} (give --coordinator_address, --num_processes "
                          "and --process_id)") from None
    return True


def is_primary() -> bool:
    """Process 0: the one that writes logs, metrics and reports."""
    import jax

    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches ``name`` (nothing to wait for on one process)."""
    import jax

    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def primary_first(fn: Callable[[], T], name: str) -> T:
    """``fn()`` on process 0, then on the others: work with a shared result on disk (preparing a
    dataset) is done once and then found by the rest. An error on process 0 still releases the
    others (they then run ``fn`` themselves and usually meet the same error)."""
    import jax

    if jax.process_count() == 1:
        return fn()
    if is_primary():
        try:
            return fn()
        finally:
            barrier(name)
    barrier(name)
    return fn()


class NullWriter:
    """`MetricsWriter`'s stand-in on processes other than 0."""

    def write(self, record: dict[str, Any]) -> None:
        del record
