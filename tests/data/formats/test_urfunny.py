"""The UR-FUNNY v2 reader on fixtures in the official layout: contents and bad inputs."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from mult_fixtures import write_urfunny

from mmfuse_jax.data.formats import urfunny
from mmfuse_jax.errors import DataError

DIMS = {"text": 12, "audio": 5, "video": 6}
LENS = {"text": 8, "audio": 10, "video": 9}


# ----------------------------------------------------------------------------- UR-FUNNY

UF_DIMS = {"text": 6, "audio": 81, "video": 371}
UF_LENS = {"text": 120, "audio": 120, "video": 120}


def test_urfunny_concatenates_context_and_punchline(tmp_path):
    root = write_urfunny(str(tmp_path))
    with open(os.path.join(root, "language_sdk.pkl"), "rb") as f:
        language = pickle.load(f)
    with open(os.path.join(root, "word_embedding_list.pkl"), "rb") as f:
        words = np.asarray(pickle.load(f))
    splits, _ = urfunny.read(root, feat_dims=UF_DIMS, max_lens=UF_LENS, context_sentences=1, max_sentence_words=4)
    assert {k: len(v) for k, v in splits.items()} == {"train": 12, "dev": 4, "test": 4}
    for ex in splits["train"]:
        entry = language[int(ex["key"])]
        idx = [i for s in entry["context_embedding_indexes"][-1:] for i in s[:4]] + \
            list(entry["punchline_embedding_indexes"][:4])
        np.testing.assert_array_equal(ex["text_feats"], words[idx])
        assert len(ex["audio"]) == len(ex["video"]) == len(idx) and ex["label"] in (0, 1)


@pytest.mark.parametrize("mutate,message", [
    (lambda f: f["data_folds.pkl"].pop("dev"), r"data_folds.pkl: split 'dev' expected train, dev and test id lists"),
    (lambda f: f["covarep_features_sdk.pkl"].pop(3), r"covarep_features_sdk.pkl: id 3 expected an entry for every id"),
    (lambda f: f["language_sdk.pkl"][0].update(punchline_embedding_indexes=[99]),
     r"language_sdk.pkl: id 0 expected word indexes in \[0, 20\)"),
    (lambda f: f["openface_features_sdk.pkl"][1].pop("punchline_features"),
     r"openface_features_sdk.pkl: id 1: key 'punchline_features'"),
    (lambda f: f["humor_label_sdk.pkl"].update({2: 5.0}), r"humor_label_sdk.pkl: id 2 expected label 0 or 1"),
])
def test_urfunny_bad_files_are_named(tmp_path, mutate, message):
    root = write_urfunny(str(tmp_path), mutate=mutate)
    with pytest.raises(DataError, match=message):
        urfunny.read(root, feat_dims=UF_DIMS, max_lens=UF_LENS)


def test_urfunny_wrong_feature_size(tmp_path):
    root = write_urfunny(str(tmp_path), dims=(6, 81, 75))  # UR-FUNNY v1 OpenFace size
    with pytest.raises(DataError, match=r"openface_features_sdk.pkl: key '0' expected video features \[T, 371\]"):
        urfunny.read(root, feat_dims=UF_DIMS, max_lens=UF_LENS)
