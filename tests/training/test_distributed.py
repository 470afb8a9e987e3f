"""Scale-out: two processes on localhost = one process, the ``model`` mesh axis = replicated params.

The two-process test runs train.py and eval.py as two JAX processes (2 CPU devices each, gloo
collectives over TCP) and compares them with a single process on 4 devices with the same global
batch: every logged loss, the trained params and the test logits agree to 1e-5.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, tiny_config
from models.test_models import BERT, C, model_config
from training.test_step import OPT, big_batch

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import distributed, sharding
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.checkpoint import Checkpoints

_TOL = {"rtol": 1e-5, "atol": 1e-5}
BERT1 = dataclasses.replace(BERT, num_hidden_layers=1)  # one layer has every kind of BERT weight


# ------------------------------------------------------------------------------ initialize


@pytest.fixture
def no_cluster_env(monkeypatch):
    for name in distributed.ENV.values():
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_initialize_without_a_coordinator_is_one_process(no_cluster_env):
    assert distributed.initialize("env") is False
    assert distributed.initialize("off", coordinator_address="127.0.0.1:1") is False
    assert jax.process_count() == 1 and distributed.is_primary()
    assert distributed.primary_first(lambda: 7, "t") == 7
    distributed.barrier("nothing to wait for")


def test_initialize_reports_incomplete_settings(no_cluster_env):
    with pytest.raises(ConfigError, match="expected one of"):
        distributed.initialize("sometimes")
    with pytest.raises(ConfigError, match="also needs --process_id"):
        distributed.initialize("env", coordinator_address="127.0.0.1:1", num_processes=2)
    no_cluster_env.setenv("MMFUSE_NUM_PROCESSES", "2")
    with pytest.raises(ConfigError, match="needs --coordinator_address"):
        distributed.initialize("env")
    no_cluster_env.setenv("MMFUSE_COORDINATOR", "127.0.0.1:1")
    no_cluster_env.setenv("MMFUSE_PROCESS_ID", "first")
    with pytest.raises(ConfigError, match=r"\$MMFUSE_PROCESS_ID='first': expected an integer"):
        distributed.initialize("env")


def test_one_process_feeds_every_row():
    for model in (1, 2, 4):
        mesh = sharding.make_mesh(model)
        assert dict(mesh.shape) == {"data": 4 // model, "model": model}
        assert sharding.data_slice(mesh) == (0, 1)
    with pytest.raises(ConfigError, match="config.mesh.model=3 must be >= 1 and divide the 4 devices"):
        sharding.make_mesh(3)
    with pytest.raises(ConfigError, match="batch_size=3 must be divisible by the 2 devices"):
        sharding.check_batch_size(3, sharding.make_mesh(2))
    sharding.check_batch_size(6, sharding.make_mesh(2))  # the batch is split over 'data' only


def test_mesh_devices_takes_the_first_devices_of_the_host():
    import ml_collections

    config = lambda **mesh: ml_collections.ConfigDict({"mesh": {"model": 1, "devices": 0, **mesh}})
    assert sharding.mesh_from_config(config()).devices.size == 4  # 0: every device
    one = sharding.mesh_from_config(config(devices=1))
    assert list(one.devices.flat) == jax.devices()[:1] and dict(one.shape) == {"data": 1, "model": 1}
    assert dict(sharding.mesh_from_config(config(devices=2, model=2)).shape) == {"data": 1, "model": 2}
    with pytest.raises(ConfigError, match="config.mesh.devices=5: only 4 devices here"):
        sharding.mesh_from_config(config(devices=5))


# ------------------------------------------------------------------------------ the model axis


def test_param_spec_splits_the_largest_divisible_dimension():
    mesh = sharding.make_mesh(2)
    assert sharding.param_spec((31, 12), mesh, 100) == jax.sharding.PartitionSpec(None, "model")
    assert sharding.param_spec((20, 12), mesh, 100) == jax.sharding.PartitionSpec("model", None)
    assert sharding.param_spec((12,), mesh, 100) == jax.sharding.PartitionSpec()  # small: replicated
    assert sharding.param_spec((33, 101), mesh, 100) == jax.sharding.PartitionSpec()  # nothing divides
    assert sharding.param_spec((20, 12), sharding.make_mesh(1), 1) == jax.sharding.PartitionSpec()


def _fsdp_state(mesh, min_size=100, name="text_only", bert=BERT1):
    spec = registry.get(name)
    m = spec.build(model_config(name), {"num_classes": C, "bert": bert})
    params = m.init(jax.random.key(0), big_batch(), train=False)["params"]
    tx = state_lib.make_optimizer(OPT, 10)
    state = state_lib.create(params, tx, 0)
    shardings = sharding.tree_shardings(state, mesh, min_size)
    return spec, m, tx, jax.device_put(state, shardings), shardings


def _split_leaves(shardings) -> int:
    return sum("model" in s.spec for s in jax.tree_util.tree_leaves(shardings))


def test_model_axis_gives_the_same_steps_as_replicated_params():
    """4 devices as 2 (data) x 2 (model, params split) = 4 x 1 (replicated): loss and params to 1e-5.
    (The sharded eval step runs in test_two_processes_match_one_process.)"""
    results = []
    for model in (1, 2):
        mesh = sharding.make_mesh(model)
        spec, m, tx, st, shardings = _fsdp_state(mesh)
        if model == 2:  # BERT embeddings and kernels, their Adam moments: split; biases, norms: not
            assert _split_leaves(shardings.params) >= 8
            assert _split_leaves(shardings.opt_state) == 2 * _split_leaves(shardings.params)
        train_step = step_lib.make_train_step(m, spec.make_loss(None), tx, mesh, state_sharding=shardings)
        losses = []
        for i in range(3):
            st, metrics = train_step(st, jax.device_put(big_batch(seed=i), sharding.data_sharded(mesh)))
            losses.append(float(metrics["loss"]))
        # the state keeps its layout through the step (no silent gather to every device)
        assert jax.tree_util.tree_map(lambda x: x.sharding.spec, st) == \
            jax.tree_util.tree_map(lambda s: s.spec, shardings)
        results.append((losses, jax.device_get(st.params)))
    np.testing.assert_allclose(results[0][0], results[1][0], **_TOL)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **_TOL), results[0][1], results[1][1])


def test_sharded_state_checkpoint_round_trip(tmp_path):
    """A state split on the model axis saves and restores as is, and into a replicated layout."""
    mesh = sharding.make_mesh(2)
    _, _, _, st, shardings = _fsdp_state(mesh)
    st = st.replace(opt_state=jax.tree_util.tree_map(lambda x: x + 0.5, st.opt_state))  # not all zeros
    expected = jax.device_get(st)
    ckpt = Checkpoints(str(tmp_path))
    ckpt.save_latest(st, {"epoch": 0, "next_batch": 1})
    ckpt.close()

    def abstract(layout):
        return jax.tree_util.tree_map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), st, layout)

    rep = sharding.replicated(sharding.make_mesh(1))
    for layout in (shardings, jax.tree_util.tree_map(lambda _: rep, shardings)):
        ckpt = Checkpoints(str(tmp_path))
        restored, meta = ckpt.restore_latest(abstract(layout))
        ckpt.close()
        assert meta == {"epoch": 0, "next_batch": 1}
        assert jax.tree_util.tree_map(lambda x: x.sharding, restored) == layout
        jax.tree_util.tree_map(np.testing.assert_array_equal, expected, jax.device_get(restored))


# ------------------------------------------------------------------------------ two processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_processes(script: str, flags: list[str], *, timeout: float = 240) -> list[str]:
    """``script`` as processes 0 and 1 of a localhost cluster, 2 CPU devices each; their stdout."""
    port = _free_port()
    # the suite's XLA_FLAGS (conftest: its compile-speed flags) stay; a device count set there would not
    xla = [f for f in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    env = {**os.environ, "JAX_NUM_CPU_DEVICES": "2", "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(xla)}
    procs = [subprocess.Popen([sys.executable, script, *flags, f"--coordinator_address=127.0.0.1:{port}",
                               "--num_processes=2", f"--process_id={i}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail(f"{script} on two processes did not finish in {timeout}s (a hang?): "
                    + "\n".join((p.communicate()[0] or "")[-2000:] for p in procs))
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i} of {script} exited with {p.returncode}:\n{out[-4000:]}"
    return outs


def _losses(workdir):
    from mmfuse_jax.training.logging import read_metrics

    return [r for r in read_metrics(workdir) if "train_loss" in r]


@pytest.mark.slow
def test_two_processes_match_one_process(tiny_synthetic, tmp_path):
    """train.py then eval.py on 2 processes x 2 devices = one process on 4 devices (batch 16, 6 steps);
    eval.py splits the params over the model axis (restoring a replicated checkpoint) on the way."""
    from mmfuse_jax import report
    from mmfuse_jax.training import loop

    overrides = {"num_epochs": 1, "log_every": 1, "batch_size": 16, "eval_batch_size": 16}
    flags = [f"--config={REPO}/configs/text_only.py:tiny", f"--config.dataset.root={tiny_synthetic}",
             f"--config.dataset.bert_path={tiny_synthetic}/bert", "--config.dataset.synthetic={}",
             *(f"--config.{k}={v}" for k, v in overrides.items())]
    ref, two = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
    config = tiny_config("text_only", tiny_synthetic, **overrides)
    loop.train_and_evaluate(config, ref)  # also prepares the data the two processes then reuse
    ev = loop.evaluate(config, ref)  # eval.py's two calls: evaluate, then the report (predictions_<split>.npz)
    report.after_evaluate(ev.run_dir, ev.config, ev.preds, train=ev.train, checkpoint_step=ev.checkpoint_step)

    outs = _run_two_processes("train.py", [*flags, f"--workdir={two}"])
    assert all("preparing" not in out for out in outs)  # same config: the prepared data was reused
    for key in ("train_loss", "train_grad_norm", "train_acc"):
        np.testing.assert_allclose([r[key] for r in _losses(ref)], [r[key] for r in _losses(two)], **_TOL)
    assert [r["step"] for r in _losses(two)] == list(range(1, 7))
    assert len([f for f in os.listdir(two) if f.startswith("events.out")]) == 1  # process 0 logs alone

    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                                      loop.init_params(loop.build(config)))

    def best(workdir):
        ckpt = Checkpoints(workdir)
        try:
            return ckpt.restore_best(abstract)
        finally:
            ckpt.close()

    (p_ref, m_ref), (p_two, m_two) = best(ref), best(two)
    assert m_ref == m_two  # same step, same dev metrics (computed on every host's rows)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, **_TOL),
                           jax.device_get(p_ref), jax.device_get(p_two))

    outs = _run_two_processes("eval.py", [*flags, f"--workdir={two}", "--config.mesh.model=2",
                                          "--config.mesh.min_shard_size=100"])
    for split in ("dev", "test"):
        with open(os.path.join(ref, f"eval_{split}.json")) as f1, open(os.path.join(two, f"eval_{split}.json")) as f2:
            assert json.load(f1)["metrics"] == json.load(f2)["metrics"]
    a, b = np.load(os.path.join(ref, "predictions_test.npz")), np.load(os.path.join(two, "predictions_test.npz"))
    assert len(a["logits"]) == 40 and np.array_equal(a["label"], b["label"])
    np.testing.assert_allclose(a["logits"], b["logits"], **_TOL)
    assert outs[0].count("test ") == outs[1].count("test ") == 1  # both print the table
