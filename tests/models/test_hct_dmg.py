"""`hct_dmg`: the switched primary equals the eager branch, the fixed-primary ablation, gate
gradients, parameter counts beside MulT, and learning end to end on a MulT pickle (with the gate plot)."""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mult_fixtures import feature_batch, load_config, write_mult

from mmfuse_jax import registry
from mmfuse_jax.models import hct_dmg
from mmfuse_jax.models._affect import count_parameters
from mmfuse_jax.training import init_pieces
from mmfuse_jax.training import step as step_lib
from mmfuse_jax.training.experiment import Experiment

SMALL = {"dim": 16, "num_layers": 1, "mem_layers": 1, "num_heads": 2, "embed_dropout": 0.0, "attn_dropout": 0.0,
         "relu_dropout": 0.0, "res_dropout": 0.0, "out_dropout": 0.0}
KEY = jax.random.key(0, impl="rbg")  # RngBitGenerator keys compile far faster than threefry on CPU
DIMS = {"text": 12, "audio": 5, "video": 6}


def small(preset="mosi", **overrides):
    c = load_config("hct_dmg", preset)
    c.model.update({**SMALL, **overrides})
    c.dataset.feat_dims = dict(DIMS)
    return registry.get("hct_dmg").build(c.model, {"num_classes": 4}), c


def with_gate(params, logits):
    return {**params, "gate_logits": jnp.asarray(logits, jnp.float32)}


@pytest.fixture(scope="module")
def model():
    m, c = small()
    batch = feature_batch(c.dataset)
    params = init_pieces.call(lambda: m.init(KEY, batch)["params"])
    return m, batch, params


def test_switched_primary_equals_the_eager_branch(model):
    m, batch, params = model
    switched = jax.jit(lambda p: m.apply({"params": p}, batch))
    # one branch, chosen in Python (a program per primary; op by op, each op would compile one of its own)
    branch = jax.jit(lambda p, primary: m.apply({"params": p}, batch, primary=primary), static_argnums=1)
    for primary in range(3):
        p = with_gate(params, np.eye(3)[primary] * 0.7 - 0.2)  # this modality has the largest weight
        got = switched(p)
        want = branch(p, primary)
        assert int(got["primary"]) == primary
        np.testing.assert_allclose(got["prediction"], want["prediction"], atol=1e-5)
        np.testing.assert_allclose(got["gate"], jax.nn.softmax(p["gate_logits"]), atol=1e-6)
    assert len({float(switched(with_gate(params, np.eye(3)[i]))["prediction"][0]) for i in range(3)}) == 3


def test_fixed_primary_ablation_ignores_the_gate_argmax(model):
    _, batch, params = model
    m, _ = small(dynamic_gating=False, primary="audio")
    p = with_gate(params, [2.0, 0.0, 0.0])  # the gate prefers text; the ablation keeps audio
    out, branch = jax.jit(lambda p: (m.apply({"params": p}, batch), m.apply({"params": p}, batch, primary=1)))(p)
    assert int(out["primary"]) == 1
    np.testing.assert_allclose(out["prediction"], branch["prediction"])
    with pytest.raises(ValueError, match="model.primary='smell'"):
        small(primary="smell")[0].init(KEY, batch)


