"""KuDA: shapes per stage and preset, the ratio modes, NCE and ratio formulas, clones, learning.

Compiles are the cost on CPU (~1 s per layer or dropout site), so one jitted function per mode is
shared by several tests (module-scoped fixtures).
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_models import model_config  # noqa: E402  (tests/models is on sys.path under pytest)

from mmfuse_jax.encoders.bert import BertConfig
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models import kuda
from mmfuse_jax.models.kuda_layers import cpc_nce, sentiment_ratio
from mmfuse_jax.training import init_pieces

B, LT, LA, LV, DA, DV = 3, 7, 11, 5, 9, 6
BERT = BertConfig(vocab_size=31, hidden_size=12, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=20, max_position_embeddings=16, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0)


def make_batch(seed=0, *, label=(0.6, -0.4, 0.2)):
    rng = np.random.default_rng(seed)
    mask = (np.arange(LT)[None] < np.array([7, 4, 2])[:, None]).astype(np.int32)
    b = {"text_ids": (rng.integers(5, 31, (B, LT)) * mask).astype(np.int32), "text_mask": mask,
         "text_type_ids": np.zeros((B, LT), np.int32),
         "audio": rng.standard_normal((B, LA, DA)).astype(np.float32),
         "audio_mask": (np.arange(LA)[None] < np.array([[11], [6], [1]])).astype(np.int32),
         "video": rng.standard_normal((B, LV, DV)).astype(np.float32),
         "video_mask": (np.arange(LV)[None] < np.array([[5], [2], [3]])).astype(np.int32),
         "label": np.asarray(label, np.float32), "valid": np.array([1, 1, 1], np.float32),
         "label_text": np.array([0.4, -0.2, 0.0], np.float32), "label_audio": np.zeros(B, np.float32),
         "label_video": np.array([-1.0, 0.2, 0.8], np.float32)}
    return {k: jnp.asarray(v) for k, v in b.items()}


def build(**overrides):
    cfg = model_config("kuda")
    cfg.update(overrides)
    return kuda.build(cfg, {"bert": BERT})


@pytest.fixture(scope="module")
def official():
    m = build()
    params = init_pieces.call(lambda k: m.init(k, make_batch(), train=False), jax.random.key(0))["params"]
    evaluate = jax.jit(lambda p, b: m.apply({"params": p}, b, train=False))

    def objective(p, b, rng):
        out = m.apply({"params": p}, b, train=True, rngs={"dropout": rng})
        return kuda.loss_fn(out, b)[0], out
    step = jax.jit(jax.value_and_grad(objective, has_aux=True))
    return m, params, evaluate, step


def test_stage2_shapes(official):
    m, params, evaluate, step = official
    out = evaluate(params, make_batch())
    chex.assert_shape(out["prediction"], (B,))
    chex.assert_shape(out["unimodal_prediction"], (B, 3))
    chex.assert_shape(out["embedding"], (B, m.hidden))
    chex.assert_shape(out["nce_b"], (B,))
    assert "ratio" not in out  # the official evaluation path has no ratio
    chex.assert_tree_all_finite(out)
    (_, train_out), _ = step(params, make_batch(), jax.random.key(1))
    chex.assert_shape(train_out["ratio"], (B, 3))


@pytest.mark.parametrize("preset", ["sims", "simsv2", "mosi", "mosei", "bench"])
def test_shapes_of_both_stages_on_every_preset(preset):
    """Full-size models (BERT-base, 256-wide fusion) traced with jax.eval_shape: nothing is computed."""
    import importlib.util
    import os

    from conftest import REPO

    spec = importlib.util.spec_from_file_location("kuda_cfg", os.path.join(REPO, "configs", "kuda.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config(preset)
    bert = BertConfig(hidden_size=384, num_hidden_layers=6, intermediate_size=1536) if preset == "bench" \
        else BertConfig(vocab_size=21128 if preset.startswith("sims") else 30522)
    lt, la, lv = c.dataset.max_len.text, c.dataset.max_len.audio, c.dataset.max_len.video
    b = {"text_ids": jnp.zeros((2, lt), jnp.int32), "text_mask": jnp.ones((2, lt), jnp.int32),
         "text_type_ids": jnp.zeros((2, lt), jnp.int32),
         "audio": jnp.zeros((2, la, c.dataset.feat_dims.audio)), "audio_mask": jnp.ones((2, la), jnp.int32),
         "video": jnp.zeros((2, lv, c.dataset.feat_dims.video)), "video_mask": jnp.ones((2, lv), jnp.int32),
         "label": jnp.zeros(2), "valid": jnp.ones(2), "label_text": jnp.zeros(2)}
    m2 = kuda.build(c.model, {"bert": bert})
    shapes = jax.eval_shape(lambda: m2.init_with_output(jax.random.key(0), b)[0])  # one trace, not compiled
    assert shapes["prediction"].shape == (2,) and shapes["embedding"].shape == (2, 256)
    c.model.update({"stage": 1, "modality": "text"})
    m1 = kuda.build(c.model, {"bert": bert})
    def init_and_apply():
        out, variables = m1.init_with_output(jax.random.key(0), b)
        return variables["params"], out

    p1, out1 = jax.eval_shape(init_and_apply)
    assert out1["prediction"].shape == (2,) and out1["embedding"].shape == (2, 2 * bert.hidden_size)
    assert sorted(p1) == ["bert", "text_decoder", "text_encoder"]
    assert len([k for k in p1["text_encoder"] if k.startswith("adapter_")]) == 4  # taps 3/6/9/11 (or scaled)


@pytest.fixture(scope="module")
def video_stage1():
    """Stage 1 for video, with and without identical clones (a small model: cheap to compile)."""
    out = {}
    for clone in (True, False):
        m = build(stage=1, modality="video", clone_init=clone, encoder_layers=3, adapter_layers=2)
        init = lambda k, m=m: m.init(k, make_batch(), train=False)
        out[clone] = m, init_pieces.call(init, jax.random.key(0))["params"]
    return out


def test_stage1_outputs_and_param_subset(video_stage1, official):
    m, params = video_stage1[True]
    out = jax.jit(lambda p, b: m.apply({"params": p}, b))(params, make_batch())
    chex.assert_shape(out["prediction"], (B,))
    np.testing.assert_array_equal(out["target"], make_batch()["label_video"])  # its unimodal label
    assert sorted(params) == ["video_decoder", "video_encoder"]
    stage2 = official[1]
    assert set(params) <= set(stage2)
    m_multi = m.clone(target="multimodal")  # MOSI/MOSEI: pretrain on the multimodal label
    out = jax.jit(lambda p, b: m_multi.apply({"params": p}, b))(params, make_batch())
    np.testing.assert_array_equal(out["target"], make_batch()["label"])


def test_identical_clone_switch(video_stage1):
    def same(a, b):
        return all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

    tied, raw = video_stage1[True][1]["video_encoder"], video_stage1[False][1]["video_encoder"]
    assert same(tied["layer_0"], tied["layer_1"]) and same(tied["layer_0"], tied["layer_2"])
    assert same(tied["adapter_0"], tied["adapter_1"])
    assert same(tied["adapter_0"]["layer_0"], tied["adapter_0"]["layer_1"])
    assert not same(raw["layer_0"], raw["layer_1"]) and not same(raw["adapter_0"], raw["adapter_1"])
    # the switch only copies: the first clone and everything else are the same draw
    assert same(raw["layer_0"], tied["layer_0"]) and same(raw["proj"], tied["proj"])
    assert same(kuda.tie_clones(video_stage1[False][1]), video_stage1[True][1])


def test_tie_clones_copies_numbered_blocks_but_never_bert():
    tree = {"block_0": {"w": jnp.ones(2)}, "block_1": {"w": jnp.zeros(2)}, "head": {"linear_0": jnp.zeros(1),
                                                                            "linear_1": jnp.ones(1)},
            "bert": {"encoder": {"layer_0": jnp.ones(2), "layer_1": jnp.zeros(2)}},
            "text_encoder": {"adapter_0": {"layer_0": jnp.ones(1), "layer_1": jnp.zeros(1)},
                             "adapter_1": {"layer_0": jnp.full(1, 5.0), "layer_1": jnp.zeros(1)}}}
    tied = kuda.tie_clones(tree)
    assert float(tied["block_1"]["w"][0]) == 1.0 and float(tied["head"]["linear_1"][0]) == 1.0  # MLP layers: no
    assert float(tied["bert"]["encoder"]["layer_1"][0]) == 0.0  # pretrained BERT layers stay as loaded
    assert all(float(tied["text_encoder"][a][layer][0]) == 1.0 for a in ("adapter_0", "adapter_1")
               for layer in ("layer_0", "layer_1"))


def test_official_ratio_is_a_numerical_no_op(official):
    """The released ratio scales c_m by (1 + r_m) right before LN_m: shifting the label it is computed
    from by +3 (which changes every r_m) leaves the prediction unchanged."""
    _, params, _, step = official
    rng = jax.random.key(3)
    (_, a), _ = step(params, make_batch(), rng)
    (_, b), _ = step(params, make_batch(label=(3.6, 2.6, 3.2)), rng)
    assert float(jnp.abs(a["ratio"] - b["ratio"]).max()) > 1e-3  # the ratios did change
    assert float(jnp.abs(a["prediction"] - b["prediction"]).max()) < 1e-5


def _shift_video_decoder(params, by=2.0):
    """``params`` with u_video moved by ``by`` (the video decoder's output bias)."""
    dec = params["video_decoder"]
    return {**params, "video_decoder": {**dec, "linear_3": {**dec["linear_3"], "bias": dec["linear_3"]["bias"] + by}}}


def test_paper_ratio_changes_predictions(official):
    _, params, evaluate, _ = official
    paper = build(ratio_mode="paper")  # same parameters as the official mode
    run = jax.jit(lambda p, b: paper.apply({"params": p}, b, train=False))
    moved = _shift_video_decoder(params)
    a, b = run(params, make_batch()), run(moved, make_batch())
    chex.assert_shape(a["ratio"], (B, 3))
    np.testing.assert_allclose(a["ratio"].sum(-1), 1.0, rtol=1e-6)
    # u_video moved by 2: its weight changes, and so does the prediction (label-free, at evaluation)
    assert float(jnp.abs(a["ratio"][:, 1] - b["ratio"][:, 1]).min()) > 1e-3
    assert float(jnp.abs(a["prediction"] - b["prediction"]).min()) > 1e-6
    # the official evaluation path does not read the decoders at all
    np.testing.assert_array_equal(evaluate(params, make_batch())["prediction"],
                                  evaluate(moved, make_batch())["prediction"])


def _train_forward(model):
    return jax.jit(lambda p, b: model.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(3)}))


