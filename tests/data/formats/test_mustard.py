"""The MUStARD reader on fixtures in the official layout: folds, text modes and bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from mult_fixtures import write_mustard

from mmfuse_jax.data.formats import mustard
from mmfuse_jax.errors import ConfigError, DataError

DIMS = {"text": 12, "audio": 5, "video": 6}
LENS = {"text": 8, "audio": 10, "video": 9}


# ----------------------------------------------------------------------------- MUStARD

MS_DIMS = {"text": 8, "audio": 283, "video": 10}
MS_LENS = {"text": 128, "audio": 16, "video": 256}


def test_mustard_folds_speaker_independent_and_text_modes(tmp_path):
    pytest.importorskip("h5py")
    root = write_mustard(str(tmp_path), n=20)
    splits, _ = mustard.read(root, feat_dims=MS_DIMS, max_lens=MS_LENS, split="fold2", dev_every=5)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 12, "dev": 4, "test": 4} and len({e["key"] for v in splits.values() for e in v}) == 20
    ex = splits["train"][0]
    assert ex["audio"].shape[1] == 283 and 8 <= ex["audio"].shape[0] <= 11   # [283, T] transposed
    assert ex["text_feats"].shape[1] == 8 and ex["label"] in (0, 1)
    si, _ = mustard.read(root, feat_dims=MS_DIMS, max_lens=MS_LENS, split="speaker_independent", text="bert_cls")
    assert len(si["test"]) == 10 and all(int(e["key"].split("_")[1]) % 2 == 0 for e in si["test"])  # FRIENDS
    assert all(e["text_feats"].shape == (1, 8) for v in si.values() for e in v)


@pytest.mark.parametrize("mutate,message", [
    (lambda f: f["audio"].update({"1_0": np.zeros((13, 9), np.float32)}),
     r"audio_features.p: key '1_0' expected audio features \[283, T\]"),
    (lambda f: f["audio"].pop("1_1"), r"audio_features.p: key '1_1' expected a audio feature entry"),
    (lambda f: f["bert"].pop(),
     r"bert-output.jsonl expected one line per example of sarcasm_data.json \(20\), got 19 lines"),
    (lambda f: f["json"]["1_2"].pop("sarcasm"), r"sarcasm_data.json: id '1_2': key 'sarcasm' expected present"),
])
def test_mustard_bad_files_are_named(tmp_path, mutate, message):
    pytest.importorskip("h5py")
    root = write_mustard(str(tmp_path), mutate=mutate)
    with pytest.raises(DataError, match=message):
        mustard.read(root, feat_dims=MS_DIMS, max_lens=MS_LENS)


def test_mustard_options_and_missing_video(tmp_path):
    root = write_mustard(str(tmp_path), with_video=False)
    with pytest.raises(ConfigError, match="MUStARD split 'fold9'"):
        mustard.read(root, feat_dims=MS_DIMS, max_lens=MS_LENS, split="fold9")
    with pytest.raises(DataError, match="resnet_pool5.hdf5 expected the official ResNet features"):
        mustard.read(root, feat_dims=MS_DIMS, max_lens=MS_LENS)
