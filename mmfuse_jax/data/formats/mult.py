"""The MulT feature pickles (yaohungt/Multimodal-Transformer): CMU-MOSI, CMU-MOSEI, IEMOCAP.

Layout (read from the official ``src/dataset.py`` and ``main.py``)::

    <root>/{mosi,mosei_senti,iemocap}_data.pkl            word-aligned (``--aligned``)
    <root>/{mosi,mosei_senti,iemocap}_data_noalign.pkl    unaligned (the official default)
    {'train' | 'valid' | 'test': {
        'text':   float [N, Lt, 300]   GloVe word vectors (the Batch feature path ``text``)
        'audio':  float [N, La, Da]    COVAREP (MOSI Da 5, MOSEI/IEMOCAP 74); may hold -inf
        'vision': float [N, Lv, Dv]    Facet (MOSI 20, MOSEI/IEMOCAP 35)
        'labels': float [N, 1, 1]      sentiment in [-3, 3] (MOSI, MOSEI)
                  float [N, 4, 2]      IEMOCAP: one-hot (no, yes) per emotion Neutral, Happy, Sad, Angry
        'id':     optional             (video id, start, end) per example
    }}

Sequences are stored padded to a fixed length and the official model uses every step, so every
step is kept (all-ones masks). The official loader replaces the audio's -inf by 0 and nothing
else; the presets set ``nonfinite='zero'``, which replaces every NaN/inf by 0 and counts them in
the report. IEMOCAP labels become int [4] (argmax per emotion, as ``__getitem__`` does): the
dataset config sets ``label_shape = (4,)``. Splits map train/valid/test -> train/dev/test.
"""
from __future__ import annotations

import os

import numpy as np

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import ConfigError, DataError

LABELS = ("Neutral", "Happy", "Sad", "Angry")  # IEMOCAP emotions (MOSI/MOSEI are regression)
SPLITS = {"train": "train", "valid": "dev", "test": "test"}  # MulT name -> ours
FILES = {"mosi": "mosi", "mosei": "mosei_senti", "iemocap": "iemocap"}  # our name -> main.py --dataset
KEYS = {"text": "text", "audio": "audio", "video": "vision"}   # our modality -> pickle key


def pickle_path(root: str, name: str, aligned: bool) -> str:
    """``root`` itself if it is a file, else ``<root>/<dataset>_data[_noalign].pkl``."""
    if name not in FILES:
        raise ConfigError(f"MulT dataset {name!r}: expected one of {sorted(FILES)}")
    if os.path.isfile(root):
        return root
    if not os.path.isdir(root):
        raise DataError(root, None, "a folder with the MulT pickles (e.g. mosi_data_noalign.pkl)",
                        "no such folder")
    return os.path.join(root, FILES[name] + ("_data.pkl" if aligned else "_data_noalign.pkl"))


def _features(split: dict, modality: str, dim: int, n: int | None, path: str, where: str) -> np.ndarray:
    key = KEYS[modality]
    if key not in split:
        raise DataError(path, f"{where}: key '{key}'", f"keys {sorted(set(KEYS.values()) | {'labels'})}",
                        f"keys {sorted(map(str, split))}")
    x = common.numeric_array(split[key], path, f"{where}: key '{key}'")
    if x.ndim != 3 or x.shape[2] != dim or (n is not None and x.shape[0] != n):
        want = f"[{'N' if n is None else n}, L, {dim}]"
        raise DataError(path, f"{where}: key '{key}'", f"float {want}", f"{list(x.shape)}")
    return x.astype(np.float32)


def sanitize(x: np.ndarray, modality: str, nonfinite: str, report: common.ReadReport, path: str,
             where: str) -> np.ndarray:
    """Replace NaN/inf by 0 (counted in ``report``) or raise naming the first bad example."""
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    if nonfinite != "zero":
        first = int(np.argwhere(bad)[0][0])
        raise DataError(path, f"{where}: '{modality}' example {first}", f"finite {modality} values",
                        f"{int(bad.sum())} NaN/inf values in the split",
                        hint="the official loaders set them to 0: config.dataset.nonfinite='zero'")
    report.count("nonfinite_replaced", modality, int(bad.sum()))
    return np.where(bad, 0.0, x).astype(np.float32)


