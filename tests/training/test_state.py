"""Optimizer schedules (`training/state.py`, `training/plateau.py`); frozen parameters:
tests/training/test_stages.py."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import plateau
from mmfuse_jax.training import state as state_lib


def test_schedule_matches_the_official_scheduler():
    """Values printed by KuDA core/scheduler.py get_scheduler (torch 2.13, base lr 1), epoch by epoch."""
    official = {50: {0: 0.0, 1: 0.2, 4: 0.8, 5: 1.0, 6: 1.0, 7: 0.99878202513, 49: 0.00486596563},
                12: {0: 0.0, 1: 0.83333333333, 2: 1.0, 3: 0.97899475616, 11: 0.06698729811},
                100: {0: 0.0, 9: 0.9, 10: 1.0, 11: 1.0, 99: 0.00121797487}}
    steps_per_epoch = 3
    for epochs, table in official.items():
        sched = state_lib.warmup_cosine_epochs(1.0, 0.1, epochs, epochs * steps_per_epoch)
        for epoch, lr in table.items():
            for s in range(steps_per_epoch):  # constant within the epoch
                assert float(sched(epoch * steps_per_epoch + s)) == pytest.approx(lr, abs=1e-6), (epochs, epoch)
    opt = ml_collections.ConfigDict({"lr": 3e-5, "warmup_ratio": 0.1, "schedule": "warmup_cosine_epochs",
                                     "epochs": 50})
    assert float(state_lib.learning_rate_schedule(opt, 200)(4 * 6)) == pytest.approx(3e-5)  # epoch 6
    with pytest.raises(ValueError, match="must divide the 201 steps"):
        state_lib.learning_rate_schedule(opt, 201)


def _plateau_opt(mode="min", patience=2, cooldown=0, lr=1.0):
    return ml_collections.ConfigDict({
        "lr": lr, "warmup_ratio": 0.0, "grad_clip": 0.0, "b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
        "schedule": "plateau", "plateau": {"metric": "loss", "mode": mode, "factor": 0.1, "patience": patience,
                                           "threshold": 1e-4, "cooldown": cooldown}})


@pytest.mark.parametrize("mode,values,patience,cooldown,official", [
    ("min", [5, 4, 4, 4, 4, 4.5, 3.9999, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 2, 2, 2, 2, 2], 2, 0,
     [1, 1, 1, 1, .1, .1, .1, .1, .1, .1, .01, .01, .01, .01, .01, .01, .001, .001]),
    ("max", [.1, .2, .2, .2, .19, .3, .3, .3, .3, .3, .3, .3], 1, 2,
     [1, 1, 1, .1, .1, .1, .1, .01, .01, .01, .01, .001])])
def test_plateau_matches_torch_reduce_lr_on_plateau(mode, values, patience, cooldown, official):
    """The lr after each epoch's step(value), printed by torch 2.13 ReduceLROnPlateau(factor=0.1, lr 1)
    (threshold 1e-4 relative: 3.9999 is no improvement on 4); through the real optimizer state."""
    opt = _plateau_opt(mode, patience, cooldown)
    tx = state_lib.make_optimizer(opt, 100)
    state = state_lib.create({"w": jnp.ones(3)}, tx, 0)
    got = []
    for v in values:
        state = plateau.after_validation(state, {"loss": v}, opt)
        got.append(plateau.scale_of(state.opt_state))
    np.testing.assert_allclose(got, official, rtol=1e-6)


def test_plateau_scales_the_adam_update_and_leaves_other_schedules_alone():
    opt = _plateau_opt(patience=0, lr=0.5)
    tx = state_lib.make_optimizer(opt, 10)
    params, grads = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([0.3, 0.7])}
    state = state_lib.create(params, tx, 0)
    first, _ = tx.update(grads, state.opt_state, params)
    for v in (1.0, 2.0):  # the second epoch is worse: patience 0 reduces at once
        state = plateau.after_validation(state, {"loss": v}, opt)
    reduced, _ = tx.update(grads, state.opt_state, params)
    np.testing.assert_allclose(reduced["w"], 0.1 * first["w"], rtol=1e-6)
    assert state_lib.current_lr(state_lib.learning_rate_schedule(opt, 10), state, 3) == pytest.approx(0.05)
    linear = ml_collections.ConfigDict({**opt.to_dict(), "schedule": "linear"})
    lin_state = state_lib.create(params, state_lib.make_optimizer(linear, 10), 0)
    assert plateau.after_validation(lin_state, {"loss": 1.0}, linear) is lin_state
    assert not [x for x in jax.tree_util.tree_leaves(lin_state.opt_state, is_leaf=plateau._is_plateau)
                if isinstance(x, plateau.PlateauState)]


def test_plateau_config_errors():
    opt = _plateau_opt()
    with pytest.raises(ConfigError, match=r"plateau.metric='loss': expected one of \['acc'\]"):
        plateau.check_config(opt, ["acc"])
    opt.plateau.mode = "up"
    with pytest.raises(ConfigError, match="plateau.mode='up'"):
        state_lib.make_optimizer(opt, 10)
    with pytest.raises(ConfigError, match="schedule='cosine'"):
        state_lib.learning_rate_schedule(ml_collections.ConfigDict({"schedule": "cosine", "lr": 1.0}), 10)
