"""MAG-BERT: the gate against its formula in float64 numpy, the CTC alignment against a numpy LSTM
(torch.nn.LSTM's equations), masks and text buckets, the BERT adapter hook, learning."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.test_models import BERT, C, Jitted, make_batch, model_config

from mmfuse_jax import registry
from mmfuse_jax.encoders.bert import BertModel
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.layers.align import CTCAlign
from mmfuse_jax.models.mag_bert import MultimodalAdaptationGate, mean_align
from mmfuse_jax.training import step as step_lib

T, H, DA, DV = 7, 12, 9, 6  # tokens, hidden, audio and video features (odd, distinct)


def module(**overrides) -> Jitted:
    cfg = model_config("mag_bert")
    for k, v in overrides.items():
        cfg[k] = v
    return Jitted(registry.get("mag_bert").build(cfg, {"num_classes": C, "bert": BERT}))


def build(**overrides):
    m = module(**overrides)
    return m, m.init(jax.random.key(0), make_batch(), train=False)["params"]


@pytest.fixture(scope="module")
def default():
    return build()


def test_shapes_and_parameters(default):
    m, p = default
    out = m.apply({"params": p}, make_batch())
    chex.assert_shape(out["logits"], (3, C))
    chex.assert_shape(out["embedding"], (3, BERT.hidden_size))
    assert set(p) == {"align_audio", "align_video", "mag", "bert", "classifier"}
    assert p["mag"]["gate_video"]["kernel"].shape == (6 + H, H)  # W_hv on [v; h]
    assert p["mag"]["project_audio"]["kernel"].shape == (9, H)   # W_a
    # The CTC LSTM predicts text_len + 1 positions (the tiny preset's max text length 16, + blank).
    assert p["align_audio"]["lstm_1"]["hi"]["kernel"].shape == (17, 17)
    # The BERT body keeps the plain BertModel tree, so pretrained weights load into params['bert'].
    plain = jax.eval_shape(BertModel(BERT).init, jax.random.key(0), jnp.zeros((1, 2), jnp.int32),
                           jnp.ones((1, 2), jnp.int32))["params"]
    assert jax.tree.map(jnp.shape, p["bert"]) == jax.tree.map(lambda x: x.shape, plain)


# ------------------------------------------------------------------------------ the gate, by formula

def gate_reference(p, h, a, v, beta, eps=1e-6):
    """thuiar MAG.forward (no alignment) in float64."""
    p = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
    dense = lambda n, x: x @ p[n]["kernel"] + p[n]["bias"]
    g_v = np.maximum(dense("gate_video", np.concatenate([v, h], -1)), 0)
    g_a = np.maximum(dense("gate_audio", np.concatenate([a, h], -1)), 0)
    shift = g_v * dense("project_video", v) + g_a * dense("project_audio", a)
    norm_h, norm_s = np.linalg.norm(h, axis=-1), np.linalg.norm(shift, axis=-1)
    alpha = np.minimum(norm_h / (np.where(norm_s == 0, 1.0, norm_s) + eps) * beta, 1.0)
    x = h + alpha[..., None] * shift
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return x * p["LayerNorm"]["scale"] + p["LayerNorm"]["bias"], alpha


def gate_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((2, T, H)), rng.standard_normal((2, T, DA)), rng.standard_normal((2, T, DV)))


def gate_params(gate, seed=0, project_scale=1.0):
    h, a, v = (jnp.asarray(x, jnp.float32) for x in gate_inputs())
    p = gate.init(jax.random.key(0), h, a, v)["params"]
    keys = iter(jax.random.split(jax.random.key(seed), 20))
    p = jax.tree.map(lambda x: 0.5 * jax.random.normal(next(keys), x.shape), p)  # nonzero biases too
    for name in ("project_audio", "project_video"):
        p[name] = jax.tree.map(lambda x: x * project_scale, p[name])
    return p


@pytest.mark.parametrize("project_scale,clipped", [(1e-3, True), (30.0, False)])
def test_gate_matches_the_formula(project_scale, clipped):
    gate = MultimodalAdaptationGate(beta_shift=0.5, dropout=0.5)
    p = gate_params(gate, project_scale=project_scale)
    h, a, v = gate_inputs()
    out, state = gate.apply({"params": p}, *(jnp.asarray(x, jnp.float32) for x in (h, a, v)),
                            mutable=["intermediates"])
    ref, alpha = gate_reference(p, h, a, v, beta=0.5)
    # A small shift is let through whole (α = 1); a large one is scaled to β·‖h‖ (α < 1).
    assert np.all(alpha == 1.0) if clipped else np.all(alpha < 1.0)
    np.testing.assert_allclose(state["intermediates"]["alpha"][0], alpha, rtol=1e-5)
    np.testing.assert_allclose(out, ref, atol=1e-5)


def test_zero_streams_leave_layernorm_of_h():
    """a = v = 0: H = g_v·b_v + g_a·b_a, so with zero projection biases (as initialised) m = LN(h)."""
    gate = MultimodalAdaptationGate(beta_shift=0.5)
    p = gate_params(gate)
    h, a, v = gate_inputs()
    zeros = (jnp.asarray(h, jnp.float32), jnp.zeros((2, T, DA)), jnp.zeros((2, T, DV)))
    p0 = dict(p, **{n: dict(p[n], bias=jnp.zeros(H)) for n in ("project_audio", "project_video")})
    ln, _ = gate_reference(p0, h, 0 * a, 0 * v, beta=0.5)
    x = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ln, x * np.asarray(p["LayerNorm"]["scale"]) + np.asarray(p["LayerNorm"]["bias"]),
                               atol=1e-12)
    np.testing.assert_allclose(gate.apply({"params": p0}, *zeros), ln, atol=1e-5)
    assert not np.allclose(gate.apply({"params": p}, *zeros), ln, atol=1e-3)  # the biases do shift h
    # H = 0 exactly: the ‖H‖ = 0 guard keeps the gradient finite.
    grads = jax.grad(lambda q: gate.apply({"params": q}, *zeros).sum())(p0)
    chex.assert_tree_all_finite(grads)


# ------------------------------------------------------------------------------------ alignment

def lstm_reference(cell, x):
    """torch.nn.LSTM's equations (biases merged) on Flax OptimizedLSTMCell parameters, float64."""
    w = jax.tree.map(lambda y: np.asarray(y, np.float64), cell)
    sig = lambda y: 1 / (1 + np.exp(-y))
    h = c = np.zeros((x.shape[0], w["hi"]["kernel"].shape[0]))
    out = []
    for t in range(x.shape[1]):
        z = {g: x[:, t] @ w[f"i{g}"]["kernel"] + h @ w[f"h{g}"]["kernel"] + w[f"h{g}"]["bias"] for g in "ifgo"}
        c = sig(z["f"]) * c + sig(z["i"]) * np.tanh(z["g"])
        h = sig(z["o"]) * np.tanh(c)
        out.append(h)
    return np.stack(out, 1)


