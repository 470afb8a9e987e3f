"""Checks shared by every format reader: TSV reading, feature lookup, shapes, non-finite values."""
from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mmfuse_jax.errors import DataError


@dataclasses.dataclass
class ReadReport:
    """What a reader changed while reading (shown to the user after `prepare`)."""

    truncated: dict[str, int] = dataclasses.field(default_factory=dict)
    nonfinite_replaced: dict[str, int] = dataclasses.field(default_factory=dict)

    def count(self, table: str, modality: str, n: int = 1) -> None:
        d = getattr(self, table)
        d[modality] = d.get(modality, 0) + n

    def lines(self) -> list[str]:
        out = [f"truncated {m}: {n} sequences" for m, n in sorted(self.truncated.items()) if n]
        out += [f"non-finite {m}: {n} values replaced by 0" for m, n in
                sorted(self.nonfinite_replaced.items()) if n]
        return out


def read_tsv(path: str, header: Sequence[str]) -> list[list[str]]:
    """Rows of a tab-separated file after checking its header (names compared case-insensitively)."""
    if not os.path.exists(path):
        raise DataError(path, None, "an existing TSV file", "nothing at that path")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as e:  # a folder, not UTF-8 text, a runaway field
        raise DataError(path, None, "a readable UTF-8 TSV file", f"{type(e).__name__}: {e}") from None
    if not rows:
        raise DataError(path, "header", f"columns {list(header)}", "an empty file")
    got = [c.strip().lower().replace("_", "").replace(" ", "") for c in rows[0]]
    want = [c.lower().replace("_", "").replace(" ", "") for c in header]
    if got[: len(want)] != want:
        raise DataError(path, "header", f"columns {list(header)}", f"{rows[0]}")
    for i, row in enumerate(rows[1:], start=2):
        if len(row) < len(header):
            raise DataError(path, f"line {i}", f"{len(header)} tab-separated columns", f"{len(row)}: {row}")
    return rows[1:]


def label_index(path: str, line: int, label: str, labels: Sequence[str]) -> int:
    try:
        return list(labels).index(label)
    except ValueError:
        raise DataError(path, f"line {line} column 'label'", f"one of {len(labels)} labels {list(labels)}",
                        repr(label)) from None


def feature_array(features: Mapping[str, Any], key: str, path: str, dim: int, modality: str,
                  *, nonfinite: str, report: ReadReport) -> np.ndarray:
    """Feature sequence for ``key`` as float32 [T, dim], with its checks."""
    if key not in features:
        raise DataError(path, f"key '{key}'", f"a {modality} feature entry for every TSV row",
                        "no such key")
    x = features[key]
    try:
        if isinstance(x, (list, tuple)):  # MIntRec video: a list of T arrays of shape (1, D)
            x = np.stack([np.asarray(a) for a in x]) if len(x) else np.zeros((0, dim))
        x = np.asarray(x)
    except ValueError as e:  # frames of different shapes, ragged nested lists
        raise DataError(path, f"key '{key}'", f"a numeric {modality} array [T, {dim}]", f"{e}") from None
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise DataError(path, f"key '{key}'", f"a numeric {modality} array", f"dtype {x.dtype}")
    if x.ndim == 3 and x.shape[1] == 1:
        x = x[:, 0, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise DataError(path, f"key '{key}'", f"{modality} features [T, {dim}]", f"shape {list(x.shape)}")
    if x.shape[0] == 0:
        raise DataError(path, f"key '{key}'", f"a non-empty {modality} sequence", "0 frames")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        if nonfinite == "error":
            raise DataError(path, f"key '{key}'", f"finite {modality} values",
                            f"{int(bad.sum())} NaN/inf values",
                            hint="set config.dataset.nonfinite='zero' to replace them by 0")
        x = np.where(bad, 0.0, x).astype(np.float32)
        report.count("nonfinite_replaced", modality, int(bad.sum()))
    return x


def numeric_array(value: Any, path: str, where: str) -> np.ndarray:
    """``value`` as a numeric numpy array, or a `DataError` naming ``path`` and ``where`` (ragged nested
    lists, strings, objects)."""
    try:
        x = np.asarray(value)
    except (ValueError, TypeError) as e:  # ragged nested lists
        raise DataError(path, where, "a numeric array", f"{e}") from None
    if x.dtype == object or not np.issubdtype(x.dtype, np.number):
        raise DataError(path, where, "a numeric array", f"dtype {x.dtype}")
    return x


def truncate(x: np.ndarray, max_len: int, modality: str, report: ReadReport) -> np.ndarray:
    # The official MIntRec padding code returns `feat[max_len, :]` (one row) when T >= max_len;
    # we keep the first max_len frames, which is what that code meant to do.
    if x.shape[0] > max_len:
        report.count("truncated", modality)
        return x[:max_len]
    return x