def test_attention_ratio_at_k0_is_the_official_training_forward(official):
    """'attention' touches the fusion only through the modality weights M r_m: with k = 0 they are all 1
    and the training forward is the official one; with k > 0 the label-based ratios change it."""
    _, params, _, _ = official
    reference = _train_forward(build(ratio_k=0.0))(params, make_batch())
    uniform = _train_forward(build(ratio_mode="attention", ratio_k=0.0))(params, make_batch())
    np.testing.assert_allclose(uniform["ratio"], 1.0 / 3, rtol=1e-6)
    np.testing.assert_allclose(uniform["prediction"], reference["prediction"], atol=1e-5)
    np.testing.assert_allclose(uniform["embedding"], reference["embedding"], atol=1e-5)
    weighted = _train_forward(build(ratio_mode="attention", ratio_k=5.0))(params, make_batch())
    np.testing.assert_allclose(weighted["ratio"], sentiment_ratio(weighted["unimodal_prediction"],
                                                                  make_batch()["label"], 5.0), rtol=1e-6)
    assert float(jnp.abs(weighted["prediction"] - reference["prediction"]).max()) > 1e-4


@pytest.fixture(scope="module")
def attention_eval():
    runs = {}
    for how in ("dynamic", "fixed"):
        m = build(ratio_mode="attention", ratio_k=5.0, ratio_inference=how)
        runs[how] = jax.jit(lambda p, b, m=m: m.apply({"params": p}, b, train=False))
    return runs


