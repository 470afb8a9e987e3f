"""Shared by the reader corruption tests (property-based, hypothesis): a small release written in the
official layout gets one random corruption (a missing column or key, an unknown label, arrays of the
wrong rank/size/dtype, NaN/inf, empty sequences, truncated or garbage files, ...). Reading it either
succeeds with well-formed examples (NaN/inf replaced under ``nonfinite='zero'``) or raises
`DataError` naming the corrupted file: never a KeyError/IndexError/ValueError traceback.
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from mmfuse_jax import batch as batch_lib
from mmfuse_jax.errors import DataError

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


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
