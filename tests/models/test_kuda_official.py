"""Parity with the official PyTorch KuDA and the weight conversion both ways.

``tests/fixtures/kuda_golden.npz`` holds a (scaled-down) official KMSA model's state_dict, inputs and
outputs, written by ``tests/fixtures/make_kuda_golden.py`` from the official code itself.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from mmfuse_jax.encoders.bert import BertConfig
from mmfuse_jax.errors import DataError
from mmfuse_jax.models import kuda, kuda_official

GOLDEN = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures", "kuda_golden.npz")
BERT = BertConfig(vocab_size=97, hidden_size=24, num_hidden_layers=12, num_attention_heads=3, intermediate_size=40,
                  max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.fixture(scope="module")
def golden():
    z = np.load(GOLDEN)
    state = {k[6:]: z[k] for k in z.files if k.startswith("param:")}
    x = {k[3:]: z[k] for k in z.files if k.startswith("in:")}
    out = {k[4:]: z[k] for k in z.files if k.startswith("out:")}
    text = x["text"]
    batch = {"text_ids": text[:, 0].astype(np.int32), "text_mask": text[:, 1].astype(np.int32),
             "text_type_ids": text[:, 2].astype(np.int32), "video": x["video"], "audio": x["audio"],
             "video_mask": (~x["video_mask"]).astype(np.int32), "audio_mask": (~x["audio_mask"]).astype(np.int32),
             "label": x["label"], "valid": np.ones(3, np.float32)}
    model = kuda.KuDA(bert=BERT, text_len=9, video_len=5, audio_len=7, encoder_width=16, encoder_dropout=0.0,
                      adapter_dropout=0.0, hidden=32, ffn=48, heads=2, head_dim=8, fusion_dropout=0.0)
    return state, {k: jnp.asarray(v) for k, v in batch.items()}, out, model


def test_every_official_tensor_maps_onto_our_tree(golden):
    state, batch, _, model = golden
    params = kuda_official.params_from_official(state)
    want = traverse_util.flatten_dict(jax.eval_shape(lambda: model.init(jax.random.key(0), batch))["params"])
    got = traverse_util.flatten_dict(params)
    assert sorted(set(want) ^ set(got)) == []  # nothing missing, nothing left over
    assert all(got[k].shape == want[k].shape for k in want)
    skipped = sorted(k for k in state if "pooler" in k)
    assert skipped == [f"UniEncKI.enc_t.encoder.model.pooler.dense.{w}" for w in ("bias", "weight")]
    assert len(got) == len(state) - len(skipped)


def test_round_trip_is_exact(golden):
    state, *_ = golden
    params = kuda_official.params_from_official(state)
    back = kuda_official.params_to_official(params)
    assert set(back) == {k for k in state if "pooler" not in k}
    assert all(np.array_equal(back[k], state[k]) for k in back)  # transposes undone, nothing renamed wrongly
    again = traverse_util.flatten_dict(kuda_official.params_from_official(back))
    assert all(np.array_equal(v, again[k]) for k, v in traverse_util.flatten_dict(params).items())


@pytest.mark.slow  # a 12-layer BERT and the full model, both paths
def test_forward_matches_the_official_code(golden):
    """Evaluation path (no ratio) and training path (ratio from the label, dropout 0) of the official
    KMSA: prediction, the three unimodal predictions and the NCE loss. Op by op (not jitted): the twelve
    BERT layers share each op's compiled program, where one jitted program of both paths takes twice as long
    to compile on 2 CPU cores as this takes to run (measured: 20.6 s vs 10.5 s); jit and op by op agree
    to float rounding, far inside the tolerance."""
    state, batch, out, model = golden
    params = kuda_official.params_from_official(state)

    def both(p, b):
        return (model.apply({"params": p}, b, train=False),
                model.apply({"params": p}, b, train=True, rngs={"dropout": jax.random.key(0)}))

    ev, tr = both(params, batch)
    np.testing.assert_allclose(ev["unimodal_prediction"], out["unimodal"], atol=2e-5)
    np.testing.assert_allclose(ev["prediction"], out["eval_prediction"], atol=2e-5)
    np.testing.assert_allclose(float(np.mean(ev["nce_b"])), out["eval_nce"], atol=2e-5)
    np.testing.assert_allclose(tr["prediction"], out["train_prediction"], atol=2e-5)
    np.testing.assert_allclose(float(np.mean(tr["nce_b"])), out["train_nce"], atol=2e-5)
    assert np.abs(out["train_prediction"] - out["eval_prediction"]).max() > 1e-4  # the two paths differ


def test_stage1_checkpoint_names_and_unknown_names():
    state = {"encoder.layernorm.weight": np.ones(4), "decoder.MLP.6.bias": np.zeros(1)}
    params = kuda_official.params_from_official(state, modality="audio")
    assert params["audio_encoder"]["layernorm"]["scale"].shape == (4,)
    assert params["audio_decoder"]["linear_3"]["bias"].shape == (1,)
    with pytest.raises(DataError, match="tensor 'DyMultiFus.gate.weight' expected a parameter of the official"):
        kuda_official.params_from_official({"DyMultiFus.gate.weight": np.ones((2, 2))})