def test_ctc_alignment_is_thuiars_formula_on_zero_padded_frames():
    rng = np.random.default_rng(1)
    n = np.array([11, 4, 0])  # real frames per example; the last has none
    mask = (np.arange(11)[None] < n[:, None]).astype(np.int32)
    x = rng.standard_normal((3, 11, DA)) * mask[..., None]  # thuiar pads with zeros at the end
    align = CTCAlign(out_len=5)
    p = align.init(jax.random.key(0), jnp.zeros((3, 11, DA)), jnp.asarray(mask))["params"]
    logits = lstm_reference(p["lstm_1"], lstm_reference(p["lstm_0"], x))
    prob = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ref = np.einsum("bsl,bsd->bld", prob[..., 1:], x)  # AlignSubNet CTC: bmm(p[..., 1:]^T, x)
    got = align.apply({"params": p}, jnp.asarray(x, jnp.float32), jnp.asarray(mask))
    chex.assert_shape(got, (3, 5, DA))
    np.testing.assert_allclose(got, ref, atol=1e-5)
    np.testing.assert_array_equal(got[2], 0)


def test_mean_alignment_by_hand():
    x = jnp.arange(7, dtype=jnp.float32)[None, :, None].repeat(3, 0)  # frame i holds i
    mask = (np.arange(7)[None] < np.array([[5], [2], [0]])).astype(np.int32)
    got = mean_align(x, jnp.asarray(mask), 3)[..., 0]
    # n = 5: windows [0, 2), [1, 4), [3, 5); n = 2: [0, 1), [0, 2), [1, 2); n = 0: zeros.
    np.testing.assert_allclose(got, [[0.5, 2.0, 3.5], [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]])


def test_padded_frames_and_text_buckets_do_not_matter(default):
    m, p = default
    b = make_batch()
    ref = m.apply({"params": p}, b)["logits"]
    # Garbage in the padded frames, and a longer audio/video bucket of padding.
    noisy = dict(b, audio=jnp.where(b["audio_mask"][..., None] > 0, b["audio"], 1e3),
                 video=jnp.where(b["video_mask"][..., None] > 0, b["video"], -1e3))
    padded = {k: jnp.pad(v, ((0, 0), (0, 4)) + ((0, 0),) * (v.ndim - 2))
              if k in ("audio", "audio_mask", "video", "video_mask") else v for k, v in noisy.items()}
    np.testing.assert_allclose(m.apply({"params": p}, padded)["logits"], ref, atol=1e-5)
    # A longer text bucket (more padding tokens) keeps the aligned streams of the real tokens.
    longer = {k: jnp.pad(v, ((0, 0), (0, 3))) if k.startswith("text") else v for k, v in b.items()}
    np.testing.assert_allclose(m.apply({"params": p}, longer)["logits"], ref, atol=1e-5)
    # ... and the streams are used.
    assert not np.allclose(m.apply({"params": p}, dict(b, audio=b["audio"] * 2 + 1))["logits"], ref, atol=1e-6)