def test_attention_ratio_at_inference_comes_from_the_unimodal_predictions(official, attention_eval):
    _, params, _, _ = official
    a = attention_eval["dynamic"](params, make_batch())
    chex.assert_shape([a["ratio"], a["unimodal_prediction"]], (B, 3))
    chex.assert_shape(a["prediction"], (B,))
    chex.assert_tree_all_finite(a)
    u = a["unimodal_prediction"]  # no label at test time: the reference is the unimodal mean
    np.testing.assert_allclose(a["ratio"], sentiment_ratio(u, u.mean(-1), 5.0), rtol=1e-6)
    b = attention_eval["dynamic"](params, make_batch(label=(3.0, 3.0, 3.0)))
    np.testing.assert_array_equal(a["prediction"], b["prediction"])  # the label is not read
    moved = attention_eval["dynamic"](_shift_video_decoder(params), make_batch())
    assert float(jnp.abs(a["ratio"][:, 1] - moved["ratio"][:, 1]).min()) > 1e-3
    assert float(jnp.abs(a["prediction"] - moved["prediction"]).min()) > 1e-6


def test_fixed_attention_ratio_ignores_the_unimodal_predictions(official, attention_eval):
    _, params, _, _ = official
    a = attention_eval["fixed"](params, make_batch())
    b = attention_eval["fixed"](_shift_video_decoder(params), make_batch())
    np.testing.assert_allclose(a["ratio"], 1.0 / 3, rtol=1e-6)
    assert float(jnp.abs(a["unimodal_prediction"] - b["unimodal_prediction"]).max()) > 1.0  # they did move
    np.testing.assert_array_equal(a["prediction"], b["prediction"])
    with pytest.raises(ConfigError, match="ratio_inference='sometimes'"):
        build(ratio_mode="attention", ratio_inference="sometimes").init(jax.random.key(0), make_batch())


