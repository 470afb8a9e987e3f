"""Length buckets from the train histogram ('auto'), batches grouped by bucket, the padded fraction."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import tiny_config

from mmfuse_jax.data import buckets, pipeline
from mmfuse_jax.errors import ConfigError


def _padding(lengths, bounds):
    lens = np.asarray(lengths)
    return sum(min(b for b in bounds if b >= v) - v for v in lens)


@pytest.mark.parametrize("seed", range(4))
def test_boundaries_minimise_the_padding_among_all_choices(seed):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(10), 0.5, 200).round(), 1, 40).astype(int)
    got = buckets.boundaries(lengths, 40, 3, multiple=4)
    assert got[-1] == 40 and got == sorted(set(got)) and len(got) <= 3
    assert all(b % 4 == 0 for b in got)
    cands = sorted({4 * -(-int(v) // 4) for v in lengths} - {40})
    best = min(_padding(lengths, [*c, 40]) for k in range(3) for c in itertools.combinations(cands, k))
    assert _padding(lengths, got) == best


def test_auto_buckets_per_modality_and_the_maximum_last():
    lens = {"text": [3, 4, 5, 20], "audio": [50] * 4}
    got = buckets.auto_buckets(lens, {"text": 24, "audio": 64, "video": 8}, 4)
    assert got[-1] == {"text": 24, "audio": 64, "video": 8}
    assert got == [{"text": 4, "audio": 52, "video": 8}, {"text": 8, "audio": 52, "video": 8},
                   {"text": 24, "audio": 64, "video": 8}]
    with pytest.raises(ConfigError, match="dataset.buckets='sorted'"):
        buckets.check_scheme("sorted")


def test_grouped_batches_and_padded_fraction():
    lengths = {"text": np.array([2, 9, 3, 10, 4, 11, 1])}
    bk = [{"text": 4}, {"text": 12}]
    rows = buckets.bucket_of(bk, lengths)
    np.testing.assert_array_equal(rows, [0, 1, 0, 1, 0, 1, 0])
    batches = buckets.group_batches(np.arange(7), rows, 3, None)
    assert [(list(i), k) for i, k in batches] == [([0, 2, 4], 0), ([6], 0), ([1, 3, 5], 1)]
    frac = buckets.padded_fraction(batches, bk, lengths, 3)["text"]
    assert frac == pytest.approx(1 - 40 / (3 * 4 + 3 * 4 + 3 * 12))


@pytest.fixture(scope="module")
def prepared(tiny_synthetic, tmp_path_factory):
    c = tiny_config("early_fusion", tiny_synthetic)
    c.dataset.prepared_dir = str(tmp_path_factory.mktemp("prepared_buckets"))
    return c, pipeline.Prepared.open(c.dataset)


def _loader(prepared, scheme, **kw):
    c, p = prepared
    args = {"batch_size": 8, "max_len": c.dataset.max_len, "dims": c.dataset.feat_dims, "num_buckets": 4,
            "shuffle": True, "seed": 3, "buckets": scheme, **kw}
    return pipeline.Loader(p, "train", **args)


def test_auto_loader_covers_the_split_in_few_shapes_with_less_padding(prepared):
    c, p = prepared
    assert p.meta["buckets"][-1] == dict(c.dataset.max_len)  # stored at prepare time
    auto, fixed = _loader(prepared, "auto"), _loader(prepared, "fixed")
    assert auto.buckets == p.meta["buckets"]
    assert len(auto) == len(_loader(prepared, "auto")) >= len(fixed)
    for epoch in (0, 1):
        batches = list(auto.epoch(epoch))
        assert len(batches) == len(auto)
        keys = [k for b in batches for k in b["label"][b["valid"] > 0].tolist()]
        assert len(keys) == 96
        shapes = {(b["text_ids"].shape, b["audio"].shape, b["video"].shape) for b in batches}
        assert len(shapes) <= 4
        for b in batches:  # a batch holds rows of one bucket: its rows reach into its length
            assert b["text_mask"].sum(1).max() <= b["text_ids"].shape[1]
    rest = list(auto.epoch(1, start=3))
    for a, b in zip(list(auto.epoch(1))[3:], rest):
        np.testing.assert_array_equal(a["audio"], b["audio"])
    got, before = auto.padded_fraction(), fixed.padded_fraction()
    assert sum(got.values()) < sum(before.values()), (got, before)  # what auto_buckets minimises
    evaluation = _loader(prepared, "auto", shuffle=False)  # evaluation keeps the split's order
    np.testing.assert_array_equal(np.concatenate([evaluation.plan(0, b)[0] for b in range(len(evaluation))]),
                                  np.arange(96))