def test_text_longer_than_text_len_is_a_config_error(default):
    m, p = default
    b = make_batch()
    long = {k: jnp.pad(v, ((0, 0), (0, 10))) if k.startswith("text") else v for k, v in b.items()}
    with pytest.raises(ConfigError, match="text_len=16 is shorter than this batch's text length 17"):
        m.module.apply({"params": p}, long)


# --------------------------------------------------------------------------- injection and the hook

def test_bert_adapter_replaces_the_hidden_states_after_its_layer():
    bert, n = BertModel(BERT), BERT.num_hidden_layers
    b = make_batch()
    args = (b["text_ids"], b["text_mask"], b["text_type_ids"])
    params = bert.init(jax.random.key(0), *args)

    @jax.jit
    def run(params):  # one compilation: no adapter, an identity one, a constant one after each layer k
        hidden = lambda **kw: bert.apply(params, *args, return_all=True, **kw)["hidden_states"]
        return (hidden(), hidden(adapter=lambda h: h, adapter_index=1),
                [hidden(adapter=lambda h: h * 0 + 1.5, adapter_index=k) for k in range(n + 1)])

    plain, same, const = run(params)
    chex.assert_trees_all_close(same, plain)
    for k in range(n + 1):
        for i in range(k):
            np.testing.assert_array_equal(const[k][i], plain[i])
        np.testing.assert_array_equal(const[k][k], 1.5)
    with pytest.raises(ValueError, match="adapter_index=3: expected 0..2"):
        jax.eval_shape(lambda: bert.apply(params, *args, adapter=lambda h: h, adapter_index=3))


def test_injection_index_mean_alignment_and_bad_settings(default):
    # The gate after the last layer, on parameter-free mean alignment (masks: test_mean_alignment_by_hand).
    m = module(injection_index=BERT.num_hidden_layers, alignment="mean")
    p = {k: v for k, v in default[1].items() if not k.startswith("align")}  # the same tree, no CTC LSTMs
    assert jax.tree.map(jnp.shape, p) == jax.tree.map(lambda x: x.shape, jax.eval_shape(
        m.module.init, jax.random.key(0), make_batch())["params"])
    b = make_batch()
    assert not np.allclose(m.apply({"params": p}, b)["logits"],
                           m.apply({"params": p}, dict(b, video=b["video"] + 1))["logits"], atol=1e-6)
    with pytest.raises(ConfigError, match="injection_index=3: expected 0..2"):
        module(injection_index=3)
    with pytest.raises(ConfigError, match="alignment='conv1d'"):
        module(alignment="conv1d")


def test_presets_follow_the_official_configs():
    import importlib.util
    import os

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("cfg_mag_bert", os.path.join(REPO, "configs", "mag_bert.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c1, c2 = mod.get_config("mintrec"), mod.get_config("mintrec2")
    assert (c1.model.beta_shift, c1.model.mag_dropout, c1.model.alignment, c1.model.injection_index) == \
        (0.005, 0.5, "ctc", 0)
    assert (c1.optimizer.lr, c1.optimizer.weight_decay, c1.model.text_len, c1.early_stop_metric) == \
        (2e-5, 0.03, 30, "f1")
    assert (c2.optimizer.lr, c2.num_epochs, c2.model.text_len, c2.early_stop_metric) == (5e-6, 40, 50, "acc")
    c1.dataset.max_len.text = 40  # text_len follows the dataset's maximum
    assert c1.model.text_len == 40


@pytest.mark.slow
def test_learns_on_the_tiny_synthetic_benchmark(tiny_synthetic, tmp_path):
    """The `tiny` preset (24 epochs) on the 96-example session benchmark: the loss falls and test
    accuracy beats chance (1/20). The 320-example tiny benchmark reaches 1.00 (configs/mag_bert.py)."""
    from conftest import tiny_config

    from mmfuse_jax.training import loop
    from mmfuse_jax.training.logging import read_metrics

    # one bucket: one compile; one device: 72 steps of a tiny model run faster unsplit (19.7 -> 14.7 s)
    config = tiny_config("mag_bert", tiny_synthetic, patience=24, **{"dataset.num_buckets": 1, "mesh.devices": 1})
    step_lib.memo_clear()  # nothing traced before: the run's own compiles are counted
    summary, workdir = loop.train_and_evaluate(config, str(tmp_path)), str(tmp_path)
    assert summary["compiles"] == 1 and summary["epochs"] == 24
    train = [r["train_loss"] for r in read_metrics(workdir) if "train_loss" in r]
    assert train[-1] < 0.8 * train[0], train
    acc = loop.evaluate(config, workdir).results["test"]["acc"]
    assert acc >= 0.2, acc
