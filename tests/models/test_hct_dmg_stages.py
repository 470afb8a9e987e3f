"""`hct_dmg`'s recipe (`hct_dmg.stages`): gate freezing as two stages, the frozen regex on the real
param tree, and (slow) both stages end to end through train.py / eval.py, the gate bit for bit frozen.
Settings shared with MulT: memory depth and attention dropout by source modality."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
from conftest import REPO, synthetic_dataset
from flax import traverse_util
from mult_fixtures import feature_batch, load_config

from mmfuse_jax import registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models import hct_dmg
from mmfuse_jax.training import init_pieces
from mmfuse_jax.training import stages as stages_lib
from mmfuse_jax.training.checkpoint import read_checkpoint

SMALL = {"dim": 12, "num_layers": 2, "mem_layers": 1, "num_heads": 2, "embed_dropout": 0.0, "attn_dropout": 0.0,
         "attn_dropout_audio": 0.0, "attn_dropout_video": 0.0, "relu_dropout": 0.0, "res_dropout": 0.0,
         "out_dropout": 0.0}
KEY = jax.random.key(0, impl="rbg")
DIMS = {"text": 10, "audio": 5, "video": 6}


def small(**overrides):
    c = load_config("hct_dmg", "mosi")
    c.model.update({**SMALL, **overrides})
    c.dataset.feat_dims = dict(DIMS)
    return hct_dmg.build(c.model, {"num_classes": 1}), feature_batch(c.dataset)


@pytest.fixture(scope="module")
def model():
    m, batch = small()
    return m, batch, init_pieces.call(lambda: m.init(KEY, batch)["params"])


def _flat(params) -> dict[str, np.ndarray]:
    return {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(params).items()}


def test_output_shapes_and_memory_depth(model):
    m, batch, params = model
    out = jax.jit(lambda p: m.apply({"params": p}, batch))(params)
    chex.assert_shape(out["prediction"], (3,))
    chex.assert_shape(out["gate"], (3,))
    chex.assert_shape(out["primary"], ())
    chex.assert_tree_all_finite(out)
    layers = {k.split("/")[2] for k in _flat(params) if k.startswith("self_attention/transformer/layer_")}
    assert layers == {"layer_0", "layer_1"}  # max(num_layers=2, mem_layers=1), as MulT's memory


def test_attention_dropout_follows_the_source_modality(model):
    """Audio's rate only where audio is a source: unused when audio is the primary (it is only a target)."""
    _, batch, params = model
    m, _ = small(attn_dropout_audio=0.5)
    run = jax.jit(lambda key, primary: m.apply({"params": params}, batch, train=True, primary=primary,
                                               rngs={"dropout": key})["prediction"], static_argnums=1)
    keys = jax.random.split(KEY, 2)
    np.testing.assert_array_equal(run(keys[0], 1), run(keys[1], 1))  # primary audio: no audio source
    assert not np.allclose(run(keys[0], 0), run(keys[1], 0))          # primary text: audio is a source


def test_recipe_freezes_exactly_the_gate(model):
    _, _, params = model
    c = load_config("hct_dmg", "tiny")
    assert c.gate_freeze.enabled and c.gate_freeze.criterion == "early_stop"  # as the paper: on
    planned = stages_lib.plan(c, "/w")
    assert [(p.stage.name, p.run_dir, p.stage.warm_start, p.stage.select) for p in planned] == [
        ("learn_gate", "/w/learn_gate", (), "best"), ("frozen_gate", "/w/frozen_gate", ("learn_gate",), "best")]
    assert planned[0].stage.frozen == ()
    learn, frozen = planned[0].config, planned[1].config
    assert (learn.num_epochs, learn.patience) == (c.num_epochs, c.patience)  # until its own early stop
    assert frozen.num_epochs == c.num_epochs  # gate_freeze.epochs=0: the run's epochs
    regex = re.compile("|".join(planned[1].stage.frozen))  # searched in '/'-joined paths (state.make_optimizer)
    assert [k for k in _flat(params) if regex.search(k)] == ["gate_logits"]
    assert "gate_logits" in _flat(params) and len(_flat(params)) > 50


