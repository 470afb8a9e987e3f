"""The dataset presets table: the released benchmarks' sizes and sources, one set of defaults, and
registration (a test-local dataset)."""
from __future__ import annotations

import pytest

from configs import datasets
from mmfuse_jax.data import synthetic
from mmfuse_jax.data.formats import FORMATS
from mmfuse_jax.data.synthetic import mintrec2 as synthetic_mintrec2
from mmfuse_jax.errors import ConfigError


@pytest.mark.parametrize("name,dims,lens", [("mmsa_mosi", (5, 20), (50, 375, 500)),
                                            ("mmsa_mosei", (74, 35), (50, 500, 500)),
                                            ("sims", (33, 709), (39, 400, 55)),
                                            ("simsv2", (25, 177), (50, 925, 232))])
def test_mmsa_presets(name, dims, lens):
    ds = datasets.dataset(name)
    short = name.removeprefix("mmsa_")
    assert (ds.format, ds.name, ds.task, ds.metric, ds.nonfinite) == ("mmsa", short, "regression", short, "zero")
    assert (ds.feat_dims.audio, ds.feat_dims.video) == dims
    assert (ds.max_len.text, ds.max_len.audio, ds.max_len.video) == lens
    assert ("chinese" in ds.bert_path) == name.startswith("sims")


def test_mintrec2_presets():
    ds = datasets.dataset("mintrec2")
    assert (ds.format, ds.root, ds.bert_path, ds.metric) == (
        "mintrec2", "data/MIntRec2.0", "pretrained/bert-large-uncased", "mintrec2")
    assert dict(ds.feat_dims) == {"audio": 768, "video": 256}
    assert dict(ds.max_len) == {"text": 50, "audio": 400, "video": 180}
    assert tuple(ds.read_options.oos_splits) == ("test",) and ds.oos_label == 30 and ds.doc_scale == 1.0
    assert not len(ds.synthetic)
    tiny = datasets.dataset("synthetic_mintrec2_tiny")
    assert tiny.synthetic.generator == "mintrec2" and tiny.synthetic.train == synthetic_mintrec2.TINY.train
    assert tiny.feat_dims.audio == synthetic_mintrec2.TINY.audio_dim and tiny.format == "mintrec2"


def test_every_preset_has_the_defaults_a_known_format_and_a_known_generator():
    for name in datasets.DATASETS:
        ds = datasets.dataset(name)
        assert set(datasets.DEFAULTS) <= set(ds) and ds.format in FORMATS, name
        assert {"audio", "video"} <= set(ds.feat_dims) and {"text", "audio", "video"} == set(ds.max_len), name
        assert not len(ds.synthetic) or ds.synthetic.generator in synthetic.GENERATORS, name
        assert ds.name == name.removeprefix("mmsa_").removeprefix("mult_"), name


def test_presets_are_fresh_copies():
    a = datasets.dataset("mintrec2")
    a.read_options.oos_splits = ("train", "dev", "test")
    a.feat_dims.audio = 1
    assert tuple(datasets.dataset("mintrec2").read_options.oos_splits) == ("test",)
    assert datasets.dataset("mintrec2").feat_dims.audio == 768


def test_register_dataset():
    fields = {"format": "mintrec", "root": "/tmp/toy", "feat_dims": {"audio": 3, "video": 2},
              "max_len": {"text": 8, "audio": 4, "video": 4}}
    datasets.register_dataset("toy_registered", fields)
    try:
        ds = datasets.dataset("toy_registered")
        assert (ds.name, ds.num_buckets, ds.nonfinite, ds.feat_dims.audio) == ("toy_registered", 4, "error", 3)
        with pytest.raises(ConfigError, match="already registered"):
            datasets.register_dataset("toy_registered", fields)
        with pytest.raises(ConfigError, match=r"missing fields \['root'\]"):
            datasets.register_dataset("toy_other", {k: v for k, v in fields.items() if k != "root"})
    finally:
        datasets.DATASETS.pop("toy_registered")
    with pytest.raises(ConfigError, match="unknown dataset preset 'mosj'"):
        datasets.dataset("mosj")
