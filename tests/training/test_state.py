"""Optimizer schedules (`training/state.py`); frozen parameters: tests/training/test_stages.py."""
from __future__ import annotations

import ml_collections
import pytest

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
