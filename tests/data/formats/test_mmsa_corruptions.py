"""Corrupted MMSA (one pickle of three splits) releases: a clean read or a `DataError` naming the file
(see `corruptions`)."""
from __future__ import annotations

import os
import pickle
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

from mmfuse_jax.data.formats import mmsa

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
