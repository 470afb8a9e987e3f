"""Property-based tests (hypothesis) of the loader's plan, buckets and padding.

Pipeline: for random dataset sizes, lengths (some past the maximum), batch sizes and host counts,
every example appears exactly once per epoch across hosts, hosts agree on the bucket, the bucket
fits every row (or is the last one and the row is cut to the maximum), ``valid`` counts the real
rows and every padded position is zero and masked. The Loader runs on an in-memory source (a
duck-typed `Prepared`), so no TFDS is needed.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmfuse_jax import batch as batch_lib
from mmfuse_jax.data import pipeline
from mmfuse_jax.errors import ConfigError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MODALITIES = ("text", "audio", "video")


# ------------------------------------------------------------------------- in-memory dataset

class MemoryPrepared:
    """What `Loader` needs of a `Prepared`: a random-access source, stored lengths and meta."""

    def __init__(self, rows: list[dict], *, extra_labels=(), label_shape=()):
        self.rows = rows
        self.meta = {"extra_labels": list(extra_labels), "label_shape": list(label_shape)}

    def source(self, split):
        return self.rows

    def lengths(self, split):
        return {m: np.asarray([pipeline._length(r, m) for r in self.rows], np.int64) for m in MODALITIES}


def make_rows(n, lengths, dims, *, text_feats=False, label_shape=(), extra_labels=()):
    """``n`` examples; example i is recognisable: label i, every feature value i + 1 + t / 1000."""
    def ramp(i, t, d):
        return (i + 1 + np.arange(t, dtype=np.float32)[:, None] / 1000) * np.ones((1, d), np.float32)

    rows = []
    for i in range(n):
        lt, la, lv = lengths[i]
        r = {"key": f"ex{i}", "text_ids": np.arange(1, lt + 1, dtype=np.int32) + 100 * i,
             "text_type_ids": np.ones(lt, np.int32), "audio": ramp(i, la, dims["audio"]),
             "video": ramp(i, lv, dims["video"]),
             "label": np.full(label_shape, i, np.int32) if label_shape else i}
        if text_feats:
            r["text_feats"] = ramp(i, max(lt - 1, 0), dims["text"])  # feature path: a length of its own
        for k in extra_labels:
            r[k] = float(i)
        rows.append(r)
    return rows


@st.composite
def datasets(draw, max_n=40):
    """(rows, max_len, dims, options) with lengths in [0, 1.5 * max_len]: some need truncation."""
    n = draw(st.integers(0, max_n))
    max_len = {m: draw(st.integers(1, 12)) for m in MODALITIES}
    dims = {"audio": draw(st.integers(1, 3)), "video": draw(st.integers(1, 3))}
    text_feats = draw(st.booleans())
    if text_feats:
        dims["text"] = draw(st.integers(1, 3))
    lengths = [tuple(draw(st.integers(0, math.ceil(1.5 * max_len[m]))) for m in MODALITIES) for _ in range(n)]
    label_shape = draw(st.sampled_from([(), (4,)]))
    extra = draw(st.sampled_from([(), batch_lib.UNIMODAL_LABELS]))
    rows = make_rows(n, lengths, dims, text_feats=text_feats, label_shape=label_shape, extra_labels=extra)
    return rows, max_len, dims, {"label_shape": label_shape, "extra_labels": extra}


def loaders(rows, max_len, dims, opts, *, per_host, hosts, num_buckets, seed=0, shuffle=True):
    prepared = MemoryPrepared(rows, **opts)
    return [pipeline.Loader(prepared, "train", batch_size=per_host * hosts, max_len=max_len, dims=dims,
                            num_buckets=num_buckets, shuffle=shuffle, seed=seed, process_index=p,
                            process_count=hosts) for p in range(hosts)]


# ------------------------------------------------------------------------- buckets

@SETTINGS
@given(max_len=st.dictionaries(st.sampled_from(MODALITIES), st.integers(0, 600), min_size=1),
       num_buckets=st.integers(1, 9))
def test_bucket_lengths_grow_to_the_maximum(max_len, num_buckets):
    buckets = pipeline.bucket_lengths(max_len, num_buckets)
    assert len(buckets) == num_buckets
    assert buckets[-1] == {m: max(1, n) for m, n in max_len.items()}  # the last bucket is the max
    for small, big in itertools.pairwise(buckets):
        assert all(1 <= small[m] <= big[m] for m in max_len)


@pytest.mark.parametrize("num_buckets", [0, -1])
def test_no_buckets_is_a_config_error(num_buckets):
    with pytest.raises(ConfigError, match="num_buckets"):
        pipeline.bucket_lengths({"text": 8, "audio": 8, "video": 8}, num_buckets)


@SETTINGS
@given(max_len=st.fixed_dictionaries({m: st.integers(1, 50) for m in MODALITIES}), num_buckets=st.integers(1, 6),
       need=st.lists(st.tuples(*(st.integers(0, 80) for _ in MODALITIES)), max_size=8))
def test_choose_bucket_is_the_smallest_that_fits(max_len, num_buckets, need):
    buckets = pipeline.bucket_lengths(max_len, num_buckets)
    lengths = {m: np.asarray([row[j] for row in need], np.int64) for j, m in enumerate(MODALITIES)}
    b = pipeline.choose_bucket(buckets, lengths)
    fits = lambda k: all(lengths[m].max(initial=0) <= buckets[k][m] for m in MODALITIES)
    assert 0 <= b < num_buckets
    assert fits(b) or b == num_buckets - 1  # too long for every bucket: the last one, then cut
    assert not any(fits(k) for k in range(b))


# ------------------------------------------------------------------------- collate

def check_batch(batch, rows, lens, dims, *, size, label_shape=(), extra_labels=()):
    """Shapes, the valid mask, prefix masks, truncated contents and zero padding of one batch."""
    n = len(rows)
    assert batch["valid"].tolist() == [1.0] * n + [0.0] * (size - n)
    assert batch["text_ids"].shape == batch["text_mask"].shape == (size, lens["text"])
    assert batch["label"].shape == (size, *label_shape)
    for m in ("audio", "video"):
        assert batch[m].shape == (size, lens[m], dims[m]) and batch[m].dtype == np.float32
    if "text" in dims:
        assert batch["text"].shape == (size, lens["text"], dims["text"])
    else:
        assert "text" not in batch
    if not label_shape:
        batch_lib.validate(batch)
    for i in range(size):
        r = rows[i] if i < n else None
        for m, seq in (("text", "text_ids"), ("audio", "audio"), ("video", "video")):
            mask = batch[f"{m}_mask"][i]
            true_len = 0 if r is None else min(pipeline._length(r, m), lens[m])
            # The mask is a prefix of ones as long as the row (cut to the bucket), zeros after it.
            assert mask.tolist() == [1] * true_len + [0] * (lens[m] - true_len)
            pad = batch[seq][i][true_len:]
            assert not np.any(pad), f"row {i} {seq}: non-zero padding"
        if r is None:
            assert not np.any(batch["label"][i]) and not np.any(batch["audio"][i])
            continue
        t = min(len(r["text_ids"]), lens["text"])
        np.testing.assert_array_equal(batch["text_ids"][i, :t], r["text_ids"][:t])
        assert not np.any(batch["text_ids"][i, t:])
        if "text" in dims:
            k = min(len(r["text_feats"]), lens["text"])
            np.testing.assert_array_equal(batch["text"][i, :k], r["text_feats"][:k])
            assert not np.any(batch["text"][i, k:])
        for m in ("audio", "video"):
            k = min(len(r[m]), lens[m])  # longer sequences keep their first frames
            np.testing.assert_array_equal(batch[m][i, :k], r[m][:k])
        np.testing.assert_array_equal(batch["label"][i], r["label"])
        for key in extra_labels:
            assert batch[key][i] == r[key]


@SETTINGS
@given(data=datasets(max_n=8), extra_rows=st.integers(0, 4), lens=st.fixed_dictionaries(
    {m: st.integers(1, 12) for m in MODALITIES}))
def test_collate_pads_masks_and_truncates(data, extra_rows, lens):
    rows, _, dims, opts = data
    size = len(rows) + extra_rows
    if size == 0:
        size = 1
    batch = pipeline.collate(rows, batch_size=size, lens=lens, dims=dims, **opts)
    check_batch(batch, rows, lens, dims, size=size, **opts)


def test_collate_more_rows_than_the_batch_is_a_config_error():
    rows = make_rows(3, [(2, 2, 2)] * 3, {"audio": 2, "video": 2})
    with pytest.raises(ConfigError, match="3 rows"):
        pipeline.collate(rows, batch_size=2, lens={"text": 2, "audio": 2, "video": 2},
                         dims={"audio": 2, "video": 2})


# ------------------------------------------------------------------------- the Loader's plan

@SETTINGS
@given(data=datasets(), per_host=st.integers(1, 6), hosts=st.integers(1, 4), num_buckets=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 10_000), shuffle=st.booleans())
def test_every_example_once_per_epoch_across_hosts(data, per_host, hosts, num_buckets, seed, epoch, shuffle):
    rows, max_len, dims, opts = data
    hs = loaders(rows, max_len, dims, opts, per_host=per_host, hosts=hosts, num_buckets=num_buckets,
                 seed=seed, shuffle=shuffle)
    batch_size, n = per_host * hosts, len(rows)
    assert all(len(h) == math.ceil(n / batch_size) for h in hs)
    seen, valid = [], 0
    for b in range(len(hs[0])):
        plans = [h.plan(epoch, b) for h in hs]
        assert len({bucket for _, bucket in plans}) == 1  # every host pads to the same bucket
        batches = [h.load(epoch, b) for h in hs]
        lens = hs[0].buckets[plans[0][1]]
        global_rows = [i for idx, _ in plans for i in idx]
        for m in MODALITIES:  # the bucket fits the whole global batch, or is the last one (rows cut)
            need = max((pipeline._length(rows[i], m) for i in global_rows), default=0)
            assert need <= lens[m] or plans[0][1] == num_buckets - 1
        for (idx, _), h_batch in zip(plans, batches):
            assert len(idx) <= per_host
            check_batch(h_batch, [rows[i] for i in idx], lens, dims, size=per_host, **opts)
            valid += int(h_batch["valid"].sum())
        seen += global_rows
    assert sorted(seen) == list(range(n)) and valid == n  # each example exactly once
    if not shuffle:
        assert seen == list(range(n))


@SETTINGS
@given(n=st.integers(10, 200), seed=st.integers(0, 2**32 - 1), epoch=st.integers(0, 10_000),
       other=st.integers(1, 100))
def test_order_is_seeded_and_changes_every_epoch(n, seed, epoch, other):
    rows = make_rows(n, [(1, 1, 1)] * n, {"audio": 1, "video": 1})
    make = lambda s: loaders(rows, {"text": 4, "audio": 4, "video": 4}, {"audio": 1, "video": 1}, {},
                             per_host=4, hosts=1, num_buckets=2, seed=s)[0]
    a, b = make(seed), make(seed)
    np.testing.assert_array_equal(a.order(epoch), b.order(epoch))  # same seed: same order
    assert sorted(a.order(epoch)) == list(range(n))
    # P(two permutations of >= 10 items agree) <= 1/10! ~ 3e-7 per example
    assert not np.array_equal(a.order(epoch), a.order(epoch + other))


@settings(max_examples=8, deadline=None)
@given(data=datasets(max_n=25), per_host=st.integers(1, 5), start=st.integers(0, 8), epoch=st.integers(0, 99))
def test_epoch_from_a_resume_position_gives_the_remaining_batches(data, per_host, start, epoch):
    rows, max_len, dims, opts = data
    loader = loaders(rows, max_len, dims, opts, per_host=per_host, hosts=1, num_buckets=3, seed=7)[0]
    full = [loader.load(epoch, b) for b in range(len(loader))]
    rest = list(loader.epoch(epoch, start))  # grain threads, in order
    assert len(rest) == max(0, len(loader) - start)
    for want, got in zip(full[start:], rest):
        assert want.keys() == got.keys()
        for k in want:
            np.testing.assert_array_equal(want[k], got[k])


@given(per_host=st.integers(1, 5), hosts=st.integers(2, 5), extra=st.integers(1, 4))
@settings(max_examples=10, deadline=None)
def test_batch_not_divisible_by_hosts_is_a_config_error(per_host, hosts, extra):
    extra = extra % hosts or 1
    with pytest.raises(ConfigError, match="divisible"):
        pipeline.Loader(MemoryPrepared(make_rows(3, [(1, 1, 1)] * 3, {"audio": 1, "video": 1})), "train",
                        batch_size=per_host * hosts + extra, max_len={"text": 2, "audio": 2, "video": 2},
                        dims={"audio": 1, "video": 1}, num_buckets=1, shuffle=True, process_count=hosts)
