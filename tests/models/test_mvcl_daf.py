"""MVCL-DAF++: label-slot prompts, the contrastive losses on hand-computed cases, switches, gradients."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.test_models import BERT, C, Jitted, make_batch, model_config, tiny_config

from mmfuse_jax import losses, registry
from mmfuse_jax.errors import ConfigError
from mmfuse_jax.models import mvcl_daf

D = BERT.hidden_size


def build(**overrides):
    cfg = model_config("mvcl_daf")
    for k, v in overrides.items():
        cfg[k] = v
    m = Jitted(registry.get("mvcl_daf").build(cfg, {"num_classes": C, "bert": BERT}))
    return m, m.init(jax.random.key(0), make_batch(), train=False)["params"]


@pytest.fixture(scope="module")
def default():
    return build()


def apply_train(m, params, batch, seed=1):
    return m.apply({"params": params}, batch, train=True, rngs={"dropout": jax.random.key(seed)})


# ------------------------------------------------------------------------------------ prompts

def test_prompt_sequence_puts_the_slots_after_each_rows_text():
    text = jnp.array([[2, 7, 8, 3, 0], [2, 9, 3, 0, 0]])
    mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])
    text = text.at[1, 4].set(17)  # an id under padding must not survive
    slots = jnp.array([[11, 12], [13, 0]])
    slot_mask = jnp.array([[1, 1], [1, 0]])
    ids, m, seg, pos = mvcl_daf.prompt_sequence(text, mask, slots, slot_mask, sep_id=3)
    np.testing.assert_array_equal(ids, [[2, 7, 8, 3, 11, 12, 3, 0], [2, 9, 3, 13, 0, 3, 0, 0]])
    np.testing.assert_array_equal(m, [[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(seg, [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 0, 1, 0, 0]])
    np.testing.assert_array_equal(pos, [[4, 5], [3, 4]])
    x = jnp.arange(2 * 8 * 1, dtype=jnp.float32).reshape(2, 8, 1)
    np.testing.assert_allclose(mvcl_daf.slot_mean(x, pos, slot_mask), [[4.5], [11.0]])


def test_label_names_tokenise_with_the_checkpoint_vocabulary(tmp_path):
    from mmfuse_jax.data import synthetic

    (tmp_path / "vocab.txt").write_text("\n".join(synthetic.vocabulary()) + "\n")
    names = ("Ask for help", "Thank", "Asking for opinions")
    ckpt = mvcl_daf.tokenize_labels(names, "checkpoint", str(tmp_path), 2)
    assert ckpt == mvcl_daf.tokenize_labels(names, "synthetic", "", 2, synthetic.vocabulary())  # the two paths agree
    assert ckpt["label_tokens"] == ((1, 1), (1,), (1, 1))  # out of the toy vocabulary: [UNK], truncated to 2
    assert (ckpt["mask_token_id"], ckpt["sep_token_id"]) == (4, 3)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nask\nfor\nhelp\nthank\n##s\n")
    real = mvcl_daf.tokenize_labels(("Ask for help", "Thanks"), "checkpoint", str(tmp_path), 4)
    assert real["label_tokens"] == ((5, 6, 7), (8, 9))
    ids, mask = mvcl_daf.label_table(real["label_tokens"], 4)
    np.testing.assert_array_equal(ids, [[5, 6, 7, 0], [8, 9, 0, 0]])
    np.testing.assert_array_equal(mask, [[1, 1, 1, 0], [1, 1, 0, 0]])


# ------------------------------------------------------------------------------------ losses

def _proto_reference(e, y, valid, c, tau):
    """Float64 loops: the definition, written independently of the vectorised code."""
    rows = [i for i in range(len(y)) if valid[i] > 0 and 0 <= y[i] < c]
    if not rows:
        return 0.0
    z = {i: np.asarray(e[i], np.float64) / max(np.linalg.norm(e[i]), 1e-6) for i in rows}
    protos = {}
    for cls in sorted({y[i] for i in rows}):
        p = np.mean([z[i] for i in rows if y[i] == cls], axis=0)
        protos[cls] = p / max(np.linalg.norm(p), 1e-6)
    total = 0.0
    for i in rows:
        logits = {cls: z[i] @ p / tau for cls, p in protos.items()}
        total += -(logits[y[i]] - math.log(sum(math.exp(v) for v in logits.values())))
    return total / len(rows)


def test_prototype_loss_by_hand():
    # z = (1,0), (0,1), (1,1)/√2; p_0 = normalised mean of rows 0 and 2 = (cos 22.5°, sin 22.5°), p_1 = (0,1).
    e = jnp.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    y, valid, tau = jnp.array([0, 1, 0]), jnp.ones(3), 0.5
    c0, s0, r = math.cos(math.pi / 8), math.sin(math.pi / 8), math.sqrt(0.5)
    cos = [(c0, 0.0), (s0, 1.0), (r * (c0 + s0), r)]  # (cos to p_0, cos to p_1) per row
    own = [0, 1, 0]
    expected = np.mean([-(cs[o] / tau - math.log(math.exp(cs[0] / tau) + math.exp(cs[1] / tau)))
                        for cs, o in zip(cos, own)])
    got = losses.prototype_contrastive_loss(e, y, valid, num_classes=3, temperature=tau)  # class 2 absent
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_prototype_loss_matches_the_reference_with_padding_oos_and_absent_classes():
    rng = np.random.default_rng(0)
    e = rng.standard_normal((9, 5)).astype(np.float32)
    y = np.array([0, 2, 2, 4, 0, 5, 1, 2, 3])   # 5 = OOS with C = 5; class 1 is in a padding row only
    valid = np.array([1, 1, 1, 1, 1, 1, 0, 1, 1], np.float32)
    got = losses.prototype_contrastive_loss(jnp.asarray(e), jnp.asarray(y), jnp.asarray(valid), 5, 0.1)
    assert float(got) == pytest.approx(_proto_reference(e, y, valid, 5, 0.1), rel=1e-5)
    e2 = e.copy()
    e2[6] = 100.0   # the padding row and the OOS row change: nothing else does
    e2[5] = -7.0
    got2 = losses.prototype_contrastive_loss(jnp.asarray(e2), jnp.asarray(y), jnp.asarray(valid), 5, 0.1)
    assert float(got2) == pytest.approx(float(got), rel=1e-6)


@pytest.mark.parametrize("case", ["one_class", "singleton_class", "identical", "no_valid_row", "zeros"])
def test_prototype_loss_degenerate_batches_are_finite(case):
    rng = np.random.default_rng(1)
    e = jnp.asarray(rng.standard_normal((4, 3)).astype(np.float32))
    y, valid = jnp.array([0, 0, 1, 1]), jnp.ones(4)
    if case == "one_class":
        y, expected = jnp.zeros(4, jnp.int32), 0.0                 # one candidate: log 1
    elif case == "singleton_class":
        y = jnp.array([0, 0, 0, 1])                                # class 1's prototype is row 3 itself
        expected = _proto_reference(np.asarray(e), np.asarray(y), np.ones(4), 3, 0.1)
    elif case == "identical":
        e, expected = jnp.ones((4, 3)), math.log(2)                # every cosine is 1: uniform over 2 classes
    elif case == "no_valid_row":
        valid, expected = jnp.zeros(4), 0.0
    else:
        e, expected = jnp.zeros((4, 3)), math.log(2)               # zero embeddings: cosine 0 everywhere
    loss, grad = jax.value_and_grad(losses.prototype_contrastive_loss)(e, y, valid, 3, 0.1)
    assert float(loss) == pytest.approx(expected, abs=1e-5)
    chex.assert_tree_all_finite(grad)
    if case == "singleton_class":  # row 3 is at its own prototype: cosine 1
        z = np.asarray(losses.l2_normalize(e))
        assert float(z[3] @ z[3]) == pytest.approx(1.0, abs=1e-6)


def test_multiview_loss_by_hand():
    anchor = jnp.array([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    views = jnp.array([[[3.0, 0.0], [1.0, 1.0]],
                       [[1.0, 1.0], [0.0, 1.0]],
                       [[9.0, 9.0], [9.0, 9.0]]])
    valid, tau = jnp.array([1.0, 1.0, 0.0]), 1.0  # row 2 pads: neither a query nor a negative
    r = math.sqrt(0.5)
    # view 0: row 0 cosines to keys (1,0),(1,1)/√2 = (1, r); row 1 cosines = (0, r)
    v0 = np.mean([-(1 - math.log(math.e + math.exp(r))), -(r - math.log(1 + math.exp(r)))])
    # view 1: keys (1,1)/√2, (0,1): row 0 cosines (r, 0); row 1 cosines (r, 1)
    v1 = np.mean([-(r - math.log(math.exp(r) + 1)), -(1 - math.log(math.exp(r) + math.e))])
    got = losses.multiview_contrastive_loss(anchor, views, valid, tau)
    assert float(got) == pytest.approx((v0 + v1) / 2, rel=1e-5)
    assert float(losses.info_nce(anchor, views[:, 0], valid, tau)) == pytest.approx(v0, rel=1e-5)


def test_multiview_loss_degenerate_batches_are_finite():
    x = jnp.ones((3, 2, 4))
    for valid, expected in ((jnp.array([1.0, 0.0, 0.0]), 0.0),   # one row: no negative, loss 0
                            (jnp.zeros(3), 0.0),
                            (jnp.ones(3), math.log(3))):          # identical: uniform over 3
        loss, grad = jax.value_and_grad(losses.multiview_contrastive_loss)(x[:, 0], x, valid, 0.1)
        assert float(loss) == pytest.approx(expected, abs=1e-5)
        chex.assert_tree_all_finite(grad)


# ------------------------------------------------------------------------------------ model

def test_shapes_and_the_views_only_in_training(default):
    m, p = default
    b = make_batch()
    out = m.apply({"params": p}, b, train=False)
    chex.assert_shape(out["logits"], (3, C))
    chex.assert_shape(out["embedding"], (3, D))
    assert "multiview_anchor" not in out
    out = apply_train(m, p, b)
    chex.assert_shape(out["multiview_anchor"], (3, D))
    chex.assert_shape(out["multiview_views"], (3, len(mvcl_daf.VIEWS), D))
    chex.assert_tree_all_finite(out)
    loss, aux = mvcl_daf.loss_fn(out, b)
    expected = aux["ce"] + aux["oe"] + aux["prototype"] + aux["multiview"]  # weights 1
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


def test_padding_rows_and_frames_do_not_matter(default):
    m, p = default
    b = make_batch()
    out = apply_train(m, p, b)
    loss = mvcl_daf.loss_fn(out, b)[0]
    b2 = dict(b, label=b["label"].at[2].set(1), text_ids=b["text_ids"].at[2].set(9),
              audio=b["audio"].at[2].set(5.0))
    assert float(mvcl_daf.loss_fn(apply_train(m, p, b2), b2)[0]) == pytest.approx(float(loss), rel=1e-5)
    noisy = dict(b, audio=jnp.where(b["audio_mask"][..., None] > 0, b["audio"], 1e3),
                 video=jnp.where(b["video_mask"][..., None] > 0, b["video"], -1e3),
                 text_ids=jnp.where(b["text_mask"] > 0, b["text_ids"], 17))
    np.testing.assert_allclose(m.apply({"params": p}, b)["logits"], m.apply({"params": p}, noisy)["logits"],
                               atol=1e-5)


def test_oos_rows_count_for_outlier_exposure_only(default):
    m, p = default
    b = make_batch()
    b = dict(b, label=jnp.array([0, C, 4]), valid=jnp.ones(3))   # row 1 is out of scope
    out = apply_train(m, p, b)
    loss, aux = mvcl_daf.loss_fn(out, b)
    assert np.isfinite(float(loss)) and float(aux["oe"]) > 0
    known = jnp.array([1.0, 0.0, 1.0])
    assert float(aux["multiview"]) == pytest.approx(float(losses.multiview_contrastive_loss(
        out["multiview_anchor"], out["multiview_views"], known, 0.1)), rel=1e-6)
    assert float(aux["prototype"]) == pytest.approx(float(losses.prototype_contrastive_loss(
        out["embedding"], b["label"], known, C, 0.1)), rel=1e-6)


def test_every_loss_reaches_every_encoder(default):
    m, p = default
    b = make_batch()

    def terms(params):  # the two contrastive terms alone (the total loss: tests/models/test_models.py)
        aux = mvcl_daf.loss_fn(apply_train(m, params, b), b)[1]
        return jnp.stack([aux["prototype"], aux["multiview"]])

    grads = jax.jit(jax.jacrev(terms))(p)   # one compilation for both terms
    encoders = ("bert", "audio_encoder", "video_encoder", "mat", "daf", "audio_alignment", "video_alignment",
                "text_coarse_to_fine", "audio_coarse_to_fine", "video_coarse_to_fine")
    for t, term in enumerate(("prototype", "multiview")):
        norms = {k: float(sum(np.sum(np.square(np.asarray(g[t]))) for g in jax.tree_util.tree_leaves(v)))
                 for k, v in grads.items()}
        assert all(norms[k] > 0 for k in encoders), (term, norms)
        assert norms["classifier"] == 0.0, term  # the contrastive terms act on the embedding


def _shapes(**overrides):
    """Parameter and output structure without compiling (jax.eval_shape)."""
    cfg = model_config("mvcl_daf")
    for k, v in overrides.items():
        cfg[k] = v
    module = registry.get("mvcl_daf").build(cfg, {"num_classes": C, "bert": BERT})
    b = make_batch()
    params = jax.eval_shape(lambda: module.init(jax.random.key(0), b, train=False)["params"])
    out = jax.eval_shape(lambda p: module.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(1)}),
                         params)
    return params, out


def test_switches_shape_the_model_and_the_loss(default):
    for view in mvcl_daf.COARSE_VIEWS:
        p, out = _shapes(prototype_weight=0.0, multiview_weight=0.0, use_global=False, coarse_view=view)
        assert "mat" not in p and "global_gate" not in p["daf"] and not [k for k in p if "coarse_to_fine" in k]
        assert set(out) == {"logits", "embedding"}
    p, out = _shapes(multiview_weight=0.0, daf_depth=3, encoder_layers=1, coarse_view="text_queried")
    assert {"audio_dynamic_2", "global_gate"} <= set(p["daf"]) and "transformer" in p["audio_encoder"]
    assert p["mat"]["global_token"].shape == (D,) and not [k for k in p if "coarse_to_fine" in k]
    p, _ = _shapes(daf_depth=3)  # per_modality: a summary token per modality, C2F in every encoder
    assert p["mat"]["global_tokens"].shape == (3, D) and "global_gate" not in p["daf"]
    assert {"dynamic_2", "prelu", "score"} <= set(p["video_coarse_to_fine"]) and "text_coarse_to_fine" in p
    assert "multiview_anchor" not in out and "prototype_weight" not in out  # no hyperparameters in outputs
    # The loss takes its weights and τ from the config given to make_loss.
    m, params = default
    b = make_batch()
    out = apply_train(m, params, b)
    cfg = tiny_config("mvcl_daf")
    cfg.model.update({"prototype_weight": 0.5, "multiview_weight": 2.0, "temperature": 0.2})
    loss, aux = registry.get("mvcl_daf").make_loss(cfg)(out, b)
    proto = losses.prototype_contrastive_loss(out["embedding"], b["label"], b["valid"], C, 0.2)
    mv = losses.multiview_contrastive_loss(out["multiview_anchor"], out["multiview_views"], b["valid"], 0.2)
    assert float(loss) == pytest.approx(float(aux["ce"] + aux["oe"] + 0.5 * proto + 2.0 * mv), rel=1e-6)
    cfg.model.prototype_weight = cfg.model.multiview_weight = 0.0
    loss, aux = registry.get("mvcl_daf").make_loss(cfg)(out, b)
    assert set(aux) == {"ce", "oe", "correct"} and float(loss) == pytest.approx(float(aux["ce"] + aux["oe"]))


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="names 2 intents"):
        _shapes(label_names=("Complain", "Praise"))
    with pytest.raises(ConfigError, match="num_heads=5 must divide"):
        _shapes(num_heads=5)
    with pytest.raises(ConfigError, match="label slots"):
        _shapes(label_len=9)  # 7 text tokens + 9 slots + [SEP] > 16 positions
    with pytest.raises(ConfigError, match="label_vocab='nope'"):
        _shapes(label_vocab="nope")
    with pytest.raises(ConfigError, match=r"coarse_view='global': expected one of \['per_modality', 'text_queried'\]"):
        _shapes(coarse_view="global")


def test_per_modality_summaries_come_from_each_modality_and_refine_its_encoder(default):
    """The paper's coarse view: one summary per modality (distinct), audio's moves with the audio frames,
    each encoder's tokens are refined by C2F; the switch to 'text_queried' changes the outputs."""
    m, p = default
    b = make_batch()
    mod = registry.get("mvcl_daf").build(model_config("mvcl_daf"), {"num_classes": C, "bert": BERT})
    inter = jax.jit(lambda params, batch: mod.apply({"params": params}, batch, train=False, capture_intermediates=True,
                                                    mutable=["intermediates"])[1]["intermediates"])
    got = inter(p, b)
    g = got["mat"]["__call__"][0]
    chex.assert_shape(g, (3, 3, D))  # [B, text/audio/video, d]
    assert float(jnp.abs(g[:, 0] - g[:, 1]).min()) > 0 and float(jnp.abs(g[:, 1] - g[:, 2]).min()) > 0
    chex.assert_shape(got["audio_coarse_to_fine"]["__call__"][0], b["audio"].shape[:2] + (D,))
    chex.assert_shape(got["text_coarse_to_fine"]["__call__"][0], got["bert"]["__call__"][0]["sequence_output"].shape)
    g2 = inter(p, dict(b, audio=b["audio"] + 1.0))["mat"]["__call__"][0]
    assert float(jnp.abs(g2[:, 1] - g[:, 1]).max()) > 1e-4
    tq, ptq = build(coarse_view="text_queried")
    assert not np.allclose(m.apply({"params": p}, b)["logits"], tq.apply({"params": ptq}, b)["logits"], atol=1e-4)
