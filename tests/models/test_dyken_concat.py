"""DyKen-Hyena ``fusion='concat_attention'``: cross-modal attention + feature concatenation, no kernels."""
from __future__ import annotations

import chex
import jax
import numpy as np
import pytest
from models.test_models import BERT, B, C, Jitted, fit_adam, make_batch, model_config

from mmfuse_jax import losses, registry
from mmfuse_jax.encoders.bert import BertModel
from mmfuse_jax.errors import ConfigError

D = BERT.hidden_size


def build(**overrides):
    cfg = model_config("dyken_hyena")
    cfg.update({"fusion": "concat_attention", **overrides})
    m = Jitted(registry.get("dyken_hyena").build(cfg, {"num_classes": C, "bert": BERT}))
    return m, m.init(jax.random.key(0), make_batch(), train=False)["params"]


@pytest.fixture(scope="module")
def concat():
    return build()


def test_concat_shapes_and_parameters(concat):
    m, p = concat
    out = m.apply({"params": p}, make_batch())
    chex.assert_shape((out["logits"], out["embedding"]), ((B, C), (B, 3 * D)))  # text + audio + video context
    chex.assert_tree_all_finite(out)
    assert set(p) == {"bert", "context", "classifier"}  # no kernel generator, no Hyena
    chex.assert_shape(p["classifier"]["kernel"], (3 * D, C))
    assert model_config("dyken_hyena").fusion == "dynamic_kernels"  # the paper's model stays the default


def test_text_part_is_plain_bert_and_context_part_follows_audio_video(concat):
    """embedding[:, :d] = pooled BERT(embeddings) (no modulation); audio/video move only the context part."""
    m, p = concat
    b = make_batch()
    emb = np.asarray(m.apply({"params": p}, b)["embedding"])
    bert = BertModel(BERT)
    pooled = bert.apply({"params": p["bert"]}, b["text_ids"], b["text_mask"], b["text_type_ids"])["pooled_output"]
    np.testing.assert_allclose(emb[:, :D], pooled, rtol=1e-5, atol=1e-6)
    other = dict(b, audio=b["audio"] * 3.0 + 1.0)
    emb2 = np.asarray(m.apply({"params": p}, other)["embedding"])
    np.testing.assert_array_equal(emb2[:, :D], emb[:, :D])          # text part untouched
    np.testing.assert_array_equal(emb2[:, 2 * D:], emb[:, 2 * D:])  # video context untouched
    assert np.max(np.abs(emb2[:, D:2 * D] - emb[:, D:2 * D])) > 1e-4  # audio context moves
    missing = np.asarray(m.apply({"params": p}, make_batch(audio_missing=True))["embedding"])
    np.testing.assert_array_equal(missing[:, D:2 * D], 0.0)  # a missing modality contributes a zero context


def test_concat_needs_the_context():
    with pytest.raises(ConfigError, match="use_context=True"):
        build(use_context=False)
    with pytest.raises(ConfigError, match="config.model.fusion='concat'"):
        build(fusion="concat")


def test_concat_variant_trains(concat):
    m, p = concat
    b = make_batch()

    def loss(params):
        out = m.module.apply({"params": params}, b, train=True, rngs={"dropout": jax.random.key(0)})
        return losses.classification_loss(out, b)[0]
    loss0, g, loss_v = fit_adam(loss, p, 1e-2, 15)
    assert all(np.any(np.asarray(x)) for x in jax.tree_util.tree_leaves(g["context"]))  # attention is trained
    assert float(loss_v) < 0.5 * float(loss0), (float(loss0), float(loss_v))
