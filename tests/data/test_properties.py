"""Property-based tests (hypothesis) of the loader's plan, buckets and padding, and of the readers.

Pipeline: for random dataset sizes, lengths (some past the maximum), batch sizes and host counts,
every example appears exactly once per epoch across hosts, hosts agree on the bucket, the bucket
fits every row (or is the last one and the row is cut to the maximum), ``valid`` counts the real
rows and every padded position is zero and masked. The Loader runs on an in-memory source (a
duck-typed `Prepared`), so no TFDS is needed.

Readers: a small release written in the official layout (MIntRec TSV + feature pickles, the MMSA
pickle, the MulT pickle) gets one random corruption (a missing column or key, an unknown label,
arrays of the wrong rank/size/dtype, NaN/inf, empty sequences, truncated or garbage files, ...).
Reading it either succeeds with well-formed examples (NaN/inf replaced under ``nonfinite='zero'``)
or raises `DataError` naming the corrupted file: never a KeyError/IndexError/ValueError traceback.
"""
from __future__ import annotations

import csv
import itertools
import math
import os
import pickle
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_mintrec
from mmfuse_jax import batch as batch_lib
from mmfuse_jax.data import pipeline
from mmfuse_jax.data.formats import mintrec, mmsa, mult
from mmfuse_jax.errors import ConfigError, DataError

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


# ------------------------------------------------------------------------- reader corruptions

def bad_value(kind: str, orig, rng):
    """A replacement for one array of a release: ``kind`` names what is wrong with it."""
    x = np.asarray(orig) if not isinstance(orig, list) else orig
    shape = np.shape(x) if not isinstance(x, list) else (len(x),)
    if kind == "none":
        return None
    if kind == "string":
        return "not an array"
    if kind == "strings":
        return [f"s{i}" for i in range(max(shape[0] if shape else 1, 1))]
    if kind == "dict":
        return {"a": 1}
    if kind == "scalar":
        return np.float32(1.5)
    if kind == "empty":
        return np.zeros((0, *shape[1:]), np.float32)
    if kind == "rank_down":
        return np.zeros(shape[:-1] if shape else (1,), np.float32)
    if kind == "rank_up":
        return np.zeros((*shape, 2), np.float32)
    if kind == "first_dim":
        return np.zeros(((shape[0] if shape else 1) + 1, *shape[1:]), np.float32)
    if kind == "last_dim":
        return np.zeros((*shape[:-1], (shape[-1] if shape else 1) + 1), np.float32)
    if kind == "ragged":
        return [np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32)]
    if kind == "bool":
        return np.ones(shape, bool)
    if kind == "int":
        return np.ones(shape, np.int64)
    if kind == "huge":  # finite in float64, inf once read as float32
        return np.full(shape, 1e300)
    if kind in ("nan", "inf"):
        try:
            y = np.array(x, dtype=np.float64, copy=True)
        except (ValueError, TypeError):  # ids, raw text: a float array with one NaN instead
            y = np.zeros(shape, np.float64)
        if y.size:
            y.reshape(-1)[rng.integers(0, y.size)] = np.nan if kind == "nan" else -np.inf
        return y
    raise AssertionError(kind)


BAD_KINDS = ("none", "string", "strings", "dict", "scalar", "empty", "rank_down", "rank_up", "first_dim",
             "last_dim", "ragged", "bool", "int", "huge", "nan", "inf")
FILE_KINDS = ("truncate", "garbage", "empty_file", "missing", "not_a_dict", "directory")
# Values past float32 ("huge") warn when cast, then count as inf: expected, not a failure.
reader_warnings = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                             "ignore:invalid value encountered:RuntimeWarning")


