"""Flax BERT vs Hugging Face transformers (golden activations), checkpoint I/O, tokenizer, attention.

The golden activations in tests/fixtures/bert_golden.npz come from transformers + torch running
the checkpoint in tests/fixtures/bert_tiny (written by tests/fixtures/make_bert_golden.py), so
these tests need neither torch nor network.
"""
from __future__ import annotations

import functools
import json
import os
import shutil

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from safetensors.numpy import load_file, save_file

from mmfuse_jax.data.pipeline import tokenize
from mmfuse_jax.encoders.bert import (
    BertConfig,
    BertModel,
    load_pretrained,
    load_tokenizer,
    params_from_state_dict,
    save_pretrained,
)
from mmfuse_jax.errors import DataError
from mmfuse_jax.layers.attention import dot_product_attention, masked_max, masked_mean

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fixtures")
CKPT_DIR = os.path.join(FIXTURES, "bert_tiny")
GOLDEN = os.path.join(FIXTURES, "bert_golden.npz")
ATOL = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as g:
        return dict(g)


@pytest.fixture(scope="module")
def pretrained():
    return load_pretrained(CKPT_DIR)


@pytest.fixture(scope="module")
def outputs(pretrained, golden):
    module, params = pretrained
    out = module.apply({"params": params}, jnp.asarray(golden["input_ids"]),
                       jnp.asarray(golden["attention_mask"]), jnp.asarray(golden["token_type_ids"]),
                       train=False, return_all=True)
    return jax.tree.map(np.asarray, out)


def _tiny_config(**overrides) -> BertConfig:
    # Odd, distinct sizes: B=3, L=7 in the inputs; hidden 12 = 3 heads x 4; intermediate 20.
    fields = {"vocab_size": 31, "hidden_size": 12, "num_hidden_layers": 2, "num_attention_heads": 3,
                  "intermediate_size": 20, "max_position_embeddings": 16, "type_vocab_size": 2}
    return BertConfig(**(fields | overrides))


def _init(cfg: BertConfig, seed: int = 0) -> dict:
    ids = jnp.zeros((1, 5), jnp.int32)
    return jax.jit(BertModel(cfg).init)(jax.random.key(seed), ids, jnp.ones_like(ids))["params"]


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ------------------------------------------------------------------ parity with transformers

def test_golden_fixture_is_nontrivial(golden):
    # The parity tests are only meaningful if the batch has padding and both segment types.
    mask = golden["attention_mask"]
    assert len(set(mask.sum(1).tolist())) == mask.shape[0], "rows should have distinct lengths"
    assert (mask == 0).any() and (golden["token_type_ids"] == 1).any()
    assert golden["hidden_states"].shape[0] == 4  # embeddings + 3 layers


def test_sequence_output_matches_transformers_at_valid_positions(outputs, golden):
    valid = golden["attention_mask"].astype(bool)
    diff = _max_diff(outputs["sequence_output"][valid], golden["last_hidden_state"][valid])
    assert diff < ATOL, f"last_hidden_state (valid positions): max |diff| {diff:.3g}"


def test_sequence_output_matches_transformers_at_padded_positions(outputs, golden):
    # Padded queries still attend to the valid keys in both implementations, so they match too.
    padded = ~golden["attention_mask"].astype(bool)
    diff = _max_diff(outputs["sequence_output"][padded], golden["last_hidden_state"][padded])
    assert diff < ATOL, f"last_hidden_state (padded positions): max |diff| {diff:.3g}"


def test_pooled_output_matches_transformers(outputs, golden):
    diff = _max_diff(outputs["pooled_output"], golden["pooler_output"])
    assert diff < ATOL, f"pooler_output: max |diff| {diff:.3g}"


def test_every_hidden_state_matches_transformers(outputs, golden):
    ours = outputs["hidden_states"]
    assert len(ours) == golden["hidden_states"].shape[0]
    diffs = {("embeddings" if i == 0 else f"layer {i - 1}"): _max_diff(h, ref)
             for i, (h, ref) in enumerate(zip(ours, golden["hidden_states"]))}
    bad = {k: f"{v:.3g}" for k, v in diffs.items() if not v < ATOL}
    assert not bad, f"hidden states beyond {ATOL}: {bad}"