def test_the_gate_gets_gradients_and_a_frozen_gate_specialises_the_programs_to_its_primary(model):
    """The gate learns through the switch. `Experiment.specialised`, as the loop builds the frozen_gate stage
    (and evaluation its programs): a frozen gate fixes the primary (each primary's branch equals the switched
    program: above); that program has no switch and gives the switched one's loss and gate gradient. (With
    dropout, its masks are its own: flax's lifted switch draws branch k's after branches 0..k-1's.)"""
    m, batch, params = model
    for logits, primary in (([0.1, 0.5, -0.3], "audio"), ([0.0, -0.3, 0.2], "video"), ([0.1, 0.0, -0.1], "text")):
        exp = Experiment(None, registry.get("hct_dmg"), m, None, None, (), jnp.float32)
        fixed = exp.specialised(with_gate(params, logits), hct_dmg.FROZEN_GATE).model
        assert (fixed.dynamic_gating, fixed.primary) == (False, primary)
        assert exp.specialised(with_gate(params, logits)).model == fixed  # evaluation: every param is fixed
        assert exp.specialised(params, ()) is exp and exp.specialised(params, (r"^proj",)) is exp  # it trains
    gate = jnp.asarray(logits)  # the text primary's
    loss, rest = registry.get("hct_dmg").make_loss(None), {k: v for k, v in params.items() if k != "gate_logits"}

    def value_and_grad(module):  # only the gate is differentiated: the backward pass stays small
        return jax.value_and_grad(
            lambda w: loss(module.apply({"params": {**rest, "gate_logits": w}}, batch, train=True), batch)[0])

    assert "cond[" not in str(jax.make_jaxpr(value_and_grad(fixed))(gate))
    (want, want_g), (got, got_g), aux = jax.jit(lambda w: (value_and_grad(m)(w), value_and_grad(fixed)(w),
                                                           loss(m.apply({"params": params}, batch), batch)[1]))(gate)
    assert np.all(np.abs(np.asarray(want_g)) > 0), want_g  # every modality's weight learns (and end to end)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-4, atol=1e-7)
    assert {"gate_text", "gate_audio", "gate_video", "l1", "correct"} <= set(aux)


def test_parameter_counts_beside_mult(capsys):
    """The paper reports HCT-DMG ~0.8M parameters smaller than MulT; measured at Table 5 settings."""
    rows = []
    for preset in ("mosei",):  # MOSI and IEMOCAP differ only in the input/output layers (README table)
        counts = {}
        for name in ("mult", "hct_dmg"):
            c = load_config(name, preset)
            module = registry.get(name).build(c.model, {"num_classes": 4})
            counts[name] = count_parameters(module, feature_batch(c.dataset))
        rows.append((preset, counts["mult"], counts["hct_dmg"]))
        assert 0.5e6 < counts["mult"] - counts["hct_dmg"] < 1.2e6, counts
    with capsys.disabled():
        print("\nparameters (d=40, 4 layers):  " + "; ".join(f"{p}: mult {a:,} hct_dmg {b:,} (-{a - b:,})"
                                                             for p, a, b in rows))


@pytest.mark.slow
def test_end_to_end_on_a_mult_pickle_with_the_gate_plot(tmp_path):
    from mmfuse_jax.analysis import gates
    from mmfuse_jax.training import loop
    from mmfuse_jax.training.logging import read_metrics

    root = str(tmp_path / "MulT")
    write_mult(root, name="mosi", sizes=(64, 16, 16))
    c = load_config("hct_dmg", "mosi")
    c.model.update({**SMALL, "text_embed_dim": DIMS["text"]})
    c.dataset.update({"root": root, "feat_dims": dict(DIMS), "max_len": {"text": 8, "audio": 10, "video": 9}})
    c.update({"batch_size": 16, "eval_batch_size": 16, "num_epochs": 3, "log_every": 2, "keep_checkpoints": 4})
    c.optimizer.lr = 3e-3
    workdir = str(tmp_path / "run")
    step_lib.memo_clear()  # nothing traced before: the run's own compiles are counted
    summary = loop.train_and_evaluate(c, workdir)
    assert summary["compiles"] == 1 and summary["epochs"] == 3
    records = read_metrics(workdir)
    train = [r["train_loss"] for r in records if "train_loss" in r]
    dev = [r for r in records if r.get("split") == "dev"]
    assert train[-1] < 0.6 * train[0], train
    assert set(dev[-1]) >= {"mae", "corr", "has0_acc_2", "non0_f1_2", "acc_7"}
    assert min(r["mae"] for r in dev) < 1.2  # labels span [-3, 3]; predicting 0 scores ~1.5
    history = gates.gate_history(workdir, registry.get("hct_dmg").output_labels["gate"])
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert all(abs(sum(h["gate"].values()) - 1) < 1e-5 and h["primary"] in ("text", "audio", "video")
               for h in history)
    assert history[-1]["gate"] != history[0]["gate"]  # the gate moved
    path = gates.plot_gates(history, str(tmp_path / "gates.png"), "hct_dmg on mosi")
    assert os.path.getsize(path) > 1000
    from mmfuse_jax import report

    with open(report.write_report(workdir)) as f:  # the run's report links the same plot
        assert "(plots/gates.png)" in f.read()
    assert os.path.getsize(os.path.join(workdir, "plots", "gates.png")) > 1000