def corrupt_file(path: str, kind: str, rng) -> None:
    if kind == "truncate":
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            f.truncate(int(rng.integers(0, max(size - 1, 1))))
    elif kind == "garbage":
        with open(path, "wb") as f:
            f.write(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
    elif kind == "empty_file":
        open(path, "wb").close()
    elif kind == "missing":
        os.remove(path)
    elif kind == "not_a_dict":
        with open(path, "wb") as f:
            pickle.dump([1, 2, 3], f)
    elif kind == "directory":
        os.remove(path)
        os.makedirs(path)
    else:
        raise AssertionError(kind)


def check_examples(splits, feat_dims, max_lens, *, regression: bool):
    """What every reader promises of a successful read."""
    for rows in splits.values():
        assert rows
        for ex in rows:
            for m in ("audio", "video"):
                x = ex[m]
                assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == feat_dims[m]
                assert x.shape[0] <= max_lens[m] and np.isfinite(x).all()
            if "text_feats" in ex:
                assert ex["text_feats"].dtype == np.float32 and ex["text_feats"].shape[1] == feat_dims["text"]
                assert len(ex["text_feats"]) <= max_lens["text"] and np.isfinite(ex["text_feats"]).all()
            assert np.all(np.isfinite(np.asarray(ex["label"], np.float64)))
            for k in batch_lib.UNIMODAL_LABELS:
                if k in ex:
                    assert np.isfinite(ex[k])
            if not regression:
                assert np.issubdtype(np.asarray(ex["label"]).dtype, np.integer)


def expect_clean_outcome(read, corrupted: str, check) -> None:
    """``read()`` succeeds (then ``check(result)``) or raises a DataError naming ``corrupted``."""
    try:
        result = read()
    except DataError as e:
        assert e.path == corrupted or e.path.startswith(corrupted + os.sep), (e.path, corrupted, str(e))
        assert e.path in str(e)
        return
    check(result)


# MIntRec: TSV + two feature pickles --------------------------------------------------------

MINTREC_DIMS = {"audio": 3, "video": 2}
MINTREC_LENS = {"text": 30, "audio": 5, "video": 4}
TSV_KINDS = ("drop_column", "unknown_label", "blank_line", "extra_column", "header_only", "bad_header",
             "not_utf8", "huge_field", "truncate", "garbage", "empty_file", "missing", "directory")


def mintrec_release(root, rng):
    rows = []
    for split, n in (("train", 3), ("dev", 2), ("test", 2)):
        for j in range(n):
            rows.append((split, f"S0{j}", f"E{split[:2]}", str(j), f"some words {j}",
                         mintrec.LABELS[int(rng.integers(0, len(mintrec.LABELS)))],
                         int(rng.integers(1, 8)), int(rng.integers(1, 6))))
    write_mintrec(root, rows, audio_dim=MINTREC_DIMS["audio"], video_dim=MINTREC_DIMS["video"],
                  extra_keys=1, seed=int(rng.integers(0, 1000)))
    return [r for r in rows]


def corrupt_tsv(path, kind, rng):
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f, delimiter="\t"))
    i = int(rng.integers(0, len(lines)))
    if kind == "drop_column":
        lines[i] = lines[i][:-1] if i else lines[i][1:]
    elif kind == "unknown_label":
        lines[max(i, 1)][4] = rng.choice(["Sing", "", "complain", "Ask  for help", "12"])
    elif kind == "blank_line":
        lines.insert(max(i, 1), [])
    elif kind == "extra_column":
        lines[i].append("extra")
    elif kind == "header_only":
        lines = lines[:1]
    elif kind == "bad_header":
        lines[0][int(rng.integers(0, 5))] = "nope"
    if kind in ("drop_column", "unknown_label", "blank_line", "extra_column", "header_only", "bad_header"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(lines)
    elif kind == "not_utf8":
        with open(path, "ab") as f:
            f.write(b"S9\tE9\t9\t\xff\xfe caf\xe9\tGreet\n")
    elif kind == "huge_field":  # past the csv module's field limit (128 KiB)
        with open(path, "a", encoding="utf-8") as f:
            f.write("S9\tE9\t9\t" + "x" * 200_000 + "\tGreet\n")
    else:
        corrupt_file(path, kind, rng)


@reader_warnings
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), target=st.sampled_from(["tsv", "audio", "video"]),
       tsv_kind=st.sampled_from(TSV_KINDS), file_kind=st.sampled_from(FILE_KINDS + ("entry",) * 6),
       value_kind=st.sampled_from(BAD_KINDS + ("missing_key", "video_list")), nonfinite=st.sampled_from(["error", "zero"]))