# ------------------------------------------------------------------------------- shapes

def test_bert_model_output_shapes():
    cfg = _tiny_config()
    b, length = 3, 7
    ids = jax.random.randint(jax.random.key(1), (b, length), 0, cfg.vocab_size, jnp.int32)
    mask = (jnp.arange(length)[None, :] < jnp.array([[7], [4], [1]])).astype(jnp.int32)
    params = _init(cfg)
    apply = jax.jit(lambda p, train: BertModel(cfg).apply({"params": p}, ids, mask, train=train, return_all=True,
                                                          rngs={"dropout": jax.random.key(2)}),
                    static_argnums=1)
    for train in (False, True):
        out = apply(params, train)
        chex.assert_shape(out["sequence_output"], (b, length, cfg.hidden_size))
        chex.assert_shape(out["pooled_output"], (b, cfg.hidden_size))
        assert len(out["hidden_states"]) == cfg.num_hidden_layers + 1
        chex.assert_shape(list(out["hidden_states"]), (b, length, cfg.hidden_size))
        chex.assert_tree_all_finite(out)
    plain = jax.jit(lambda p: BertModel(cfg).apply({"params": p}, ids, mask))(params)  # eager: op-by-op compiles
    assert set(plain) == {"sequence_output", "pooled_output"}


def test_hashed_dropout_draws_other_masks_and_changes_nothing_else(tmp_path):
    """BertConfig.dropout_impl='hashed' (config.model.bert_dropout): the same params and the same eval
    outputs; in training other masks, the same for the same rng (the mask's own statistics:
    tests/layers); the field is ours, never written to or read from config.json."""
    import dataclasses

    cfg = dataclasses.replace(_tiny_config(), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.5)
    hashed = dataclasses.replace(cfg, dropout_impl="hashed")
    b, length = 4, 16
    ids = jax.random.randint(jax.random.key(1), (b, length), 0, cfg.vocab_size, jnp.int32)
    mask = jnp.ones((b, length), jnp.int32)
    params = _init(cfg)
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(_init(hashed))

    @functools.partial(jax.jit, static_argnums=(0, 1))  # one program per (config, train) (op by op: ~80)
    def apply(c, train, key):
        return BertModel(c).apply({"params": params}, ids, mask, train=train, rngs={"dropout": key})

    def run(c, train, seed=2):
        return apply(c, train, jax.random.key(seed))["sequence_output"]
    np.testing.assert_array_equal(run(cfg, False), run(hashed, False))
    np.testing.assert_array_equal(run(hashed, True), run(hashed, True))
    assert not np.allclose(run(hashed, True), run(cfg, True))
    assert not np.allclose(run(hashed, True), run(hashed, True, seed=3))
    save_pretrained(str(tmp_path), hashed, params)
    saved = json.load(open(os.path.join(str(tmp_path), "config.json")))
    assert "dropout_impl" not in saved
    assert BertConfig.from_json(os.path.join(str(tmp_path), "config.json")).dropout_impl == "threefry"


@pytest.mark.parametrize("impl", ["threefry", "hashed"])
def test_config_model_bert_dropout_reaches_every_bert_model(impl, tiny_synthetic):
    from conftest import tiny_config

    from mmfuse_jax import registry
    from mmfuse_jax.training.experiment import build

    for name in registry.names():
        if registry.get(name).uses_bert and name != "kuda":  # KuDA reads an MMSA-layout dataset
            exp = build(tiny_config(name, tiny_synthetic, **{"model.bert_dropout": impl}), data=False)
            assert exp.model.bert.dropout_impl == impl, name


# ------------------------------------------------------------------------ checkpoint I/O

def test_save_then_load_round_trips_params_exactly(tmp_path):
    cfg = _tiny_config(hidden_act="relu", layer_norm_eps=1e-6)
    params = _init(cfg, seed=3)
    vocab = [f"tok{i}" for i in range(cfg.vocab_size)]
    save_pretrained(str(tmp_path), cfg, params, vocab)
    module, loaded = load_pretrained(str(tmp_path))
    assert module.cfg == cfg
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for path, value in traverse_util.flatten_dict(params).items():
        np.testing.assert_array_equal(traverse_util.flatten_dict(loaded)[path], value, err_msg="/".join(path))
    assert (tmp_path / "vocab.txt").read_text().split() == vocab


