"""Corrupted MulT (one pickle of three splits; MOSI regression, IEMOCAP four binary labels) releases: a clean
read or a `DataError` naming the file (see `corruptions`)."""
from __future__ import annotations

import tempfile

import numpy as np
from corruptions import (
    BAD_KINDS,
    FILE_KINDS,
    SETTINGS,
    bad_value,
    check_examples,
    corrupt_file,
    expect_clean_outcome,
    reader_warnings,
)
from hypothesis import given
from hypothesis import strategies as st

from mmfuse_jax.data.formats import mult

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
