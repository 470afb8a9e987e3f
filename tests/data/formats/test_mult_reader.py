"""The MulT pickle reader (MOSI, MOSEI, IEMOCAP) on fixtures in the official layout: contents, the
pipeline's feature path and [B, 4] labels, bad inputs with their messages."""
from __future__ import annotations

import numpy as np
import pytest
from mult_fixtures import write_mult

from configs import datasets
from mmfuse_jax.data import pipeline
from mmfuse_jax.data.formats import mult
from mmfuse_jax.errors import ConfigError, DataError

DIMS = {"text": 12, "audio": 5, "video": 6}
LENS = {"text": 8, "audio": 10, "video": 9}


# ----------------------------------------------------------------------------- MulT pickles

def test_mult_reads_every_split_with_labels_keys_and_all_steps(tmp_path):
    path = write_mult(str(tmp_path), name="mosi", sizes=(5, 3, 2))
    assert path.endswith("mosi_data_noalign.pkl")
    splits, report = mult.read(str(tmp_path), feat_dims=DIMS, max_lens=LENS, name="mosi")
    assert {k: len(v) for k, v in splits.items()} == {"train": 5, "dev": 3, "test": 2}
    ex = splits["dev"][1]
    assert ex["key"] == "vid1_0_1" and ex["text_ids"].shape == (0,)
    assert ex["text_feats"].shape == (8, 12) and ex["audio"].shape == (10, 5) and ex["video"].shape == (9, 6)
    assert isinstance(ex["label"], np.floating) and -3 <= ex["label"] <= 3
    assert report.lines() == []


def test_mult_iemocap_aligned_labels_become_four_ints(tmp_path):
    write_mult(str(tmp_path), name="iemocap", aligned=True, sizes=(4, 2, 2))
    splits, report = mult.read(str(tmp_path), feat_dims=DIMS, max_lens={**LENS, "text": 6}, name="iemocap",
                               aligned=True)
    ex = splits["train"][0]
    assert ex["label"].shape == (4,) and ex["label"].dtype == np.int32 and ex["label"].sum() == 1
    assert ex["text_feats"].shape == (6, 12) and report.truncated == {"text": 8}


def test_mult_inf_audio_is_reported_or_replaced(tmp_path):
    def add_inf(data):
        data["train"]["audio"][1, 2, :] = -np.inf
        data["test"]["vision"][0, 0, 0] = np.nan

    write_mult(str(tmp_path), mutate=add_inf)
    with pytest.raises(DataError, match=r"train: 'audio' example 1 expected finite audio values, got 5 NaN/inf"
                                        r".*nonfinite='zero'"):
        mult.read(str(tmp_path), feat_dims=DIMS, max_lens=LENS, nonfinite="error")
    splits, report = mult.read(str(tmp_path), feat_dims=DIMS, max_lens=LENS, nonfinite="zero")
    assert report.nonfinite_replaced == {"audio": 5, "video": 1}
    assert np.all(splits["train"][1]["audio"][2] == 0) and np.isfinite(splits["test"][0]["video"]).all()


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.pop("valid"),
     r"split 'valid' expected the splits 'train', 'valid', 'test', got splits \['test', 'train'\]"),
    (lambda d: d["train"].update(audio=np.zeros((48, 10, 74), np.float32)),
     r"mosi_data_noalign.pkl: train: key 'audio' expected float \[48, L, 5\], got \[48, 10, 74\]"),
    (lambda d: d["dev" if "dev" in d else "valid"].update(vision=np.zeros((3, 9, 6))),
     r"valid: key 'vision' expected float \[16, L, 6\], got \[3, 9, 6\]"),
    (lambda d: d["test"].pop("labels"), r"test: key 'labels' expected the labels array"),
    (lambda d: d["test"].update(labels=np.zeros((16, 2))),
     r"test: key 'labels' expected one sentiment score per example"),
])
def test_mult_bad_pickles_are_named(tmp_path, mutate, message):
    write_mult(str(tmp_path), mutate=mutate)
    with pytest.raises(DataError, match=message):
        mult.read(str(tmp_path), feat_dims=DIMS, max_lens=LENS)


def test_mult_missing_file_and_config_errors(tmp_path):
    with pytest.raises(DataError, match="mosei_senti_data.pkl expected an existing file"):
        mult.read(str(tmp_path), feat_dims=DIMS, max_lens=LENS, name="mosei", aligned=True)
    with pytest.raises(ConfigError, match="feat_dims.text"):
        mult.read(str(tmp_path), feat_dims={"audio": 5, "video": 6}, max_lens=LENS)


def test_pipeline_feature_path_and_emotion_labels(tmp_path):
    """prepare + Loader on IEMOCAP: text features, no token ids, label [B, 4] (config.dataset.label_shape)."""
    root = str(tmp_path / "MulT")
    write_mult(root, name="iemocap", sizes=(5, 3, 3))
    ds = datasets.dataset("mult_iemocap")
    ds.update({"root": root, "feat_dims": dict(DIMS), "max_len": dict(LENS)})
    prepared = pipeline.Prepared.open(ds)
    assert prepared.meta["label_shape"] == [4]
    loader = pipeline.Loader(prepared, "train", batch_size=4, max_len=ds.max_len, dims=ds.feat_dims,
                             num_buckets=ds.num_buckets, shuffle=False)
    batch = next(iter(loader.epoch(0)))
    assert batch["label"].shape == (4, 4) and batch["label"].dtype == np.int32
    assert batch["text"].shape == (4, 8, 12) and batch["text_mask"].sum() == 4 * 8
    assert not batch["text_ids"].any() and batch["audio"].shape == (4, 10, 5)
    assert np.array_equal(batch["label"].sum(1), [1, 1, 1, 1])
