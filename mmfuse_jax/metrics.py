"""Benchmark metrics, numerically identical to the official evaluation code.

`classification` follows thuiar/MIntRec utils/metrics.py (scikit-learn ``accuracy_score`` and
``precision/recall/f1_score(average='macro')``, plus the weighted averages MIntRec2.0 reports).
Rules kept from scikit-learn: averages run over the labels present in y_true ∪ y_pred; 0/0
precision or recall is 0; per-class F1 is averaged (macro F1 is not the F1 of macro P and R).
Values are fractions in [0, 1] (papers print x100).
"""
from __future__ import annotations

import numpy as np


def _as_labels(y, name: str) -> np.ndarray:
    """Integer class labels as a 1-D array ((N,) or (N, 1) accepted)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class labels, got shape {list(y.shape)}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.mod(y, 1) == 0):
            raise ValueError(f"{name} must hold integer class labels, got dtype {y.dtype}")
        y = y.astype(np.int64)
    return y


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts [len(labels), len(labels)]: rows = true label, columns = predicted label."""
    cm = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(cm, (np.searchsorted(labels, y_true), np.searchsorted(labels, y_pred)), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class(y_true, y_pred) -> dict[str, np.ndarray]:
    """Per-label precision, recall, F1 and support over the labels present in y_true ∪ y_pred."""
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("classification metrics need at least one example")
    labels = np.union1d(y_true, y_pred)
    cm = confusion(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    prec, rec = _safe_div(tp, cm.sum(0)), _safe_div(tp, cm.sum(1))
    f1 = _safe_div(2 * prec * rec, prec + rec)
    return {"labels": labels, "precision": prec, "recall": rec, "f1": f1, "support": cm.sum(1)}


def classification(y_true, y_pred) -> dict[str, float]:
    """``acc, f1, prec, rec`` (macro) and ``weighted_f1, weighted_prec, weighted_rec``."""
    pc = per_class(y_true, y_pred)
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    s = pc["support"].astype(np.float64)
    weighted = lambda x: float((s * x).sum() / s.sum())  # noqa: E731  (sum, then divide: as sklearn)
    return {"acc": float(np.mean(y_true == y_pred)),
            "f1": float(pc["f1"].mean()), "prec": float(pc["precision"].mean()),
            "rec": float(pc["recall"].mean()),
            "weighted_f1": weighted(pc["f1"]), "weighted_prec": weighted(pc["precision"]),
            "weighted_rec": weighted(pc["recall"])}


# ----------------------------------------------------------------------------- dispatch by dataset

def _score_classification(pred: dict[str, np.ndarray]) -> dict[str, float]:
    return classification(pred["label"], pred["logits"].argmax(-1))


# config.dataset.metric -> (scorer on {'label', 'logits' | 'prediction', ...}, metric names)
SCORERS = {
    "classification": (_score_classification, ("acc", "f1", "prec", "rec", "weighted_f1", "weighted_prec",
                                                "weighted_rec")),
}


def score(name: str, pred: dict[str, np.ndarray]) -> dict[str, float]:
    if name not in SCORERS:
        raise ValueError(f"unknown metric set {name!r}: expected one of {sorted(SCORERS)}")
    return SCORERS[name][0](pred)


def metric_names(name: str) -> list[str]:
    if name not in SCORERS:
        raise ValueError(f"unknown metric set {name!r}: expected one of {sorted(SCORERS)}")
    return list(SCORERS[name][1])
