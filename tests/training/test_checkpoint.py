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
