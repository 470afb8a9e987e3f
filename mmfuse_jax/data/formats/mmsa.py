"""MMSA feature pickles (thuiar/MMSA): CMU-MOSI, CMU-MOSEI, CH-SIMS, CH-SIMSv2.

Layout (read from thuiar/MMSA ``src/MMSA/data_loader.py`` and the KuDA loader ``core/dataset.py``)::

    <root>/Processed/unaligned_50.pkl   (MOSI, MOSEI)   unaligned_39.pkl (SIMS)   sims_unaligned.pkl (SIMSv2)
    {'train' | 'valid' | 'test': {
        'id': [N] str ('vid$_$clip'), 'raw_text': [N] str,
        'text': float [N, Lt, 768]            BERT features (the feature path)
        'text_bert': float [N, 3, Lt]         token ids, attention mask, segment ids, stored as floats
        'audio': float [N, La, Da], 'vision': float [N, Lv, Dv]   zero-padded at the end
        'audio_lengths', 'vision_lengths': [N] int
        'regression_labels': float [N]        MOSI/MOSEI in [-3, 3], SIMS in [-1, 1]
        'regression_labels_T' / '_A' / '_V'   unimodal labels (SIMS, SIMSv2 only)
    }}

Splits map ``train/valid/test -> train/dev/test``. Padding is cut with ``*_lengths`` (text with its
attention mask) so the pipeline can re-pad to its buckets. Real MOSI audio holds ``-inf``; MMSA sets
those values to 0 (``audio[audio == -inf] = 0``) and KuDA does the same for vision: with
``nonfinite='zero'`` every NaN/inf is replaced by 0 and counted in the report, with ``'error'``
the first one is a `DataError`. The pickle is read with the restricted unpickler.

``text_bert`` holds the release's BERT WordPiece ids. With the read option ``tokenize_raw_text=True``
(``config.dataset.read_options.tokenize_raw_text``) they are ignored and the pipeline tokenises
``raw_text`` with the tokenizer of ``config.dataset.bert_path`` instead: what another text encoder
(a RoBERTa checkpoint, byte-level BPE) needs.
"""
from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mmfuse_jax.data.formats import common
from mmfuse_jax.data.safe_pickle import load_pickle
from mmfuse_jax.errors import ConfigError, DataError

LABELS: tuple[str, ...] = ()  # regression: no class names
SPLITS = {"train": "train", "valid": "dev", "test": "test"}  # MMSA name -> ours
PICKLE_NAMES = ("unaligned_39.pkl", "unaligned_50.pkl", "sims_unaligned.pkl", "unaligned.pkl")
UNIMODAL = {"regression_labels_T": "label_text", "regression_labels_A": "label_audio",
            "regression_labels_V": "label_video"}


def find_pickle(root: str) -> str:
    """The feature pickle under ``root`` (``root`` itself, ``Processed/`` or the folder)."""
    if os.path.isfile(root):
        return root
    if not os.path.isdir(root):
        raise DataError(root, None, "an MMSA dataset folder (with Processed/<name>.pkl)", "no such folder")
    for sub in ("Processed", ""):
        for name in PICKLE_NAMES:
            path = os.path.join(root, sub, name)
            if os.path.isfile(path):
                return path
    found = sorted(glob.glob(os.path.join(root, "*.pkl")) + glob.glob(os.path.join(root, "Processed", "*.pkl")))
    if len(found) == 1:
        return found[0]
    raise DataError(root, None, f"one MMSA feature pickle ({', '.join(PICKLE_NAMES)}) in the folder or "
                    "Processed/", f"{len(found)} pickles: {[os.path.basename(f) for f in found]}")


def _array(split: dict, key: str, path: str, where: str, ndim: int, n: int | None) -> np.ndarray:
    if key not in split:
        raise DataError(path, f"{where}: key '{key}'", f"an MMSA split with keys {sorted(map(str, split))} + "
                        f"'{key}'", "missing")
    x = common.numeric_array(split[key], path, f"{where}: key '{key}'")
    if x.ndim != ndim or (n is not None and x.shape[0] != n):
        want = "[N" + ", ?" * (ndim - 1) + "]" if n is None else f"[{n}" + ", ?" * (ndim - 1) + "]"
        raise DataError(path, f"{where}: key '{key}'", f"shape {want}", f"{list(x.shape)}")
    return x


