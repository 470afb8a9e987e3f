"""UR-FUNNY v2 (ROC-HCI/UR-FUNNY) humour detection, as released ("Extracted Features").

Layout (read from the repository's README and ``humor_dataloader.ipynb``)::

    <root>/data_folds.pkl             {'train' | 'dev' | 'test': [id, ...]}   speaker-independent folds
    <root>/language_sdk.pkl           id -> {'punchline_embedding_indexes': [n] word indexes,
                                             'context_embedding_indexes': [[n_i] per context sentence],
                                             'punchline_sentence', 'context_sentences', ...intervals}
    <root>/word_embedding_list.pkl    [V] GloVe 840B 300-d vectors; a word index selects one
    <root>/covarep_features_sdk.pkl   id -> {'punchline_features': [n, 81], 'context_features': [[n_i, 81]]}
    <root>/openface_features_sdk.pkl  id -> {'punchline_features': [n, 371], 'context_features': [[n_i, 371]]}
    <root>/humor_label_sdk.pkl        id -> 0 / 1

Every feature is word-aligned (one COVAREP/OpenFace vector per word). An example is the last
``context_sentences`` context sentences followed by the punchline, each cut to its first
``max_sentence_words`` words (the tutorial's ``max_context_len=5, max_sen_len=20``), concatenated in
time for all three modalities. The tutorial left-pads with zero word indexes, which look up word
0's vector; we do not pad (the pipeline pads with masks).
"""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import ConfigError, DataError

LABELS = ("not humorous", "humorous")
SPLITS = ("train", "dev", "test")
FILES = {"folds": "data_folds.pkl", "language": "language_sdk.pkl", "words": "word_embedding_list.pkl",
         "audio": "covarep_features_sdk.pkl", "video": "openface_features_sdk.pkl",
         "labels": "humor_label_sdk.pkl"}


def _load_dict(root: str, what: str) -> dict:
    path = os.path.join(root, FILES[what])
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DataError(path, None, "a dict keyed by example id", type(data).__name__)
    return data


def _entry(data: dict, key, what: str, root: str) -> dict:
    path = os.path.join(root, FILES[what])
    if key not in data:
        raise DataError(path, f"id {key!r}", f"an entry for every id of {FILES['folds']}", "no such id")
    entry = data[key]
    if what != "labels" and not isinstance(entry, dict):
        raise DataError(path, f"id {key!r}", "a dict with 'punchline_...' and 'context_...' keys",
                        type(entry).__name__)
    return entry


def _field(entry: dict, name: str, key, what: str, root: str):
    if name not in entry:
        raise DataError(os.path.join(root, FILES[what]), f"id {key!r}: key '{name}'", "present",
                        f"keys {sorted(entry)}")
    return entry[name]


def _words(words: np.ndarray, indexes, root: str, key) -> np.ndarray:
    idx = np.asarray(indexes, dtype=np.float64).reshape(-1)
    if idx.size and (np.any(idx < 0) or np.any(idx >= len(words)) or np.any(np.mod(idx, 1))):
        raise DataError(os.path.join(root, FILES["language"]), f"id {key!r}",
                        f"word indexes in [0, {len(words)})", f"{idx.min()}..{idx.max()}")
    return words[idx.astype(np.int64)]


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error", context_sentences: int = 5,
         max_sentence_words: int = 20):
    """Read the release under ``root`` -> ``({'train'|'dev'|'test': [example]}, ReadReport)``."""
    if "text" not in feat_dims:
        raise ConfigError("UR-FUNNY text is GloVe features: set config.dataset.feat_dims.text (300)")
    if not os.path.isdir(root):
        raise DataError(root, None, f"a UR-FUNNY v2 folder ({', '.join(FILES.values())})", "no such folder")
    folds = _load_dict(root, "folds")
    tables = {w: _load_dict(root, w) for w in ("language", "audio", "video", "labels")}
    words_path = os.path.join(root, FILES["words"])
    words = np.asarray(load_pickle(words_path), dtype=np.float32)
    if words.ndim != 2 or words.shape[1] != feat_dims["text"]:
        raise DataError(words_path, None, f"word vectors [V, {feat_dims['text']}]", f"{list(words.shape)}")
    report, out = common.ReadReport(), {}
    for split in SPLITS:
        if split not in folds:
            raise DataError(os.path.join(root, FILES["folds"]), f"split '{split}'", "train, dev and test id lists",
                            f"splits {sorted(folds)}")
        rows = []
        for key in folds[split]:
            ex = {"key": str(key), "text_ids": np.zeros((0,), np.int32)}
            label = _entry(tables["labels"], key, "labels", root)
            ex["label"] = int(np.asarray(label).reshape(-1)[0])
            if ex["label"] not in (0, 1):
                raise DataError(os.path.join(root, FILES["labels"]), f"id {key!r}", "label 0 or 1", repr(label))
            segments = {"text": _segments(tables["language"], "embedding_indexes", key, "language", root,
                                          context_sentences)}
            for m in ("audio", "video"):
                segments[m] = _segments(tables[m], "features", key, m, root, context_sentences)
            for m, segs in segments.items():
                parts = [seg[:max_sentence_words] for seg in segs]
                if m == "text":
                    parts = [_words(words, p, root, key) for p in parts]
                else:  # a sentence without words has no frames
                    parts = [np.asarray(p, dtype=np.float32).reshape(len(p), -1) for p in parts if len(p)]
                x = np.concatenate(parts) if parts else np.zeros((0, feat_dims[m]), np.float32)
                path = os.path.join(root, FILES["language" if m == "text" else m])
                x = common.feature_array({key: x}, key, path, feat_dims[m], m, nonfinite=nonfinite, report=report)
                ex["text_feats" if m == "text" else m] = common.truncate(x, max_lens[m], m, report)
            rows.append(ex)
        if not rows:
            raise DataError(os.path.join(root, FILES["folds"]), f"split '{split}'", "at least one id", "none")
        out[split] = rows
    return out, report


def _segments(table: dict, suffix: str, key, what: str, root: str, context: int) -> list:
    entry = _entry(table, key, what, root)
    punch = _field(entry, f"punchline_{suffix}", key, what, root)
    ctx = list(_field(entry, f"context_{suffix}", key, what, root)) if context > 0 else []
    return ctx[max(len(ctx) - context, 0):] + [punch]
