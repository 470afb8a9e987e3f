"""Seed sweeps: the aggregate is the mean and sample std of the seeds' eval files; a failing seed is
reported and the others run; a rerun skips finished seeds; compare makes one row of a sweep."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import tiny_config

from mmfuse_jax import aggregate, compare, sweep
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.experiment import build


def _fake_seed(parent, seed, metrics, *, stage=""):
    run = os.path.join(parent, f"seed_{seed}", stage)
    os.makedirs(run, exist_ok=True)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({"model_name": "m", "dataset": {"name": "d"}, "batch_size": 4}, f)
    with open(os.path.join(run, "eval_test.json"), "w") as f:
        json.dump({"split": "test", "metrics": metrics}, f)


def test_aggregate_is_mean_and_sample_std_and_compare_groups_seeds(tmp_path):
    parent = str(tmp_path / "sweep")
    values = {0: (0.5, 0.25), 1: (0.75, 0.5), 3: (0.9, 0.2)}
    for seed, (acc, f1) in values.items():  # seed 3 as a staged model: its final stage is a sub-folder
        _fake_seed(parent, seed, {"acc": acc, "f1": f1}, stage="stage2" if seed == 3 else "")
    agg = aggregate.aggregate(parent, splits=("test",))
    accs = np.array([v[0] for v in values.values()])
    assert agg["seeds"] == [0, 1, 3]
    assert agg["splits"]["test"]["acc"]["mean"] == pytest.approx(accs.sum() / 3)
    hand_std = np.sqrt(((accs - accs.mean()) ** 2).sum() / 2)  # ddof = 1
    assert agg["splits"]["test"]["acc"]["std"] == pytest.approx(hand_std)
    assert agg["splits"]["test"]["f1"]["n"] == 3
    header, cells = compare.compare([parent])
    assert len(cells) == 1 and cells[0][0] == "sweep (3 seeds)"
    assert cells[0][header.index("acc")] == f"{100 * accs.mean():.2f} ± {100 * hand_std:.2f}"
    # the seed folders themselves (as a shell glob gives them) make the same one row
    _, cells2 = compare.compare([os.path.join(parent, "seed_0"), os.path.join(parent, "seed_1")])
    assert cells2 == cells


def test_parse_seeds():
    assert sweep.parse_seeds("0,1,2") == [0, 1, 2] and sweep.parse_seeds("3-5") == [3, 4, 5]
    for bad in ("", "a", "1,1"):
        with pytest.raises(ConfigError, match="--seeds"):
            sweep.parse_seeds(bad)


@pytest.mark.slow
def test_seeds_train_and_a_failing_seed_does_not_stop_the_others(tiny_synthetic, tmp_path, monkeypatch):
    config = tiny_config("early_fusion", tiny_synthetic, num_epochs=1)
    workdir = str(tmp_path / "w")
    real_run = sweep.loop.run

    def flaky(c, d):
        if c.seed == 1:
            raise RuntimeError("boom for the test")
        return real_run(c, d)

    monkeypatch.setattr(sweep.loop, "run", flaky)
    step_lib.memo_clear()
    results = sweep.run_seeds(config, workdir, [0, 1, 2], perturbations=("drop:audio",))
    assert [(r.seed, r.ok) for r in results] == [(0, True), (1, False), (2, True)]
    # seeds 0 and 2 trained with one jitted train step, traced once per length bucket (`step_lib.memo`)
    model = build(config, data=False).model
    kept = [v for k, v in step_lib.memo_items() if k[0] == "train_step" and k[1] == model]
    assert len(kept) == 1 and 1 <= kept[0][1].count <= config.dataset.num_buckets, kept
    assert "boom for the test" in results[1].reason
    with open(os.path.join(workdir, "aggregate.json")) as f:
        agg = json.load(f)
    assert agg["seeds"] == [0, 2] and "boom" in agg["failed"]["1"]
    per_seed = [json.load(open(os.path.join(workdir, f"seed_{k}", "eval_test.json"))) for k in (0, 2)]
    for name in per_seed[0]["metrics"]:
        vals = [p["metrics"][name] for p in per_seed]
        assert agg["splits"]["test"][name]["mean"] == pytest.approx(np.mean(vals))
        assert agg["splits"]["test"][name]["std"] == pytest.approx(np.std(vals, ddof=1))
    assert json.load(open(os.path.join(workdir, "seed_2", "config.json")))["seed"] == 2
    assert "seed 1" in open(os.path.join(workdir, "aggregate.md")).read()
    # the perturbed evaluation sits beside the clean one, recorded, aggregated and in the report
    rec = json.load(open(os.path.join(workdir, "seed_0", "eval_test__drop-audio.json")))
    assert rec["perturb"]["spec"] == "drop:audio" and rec["metrics"].keys() == per_seed[0]["metrics"].keys()
    assert agg["perturbations"]["drop-audio"]["test"]["acc"]["n"] == 2
    assert "| drop-audio |" in open(os.path.join(workdir, "seed_0", "report.md")).read()
    # A rerun skips the finished seeds and retries the failed one (now succeeding).
    monkeypatch.setattr(sweep.loop, "run", real_run)
    again = sweep.run_seeds(config, workdir, [0, 1, 2], perturbations=("drop:audio",))
    assert [(r.seed, r.ok, r.skipped) for r in again] == [(0, True, True), (1, True, False), (2, True, True)]
    # The report is written once, after the perturbed evaluations, and also when one of them fails.
    seed0 = os.path.join(workdir, "seed_0")
    os.remove(os.path.join(seed0, "report.md"))
    real_eval = sweep.loop.run_evaluation

    def broken(c, d, perturb=""):
        if perturb == "drop:video":
            raise RuntimeError("perturbation boom")
        return real_eval(c, d, perturb=perturb)

    monkeypatch.setattr(sweep.loop, "run_evaluation", broken)
    with pytest.raises(RuntimeError, match="perturbation boom"):
        sweep.run_seed(sweep.with_seed(config, 0), seed0, perturbations=("drop:audio", "shuffle:text", "drop:video"))
    assert "| shuffle-text |" in open(os.path.join(seed0, "report.md")).read()