def test_sentiment_ratio_by_hand():
    u = jnp.array([[0.5, -0.5, 0.0]])
    r = sentiment_ratio(u, jnp.array([0.5]), k=0.1)
    s = np.exp(-0.1 * np.array([0.0, 1.0, 0.25]))
    np.testing.assert_allclose(r[0], s / s.sum(), rtol=1e-6)


def test_nce_against_the_official_formula():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 5, 6)), rng.standard_normal((4, 5, 6))
    valid = np.array([1, 1, 1, 0], np.float32)

    def reference(x, y):  # CPC.forward in float64 numpy, on the valid rows only (a shorter batch)
        x, xp = x.mean(-2), y.mean(-2)
        xp, x = xp / np.linalg.norm(xp, axis=1, keepdims=True), x / np.linalg.norm(x, axis=1, keepdims=True)
        pos = (x * xp).sum(-1)
        s = x @ xp.T
        neg = np.log(np.exp(s).sum(-1))
        return -(pos - neg)

    ours = np.asarray(cpc_nce(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.asarray(valid)))
    np.testing.assert_allclose(ours[:3], reference(x[:3], y[:3]), rtol=1e-5)
    full = cpc_nce(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32), jnp.ones(4))
    np.testing.assert_allclose(np.mean(full), reference(x, y).mean(), rtol=1e-5)  # the official mean


def test_loss_is_mse_plus_weighted_nce(official):
    _, params, _, step = official
    (loss, out), _ = step(params, make_batch(), jax.random.key(0))
    mse = np.mean((np.asarray(out["prediction"]) - np.asarray(make_batch()["label"])) ** 2)
    assert float(loss) == pytest.approx(mse + 0.1 * float(np.mean(out["nce_b"])), rel=1e-5)


def test_gradients_flow_and_loss_falls(official):
    """Every parameter gets gradient (frozen ones only in stage 2's optimizer, not on the path), and
    a few AdamW steps fit a fixed batch."""
    _, params, _, step = official
    batch = make_batch()
    (loss0, _), grads = step(params, batch, jax.random.key(0))
    zero = [jax.tree_util.keystr(p) for p, g in jax.tree_util.tree_leaves_with_path(grads) if not np.any(g)]
    zero = [z for z in zero if "pooler" not in z and "token_type" not in z]  # unused by KuDA / all zero ids
    assert not zero, zero
    tx = optax.adam(3e-3)
    opt = jax.jit(tx.init)(params)  # one program, not one per op and leaf shape

    @jax.jit
    def update(g, opt, params):
        upd, opt = tx.update(g, opt, params)
        return optax.apply_updates(params, upd), opt

    for i in range(25):
        (loss, _), g = step(params, batch, jax.random.key(i))
        params, opt = update(g, opt, params)
    assert float(loss) < 0.5 * float(loss0), (float(loss0), float(loss))
