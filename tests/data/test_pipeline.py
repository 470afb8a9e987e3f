"""prepare + Loader: caching, buckets, valid mask, seeded order, resume position, host slices."""
from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import tiny_config

from mmfuse_jax import batch as batch_lib
from mmfuse_jax.data import pipeline


@pytest.fixture(scope="module")
def prepared(tiny_synthetic, tmp_path_factory):
    c = tiny_config("early_fusion", tiny_synthetic)
    c.dataset.prepared_dir = str(tmp_path_factory.mktemp("prepared"))
    return c, pipeline.Prepared.open(c.dataset)


def make_loader(prepared, split="train", **kw):
    c, p = prepared
    args = {"batch_size": 12, "max_len": c.dataset.max_len, "dims": c.dataset.feat_dims, "num_buckets": 4,
                "shuffle": True, "seed": 3}
    args.update(kw)
    return pipeline.Loader(p, split, **args)


def test_bucket_lengths_and_choice():
    buckets = pipeline.bucket_lengths({"text": 16, "audio": 64, "video": 30}, 4)
    assert buckets == [{"text": 4, "audio": 16, "video": 8}, {"text": 8, "audio": 32, "video": 15},
                       {"text": 12, "audio": 48, "video": 23}, {"text": 16, "audio": 64, "video": 30}]
    need = {"text": np.array([3, 4]), "audio": np.array([10, 33]), "video": np.array([2])}
    assert pipeline.choose_bucket(buckets, need) == 2  # audio 33 needs the third bucket
    assert pipeline.choose_bucket(buckets, {"text": np.array([1]), "audio": np.array([1]),
                                            "video": np.array([1])}) == 0


def test_collate_pads_rows_and_lengths():
    rows = [{"text_ids": np.array([2, 7, 3], np.int32), "text_type_ids": np.zeros(3, np.int32),
             "audio": np.ones((5, 4), np.float32), "video": np.ones((2, 3), np.float32), "label": 4},
            {"text_ids": np.array([2, 3], np.int32), "text_type_ids": np.zeros(2, np.int32),
             "audio": np.ones((1, 4), np.float32), "video": np.ones((3, 3), np.float32), "label": 1}]
    b = pipeline.collate(rows, batch_size=3, lens={"text": 5, "audio": 6, "video": 3},
                         dims={"audio": 4, "video": 3})
    batch_lib.validate(b)
    assert b["text_ids"].shape == (3, 5) and b["audio"].shape == (3, 6, 4) and b["video"].shape == (3, 3, 3)
    np.testing.assert_array_equal(b["valid"], [1, 1, 0])
    np.testing.assert_array_equal(b["text_mask"].sum(1), [3, 2, 0])
    np.testing.assert_array_equal(b["audio_mask"].sum(1), [5, 1, 0])
    np.testing.assert_array_equal(b["label"], [4, 1, 0])
    assert b["audio"][1, 1:].sum() == 0 and b["audio"][2].sum() == 0


def test_prepare_is_cached_and_redone_when_the_release_changes(prepared, tiny_synthetic, tmp_path):
    c, p = prepared
    meta = os.path.join(p.root, "meta.json")
    mtime = os.stat(meta).st_mtime_ns
    assert pipeline.prepare(c.dataset, verbose=False) == p.root
    assert os.stat(meta).st_mtime_ns == mtime  # unchanged config and files: nothing rewritten
    assert p.meta["sizes"] == {"train": 96, "dev": 40, "test": 40}
    c2 = c.copy_and_resolve_references()
    c2.dataset.max_len.audio = 20  # a different config is a different prepared dataset
    assert pipeline._fingerprint(c2.dataset) != p.meta["fingerprint"]


def test_epoch_covers_every_example_once_in_a_seeded_order(prepared):
    loader = make_loader(prepared)
    assert len(loader) == 8  # 96 / 12
    keys0 = [loader.source[int(i)]["key"] for i in loader.order(0)]
    assert len(set(keys0)) == 96
    np.testing.assert_array_equal(loader.order(0), make_loader(prepared).order(0))  # same seed: same order
    assert not np.array_equal(loader.order(0), loader.order(1))  # each epoch reshuffles
    assert not np.array_equal(loader.order(0), make_loader(prepared, seed=4).order(0))
    labels = np.concatenate([b["label"][b["valid"] > 0] for b in loader.epoch(0)])
    expected = [int(loader.source[int(i)]["label"]) for i in loader.order(0)]
    np.testing.assert_array_equal(labels, expected)


def test_last_partial_batch_is_padded_with_invalid_rows(prepared):
    loader = make_loader(prepared, "dev", batch_size=12, shuffle=False)
    batches = list(loader.epoch(0))
    assert len(batches) == 4 and all(b["valid"].shape == (12,) for b in batches)
    assert batches[-1]["valid"].sum() == 40 - 36
    for b in batches:
        batch_lib.validate(b)
        assert b["text_ids"].shape[1] in [bl["text"] for bl in loader.buckets]


def test_resume_position_gives_the_remaining_batches(prepared):
    loader = make_loader(prepared)
    full = list(loader.epoch(2))
    rest = list(loader.epoch(2, start=5))
    assert len(rest) == 3
    for a, b in zip(full[5:], rest):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_hosts_split_each_global_batch(prepared):
    single = make_loader(prepared)
    hosts = [make_loader(prepared, process_index=i, process_count=2) for i in range(2)]
    for b in range(len(single)):
        whole = single.load(1, b)
        parts = [h.load(1, b) for h in hosts]
        assert parts[0]["audio"].shape == parts[1]["audio"].shape  # hosts agree on the bucket
        for k in whole:
            np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), whole[k])


def test_few_shapes_per_split(prepared):
    loader = make_loader(prepared, batch_size=4)
    shapes = {b["audio"].shape for b in loader.epoch(0)} | {b["audio"].shape for b in loader.epoch(1)}
    assert 1 <= len(shapes) <= 4


def test_two_datasets_prepare_in_one_process(tiny_synthetic, tmp_path):
    for i in range(2):
        c = tiny_config("text_only", tiny_synthetic)
        c.dataset.prepared_dir = str(tmp_path / f"p{i}")
        c.dataset.max_len.audio = 40 + i
        assert os.path.exists(os.path.join(pipeline.prepare(c.dataset, verbose=False), "meta.json"))


def test_decoded_row_cache_gives_the_same_batches_within_its_budget(prepared):
    plain, cached = make_loader(prepared), make_loader(prepared, cache_mb=1024)
    for e in (0, 1):  # epoch 0 fills the cache, epoch 1 reads from it
        for a, b in zip(plain.epoch(e), cached.epoch(e), strict=True):
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert len(cached._cache) == cached.n and not plain._cache
    row_bytes = sum(getattr(v, "nbytes", 64) for v in plain.source[0].values())
    small = make_loader(prepared, cache_mb=5.5 * row_bytes / 2 ** 20)  # room for about 5 rows
    for a, b in zip(plain.epoch(2), small.epoch(2), strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert 1 <= len(small._cache) <= 6
