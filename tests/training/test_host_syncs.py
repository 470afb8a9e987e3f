"""The hot loop reads nothing from the devices between steps except at log steps, checkpoints and
epoch ends; the next batches are on the devices before their step; checkpoints are written in the
background and are whole when training returns."""
from __future__ import annotations

import os
import threading
import time

import jax
import numpy as np
import pytest
from conftest import tiny_config

from mmfuse_jax.training import loop, prefetch, sharding
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.checkpoint import checkpoint_steps


def test_to_device_puts_batches_ahead_on_the_mesh():
    mesh = sharding.make_mesh()
    pulled = []

    def batches():
        for i in range(5):
            pulled.append(i)
            yield {"x": np.full((mesh.size * 2, 3), i, np.float32)}

    it = prefetch.to_device(batches(), mesh, depth=2)
    first = next(it)
    deadline = time.monotonic() + 30
    while len(pulled) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    # the next batches are on their way while the first one's step runs: at most depth (queued) + 1
    # (being made) ahead of the consumer
    assert pulled[:2] == [0, 1] and len(pulled) <= 1 + 2 + 1, pulled
    assert isinstance(first["x"], jax.Array) and first["x"].sharding == sharding.data_sharded(mesh)
    rest = [int(b["x"][0, 0]) for b in it]
    assert [int(first["x"][0, 0]), *rest] == [0, 1, 2, 3, 4]
    assert [int(b["x"][0, 0]) for b in prefetch.to_device(batches(), mesh, depth=0)] == [0, 1, 2, 3, 4]


def test_count_host_reads_sees_device_get_and_scalars():
    x = jax.numpy.arange(3.0) + 1
    with prefetch.count_host_reads() as reads:
        jax.device_get(x)
        float(x[1])
        with prefetch.host_sync("log"):
            int(x[0])
    assert reads.total == 3 and reads.by_reason == {None: 2, "log": 1}


@pytest.mark.slow
def test_no_host_reads_between_steps_outside_log_and_checkpoint_steps(tiny_synthetic, tmp_path, monkeypatch):
    # 96 train examples, batch 16: 6 steps an epoch; log every 4 global steps, checkpoint every 3.
    config = tiny_config("text_only", tiny_synthetic, batch_size=16, num_epochs=2, log_every=4,
                         checkpoint_every_steps=3, patience=10)
    reads_at_step = []  # host reads so far, at each train step call
    make = step_lib.make_train_step

    def counting_make(*args, **kwargs):
        fn = make(*args, **kwargs)

        def step(state, batch):
            reads_at_step.append(prefetch.HOST_READS.total)
            assert all(isinstance(v, jax.Array) for v in batch.values())  # put on the devices ahead
            return fn(state, batch)
        return step

    monkeypatch.setattr(step_lib, "make_train_step", counting_make)
    with jax.transfer_guard_device_to_host("disallow_explicit"), prefetch.count_host_reads() as reads:
        result = loop.train_and_evaluate(config, str(tmp_path / "run"))
    assert result["step"] == 12 and len(reads_at_step) == 12
    assert reads.by_reason[None] == 0, reads.by_reason  # every read is at a marked place
    assert reads.by_reason["log"] > 0 and reads.by_reason["checkpoint"] > 0
    per_step = np.diff(reads_at_step)  # reads after step i (1-based) and before step i + 1
    quiet = [i for i in range(1, 12) if i % 4 and i % 3 and i % 6]  # neither log, checkpoint nor epoch end
    assert quiet and all(per_step[i - 1] == 0 for i in quiet), dict(enumerate(per_step, 1))
    assert all(per_step[i - 1] > 0 for i in (4, 8)), dict(enumerate(per_step, 1))  # the log steps read
    # The asynchronous saves are complete when training returns: no temporary folders, steps readable.
    run = str(tmp_path / "run")
    assert checkpoint_steps(run, "last")[-1] == 12 and checkpoint_steps(run, "best")
    for folder in ("checkpoints", "best"):
        assert not [d for d in os.listdir(os.path.join(run, folder)) if "tmp" in d]


def test_to_device_raises_the_producers_error_in_order_and_stops_when_closed():
    mesh = sharding.make_mesh()

    def failing():
        yield {"x": np.zeros((mesh.size, 1), np.float32)}
        raise ValueError("train.tsv row 2: unknown label 'Nope'")

    it = prefetch.to_device(failing(), mesh, depth=2)
    assert next(it)["x"].shape == (mesh.size, 1)  # the good batch first, then its error
    with pytest.raises(ValueError, match="unknown label"):
        next(it)
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield {"x": np.full((mesh.size, 1), i, np.float32)}
                i += 1
        finally:
            closed.append(threading.current_thread().name)

    it = prefetch.to_device(endless(), mesh, depth=2)
    assert [int(next(it)["x"][0, 0]) for _ in range(3)] == [0, 1, 2]
    it.close()  # a loop that stops early: the producer stops and the source generator is closed
    assert closed == ["mmfuse-prefetch"]
    assert not any(t.name == "mmfuse-prefetch" for t in threading.enumerate())
