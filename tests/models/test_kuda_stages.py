"""KuDA's stages: per-stage configs, the frozen-parameter optimizer, the official schedule, stage-1 ->
stage-2 carry-over, and (slow) both stages end to end through the shared loop."""
from __future__ import annotations

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import traverse_util

from conftest import REPO
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models import kuda_stages
from mmfuse_jax.training import state as state_lib


def kuda_config(preset):
    spec = importlib.util.spec_from_file_location("kuda_cfg", os.path.join(REPO, "configs", "kuda.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.get_config(preset)


def test_stage_configs_follow_pretrain_and_train():
    runs = kuda_stages.stage_configs(kuda_config("sims"))
    assert [n for n, _ in runs] == ["stage1_text", "stage1_video", "stage1_audio", "stage2"]
    for (name, c), epochs in zip(runs[:3], (100, 100, 50)):  # pretrain.py n_epochs T/V/A
        m = name.split("_")[1]
        assert (c.model.stage, c.model.modality, c.model.target) == (1, m, "unimodal")
        assert (c.num_epochs, c.optimizer.lr, c.optimizer.weight_decay) == (epochs, 1e-4, 1e-3)
        assert c.optimizer.epochs == epochs  # the schedule follows each run's epochs
        assert c.metric == f"sims_{m}" and c.dataset.metric == "sims" and c.optimizer.frozen == ()
    s2 = runs[-1][1]
    assert (s2.model.stage, s2.num_epochs, s2.optimizer.lr, s2.optimizer.weight_decay) == (2, 50, 3e-5, 1e-5)
    assert s2.optimizer.frozen == kuda_stages.FROZEN and s2.metric == ""
    mosi = kuda_stages.stage_configs(kuda_config("mosi"))
    assert mosi[0][1].model.target == "multimodal" and mosi[0][1].metric == ""
    c = kuda_config("sims")
    c.stage1.enabled = False
    assert [(n, r.optimizer.frozen) for n, r in kuda_stages.stage_configs(c)] == [("stage2", ())]


def _fake_kuda_params():
    leaf = lambda *s: jnp.full(s, 0.5)  # noqa: E731
    flat = {("text_encoder", "adapter_0", "down_project", "kernel"): leaf(4, 2),
            ("text_encoder", "adapter_3", "layer_0", "norm1", "scale"): leaf(2),
            ("text_encoder", "layernorm", "scale"): leaf(4),
            ("video_encoder", "layer_0", "linear1", "kernel"): leaf(4, 3),
            ("video_encoder", "adapter_1", "up_project", "bias"): leaf(4),
            ("audio_decoder", "linear_3", "kernel"): leaf(2, 1),
            ("bert", "encoder", "layer_0", "attention", "self", "query", "kernel"): leaf(4, 4),
            ("block_0", "f_t", "cross_attn", "to_q", "kernel"): leaf(4, 4),
            ("head", "linear_2", "bias"): leaf(1)}
    return traverse_util.unflatten_dict(flat)


def test_frozen_parameters_get_no_update_at_all():
    """optimizer.frozen: no gradient step and no weight decay (torch skips requires_grad=False)."""
    opt = ml_collections.ConfigDict({"lr": 0.1, "weight_decay": 0.5, "warmup_ratio": 0.0, "grad_clip": 0.0,
                                     "b1": 0.9, "b2": 0.999, "eps": 1e-8, "frozen": kuda_stages.FROZEN})
    params = _fake_kuda_params()
    tx = state_lib.make_optimizer(opt, 10)
    state = tx.init(params)
    new = params
    for _ in range(3):
        updates, state = tx.update(jax.tree_util.tree_map(jnp.ones_like, new), state, new)
        new = jax.tree_util.tree_map(lambda p, u: p + u, new, updates)
    frozen = {"/".join(k): bool(np.array_equal(v, traverse_util.flatten_dict(params)[k]))
              for k, v in traverse_util.flatten_dict(new).items()}
    assert frozen == {"text_encoder/adapter_0/down_project/kernel": True,
                      "text_encoder/adapter_3/layer_0/norm1/scale": True,
                      "text_encoder/layernorm/scale": False,  # the shared LayerNorm keeps training
                      "video_encoder/layer_0/linear1/kernel": False,
                      "video_encoder/adapter_1/up_project/bias": True,
                      "audio_decoder/linear_3/kernel": True,
                      "bert/encoder/layer_0/attention/self/query/kernel": False,
                      "block_0/f_t/cross_attn/to_q/kernel": False, "head/linear_2/bias": False}


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


def test_graft_copies_stage1_subtrees_and_checks_shapes():
    params = _fake_kuda_params()
    stage1 = {"video_encoder": jax.tree_util.tree_map(lambda x: x + 1.0, params["video_encoder"])}
    out = kuda_stages.graft(params, [stage1])
    assert float(out["video_encoder"]["layer_0"]["linear1"]["kernel"][0, 0]) == 1.5
    assert out["text_encoder"] is params["text_encoder"]
    bad = {"video_encoder": {"layer_0": {"linear1": {"kernel": jnp.zeros((5, 3))}}}}
    with pytest.raises(ConfigError, match="'video_encoder' do not match the stage-2 model"):
        kuda_stages.graft(params, [bad])
    with pytest.raises(ConfigError, match="'nope' that the stage-2 model lacks"):
        kuda_stages.graft(params, [{"nope": {}}])


def test_restore_params_last_and_best(tmp_path):
    import optax

    from mmfuse_jax.training.checkpoint import Checkpoints

    params = {"video_encoder": {"proj": {"kernel": jnp.arange(6.0).reshape(2, 3)}}}
    ckpt = Checkpoints(str(tmp_path))
    st = state_lib.create(params, optax.adamw(1e-3), 0)
    ckpt.save_best(st, {"epoch": 1})
    st = st.replace(step=st.step + 1, params=jax.tree_util.tree_map(lambda x: x * 2, params))
    ckpt.save_latest(st, {"epoch": 2})
    ckpt.close()
    last, best = kuda_stages.restore_params(str(tmp_path), "last"), kuda_stages.restore_params(str(tmp_path), "best")
    np.testing.assert_array_equal(last["video_encoder"]["proj"]["kernel"], 2 * np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(best["video_encoder"]["proj"]["kernel"], np.arange(6.0).reshape(2, 3))
    with pytest.raises(Exception, match="finished stage-1 run"):
        kuda_stages.restore_params(str(tmp_path / "missing"), "last")


@pytest.mark.slow
def test_both_stages_end_to_end(tmp_path):
    """Stage 1 (text, video, audio) then stage 2 through the shared loop on the synthetic MMSA data:
    stage 2 starts from the stage-1 weights (the frozen adapters and decoders still equal them after
    training, bit for bit) and trains everything else (those parameters moved). In 'paper' ratio mode,
    so evaluation also saves the per-sample ratios and the report draws them."""
    c = kuda_config("tiny")
    c.model.ratio_mode = "paper"
    c.dataset.root = str(tmp_path / "data")
    c.dataset.bert_path = str(tmp_path / "data" / "bert")
    work = str(tmp_path / "run")
    results = kuda_stages.train(c, work)
    assert list(results) == ["stage1_text", "stage1_video", "stage1_audio", "stage2"]
    assert all(not r["interrupted"] and r["compiles"] == 1 for r in results.values())
    stage2 = traverse_util.flatten_dict(kuda_stages.restore_params(os.path.join(work, "stage2"), "last"))
    for m in ("text", "video", "audio"):
        stage1 = traverse_util.flatten_dict(kuda_stages.restore_params(os.path.join(work, f"stage1_{m}"), "last"))
        frozen = [k for k in stage1 if k[0] == f"{m}_decoder" or k[1].startswith("adapter_")]
        assert frozen and all(np.array_equal(stage1[k], stage2[k]) for k in frozen), m
        moved = [k for k in stage1 if k not in frozen]
        assert sum(not np.array_equal(stage1[k], stage2[k]) for k in moved) > len(moved) // 2, m
    res = kuda_stages.evaluate(c, work)
    assert set(res) == {"dev", "test"} and set(res["test"]) == {"acc_2", "acc_3", "acc_5", "f1_2", "mae", "corr"}
    pred = np.load(os.path.join(work, "stage2", "predictions_test.npz"))
    assert pred["ratio"].shape == (len(pred["label"]), 3)
    np.testing.assert_allclose(pred["ratio"].sum(-1), 1.0, rtol=1e-5)
    with open(os.path.join(work, "stage2", "report.md")) as f:
        assert "(plots/ratios_test.png)" in f.read()
    assert os.path.getsize(os.path.join(work, "stage2", "plots", "ratios_test.png")) > 5000