def test_mintrec_corruptions_raise_data_error_naming_the_file(seed, target, tsv_kind, file_kind, value_kind,
                                                               nonfinite):
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "MIntRec")
        rows = mintrec_release(root, rng)
        if target == "tsv":
            corrupted = os.path.join(root, f"{rng.choice(['train', 'dev', 'test'])}.tsv")
            corrupt_tsv(corrupted, tsv_kind, rng)
        else:
            corrupted = os.path.join(root, mintrec.AUDIO_PKL if target == "audio" else mintrec.VIDEO_PKL)
            if file_kind != "entry":
                corrupt_file(corrupted, file_kind, rng)
            else:
                with open(corrupted, "rb") as f:
                    feats = pickle.load(f)
                _, season, episode, clip, *_ = rows[int(rng.integers(0, len(rows)))]
                key = f"{season}_{episode}_{clip}"
                if value_kind == "missing_key":
                    del feats[key]
                elif value_kind == "video_list":  # the release's list of (1, D) arrays, one of them wrong
                    feats[key] = [np.zeros((1, MINTREC_DIMS[target]), np.float32),
                                  np.zeros((1, MINTREC_DIMS[target] + 1), np.float32)]
                else:
                    orig = feats[key]
                    orig = np.stack(orig) if isinstance(orig, list) else orig
                    feats[key] = bad_value(value_kind, orig, rng)
                with open(corrupted, "wb") as f:
                    pickle.dump(feats, f)

        def check(result):
            splits, report = result
            check_examples(splits, MINTREC_DIMS, MINTREC_LENS, regression=False)
            if value_kind in ("nan", "inf", "huge") and target != "tsv" and file_kind == "entry":
                assert nonfinite == "zero" and report.nonfinite_replaced  # 'error' must have raised

        expect_clean_outcome(lambda: mintrec.read(root, feat_dims=MINTREC_DIMS, max_lens=MINTREC_LENS,
                                                  nonfinite=nonfinite), corrupted, check)


# MMSA: one pickle of three splits ------------------------------------------------------------

MMSA_DIMS = {"audio": 4, "video": 3}
MMSA_LENS = {"text": 9, "audio": 12, "video": 7}
MMSA_KEYS = ("id", "raw_text", "text", "text_bert", "audio", "vision", "audio_lengths", "vision_lengths",
             "regression_labels", "regression_labels_T", "regression_labels_A", "classification_labels")
LENGTH_KINDS = ("negative", "too_long", "fraction", "nan_length")


def mmsa_split(rng, n):
    from test_mmsa import make_split

    return make_split(rng, n)


@reader_warnings
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), where=st.sampled_from(["train", "valid", "test"]),
       key=st.sampled_from(MMSA_KEYS), kind=st.sampled_from(BAD_KINDS + LENGTH_KINDS + ("drop", "short_list",
                                                                                        "bad_mask")),
       file_kind=st.sampled_from(FILE_KINDS + ("split_not_dict", "drop_split") + ("entry",) * 8),
       text_feats=st.booleans(), nonfinite=st.sampled_from(["error", "zero"]))