def test_recipe_options():
    c = load_config("hct_dmg", "tiny")
    c.gate_freeze.update({"criterion": "epoch", "epoch": 3, "epochs": 4, "select": "last"})
    (s1, p1), (s2, p2) = ((p.stage, p.config) for p in stages_lib.plan(c, "/w"))
    assert (p1.num_epochs, p1.patience, s1.select) == (3, 3, "last")  # exactly 3 epochs, no early stop
    assert (p2.num_epochs, p2.patience) == (4, c.patience)
    assert c.num_epochs == 12  # the recipe edits copies
    c.gate_freeze.enabled = False
    [only] = stages_lib.plan(c, "/w")
    assert (only.stage, only.run_dir, only.config.num_epochs) == (registry.Stage(), "/w", 12)
    del c["gate_freeze"]  # a config written before the recipe: continuous gate, one stage
    assert [p.run_dir for p in stages_lib.plan(c, "/w")] == ["/w"]
    for field, value, msg in (("criterion", "loss", "criterion='loss'"), ("select", "first", "select='first'"),
                              ("epoch", 0, "epoch=0")):
        c = load_config("hct_dmg", "tiny")
        c.gate_freeze.update({"criterion": "epoch", "epoch": 2, field: value})
        with pytest.raises(ConfigError, match=msg):
            stages_lib.plan(c, "/w")


def _cli(script, *args):
    return subprocess.run([sys.executable, script, *args], cwd=REPO, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_frozen_gate_end_to_end_through_the_cli(tmp_path):
    """train.py runs learn_gate then frozen_gate (1 epoch each, tiny); frozen_gate's final gate equals
    learn_gate's best checkpoint bit for bit while the other parameters moved, and its programs have the
    gate's primary fixed; eval.py reads stage 2."""
    work, bench = str(tmp_path / "run"), str(tmp_path / "bench")
    flags = [f"--config={REPO}/configs/hct_dmg.py:tiny", f"--workdir={work}", f"--config.dataset.root={bench}",
             f"--config.dataset.bert_path={bench}/bert"]
    flags += ["--config.num_epochs=1", "--config.gate_freeze.epochs=1", "--config.dataset.num_buckets=1"]
    ds = load_config("hct_dmg", "tiny").dataset
    ds.root = bench
    synthetic_dataset(ds)  # the session's copy of the preset's benchmark (train.py finds it complete)
    r = _cli("train.py", *flags)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    learned = _flat(read_checkpoint(os.path.join(work, "learn_gate"), "best")[0])
    final, meta = read_checkpoint(os.path.join(work, "frozen_gate"), "last")
    final = _flat(final)
    assert meta["epoch"] == 1 and meta["done"] is False
    assert np.any(learned["gate_logits"] != 0)  # the gate learned in stage 1 (it starts at zero)
    np.testing.assert_array_equal(final["gate_logits"], learned["gate_logits"])
    # stage 2's programs fixed the frozen gate's primary (`hct_dmg.specialise`): one branch, no switch
    primary = hct_dmg.MODALITIES[int(np.argmax(learned["gate_logits"]))]
    assert r.stdout.count(f"model.dynamic_gating=False, model.primary={primary!r}") == 1, r.stdout[-3000:]
    others = [k for k in learned if k != "gate_logits"]
    assert sum(not np.array_equal(learned[k], final[k]) for k in others) > 0.9 * len(others)
    r = _cli("eval.py", *flags)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    with open(os.path.join(work, "frozen_gate", "eval_test.json")) as f:
        assert "acc" in json.load(f)["metrics"]
    assert not os.path.exists(os.path.join(work, "eval_test.json"))


@pytest.mark.parametrize("preset", ["mosi", "mosei", "iemocap", "urfunny", "mustard", "demo"])
def test_settings_equal_to_mult(preset):
    """The shared fields of both models, the optimizer, batch and epochs are the same in every preset;
    both read the memory depth as max(num_layers, mem_layers) and attention dropout by source modality."""
    mult, hct = load_config("mult", preset), load_config("hct_dmg", preset)
    shared = ("dim", "num_heads", "num_layers", "mem_layers", "conv_kernel", "attn_dropout", "attn_dropout_audio",
              "attn_dropout_video", "relu_dropout", "res_dropout", "embed_dropout", "out_dropout", "use_future_mask")
    assert {f: hct.model[f] for f in shared} == {f: mult.model[f] for f in shared}
    assert hct.optimizer.to_dict() == mult.optimizer.to_dict()
    assert [(c.batch_size, c.num_epochs, c.patience, c.early_stop_metric) for c in (hct, mult)] == [
        (mult.batch_size, mult.num_epochs, mult.patience, mult.early_stop_metric)] * 2
