"""MMSA pickle reader on fixtures written in the released layout (thuiar/MMSA unaligned_*.pkl)."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from configs import datasets
from mmfuse_jax.data.formats import FORMATS, mmsa
from mmfuse_jax.errors import DataError

DIMS = {"audio": 4, "video": 3}
LENS = {"text": 9, "audio": 12, "video": 7}
SIZES = {"train": 5, "valid": 3, "test": 2}


def make_split(rng, n, *, lt=9, la=12, lv=7, da=4, dv=3, unimodal=True):
    """One split as MMSA stores it: zero-padded features, text_bert [N, 3, L] as floats."""
    tl = rng.integers(3, lt + 1, n)
    al, vl = rng.integers(1, la + 1, n), rng.integers(1, lv + 1, n)
    text_bert = np.zeros((n, 3, lt), np.float64)
    audio, vision = np.zeros((n, la, da), np.float32), np.zeros((n, lv, dv), np.float32)
    for i in range(n):
        text_bert[i, 0, : tl[i]] = [101, *rng.integers(1000, 2000, tl[i] - 2), 102]
        text_bert[i, 1, : tl[i]] = 1
        audio[i, : al[i]] = rng.standard_normal((al[i], da))
        vision[i, : vl[i]] = rng.standard_normal((vl[i], dv))
    split = {"id": [f"vid{i}$_${i}" for i in range(n)], "raw_text": [f"utterance {i}" for i in range(n)],
             "text": rng.standard_normal((n, lt, 8)).astype(np.float32), "text_bert": text_bert,
             "audio": audio, "vision": vision, "audio_lengths": al, "vision_lengths": list(vl),
             "regression_labels": rng.uniform(-1, 1, n).astype(np.float32),
             "classification_labels": rng.integers(0, 3, n)}
    if unimodal:
        for m in "TAV":
            split[f"regression_labels_{m}"] = rng.uniform(-1, 1, n).astype(np.float32)
    return split


def write_mmsa(root, *, seed=0, name="unaligned_39.pkl", edit=None, **kw):
    rng = np.random.default_rng(seed)
    data = {s: make_split(rng, n, **kw) for s, n in SIZES.items()}
    if edit:
        edit(data)
    os.makedirs(os.path.join(root, "Processed"), exist_ok=True)
    with open(os.path.join(root, "Processed", name), "wb") as f:
        pickle.dump(data, f, protocol=4)
    return str(root), data


def read(root, **kw):
    args = {"feat_dims": DIMS, "max_lens": LENS, "nonfinite": "error", **kw}
    return mmsa.read(root, **args)


def test_reads_the_release_layout(tmp_path):
    root, data = write_mmsa(tmp_path / "SIMS")
    splits, report = read(root)
    assert {k: len(v) for k, v in splits.items()} == {"train": 5, "dev": 3, "test": 2}
    src, ex = data["valid"], splits["dev"][1]
    n_tok = int(src["text_bert"][1, 1].sum())
    assert ex["text_ids"].dtype == np.int32 and list(ex["text_ids"]) == list(src["text_bert"][1, 0, :n_tok])
    assert ex["text_ids"][0] == 101 and len(ex["text_type_ids"]) == n_tok
    np.testing.assert_array_equal(ex["audio"], src["audio"][1, : src["audio_lengths"][1]])
    np.testing.assert_array_equal(ex["video"], src["vision"][1, : src["vision_lengths"][1]])
    assert ex["label"] == pytest.approx(float(src["regression_labels"][1]))
    assert ex["label_text"] == pytest.approx(float(src["regression_labels_T"][1]))
    assert ex["label_audio"] == pytest.approx(float(src["regression_labels_A"][1]))
    assert ex["label_video"] == pytest.approx(float(src["regression_labels_V"][1]))
    assert ex["key"] == "vid1$_$1" and ex["text"] == "utterance 1"
    assert "text_feats" not in ex and report.lines() == []
    assert FORMATS["mmsa"] is mmsa and mmsa.LABELS == ()


def test_mosi_layout_has_no_unimodal_labels(tmp_path):
    root, _ = write_mmsa(tmp_path / "MOSI", name="unaligned_50.pkl", unimodal=False)
    splits, _ = read(root)
    assert "label_text" not in splits["train"][0]


def test_feature_path_cuts_text_features_by_the_mask(tmp_path):
    root, data = write_mmsa(tmp_path / "SIMS")
    splits, _ = read(root, feat_dims={**DIMS, "text": 8})
    n_tok = int(data["train"]["text_bert"][2, 1].sum())
    np.testing.assert_array_equal(splits["train"][2]["text_feats"], data["train"]["text"][2, :n_tok])


def test_truncation_is_reported(tmp_path):
    root, _ = write_mmsa(tmp_path / "SIMS")
    splits, report = read(root, max_lens={"text": 9, "audio": 2, "video": 7})
    assert max(len(e["audio"]) for s in splits.values() for e in s) == 2
    assert report.truncated["audio"] > 0


def test_neg_inf_audio_is_an_error_or_zero_by_policy(tmp_path):
    def poison(d):
        d["train"]["audio"][3, 0, 1] = -np.inf
        d["test"]["vision"][0, 0, 0] = np.nan
    root, _ = write_mmsa(tmp_path / "MOSI", edit=poison)
    with pytest.raises(DataError, match=r"train: key 'audio' index 3 expected finite audio values.*"
                                        r"nonfinite='zero'"):
        read(root)
    splits, report = read(root, nonfinite="zero")
    assert splits["train"][3]["audio"][0, 1] == 0.0 and np.isfinite(splits["test"][0]["video"]).all()
    assert report.nonfinite_replaced == {"audio": 1, "video": 1}
    assert "non-finite audio: 1 values replaced by 0" in report.lines()


def test_missing_split_names_file_and_split(tmp_path):
    root, _ = write_mmsa(tmp_path / "SIMS", edit=lambda d: d.pop("valid"))
    with pytest.raises(DataError, match=r"unaligned_39.pkl: split 'valid' expected splits \['train', 'valid', "
                                        r"'test'\], got keys \['test', 'train'\]"):
        read(root)


@pytest.mark.parametrize("key", ["audio_lengths", "regression_labels", "vision", "text_bert"])
def test_missing_key_names_split_and_key(tmp_path, key):
    root, _ = write_mmsa(tmp_path / "SIMS", edit=lambda d: d["test"].pop(key))
    with pytest.raises(DataError, match=f"test: key '{key}' expected .* got missing"):
        read(root)


def test_wrong_feature_dims_say_what_was_expected(tmp_path):
    root, _ = write_mmsa(tmp_path / "MOSEI", da=74)
    with pytest.raises(DataError, match=r"train: key 'audio' expected float32 \[N, L, 4\], got \[5, 12, 74\]"):
        read(root)


def test_bad_lengths_and_ids_name_the_index(tmp_path):
    root, _ = write_mmsa(tmp_path / "a", edit=lambda d: d["train"]["vision_lengths"].__setitem__(2, 99))
    with pytest.raises(DataError, match=r"train: key 'vision_lengths' index 2 expected an integer length in "
                                        r"\[0, 7\], got 99"):
        read(root)

    def fractional_id(d):
        d["valid"]["text_bert"][1, 0, 1] = 7.5
    root, _ = write_mmsa(tmp_path / "b", edit=fractional_id)
    with pytest.raises(DataError, match=r"valid: key 'text_bert' index 1 expected integer token ids"):
        read(root)


def test_mismatched_split_sizes(tmp_path):
    root, _ = write_mmsa(tmp_path / "a", edit=lambda d: d["train"].__setitem__("audio", d["train"]["audio"][:3]))
    with pytest.raises(DataError, match=r"train: key 'audio' expected shape \[5, \?, \?\], got \[3, 12, 4\]"):
        read(root)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_malicious_pickle_is_refused_without_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("SIMS/Processed")
    with open("SIMS/Processed/unaligned_39.pkl", "wb") as f:
        pickle.dump({"train": {"audio": _Evil()}}, f)
    with pytest.raises(DataError, match="refused without running it"):
        read("SIMS")
    assert not os.path.exists("pwned_by_pickle")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        read(str(tmp_path / "nope"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(DataError, match="one MMSA feature pickle"):
        read(str(tmp_path / "empty"))
    with open(tmp_path / "list.pkl", "wb") as f:
        pickle.dump([1, 2], f)
    with pytest.raises(DataError, match="a dict with splits"):
        read(str(tmp_path / "list.pkl"))


def test_prepared_batches_carry_float_and_unimodal_labels(tmp_path):
    from mmfuse_jax.data import pipeline

    root, data = write_mmsa(tmp_path / "SIMS")
    ds = datasets.dataset("sims")
    ds.root, ds.feat_dims, ds.max_len, ds.num_buckets = root, DIMS, LENS, 1
    prepared = pipeline.Prepared.open(ds)
    loader = pipeline.Loader(prepared, "dev", batch_size=4, max_len=ds.max_len, dims=ds.feat_dims,
                             num_buckets=1, shuffle=False, label_dtype=np.float32)
    batch = loader.load(0, 0)
    assert batch["label"].dtype == np.float32 and batch["valid"].tolist() == [1, 1, 1, 0]
    np.testing.assert_allclose(batch["label_audio"][:3], data["valid"]["regression_labels_A"])
    assert batch["audio"].shape == (4, 12, 4) and batch["text_ids"].shape == (4, 9)
    assert batch["text_mask"][0].sum() == data["valid"]["text_bert"][0, 1].sum()
