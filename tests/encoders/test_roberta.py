"""Flax RoBERTa (encoders/bert.py, model_type 'roberta') vs transformers' RobertaModel (golden activations).

tests/fixtures/roberta_golden.npz comes from transformers + torch running tests/fixtures/roberta_tiny
(written by tests/fixtures/make_roberta_golden.py); these tests need neither torch nor network.
"""
from __future__ import annotations

import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from mmfuse_jax.data.pipeline import tokenize
from mmfuse_jax.encoders.bert import BertConfig, BertModel, load_pretrained, load_tokenizer, params_from_state_dict
from mmfuse_jax.encoders.roberta import write_random_roberta
from mmfuse_jax.errors import DataError
from mmfuse_jax.training import init_pieces

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
CKPT_DIR = os.path.join(FIXTURES, "roberta_tiny")
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden():
    with np.load(os.path.join(FIXTURES, "roberta_golden.npz")) as g:
        return dict(g)


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained(CKPT_DIR)


@pytest.fixture(scope="module")
def outputs(pretrained, golden):
    module, params = pretrained
    ids = jnp.asarray(golden["input_ids"])
    out = module.apply({"params": params}, ids, jnp.asarray(golden["attention_mask"]), jnp.zeros_like(ids),
                       return_all=True)
    return jax.tree.map(np.asarray, out)


def test_checkpoint_is_read_as_roberta(pretrained, golden):
    module, _ = pretrained
    assert (module.cfg.model_type, module.cfg.type_vocab_size, module.cfg.pad_token_id) == ("roberta", 1, 1)
    assert module.cfg.layer_norm_eps == 1e-5
    assert (golden["input_ids"][golden["attention_mask"] == 0] == 1).all()  # padded with <pad>
    assert (golden["attention_mask"] == 0).any()


