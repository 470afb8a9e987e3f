"""The one synthetic-data entry point: `ensure_dataset(ds)` dispatches on ``ds.synthetic.generator``,
writes the same bytes as the generator itself, does nothing for real datasets or finished writes;
and the one random-BERT writer every generator shares."""
from __future__ import annotations

import filecmp
import json
import os

import ml_collections
import pytest

from configs import datasets
from mmfuse_jax.data import ensure_dataset, synthetic
from mmfuse_jax.data.synthetic import mmsa as synthetic_mmsa
from mmfuse_jax.encoders.bert import BertConfig
from mmfuse_jax.errors import ConfigError

MMSA = synthetic_mmsa.SyntheticMMSASpec(train=6, dev=3, test=3, text_len=12, audio_len=(6, 16), video_len=(4, 10),
                                        audio_dim=6, video_dim=5, bert_hidden=16, bert_layers=1)


def _same_tree(a: str, b: str) -> None:
    names = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert names and names == sorted(os.path.relpath(os.path.join(d, f), b) for d, _, fs in os.walk(b) for f in fs)
    for name in names:
        assert filecmp.cmp(os.path.join(a, name), os.path.join(b, name), shallow=False), name


def test_every_generator_round_trips_through_the_config():
    for name, module in synthetic.GENERATORS.items():
        spec = module.SPEC(train=7, seed=5)
        fields = synthetic.config_fields(name, spec)
        assert fields["generator"] == name == module.NAME and set(fields) == {"generator", *module.CONFIG_FIELDS}
        via_json = json.loads(ml_collections.ConfigDict(fields).to_json())  # tuples come back as lists
        assert synthetic.spec_of(via_json) == spec


def test_ensure_writes_what_the_generator_writes_once(tmp_path):
    ds = datasets.dataset("synthetic_mmsa_tiny")
    ds.root = str(tmp_path / "via_ensure")
    ds.synthetic = ml_collections.ConfigDict(synthetic.config_fields("mmsa", MMSA))
    ds.synthetic.audio_len = [6, 16]  # as a JSON or command-line round trip gives it
    ensure_dataset(ds)
    synthetic_mmsa.write(str(tmp_path / "direct"), MMSA)
    _same_tree(ds.root, str(tmp_path / "direct"))
    done = os.path.join(ds.root, synthetic_mmsa.COMPLETE)
    stamp = os.path.getmtime(done)
    ensure_dataset(ds)  # complete already: not written again
    assert os.path.getmtime(done) == stamp


def test_real_datasets_and_empty_synthetic_are_left_alone(tmp_path):
    for name in ("mintrec", "mintrec2", "sims", "mult_mosi", "urfunny", "mustard", "synthetic_tiny"):
        ds = datasets.dataset(name)
        ds.root = str(tmp_path / name)
        if name == "synthetic_tiny":
            ds.synthetic = {}  # a test that wrote its own copy
        ensure_dataset(ds)
        assert not os.path.exists(ds.root), name


def test_unknown_generator_is_a_config_error(tmp_path):
    ds = datasets.dataset("synthetic_tiny")
    ds.root, ds.synthetic.generator = str(tmp_path / "x"), "mintrec3"
    with pytest.raises(ConfigError, match=r"synthetic.generator='mintrec3': expected one of \['mintrec', 'mintrec2'"):
        ensure_dataset(ds)


def test_random_bert_writer(tmp_path):
    vocab = [*synthetic.SPECIAL_TOKENS, "hello", "world"]
    synthetic.write_random_bert(str(tmp_path), vocab, hidden=8, layers=1, heads=2, seed=3, max_positions=70,
                                dropout=0.0)
    cfg = BertConfig.from_json(str(tmp_path / "config.json"))
    assert (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size, cfg.max_position_embeddings) == (7, 8, 32, 70)
    assert cfg.hidden_dropout_prob == cfg.attention_probs_dropout_prob == 0.0
    assert (tmp_path / "vocab.txt").read_text().split() == vocab
