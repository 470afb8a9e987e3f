"""DyKen-Hyena on emotion data: the synthetic MulT-layout IEMOCAP, ``text_input='features'``, ``output='emotion'``."""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models.test_models import BERT, B, Jitted, fit_adam, make_batch, model_config

from mmfuse_jax import losses, registry
from mmfuse_jax.data import synthetic
from mmfuse_jax.data.formats import mult
from mmfuse_jax.data.synthetic import mult as synthetic_mult
from mmfuse_jax.errors import ConfigError

DT = 10  # word-vector size


def emotion_batch(seed=0):
    b = make_batch(seed)
    rng = np.random.default_rng(seed + 1)
    text = rng.standard_normal((*b["text_mask"].shape, DT)).astype(np.float32) * np.asarray(b["text_mask"])[..., None]
    labels = np.zeros((B, 4), np.int32)
    labels[np.arange(B), [0, 2, 3]] = 1
    return {**b, "text": jnp.asarray(text), "label": jnp.asarray(labels)}


def build(**overrides):
    cfg = model_config("dyken_hyena")
    cfg.update({"text_input": "features", "output": "emotion", **overrides})
    m = Jitted(registry.get("dyken_hyena").build(cfg, {"num_classes": 4, "bert": BERT}))
    return m, m.init(jax.random.key(0), emotion_batch(), train=False)["params"]


@pytest.fixture(scope="module")
def model():
    return build()


def test_synthetic_iemocap_reads_back_in_the_mult_layout(tmp_path):
    spec = synthetic_mult.SyntheticMulTSpec(train=12, dev=4, test=4, text_len=5, audio_len=7, video_len=6,
                                            text_dim=8, audio_dim=3, video_dim=2, bert_hidden=8)
    assert synthetic.GENERATORS["mult_iemocap"] is synthetic_mult
    data = synthetic_mult.generate(spec)
    chex.assert_shape((data["train"]["text"], data["train"]["audio"], data["train"]["vision"],
                       data["train"]["labels"]), ((12, 5, 8), (12, 7, 3), (12, 6, 2), (12, 4, 2)))
    np.testing.assert_array_equal(data["train"]["labels"][:, :, 1].sum(-1), 1)  # exactly one emotion per row
    synthetic_mult.write(str(tmp_path), spec)
    splits, _ = mult.read(str(tmp_path), feat_dims={"text": 8, "audio": 3, "video": 2},
                          max_lens={"text": 5, "audio": 7, "video": 6}, name="iemocap")
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "dev": 4, "test": 4}
    ex = splits["dev"][1]
    np.testing.assert_array_equal(ex["label"], data["valid"]["labels"][1].argmax(-1))
    np.testing.assert_array_equal(ex["text_feats"], data["valid"]["text"][1])
    assert (tmp_path / "bert" / "config.json").exists()


def test_features_and_emotion_shapes_and_parameters(model):
    m, p = model
    out = m.apply({"params": p}, emotion_batch())
    chex.assert_shape(out["logits"], (B, 4, 2))
    chex.assert_tree_all_finite(out)
    assert "text_projection" in p and "word_embeddings" not in p["bert"]["embeddings"]
    chex.assert_shape((p["text_projection"]["kernel"], p["classifier"]["kernel"]),
                      ((DT, BERT.hidden_size), (BERT.hidden_size, 8)))
    assert {"context", "kernel_generator", "hyena"} <= set(p)  # the paper's model, unchanged after the input


def test_features_input_reads_the_vectors_not_the_ids(model):
    m, p = model
    b = emotion_batch()
    base = np.asarray(m.apply({"params": p}, b)["logits"])
    other_ids = dict(b, text_ids=(b["text_ids"] + 3) % 31)
    np.testing.assert_array_equal(np.asarray(m.apply({"params": p}, other_ids)["logits"]), base)
    other_text = dict(b, text=b["text"] * -1.0)
    assert np.max(np.abs(np.asarray(m.apply({"params": p}, other_text)["logits"]) - base)) > 1e-4


def test_bad_values_are_config_errors():
    for field, value in (("text_input", "glove"), ("output", "multilabel")):
        with pytest.raises(ConfigError, match=f"config.model.{field}"):
            build(**{field: value})


def test_emotion_variant_trains(model):
    """A few steps on one batch with MulT's per-emotion cross-entropy (`losses.affect_loss`)."""
    m, p = model
    b = dict(emotion_batch(), valid=jnp.ones(B, jnp.float32))

    def loss(params):
        out = m.module.apply({"params": params}, b, train=True, rngs={"dropout": jax.random.key(0)})
        return losses.affect_loss(out, b)[0]
    loss0, _, value = fit_adam(loss, p, 1e-2, 15)
    assert float(value) < 0.5 * float(loss0), (float(loss0), float(value))