def _lengths(split: dict, key: str, path: str, where: str, n: int, max_t: int) -> np.ndarray:
    lens = _array(split, key, path, where, 1, n)
    bad = np.flatnonzero((lens < 0) | (lens > max_t) | (np.mod(lens, 1) != 0))
    if bad.size:
        i = int(bad[0])
        raise DataError(path, f"{where}: key '{key}' index {i}", f"an integer length in [0, {max_t}]",
                        f"{lens[i]}")
    return lens.astype(np.int64)


def _finite(x: np.ndarray, path: str, where: str, nonfinite: str, report: common.ReadReport,
            modality: str) -> np.ndarray:
    bad = ~np.isfinite(x)
    if not bad.any():
        return x
    if nonfinite == "error":
        i = int(np.argwhere(bad)[0][0])
        raise DataError(path, f"{where} index {i}", f"finite {modality} values",
                        f"{int(bad.sum())} NaN/inf values in the split",
                        hint="MMSA replaces them by 0: set config.dataset.nonfinite='zero'")
    report.count("nonfinite_replaced", modality, int(bad.sum()))
    return np.where(bad, 0.0, x).astype(np.float32)


def _text_ids(text_bert: np.ndarray, path: str, where: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ids, segment ids) per example, cut to the attention mask (real tokens lead, 0-padding follows)."""
    out = []
    for i, (ids, mask, seg) in enumerate(text_bert):
        n = int(np.sum(mask > 0))
        cut = np.concatenate([ids[:n], seg[:n]])
        if not np.all(mask[:n] > 0) or not np.all(np.isfinite(cut)) or np.any(cut < 0) \
                or np.any(cut >= 2**31) or np.any(np.mod(cut, 1) != 0):
            raise DataError(path, f"{where}: key 'text_bert' index {i}",
                            "integer token ids and segment ids in [0, 2^31) and a leading attention mask",
                            f"ids {ids[:n][:8]}..., segments {seg[:n][:8]}...")
        out.append((ids[:n].astype(np.int32), seg[:n].astype(np.int32)))
    return out


def _strings(split: dict, key: str, path: str, where: str, n: int, default: list[str]) -> list:
    """``split[key]`` (ids, raw text): one entry per example, or ``default`` when the key is absent."""
    if key not in split:
        return default
    x = split[key]
    if not isinstance(x, (list, tuple, np.ndarray)) or getattr(x, "ndim", 1) < 1 or len(x) != n:
        got = f"{type(x).__name__} of length {len(x)}" if hasattr(x, "__len__") and getattr(x, "ndim", 1) \
            else type(x).__name__
        raise DataError(path, f"{where}: key '{key}'", f"a list of {n} entries (one per example)", got)
    return list(x)


def _read_split(split: Any, path: str, name: str, *, feat_dims: dict, max_lens: dict, nonfinite: str,
                report: common.ReadReport, tokenize_raw_text: bool = False) -> list[dict]:
    if not isinstance(split, dict):
        raise DataError(path, f"split '{name}'", "a dict of arrays", type(split).__name__)
    labels = _array(split, "regression_labels", path, name, 1, None).astype(np.float32).reshape(-1)
    n = labels.shape[0]
    if n == 0:
        raise DataError(path, f"split '{name}'", "at least one example", "0")
    if not np.all(np.isfinite(labels)):
        i = int(np.flatnonzero(~np.isfinite(labels))[0])
        raise DataError(path, f"{name}: key 'regression_labels' index {i}", "a finite label", f"{labels[i]}")
    feats = {}
    for modality, key in (("audio", "audio"), ("video", "vision")):
        x = _array(split, key, path, name, 3, n)
        if x.shape[2] != feat_dims[modality]:
            raise DataError(path, f"{name}: key '{key}'", f"float32 [N, L, {feat_dims[modality]}]",
                            f"[{', '.join(map(str, x.shape))}]",
                            hint=f"config.dataset.feat_dims.{modality} must match the release")
        lens = _lengths(split, f"{key}_lengths", path, name, n, x.shape[1])
        feats[modality] = (_finite(x.astype(np.float32), path, f"{name}: key '{key}'", nonfinite, report,
                                   modality), lens)
    text_bert = _array(split, "text_bert", path, name, 3, n) if not tokenize_raw_text and (
        "text_bert" in split or "text" not in feat_dims) else None
    if text_bert is not None and text_bert.shape[1] != 3:
        raise DataError(path, f"{name}: key 'text_bert'", "[N, 3, L] (ids, mask, segment)",
                        f"{list(text_bert.shape)}")
    ids = _text_ids(text_bert, path, name) if text_bert is not None else None
    text_feats = None
    if "text" in feat_dims:  # the feature path: precomputed BERT features [N, L, 768]
        text_feats = _array(split, "text", path, name, 3, n)
        if text_feats.shape[2] != feat_dims["text"]:
            raise DataError(path, f"{name}: key 'text'", f"float32 [N, L, {feat_dims['text']}]",
                            f"[{', '.join(map(str, text_feats.shape))}]")
        text_feats = _finite(text_feats.astype(np.float32), path, f"{name}: key 'text'", nonfinite, report, "text")
    unimodal = {ours: _array(split, k, path, name, 1, n).astype(np.float32).reshape(-1)
                for k, ours in UNIMODAL.items() if k in split}
    for k, ours in UNIMODAL.items():
        if ours in unimodal and not np.all(np.isfinite(unimodal[ours])):
            i = int(np.flatnonzero(~np.isfinite(unimodal[ours]))[0])
            raise DataError(path, f"{name}: key '{k}' index {i}", "a finite label", f"{unimodal[ours][i]}")
    raw = _strings(split, "raw_text", path, name, n, [""] * n)
    keys = _strings(split, "id", path, name, n, [f"{name}_{i}" for i in range(n)])
    examples = []
    for i in range(n):
        ex: dict[str, Any] = {"key": str(keys[i]), "text": str(raw[i]), "label": float(labels[i])}
        if ids is not None:
            ex["text_ids"], ex["text_type_ids"] = ids[i]
        if text_feats is not None:
            t = len(ids[i][0]) if ids is not None else text_feats.shape[1]
            ex["text_feats"] = common.truncate(text_feats[i, :t], max_lens["text"], "text", report)
        elif ids is not None and len(ids[i][0]) > max_lens["text"]:
            report.count("truncated", "text")
        for modality, (x, lens) in feats.items():
            ex[modality] = common.truncate(x[i, : lens[i]], max_lens[modality], modality, report)
        for ours, y in unimodal.items():
            ex[ours] = float(y[i])
        examples.append(ex)
    return examples


def read(root: str, *, feat_dims: dict, max_lens: dict, nonfinite: str = "error",
         splits: Sequence[str] = tuple(SPLITS), tokenize_raw_text: bool = False,
         ) -> tuple[dict[str, list[dict]], common.ReadReport]:
    """Read the MMSA pickle under ``root``; returns ``({'train'|'dev'|'test': [example]}, ReadReport)``.

    ``feat_dims`` holds ``audio`` and ``video`` (and ``text`` to use the precomputed text features).
    ``tokenize_raw_text``: ignore the release's ``text_bert`` ids (module docstring).
    """
    if tokenize_raw_text and "text" in feat_dims:
        raise ConfigError("config.dataset.read_options.tokenize_raw_text=True re-tokenises raw_text for a text "
                          "encoder; it cannot be combined with precomputed text features (feat_dims.text)")
    if nonfinite not in ("error", "zero"):
        raise ConfigError(f"config.dataset.nonfinite={nonfinite!r}: expected 'error' or 'zero'")
    path = find_pickle(root)
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise DataError(path, None, "a dict with splits 'train', 'valid', 'test'", type(data).__name__)
    report = common.ReadReport()
    out = {}
    for name in splits:
        if name not in data:
            raise DataError(path, f"split '{name}'", f"splits {list(SPLITS)}", f"keys {sorted(map(str, data))}")
        out[SPLITS[name]] = _read_split(data[name], path, name, feat_dims=feat_dims, max_lens=max_lens,
                                        nonfinite=nonfinite, report=report, tokenize_raw_text=tokenize_raw_text)
    return out, report