def _labels(split: dict, name: str, n: int, path: str, where: str) -> np.ndarray:
    if "labels" not in split:
        raise DataError(path, f"{where}: key 'labels'", "the labels array", f"keys {sorted(map(str, split))}")
    try:
        y = np.asarray(split["labels"], dtype=np.float32)
    except (ValueError, TypeError) as e:  # strings, dicts, ragged lists
        raise DataError(path, f"{where}: key 'labels'", "a numeric labels array", f"{e}") from None
    if not np.all(np.isfinite(y)):
        first = int(np.argwhere(~np.isfinite(y))[0][0]) if y.ndim else 0
        raise DataError(path, f"{where}: key 'labels' example {first}", "finite labels", "NaN/inf")
    if name == "iemocap":
        if y.shape != (n, len(LABELS), 2):
            raise DataError(path, f"{where}: key 'labels'", f"IEMOCAP labels [{n}, 4, 2]", f"{list(y.shape)}")
        return y.argmax(-1).astype(np.int32)  # src/dataset.py: Y = argmax(Y, dim=-1)
    if y.size != n:
        raise DataError(path, f"{where}: key 'labels'", f"one sentiment score per example [{n}, 1, 1]",
                        f"{list(y.shape)}")
    return y.reshape(n)


def _key(split: dict, where: str, i: int, path: str) -> str:
    ids = split.get("id")
    if ids is None:
        return f"{where}/{i}"
    if not isinstance(ids, (list, tuple, np.ndarray)) or getattr(ids, "ndim", 1) < 1:
        raise DataError(path, f"{where}: key 'id'", "one (video id, start, end) per example",
                        type(ids).__name__)
    if len(ids) <= i:
        return f"{where}/{i}"
    parts = np.asarray(ids[i], dtype=object).reshape(-1)
    return "_".join(p.decode("utf-8", "replace") if isinstance(p, bytes) else str(p) for p in parts)


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error", name: str = "mosi",
         aligned: bool = False):
    """Read one MulT pickle -> ``({'train'|'dev'|'test': [example]}, ReadReport)``.

    ``name``: 'mosi', 'mosei' or 'iemocap'; ``aligned``: the word-aligned pickle instead of the
    unaligned one (``config.dataset.read_options``).
    """
    if "text" not in feat_dims:
        raise ConfigError("MulT pickles hold text features: set config.dataset.feat_dims.text (300 for GloVe)")
    path = pickle_path(root, name, aligned)
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DataError(path, None, "a dict with 'train', 'valid', 'test'", type(data).__name__)
    report, out = common.ReadReport(), {}
    for theirs, ours in SPLITS.items():
        if theirs not in data:
            raise DataError(path, f"split '{theirs}'", "the splits 'train', 'valid', 'test'",
                            f"splits {sorted(map(str, data))}")
        split = data[theirs]
        if not isinstance(split, dict):
            raise DataError(path, f"split '{theirs}'", "a dict of arrays", type(split).__name__)
        feats, n = {}, None
        for m in ("text", "audio", "video"):
            x = _features(split, m, feat_dims[m], n, path, theirs)
            n = x.shape[0]
            feats[m] = sanitize(x, m, nonfinite, report, path, theirs)
        if n == 0:
            raise DataError(path, f"split '{theirs}'", "at least one example", "0")
        labels = _labels(split, name, n, path, theirs)
        rows = []
        for i in range(n):
            ex = {"key": _key(split, theirs, i, path), "text_ids": np.zeros((0,), np.int32), "label": labels[i]}
            for m, x in feats.items():
                ex["text_feats" if m == "text" else m] = common.truncate(x[i], max_lens[m], m, report)
            rows.append(ex)
        out[ours] = rows
    return out, report
