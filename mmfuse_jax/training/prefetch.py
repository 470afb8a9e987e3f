"""Batches on their way to the devices while the current step runs, and the loop's host-sync points.

`to_device` is the idea of ``flax.jax_utils.prefetch_to_device`` for a mesh: it keeps ``depth``
batches already handed to the devices (sharded on ``data`` by `sharding.to_global`; the transfer is
asynchronous), so the step that runs next finds its inputs there instead of waiting for them; the
host side of those batches is made on a background thread.

`host_sync` marks the places where the training loop reads device values on purpose (log steps,
checkpoints, dev evaluation, setup). `HOST_READS` counts every read of a device array's value
while `count_host_reads` is active (a test's tool: the loop must read nothing between two steps
that are not such places).
"""
from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator

import jax
import numpy as np

from mmfuse_jax.training import sharding


def to_device(batches: Iterable[dict[str, np.ndarray]], mesh, depth: int = 2) -> Iterator[dict]:
    """``batches`` as global device arrays on ``mesh``, ``depth`` of them put ahead (depth 0: none,
    everything on the caller's thread).

    With ``depth > 0`` one background thread draws the host batches (the loader's reading, decoding
    and padding) and puts them on the devices, so that work overlaps the running step even where JAX
    executes CPU programs on the calling thread (`mmfuse_jax.runtime.inline_cpu_execution`). Order is
    unchanged; an error in the producer is raised here, at the batch where it happened; closing the
    generator (a loop that stops early) stops the producer and waits for it."""
    if depth <= 0:
        yield from (sharding.to_global(b, mesh) for b in batches)
        return
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    it = iter(batches)

    def produce() -> None:
        try:
            for b in it:
                if not put(("batch", sharding.to_global(b, mesh))):
                    return
            put((done, None))
        except BaseException as e:  # noqa: BLE001  (handed to the consumer, raised there)
            put(("error", e))
        finally:
            getattr(it, "close", lambda: None)()  # a generator's own cleanup, on its thread

    worker = threading.Thread(target=produce, name="mmfuse-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            kind, item = ready.get()
            if kind is done:
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


class _Reads:
    """How many device-array values were read on the host, and inside which `host_sync` reasons."""

    def __init__(self):
        self.total, self.reason = 0, None
        self.by_reason: collections.Counter = collections.Counter()

    def record(self) -> None:
        self.total += 1
        self.by_reason[self.reason] += 1


HOST_READS = _Reads()


@contextlib.contextmanager
def host_sync(reason: str):
    """A place where the loop reads device values on purpose (``reason``: 'log', 'checkpoint', ...);
    device-to-host transfers are allowed here even under a stricter ``jax.transfer_guard`` (which a
    test sets around the whole loop: on accelerators it then fails on any other read)."""
    old, HOST_READS.reason = HOST_READS.reason, reason
    try:
        with jax.transfer_guard_device_to_host("allow"):
            yield
    finally:
        HOST_READS.reason = old


@contextlib.contextmanager
def count_host_reads():
    """Count every host read of a jax.Array's value (np.asarray, float, device_get, ...) into
    `HOST_READS` while active. All of them go through ``ArrayImpl._value``."""
    from jax._src import array as array_lib

    cls = array_lib.ArrayImpl
    original = cls.__dict__["_value"]

    def counted(self):
        HOST_READS.record()
        return original.fget(self)

    HOST_READS.__init__()
    cls._value = property(counted)
    try:
        yield HOST_READS
    finally:
        cls._value = original
