"""Readers of the MulT pickles, UR-FUNNY v2 and MUStARD on fixtures in the official layouts:
contents, the pipeline's feature path and [B, 4] labels, bad inputs with their messages, presets."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from mult_fixtures import load_config, write_mult, write_mustard, write_urfunny

from mmfuse_jax.data import pipeline
from mmfuse_jax.data.formats import mult, mustard, urfunny
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
    (lambda d: d.pop("valid"), r"split 'valid' expected the splits 'train', 'valid', 'test', got splits \['test', 'train'\]"),
    (lambda d: d["train"].update(audio=np.zeros((48, 10, 74), np.float32)), r"mosi_data_noalign.pkl: train: key 'audio' expected float \[48, L, 5\], got \[48, 10, 74\]"),
    (lambda d: d["dev" if "dev" in d else "valid"].update(vision=np.zeros((3, 9, 6))), r"valid: key 'vision' expected float \[16, L, 6\], got \[3, 9, 6\]"),
    (lambda d: d["test"].pop("labels"), r"test: key 'labels' expected the labels array"),
    (lambda d: d["test"].update(labels=np.zeros((16, 2))), r"test: key 'labels' expected one sentiment score per example"),
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
    with pytest.raises(ConfigError, match="unknown MulT dataset 'mosj'"):
        mult.preset("mosj")


def test_pipeline_feature_path_and_emotion_labels(tmp_path):
    """prepare + Loader on IEMOCAP: text features, no token ids, label [B, 4] (config.dataset.label_shape)."""
    root = str(tmp_path / "MulT")
    write_mult(root, name="iemocap", sizes=(5, 3, 3))
    ds = mult.preset("iemocap")
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
    (lambda f: f["language_sdk.pkl"][0].update(punchline_embedding_indexes=[99]), r"language_sdk.pkl: id 0 expected word indexes in \[0, 20\)"),
    (lambda f: f["openface_features_sdk.pkl"][1].pop("punchline_features"), r"openface_features_sdk.pkl: id 1: key 'punchline_features'"),
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
    (lambda f: f["audio"].update({"1_0": np.zeros((13, 9), np.float32)}), r"audio_features.p: key '1_0' expected audio features \[283, T\]"),
    (lambda f: f["audio"].pop("1_1"), r"audio_features.p: key '1_1' expected a audio feature entry"),
    (lambda f: f["bert"].pop(), r"bert-output.jsonl expected one line per example of sarcasm_data.json \(20\), got 19 lines"),
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


# ----------------------------------------------------------------------------- presets

@pytest.mark.parametrize("model", ["mult", "hct_dmg"])
def test_every_config_preset_builds_its_dataset(model):
    from mmfuse_jax import affect_presets, metrics

    for preset in affect_presets.PRESETS:
        c = load_config(model, preset)
        assert c.dataset.metric in metrics.SCORERS and c.early_stop_metric in metrics.metric_names(c.dataset.metric)
        if preset not in ("demo", "tiny"):
            assert c.dataset.feat_dims.text == c.model.text_embed_dim and c.model.text_vocab_size == 0
    assert load_config(model, "mosei_aligned").dataset.max_len.to_dict() == {"text": 50, "audio": 50, "video": 50}
    assert load_config(model, "iemocap").dataset.label_shape == (4,)
