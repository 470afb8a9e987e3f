"""MUStARD (soujanyaporia/MUStARD) sarcasm detection, as released.

Layout (read from the repository's ``data_loader.py``, ``extract_audio_features.py``, README)::

    <root>/sarcasm_data.json                     id -> {utterance, speaker, context, context_speakers,
                                                         show, sarcasm}; its order is the example order
    <root>/audio_features.p                      id -> float [283, T]  (librosa: 13 MFCC + 13 delta +
                                                 128 mel + 128 mel-delta + 1 centroid rows, ~10 bins)
    <root>/features/utterances_final/resnet_pool5.hdf5   id -> float [T, 2048] (ResNet-152 pool5)
    <root>/bert-output.jsonl                     line i = example i: {"features": [{"token",
                                                 "layers": [{"index": -1..-4, "values": [768]}]}]}
    <root>/split_indices.p                       5 x (train_index, test_index) into the JSON order

Text: the official BERT features (mean of the last 4 layers): ``text='bert_tokens'`` keeps every
token ([T, 768], our default for sequence models), ``'bert_cls'`` only [CLS] ([1, 768], as the
official SVM baseline). Splits (``split``): ``'fold1'``..``'fold5'`` (speaker dependent, the
released indices) or ``'speaker_independent'`` (test = the show FRIENDS, as the code does — its
docstring says TBBT). The release has no dev split: every ``dev_every``-th training example
(in index order) is held out as dev, our choice. The video file needs ``h5py``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import ConfigError, DataError

LABELS = ("not sarcastic", "sarcastic")
FILES = {"json": "sarcasm_data.json", "audio": "audio_features.p", "splits": "split_indices.p",
         "video": os.path.join("features", "utterances_final", "resnet_pool5.hdf5"), "text": "bert-output.jsonl"}
AUDIO_ROWS = 283


def _json(root: str) -> dict:
    path = os.path.join(root, FILES["json"])
    if not os.path.exists(path):
        raise DataError(path, None, "the MUStARD annotations file", "nothing at that path")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(path, None, "valid JSON", str(e)) from None
    for key, entry in data.items():
        for field in ("utterance", "show", "sarcasm"):
            if field not in entry:
                raise DataError(path, f"id '{key}': key '{field}'", "present", f"keys {sorted(entry)}")
    return data


def _bert(root: str, n: int, mode: str) -> list[np.ndarray]:
    """Per example [T, 768] (every token) or [1, 768] ([CLS]), the mean of the 4 extracted layers."""
    path = os.path.join(root, FILES["text"])
    if not os.path.exists(path):
        raise DataError(path, None, "the official BERT features (BERT_text_features.zip)", "nothing at that path")
    out = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                tokens = json.loads(line)["features"]
                tokens = tokens[:1] if mode == "bert_cls" else tokens
                out.append(np.asarray([np.mean([layer["values"] for layer in t["layers"]], axis=0)
                                       for t in tokens], dtype=np.float32))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise DataError(path, f"line {line_no}", "{'features': [{'layers': [{'values': [...]}]}]}",
                                f"{type(e).__name__}: {e}") from None
    if len(out) != n:
        raise DataError(path, None, f"one line per example of {FILES['json']} ({n})", f"{len(out)} lines")
    return out


def _video(root: str, keys: list[str]) -> dict[str, np.ndarray]:
    path = os.path.join(root, FILES["video"])
    if not os.path.exists(path):
        raise DataError(path, None, "the official ResNet features (features/utterances_final/)",
                        "nothing at that path")
    try:
        import h5py
    except ImportError:
        raise ConfigError("reading MUStARD's video features (HDF5) needs h5py: pip install h5py") from None
    with h5py.File(path, "r") as f:
        return {k: np.asarray(f[k][()]) for k in keys if k in f}


def _split_indices(root: str, split: str, data: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    if split == "speaker_independent":  # data_loader.py speaker_independent_split
        test = np.array([i for i, e in enumerate(data.values()) if e["show"] == "FRIENDS"], np.int64)
        return np.setdiff1d(np.arange(n), test), test
    folds = {f"fold{i + 1}": i for i in range(5)}
    if split not in folds:
        raise ConfigError(f"MUStARD split {split!r}: expected 'speaker_independent' or one of {list(folds)}")
    path = os.path.join(root, FILES["splits"])
    indices = load_pickle(path)
    try:
        train, test = (np.asarray(a, np.int64).reshape(-1) for a in indices[folds[split]])
    except (IndexError, KeyError, TypeError, ValueError):
        raise DataError(path, f"fold {folds[split] + 1}", "5 (train_index, test_index) pairs",
                        f"{type(indices).__name__} of length {len(indices) if hasattr(indices, '__len__') else '?'}"
                        ) from None
    if train.size == 0 or test.size == 0 or max(train.max(), test.max()) >= n or min(train.min(), test.min()) < 0:
        raise DataError(path, f"fold {folds[split] + 1}", f"indices in [0, {n})", "out of range or empty")
    return train, test


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error", split: str = "fold1",
         text: str = "bert_tokens", dev_every: int = 10):
    """Read the release under ``root`` -> ``({'train'|'dev'|'test': [example]}, ReadReport)``."""
    if "text" not in feat_dims:
        raise ConfigError("MUStARD text is BERT features: set config.dataset.feat_dims.text (768)")
    if text not in ("bert_tokens", "bert_cls"):
        raise ConfigError(f"MUStARD text={text!r}: expected 'bert_tokens' or 'bert_cls'")
    if not os.path.isdir(root):
        raise DataError(root, None, "the MUStARD data/ folder (sarcasm_data.json, audio_features.p, ...)",
                        "no such folder")
    data = _json(root)
    keys = list(data)
    train, test = _split_indices(root, split, data, len(keys))
    dev, train = train[::dev_every], np.setdiff1d(train, train[::dev_every])
    texts = _bert(root, len(keys), text)
    audio_path, video_path = os.path.join(root, FILES["audio"]), os.path.join(root, FILES["video"])
    audio = load_pickle(audio_path)
    if not isinstance(audio, dict):
        raise DataError(audio_path, None, "a dict from id to features [283, T]", type(audio).__name__)
    video = _video(root, keys)
    report, out = common.ReadReport(), {}
    for name, idx in (("train", train), ("dev", dev), ("test", test)):
        rows = []
        for i in idx:
            key = keys[int(i)]
            a = audio.get(key)
            if a is not None:  # released as [features, time] (librosa); the Batch wants [time, features]
                a = np.asarray(a)
                if a.ndim != 2 or a.shape[0] != feat_dims["audio"]:
                    raise DataError(audio_path, f"key '{key}'", f"audio features [{feat_dims['audio']}, T]",
                                    f"shape {list(a.shape)}")
                a = a.T
            ex = {"key": key, "text_ids": np.zeros((0,), np.int32), "label": int(bool(data[key]["sarcasm"]))}
            for m, feats, path in (("text", {key: texts[int(i)]}, os.path.join(root, FILES["text"])),
                                   ("audio", {} if a is None else {key: a}, audio_path),
                                   ("video", video, video_path)):
                x = common.feature_array(feats, key, path, feat_dims[m], m, nonfinite=nonfinite, report=report)
                ex["text_feats" if m == "text" else m] = common.truncate(x, max_lens[m], m, report)
            rows.append(ex)
        out[name] = rows
    return out, report