def test_saved_tensor_names_and_shapes_match_transformers_checkpoint(pretrained, tmp_path):
    # Our writer must produce the same state dict layout that transformers' save_pretrained wrote.
    module, params = pretrained
    save_pretrained(str(tmp_path), module.cfg, params)
    ours = load_file(str(tmp_path / "model.safetensors"))
    theirs = load_file(os.path.join(CKPT_DIR, "model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for name, value in theirs.items():
        np.testing.assert_array_equal(ours[name], value, err_msg=name)


def _copy_with_state(tmp_path, edit) -> str:
    dst = tmp_path / "ckpt"
    shutil.copytree(CKPT_DIR, dst)
    state = load_file(os.path.join(CKPT_DIR, "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return str(dst)


def test_wrong_tensor_shape_raises_data_error_naming_it(tmp_path):
    name = "encoder.layer.1.attention.self.key.weight"
    path = _copy_with_state(tmp_path, lambda s: s.update({name: np.zeros((24, 23), np.float32)}))
    with pytest.raises(DataError, match=r"model\.safetensors") as err:
        load_pretrained(path)
    assert f"'{name}'" in str(err.value)
    assert "[24, 24]" in str(err.value) and "[23, 24]" in str(err.value)  # expected, got (Flax layout)


@pytest.mark.parametrize("name", ["encoder.layer.2.output.dense.bias", "embeddings.LayerNorm.weight",
                                  "pooler.dense.weight"])
def test_missing_tensor_raises_data_error_naming_it(tmp_path, name):
    path = _copy_with_state(tmp_path, lambda s: s.pop(name))
    with pytest.raises(DataError, match="1 missing") as err:
        load_pretrained(path)
    assert f"'{name}'" in str(err.value)


def test_prefixed_classification_state_dict_loads(pretrained):
    module, params = pretrained
    state = load_file(os.path.join(CKPT_DIR, "model.safetensors"))
    # BertForSequenceClassification layout: body under `bert.`, a head, and a position_ids buffer.
    prefixed = {f"bert.{k}": v for k, v in state.items()}
    prefixed["bert.embeddings.position_ids"] = np.arange(32, dtype=np.int64)[None]
    prefixed["classifier.weight"] = np.ones((5, 24), np.float32)
    prefixed["classifier.bias"] = np.ones((5,), np.float32)
    loaded = params_from_state_dict(prefixed, module.cfg, source="seqcls.safetensors")
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    jax.tree.map(np.testing.assert_array_equal, loaded, params)


def test_config_keeps_transformers_fields():
    with open(os.path.join(CKPT_DIR, "config.json")) as f:
        raw = json.load(f)
    cfg = BertConfig.from_json(os.path.join(CKPT_DIR, "config.json"))
    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "hidden_act", "layer_norm_eps", "type_vocab_size"):
        assert getattr(cfg, field) == raw[field], field


# ----------------------------------------------------------------------------- tokenizer

def test_tokenizer_through_pipeline_adds_cls_sep_and_counts_truncation():
    tokenizer = load_tokenizer(CKPT_DIR)
    with open(os.path.join(CKPT_DIR, "vocab.txt")) as f:
        vocab = {tok: i for i, tok in enumerate(f.read().split("\n")[:-1])}
    texts = ["Hello, you look GOOD helping me!", "ok"]
    # Lower-cased WordPiece: "helping" -> "help" "##ing".
    words = ["hello", ",", "you", "look", "good", "help", "##ing", "me", "!"]
    ids, n_truncated = tokenize(texts, tokenizer, max_len=32)
    assert n_truncated == 0
    assert all(a.dtype == np.int32 for a in ids)
    np.testing.assert_array_equal(ids[0], [vocab[t] for t in ["[CLS]", *words, "[SEP]"]])
    np.testing.assert_array_equal(ids[1], [vocab["[CLS]"], vocab["ok"], vocab["[SEP]"]])

    short, n_truncated = tokenize(texts, tokenizer, max_len=5)
    assert n_truncated == 1  # only the first text has more than 3 word pieces
    np.testing.assert_array_equal(short[0], [vocab[t] for t in ["[CLS]", *words[:3], "[SEP]"]])
    np.testing.assert_array_equal(short[1], ids[1])


# ------------------------------------------------------------------------------ attention

def _reference_attention(q, k, v, key_mask) -> np.ndarray:
    """softmax(q k^T / sqrt(Dh)) v in float64; masked keys get -1e30 (an all-masked row is uniform)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bthd,bshd->bhts", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(np.asarray(key_mask, bool)[:, None, None, :], logits, -1e30)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("bhts,bshd->bthd", probs, v)


class _ExplicitAttention(nn.Module):
    """Forces the explicit-softmax path: dropout active, but a rate so small that nothing is dropped."""

    @nn.compact
    def __call__(self, q, k, v, key_mask):
        return dot_product_attention(q, k, v, key_mask, dropout=nn.Dropout(1e-30), deterministic=False)


@pytest.fixture(scope="module")
def qkv_mask():
    kq, kk, kv = jax.random.split(jax.random.key(7), 3)
    b, t, s, h, d = 3, 5, 7, 2, 4
    q = jax.random.normal(kq, (b, t, h, d))
    k = jax.random.normal(kk, (b, s, h, d))
    v = jax.random.normal(kv, (b, s, h, d))
    key_mask = jnp.arange(s)[None, :] < jnp.array([[7], [3], [0]])  # full, partial, all masked
    return q, k, v, key_mask


def test_fused_attention_matches_float64_reference(qkv_mask):
    q, k, v, key_mask = qkv_mask
    out = dot_product_attention(q, k, v, key_mask, dropout=nn.Dropout(0.5), deterministic=True)
    chex.assert_shape(out, q.shape)
    np.testing.assert_allclose(np.asarray(out), _reference_attention(q, k, v, key_mask), atol=1e-5, rtol=0)


def test_explicit_attention_matches_float64_reference_and_fused(qkv_mask):
    q, k, v, key_mask = qkv_mask
    explicit = _ExplicitAttention().apply({}, q, k, v, key_mask, rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(np.asarray(explicit), _reference_attention(q, k, v, key_mask), atol=1e-5, rtol=0)
    fused = dot_product_attention(q, k, v, key_mask)
    np.testing.assert_allclose(np.asarray(explicit), np.asarray(fused), atol=1e-5, rtol=0)


def test_attention_without_mask_attends_everywhere(qkv_mask):
    q, k, v, _ = qkv_mask
    out = dot_product_attention(q, k, v, None)
    ones = np.ones(k.shape[:2], bool)
    np.testing.assert_allclose(np.asarray(out), _reference_attention(q, k, v, ones), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------- pooling

@pytest.fixture(scope="module")
def x_and_mask():
    x = jax.random.normal(jax.random.key(3), (3, 7, 5)) - 4.0  # all negative: a max over zeros would show
    mask = jnp.arange(7)[None, :] < jnp.array([[7], [2], [0]])
    return x, mask


def test_masked_mean_matches_numpy(x_and_mask):
    x, mask = x_and_mask
    xn, mn = np.asarray(x, np.float64), np.asarray(mask)
    out = np.asarray(masked_mean(x, mask))
    chex.assert_shape(out, (3, 5))
    np.testing.assert_allclose(out[0], xn[0].mean(0), atol=1e-6)
    np.testing.assert_allclose(out[1], xn[1, mn[1]].mean(0), atol=1e-6)
    np.testing.assert_array_equal(out[2], np.zeros(5))


def test_masked_max_matches_numpy(x_and_mask):
    x, mask = x_and_mask
    xn, mn = np.asarray(x), np.asarray(mask)
    out = np.asarray(masked_max(x, mask))
    chex.assert_shape(out, (3, 5))
    np.testing.assert_array_equal(out[0], xn[0].max(0))
    np.testing.assert_array_equal(out[1], xn[1, mn[1]].max(0))
    np.testing.assert_array_equal(out[2], np.zeros(5))
