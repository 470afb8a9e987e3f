"""`checkpoint.read_checkpoint` / `checkpoint_steps`: a run's params without building its model."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training.checkpoint import Checkpoints, checkpoint_steps, read_checkpoint

PARAMS = {"encoder": {"proj": {"kernel": jnp.arange(6.0).reshape(2, 3), "bias": jnp.ones(3)}},
          "head": {"kernel": jnp.full((3, 5), 0.5)}}


@pytest.fixture
def run_dir(tmp_path):
    """A run with best = the initial params at step 0 and latest = doubled params at steps 1 and 2."""
    ckpt = Checkpoints(str(tmp_path))
    st = state_lib.create(PARAMS, optax.adamw(1e-3), 0)
    ckpt.save_best(st, {"epoch": 1, "step": 0})
    for step in (1, 2):
        st = st.replace(step=st.step + 1, params=jax.tree_util.tree_map(lambda x: x * 2, st.params))
        ckpt.save_latest(st, {"epoch": step})
    ckpt.close()
    return str(tmp_path)


def test_last_and_best(run_dir):
    assert checkpoint_steps(run_dir, "last") == [1, 2] and checkpoint_steps(run_dir, "best") == [0]
    last, meta = read_checkpoint(run_dir, "last")
    assert meta["epoch"] == 2
    np.testing.assert_array_equal(last["encoder"]["proj"]["kernel"], 4 * np.arange(6.0).reshape(2, 3))
    assert isinstance(last["head"]["kernel"], np.ndarray) and last["head"]["kernel"].dtype == np.float32
    older, _ = read_checkpoint(run_dir, "last", step=1)
    np.testing.assert_array_equal(older["head"]["kernel"], np.full((3, 5), 1.0))
    best, meta = read_checkpoint(run_dir, "best")
    assert meta == {"epoch": 1, "step": 0}
    assert jax.tree_util.tree_structure(best) == jax.tree_util.tree_structure(PARAMS)
    np.testing.assert_array_equal(best["encoder"]["proj"]["bias"], np.ones(3))


def test_missing_runs_steps_and_selections_are_clear_errors(run_dir, tmp_path):
    assert checkpoint_steps(str(tmp_path / "nowhere"), "best") == []
    with pytest.raises(DataError, match="train first"):
        read_checkpoint(str(tmp_path / "nowhere"), "last")
    with pytest.raises(DataError, match=r"a checkpoint at step 7.*steps \[1, 2\]"):
        read_checkpoint(run_dir, "last", step=7)
    with pytest.raises(ConfigError, match="'first'"):
        read_checkpoint(run_dir, "first")


@pytest.mark.parametrize("model", ["text_only", "kuda"])
def test_restore_target_is_what_init_gives_without_running_init(model, tiny_synthetic):
    """`abstract_params` (evaluation's restore target): the tree, shapes, dtypes and shardings of
    `init_params`, pretrained BERT included (its tree comes from the checkpoint file, not the model)."""
    from conftest import tiny_config

    from mmfuse_jax.training import experiment

    config = tiny_config(model, tiny_synthetic)
    assert config.model.pretrained_bert
    exp = experiment.build(config, data=False)
    real, abstract = experiment.init_params(exp), experiment.abstract_params(exp)
    assert jax.tree_util.tree_structure(real) == jax.tree_util.tree_structure(abstract)
    for r, a in zip(jax.tree_util.tree_leaves(real), jax.tree_util.tree_leaves(abstract)):
        assert (r.shape, r.dtype, r.sharding) == (a.shape, a.dtype, a.sharding)


def test_async_save_is_a_host_copy_the_next_step_cannot_change(tmp_path):
    """A save hands Orbax a numpy copy of the state (`checkpoint._host_copy`): no per-shape compiles, and
    the train step that donates the state's buffers right after the save returns cannot change what the
    background write puts on disk. The restore gives the target's shardings back."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(jax.devices()).reshape(2, -1), ("data", "model"))
    layout = {"encoder": {"proj": {"kernel": PartitionSpec("model"), "bias": PartitionSpec()}},
              "head": {"kernel": PartitionSpec()}}
    # dims divisible by the replica count: Orbax would split the writing of such an array among its replicas
    params = {"encoder": {"proj": {"kernel": jnp.arange(32.0).reshape(8, 4), "bias": jnp.ones(4)}},
              "head": {"kernel": jnp.full((4, 8), 0.5)}}
    params = jax.device_put(params, jax.tree_util.tree_map(lambda p: NamedSharding(mesh, p), layout))
    st = state_lib.create(params, optax.adamw(1e-3), 0)
    want = jax.device_get(st)
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), st)
    compiles = []
    listener = lambda event, *_, **__: compiles.append(event) if event.endswith("backend_compile_duration") \
        else None
    ckpt = Checkpoints(str(tmp_path), async_save=True)
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        ckpt.save_latest(st, {"epoch": 0})
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiles == []
    overwrite = jax.jit(lambda s: jax.tree_util.tree_map(lambda x: x * 0 + 7, s), donate_argnums=0)
    jax.block_until_ready(overwrite(st))  # the buffers the save read from are reused
    ckpt.close()
    got, meta = Checkpoints(str(tmp_path)).restore_latest(abstract)
    assert meta == {"epoch": 0}
    for g, w, a in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want),
                       jax.tree_util.tree_leaves(abstract)):
        np.testing.assert_array_equal(np.asarray(g), w)
        assert g.sharding == a.sharding


@pytest.mark.parametrize("change", ["shape", "tree"])
def test_restoring_another_models_checkpoint_is_a_clear_error_that_moves_nothing(run_dir, change):
    """A readable step that does not fit the target (another model or config): ConfigError naming the step,
    and the step stays where it is (only unreadable steps are set aside). A dtype is not checked: Orbax casts
    to the target's, as it always has."""
    import os

    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    if change == "shape":
        abstract["head"]["kernel"] = jax.ShapeDtypeStruct((3, 6), jnp.float32)
    else:
        abstract["head"]["bias"] = jax.ShapeDtypeStruct((5,), jnp.float32)
    before = sorted(os.listdir(os.path.join(run_dir, "best")))
    with pytest.raises(ConfigError, match="checkpoint step 0 .* does not fit this config's model"):
        Checkpoints(run_dir).restore_best(abstract)
    assert sorted(os.listdir(os.path.join(run_dir, "best"))) == before
    good = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
    params, meta = Checkpoints(run_dir).restore_best(good)
    assert meta["step"] == 0 and isinstance(params["head"]["kernel"], jax.Array)