def test_every_output_matches_transformers(outputs, golden):
    chex.assert_shape(outputs["sequence_output"], golden["last_hidden_state"].shape)
    np.testing.assert_allclose(outputs["sequence_output"], golden["last_hidden_state"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(outputs["pooled_output"], golden["pooler_output"], atol=ATOL, rtol=0)
    assert len(outputs["hidden_states"]) == golden["hidden_states"].shape[0] == 4
    for i, (h, ref) in enumerate(zip(outputs["hidden_states"], golden["hidden_states"])):
        np.testing.assert_allclose(h, ref, atol=ATOL, rtol=0, err_msg=f"hidden state {i}")


def test_model_type_changes_only_the_position_numbering(pretrained, golden):
    """The same weights read as BERT, with the position table shifted by pad + 1 rows, give RoBERTa's
    outputs at every real token (BERT numbers positions 0, 1, ...; RoBERTa pad + 1, pad + 2, ...)."""
    module, params = pretrained
    as_bert = BertConfig(**{**module.cfg.__dict__, "model_type": "bert"})
    shifted = jax.tree.map(lambda x: x, params)
    table = params["embeddings"]["position_embeddings"]["embedding"]
    shifted["embeddings"]["position_embeddings"]["embedding"] = jnp.roll(table, -2, axis=0)
    ids, mask = jnp.asarray(golden["input_ids"]), jnp.asarray(golden["attention_mask"])
    bert_out = BertModel(as_bert).apply({"params": params}, ids, mask, jnp.zeros_like(ids))["sequence_output"]
    moved = BertModel(as_bert).apply({"params": shifted}, ids, mask, jnp.zeros_like(ids))["sequence_output"]
    real = golden["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(moved)[real], golden["last_hidden_state"][real], atol=ATOL, rtol=0)
    assert np.max(np.abs(np.asarray(bert_out)[real] - golden["last_hidden_state"][real])) > 1e-2


def test_roberta_prefixed_masked_lm_state_dict_loads(pretrained):
    module, params = pretrained
    state = {f"roberta.{k}": v for k, v in load_file(os.path.join(CKPT_DIR, "model.safetensors")).items()}
    state["lm_head.dense.weight"] = np.ones((24, 24), np.float32)
    state["lm_head.bias"] = np.ones((module.cfg.vocab_size,), np.float32)
    loaded = params_from_state_dict(state, module.cfg, source="mlm.safetensors")
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_unsupported_model_type_is_a_data_error(tmp_path):
    with open(os.path.join(CKPT_DIR, "config.json")) as f:
        raw = json.load(f)
    (tmp_path / "config.json").write_text(json.dumps({**raw, "model_type": "xlnet"}))
    with pytest.raises(DataError, match="model_type"):
        BertConfig.from_json(str(tmp_path / "config.json"))


def test_bpe_tokenizer_through_the_pipeline_matches_transformers(golden):
    tokenizer = load_tokenizer(CKPT_DIR)
    ids, n_truncated = tokenize(["Hello there, please wait!"], tokenizer, max_len=32)
    assert n_truncated == 0
    np.testing.assert_array_equal(ids[0], golden["sentence_ids"])  # <s> ... </s> as RobertaTokenizerFast
    short, n_truncated = tokenize(["Hello there, please wait!"], tokenizer, max_len=5)
    assert n_truncated == 1
    np.testing.assert_array_equal(short[0], [*golden["sentence_ids"][:4], 2])


def test_random_roberta_writer_round_trips(tmp_path):
    texts = ["the cat sat on the mat", "a dog ran in the park", "the cat ran"] * 5
    cfg = write_random_roberta(str(tmp_path), texts, hidden=8, layers=1, heads=2, seed=0, max_positions=12)
    module, params = load_pretrained(str(tmp_path))
    assert module.cfg == cfg and cfg.max_position_embeddings == 14
    ids, _ = tokenize(texts[:2], load_tokenizer(str(tmp_path)), max_len=12)
    assert ids[0][0] == 0 and ids[0][-1] == 2 and max(map(len, ids)) <= 12
    chex.assert_shape(params["embeddings"]["token_type_embeddings"]["embedding"], (1, 8))


def test_mmsa_raw_text_is_retokenised_with_the_roberta_tokenizer(tmp_path):
    """read_options.tokenize_raw_text: the release's WordPiece ids are dropped; the pipeline's tokenizer
    step gives RoBERTa ids (<s> ... </s>) from raw_text."""
    from data.formats.test_mmsa import DIMS, LENS, write_mmsa  # tests/ is on sys.path under pytest

    from mmfuse_jax.data import pipeline
    from mmfuse_jax.data.formats import mmsa
    from mmfuse_jax.errors import ConfigError

    root, data = write_mmsa(tmp_path / "SIMS")
    splits, _ = mmsa.read(root, feat_dims=DIMS, max_lens=LENS, tokenize_raw_text=True)
    assert all("text_ids" not in ex for rows in splits.values() for ex in rows)
    pipeline._add_token_ids(splits, CKPT_DIR, 32)
    want, _ = tokenize([data["valid"]["raw_text"][1]], load_tokenizer(CKPT_DIR), 32)
    np.testing.assert_array_equal(splits["dev"][1]["text_ids"], want[0])
    assert splits["dev"][1]["text_ids"][0] == 0 and splits["dev"][1]["text_ids"][-1] == 2
    with pytest.raises(ConfigError, match="tokenize_raw_text"):
        mmsa.read(root, feat_dims={**DIMS, "text": 8}, max_lens=LENS, tokenize_raw_text=True)


def test_kuda_trains_with_a_roberta_text_branch(pretrained):
    """KuDA's tiny preset on the RoBERTa checkpoint: finite loss, gradients reach the RoBERTa weights."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(FIXTURES), "models"))
    from test_kuda import make_batch
    from test_models import model_config

    from mmfuse_jax.models import kuda

    module, roberta = pretrained
    m = kuda.build(model_config("kuda"), {"bert": module.cfg})
    batch = make_batch()  # ids < 31 < vocab; text_type_ids 0 (one token type)
    params = init_pieces.call(lambda k: m.init(k, batch, train=False), jax.random.key(0))["params"]
    params = {**params, "bert": {k: v for k, v in roberta.items() if k != "pooler"}}

    def loss(p):
        return kuda.loss_fn(m.apply({"params": p}, batch, train=True, rngs={"dropout": jax.random.key(1)}), batch)[0]
    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert np.isfinite(float(value))
    assert np.any(np.asarray(grads["bert"]["embeddings"]["position_embeddings"]["embedding"]))
    assert np.any(np.asarray(grads["bert"]["encoder"]["layer_0"]["attention"]["self"]["query"]["kernel"]))