def test_mmsa_corruptions_raise_data_error_naming_the_file(seed, where, key, kind, file_kind, text_feats, nonfinite):
    rng = np.random.default_rng(seed)
    data = {s: mmsa_split(rng, n) for s, n in (("train", 4), ("valid", 3), ("test", 2))}
    split = data[where]
    if file_kind == "split_not_dict":
        data[where] = list(split.values())
    elif file_kind == "drop_split":
        del data[where]
    elif file_kind == "entry":
        if kind == "drop":
            del split[key]
        elif kind == "short_list":  # fewer entries than examples
            split[key] = list(split[key])[:-1]
        elif kind == "bad_mask":  # attention mask with a hole: not a leading mask
            split["text_bert"][0, 1, 1] = 0
        elif kind in LENGTH_KINDS:
            lens = np.asarray(split["audio_lengths"], np.float64)
            lens[int(rng.integers(0, len(lens)))] = {"negative": -1, "too_long": 99, "fraction": 1.5,
                                                     "nan_length": np.nan}[kind]
            split["audio_lengths"] = lens
        else:
            split[key] = bad_value(kind, split[key], rng)
    feat_dims = {**MMSA_DIMS, **({"text": 8} if text_feats else {})}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "Processed", "unaligned_39.pkl")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
        if file_kind in FILE_KINDS:
            corrupt_file(path, file_kind, rng)
        if file_kind == "missing":
            path = tmp  # nothing to find in the folder: the error names the folder

        def check(result):
            splits, _ = result
            check_examples(splits, feat_dims, MMSA_LENS, regression=True)
            assert {k: len(v) for k, v in splits.items()} == {"train": 4, "dev": 3, "test": 2}
            for rows in splits.values():
                for ex in rows:
                    if "text_ids" not in ex:  # no text_bert: prepare tokenizes raw_text instead
                        assert text_feats and isinstance(ex["text"], str)
                        continue
                    assert ex["text_ids"].dtype == np.int32 and np.all(ex["text_ids"] >= 0)
                    assert len(ex["text_ids"]) == len(ex["text_type_ids"]) and np.all(ex["text_type_ids"] >= 0)

        expect_clean_outcome(lambda: mmsa.read(tmp, feat_dims=feat_dims, max_lens=MMSA_LENS, nonfinite=nonfinite),
                             path, check)


# MulT: one pickle of three splits (MOSI regression, IEMOCAP four binary labels) -----------------

MULT_DIMS = {"text": 6, "audio": 3, "video": 4}
MULT_LENS = {"text": 5, "audio": 6, "video": 4}
MULT_KEYS = ("text", "audio", "vision", "labels", "id")


@reader_warnings
@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), name=st.sampled_from(["mosi", "iemocap"]),
       where=st.sampled_from(["train", "valid", "test"]), key=st.sampled_from(MULT_KEYS),
       kind=st.sampled_from(BAD_KINDS + ("drop", "short_list")),
       file_kind=st.sampled_from(FILE_KINDS + ("split_not_dict", "drop_split", "int_keys") + ("entry",) * 8),
       nonfinite=st.sampled_from(["error", "zero"]))
def test_mult_corruptions_raise_data_error_naming_the_file(seed, name, where, key, kind, file_kind, nonfinite):
    from mult_fixtures import write_mult

    rng = np.random.default_rng(seed)

    def mutate(data):
        split = data[where]
        if file_kind == "split_not_dict":
            data[where] = list(split.values())
        elif file_kind == "drop_split":
            del data[where]
        elif file_kind == "int_keys":  # keys of mixed types must not break the error message
            data[7] = data.pop(where)
        elif file_kind == "entry" and key in split:
            if kind == "drop":
                del split[key]
            elif kind == "short_list":
                split[key] = list(split[key])[:-1]
            else:
                split[key] = bad_value(kind, split[key], rng)

    with tempfile.TemporaryDirectory() as tmp:
        path = write_mult(tmp, name=name, sizes=(4, 3, 2), lens=(5, 7, 4), dims=(6, 3, 4),
                          seed=int(rng.integers(0, 1000)), mutate=mutate)
        if file_kind in FILE_KINDS:
            corrupt_file(path, file_kind, rng)

        def check(result):
            splits, _ = result
            check_examples(splits, MULT_DIMS, MULT_LENS, regression=name == "mosi")
            for rows in splits.values():
                for ex in rows:
                    assert isinstance(ex["key"], str)
                    if name == "iemocap":
                        assert ex["label"].shape == (4,) and set(np.unique(ex["label"])) <= {0, 1}

        expect_clean_outcome(lambda: mult.read(tmp, feat_dims=MULT_DIMS, max_lens=MULT_LENS, name=name,
                                               nonfinite=nonfinite), path, check)
