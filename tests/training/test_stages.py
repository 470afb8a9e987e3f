"""The generic stage runner (`training/stages.py` + `loop.run`): plans, warm starts (graft) and
frozen parameters, and (slow) a toy two-stage model defined only in tests/fixtures/toy_model.py
trained and evaluated through train.py and eval.py."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import REPO
from flax import traverse_util

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError, DataError
from mmfuse_jax.training import stages as stages_lib
from mmfuse_jax.training import state as state_lib
from mmfuse_jax.training.checkpoint import Checkpoints, read_checkpoint

TOY = os.path.join(REPO, "tests", "fixtures", "toy_model.py")


def toy_config():
    if "toy_model_cfg" not in sys.modules:  # as ml_collections' config flag loads it (Flax needs the module)
        spec = importlib.util.spec_from_file_location("toy_model_cfg", TOY)
        sys.modules["toy_model_cfg"] = mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)  # registers the toy model
    return sys.modules["toy_model_cfg"].get_config("tiny")


def _params():
    def leaf(*shape):
        return jnp.full(shape, 0.5)
    return {"encoder": {"kernel": leaf(4, 3), "bias": leaf(3)}, "classifier": {"kernel": leaf(3, 2)}}


def test_plan_has_each_stage_config_and_folder():
    c = toy_config()
    plan = stages_lib.plan(c, "/w")
    assert [(p.stage.name, p.run_dir) for p in plan] == [("pretrain", "/w/pretrain"), ("finetune", "/w/finetune")]
    assert plan[0].config.optimizer.lr == c.pretrain_lr and c.optimizer.lr == 3e-3  # a copy, not the config
    assert plan[1].stage.warm_start == ("pretrain",) and stages_lib.final(c, "/w").run_dir == "/w/finetune"
    c.model_name = "text_only"
    (single,) = stages_lib.plan(c, "/w")
    assert (single.run_dir, single.label, single.stage.frozen) == ("/w", "run", ())


@pytest.mark.parametrize("recipe, message", [
    ([registry.Stage("a"), registry.Stage("a")], "'a' declared twice"),
    ([registry.Stage("b", warm_start=("a",)), registry.Stage("a")], r"warm-starts from \['a'\]"),
    ([registry.Stage("a", select="first")], "select='first'"),
    ([], "declares no training stage")])
def test_bad_recipes_are_config_errors(monkeypatch, recipe, message):
    c = toy_config()
    spec = registry.get(c.model_name)
    monkeypatch.setattr(registry, "get", lambda name: registry.ModelSpec(
        name, spec.build, spec.make_loss, stages=lambda config: recipe))
    with pytest.raises(ConfigError, match=message):
        stages_lib.plan(c, "/w")


def test_graft_copies_source_subtrees_and_checks_shapes():
    params = _params()
    src = {"encoder": jax.tree_util.tree_map(lambda x: np.asarray(x) + 1.0, params["encoder"])}
    out = stages_lib.graft(params, [("stage a", src)], target="stage b")
    assert float(out["encoder"]["kernel"][0, 0]) == 1.5 and out["encoder"]["kernel"].dtype == jnp.float32
    assert out["classifier"] is params["classifier"]
    bad = {"encoder": {"kernel": np.zeros((5, 3)), "bias": np.zeros(3)}}
    with pytest.raises(ConfigError, match="stage a parameters 'encoder' do not match stage b at 'encoder/kernel'"):
        stages_lib.graft(params, [("stage a", bad)], target="stage b")
    with pytest.raises(ConfigError, match="'encoder/extra'"):
        stages_lib.graft(params, [("stage a", {"encoder": {**src["encoder"], "extra": np.zeros(1)}})])
    with pytest.raises(ConfigError, match="stage a has parameters 'nope' that stage b lacks"):
        stages_lib.graft(params, [("stage a", {"nope": {}})], target="stage b")


def test_warm_start_reads_each_source_with_its_selection(tmp_path):
    params = _params()
    ckpt = Checkpoints(str(tmp_path / "a"))
    st = state_lib.create(params, optax.adamw(1e-3), 0)
    ckpt.save_best(st, {"epoch": 1})
    st = st.replace(step=st.step + 1, params=jax.tree_util.tree_map(lambda x: x * 2, params))
    ckpt.save_latest(st, {"epoch": 2})
    ckpt.close()
    for select, expected in (("last", 1.0), ("best", 0.5)):
        recipe = [registry.Stage("a", select=select), registry.Stage("b", warm_start=("a",))]
        plan = [stages_lib.PlannedStage(s, None, str(tmp_path / s.name)) for s in recipe]
        assert stages_lib.warm_start_fn(plan[0], plan) is None
        fresh = jax.tree_util.tree_map(jnp.zeros_like, params)
        out = stages_lib.warm_start_fn(plan[1], plan)(fresh)
        assert float(out["classifier"]["kernel"][0, 0]) == expected, select
    plan[0] = stages_lib.PlannedStage(recipe[0], None, str(tmp_path / "missing"))
    with pytest.raises(DataError, match="train first"):
        stages_lib.warm_start_fn(plan[1], plan)(fresh)


def test_frozen_regexes_get_no_update_at_all():
    """A stage's frozen params: no gradient step and no weight decay (torch's requires_grad=False)."""
    opt = toy_config().optimizer
    params = _params()
    tx = state_lib.make_optimizer(opt, 10, (r"^encoder/",))
    state, new = tx.init(params), params
    for _ in range(3):
        updates, state = tx.update(jax.tree_util.tree_map(jnp.ones_like, new), state, new)
        new = optax.apply_updates(new, updates)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(new["encoder"]),
                                                     jax.tree_util.tree_leaves(params["encoder"])))
    assert not np.array_equal(new["classifier"]["kernel"], params["classifier"]["kernel"])


def _cli(script, *args, env=None):
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)  # the repo first, the rest kept
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                          check=False, env={**(os.environ if env is None else env), "PYTHONPATH": path})


@pytest.mark.slow
def test_a_toy_model_from_one_test_file_trains_and_evaluates_through_the_cli(tiny_synthetic, tmp_path):
    work = str(tmp_path / "run")
    flags = [f"--config={TOY}:tiny", f"--workdir={work}", f"--config.dataset.root={tiny_synthetic}",
             f"--config.dataset.bert_path={tiny_synthetic}/bert", "--config.dataset.synthetic={}"]
    # The CLIs' own compilation cache (runtime.compilation_cache), not the session's: eval.py reads back the eval
    # step train.py compiled (the suite's JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 writes every program).
    cache = str(tmp_path / "xla")
    env = {**{k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}, "MMFUSE_XLA_CACHE": cache}
    r = _cli("train.py", *flags, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert any(name.endswith("-cache") for name in os.listdir(cache))
    for stage in ("pretrain", "finetune"):
        assert os.path.exists(os.path.join(work, stage, "config.json")), stage
    pre, _ = read_checkpoint(os.path.join(work, "pretrain"), "last")
    fine, _ = read_checkpoint(os.path.join(work, "finetune"), "last")
    flat_pre, flat_fine = traverse_util.flatten_dict(pre), traverse_util.flatten_dict(fine)
    # finetune started from pretrain's params: its frozen encoder still equals them, bit for bit ...
    assert all(np.array_equal(flat_pre[k], flat_fine[k]) for k in flat_pre if k[0] == "encoder")
    # ... and its classifier trained on from there.
    assert any(not np.array_equal(flat_pre[k], flat_fine[k]) for k in flat_pre if k[0] == "classifier")
    with open(os.path.join(work, "pretrain", "config.json")) as f:
        assert json.load(f)["optimizer"]["lr"] == pytest.approx(1e-2)  # the stage's own config

    r = _cli("eval.py", *flags, env={**env, "JAX_LOG_COMPILES": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Persistent compilation cache hit for 'jit_eval_step'" in r.stderr, r.stderr[-3000:]
    with open(os.path.join(work, "finetune", "eval_test.json")) as f:
        rec = json.load(f)
    assert rec["model"] == "toy_two_stage" and set(rec["metrics"]) >= {"acc", "f1"}
    assert not os.path.exists(os.path.join(work, "eval_test.json"))
    pred = np.load(os.path.join(work, "finetune", "predictions_test.npz"))
    assert pred["share"].shape == (len(pred["label"]), 2)  # the spec's declared eval output


def test_graft_fitting_loads_whole_layers_that_fit_and_reports_the_rest(capsys):
    """'fitting': a layer loads when all its leaves fit; the input projection of a source trained on other
    feature sizes stays fresh (its bias too, although the bias alone would fit), and is printed."""
    fresh = {"encoder": {"proj": {"kernel": jnp.zeros((4, 3)), "bias": jnp.zeros(3)},
                         "layer_0": {"kernel": jnp.zeros((3, 3)), "bias": jnp.zeros(3)}},
             "classifier": {"kernel": jnp.zeros((3, 2))}}
    src = {"encoder": {"proj": {"kernel": np.ones((7, 3)), "bias": np.ones(3)},
                       "layer_0": {"kernel": np.ones((3, 3)), "bias": np.ones(3)},
                       "extra": {"scale": np.ones(2)}}}
    out = stages_lib.graft(fresh, [("stage a", src)], target="stage b", fit="fitting")
    enc = out["encoder"]
    assert float(enc["layer_0"]["kernel"].sum()) == 9.0 and float(enc["layer_0"]["bias"].sum()) == 3.0
    assert float(jnp.abs(enc["proj"]["kernel"]).sum()) == 0.0 and float(enc["proj"]["bias"].sum()) == 0.0
    assert out["encoder"]["layer_0"]["kernel"].dtype == jnp.float32
    np.testing.assert_array_equal(out["classifier"]["kernel"], fresh["classifier"]["kernel"])
    printed = capsys.readouterr().out
    assert "warm start of stage b from stage a: 3 parameters do not fit" in printed
    assert "encoder/proj/kernel [7, 3] (target [4, 3])" in printed and "encoder/proj/bias [3] (target [3])" in printed
    assert "encoder/extra/scale [2] (target lacks it)" in printed and "layer_0" not in printed
    with pytest.raises(ConfigError, match="do not match stage b at 'encoder/"):  # strict stays strict
        stages_lib.graft(fresh, [("stage a", src)], target="stage b")
    with pytest.raises(ConfigError, match="warm_start_fit='loose'"):
        stages_lib.graft(fresh, [("stage a", src)], fit="loose")


def test_plan_checks_warm_start_fit(monkeypatch):
    import ml_collections

    recipe = [registry.Stage("a"), registry.Stage("b", warm_start=("a",), warm_start_fit="fitting")]
    spec = registry.get("text_only")
    monkeypatch.setattr(registry, "get", lambda name: dataclasses.replace(spec, stages=lambda config: recipe))
    c = ml_collections.ConfigDict({"model_name": "text_only"})
    assert [p.stage.warm_start_fit for p in stages_lib.plan(c, "/w")] == ["strict", "fitting"]
    recipe[1] = registry.Stage("b", warm_start=("a",), warm_start_fit="loose")
    with pytest.raises(ConfigError, match="warm_start_fit='loose'"):
        stages_lib.plan(c, "/w")


def test_abstract_run_traces_each_stage_and_compiles_no_step(tiny_synthetic, caplog):
    """`loop.abstract_run`: every stage's whole train step as shapes (the toy model's two stages, the
    second with its encoder frozen), the state's params the model's, and no train step compiled; a batch
    the loss cannot take fails there, as training would."""
    import logging

    from mmfuse_jax.training import loop
    from mmfuse_jax.training.experiment import abstract_params, build

    config = toy_config()
    config.dataset.update({"root": tiny_synthetic, "bert_path": f"{tiny_synthetic}/bert", "synthetic": {}})
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        traced = loop.abstract_run(config)
    compiled = [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("Compiling ")]
    assert not any("train_step" in name for name in compiled), compiled
    assert list(traced) == ["pretrain", "finetune"]
    want = jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), abstract_params(build(config, data=False)))
    for state, metrics in traced.values():
        assert jax.tree_util.tree_map(lambda x: (x.shape, x.dtype), state.params) == want
        assert state.step.shape == () and {"loss", "ce", "correct"} <= set(metrics)
    config.dataset.label_shape = (4,)  # four labels per example: the loss's one-hot no longer fits the logits
    with pytest.raises((TypeError, ValueError), match="shape|broadcast|ncompatible"):
        loop.abstract_run(config)
