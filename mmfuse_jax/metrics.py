"""Benchmark metrics, numerically identical to the official evaluation code.

`classification` follows thuiar/MIntRec utils/metrics.py (scikit-learn ``accuracy_score`` and
``precision/recall/f1_score(average='macro')``, plus the weighted averages MIntRec2.0 reports).
Rules kept from scikit-learn: averages run over the labels present in y_true ∪ y_pred; 0/0
precision or recall is 0; per-class F1 is averaged (macro F1 is not the F1 of macro P and R).
Values are fractions in [0, 1] (papers print x100).
"""
from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Counts [len(labels), len(labels)]: rows = true label, columns = predicted label."""
    index = {int(label): i for i, label in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), np.int64)
    np.add.at(cm, ([index[int(t)] for t in y_true], [index[int(p)] for p in y_pred]), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def per_class(y_true, y_pred) -> dict[str, np.ndarray]:
    """Per-label precision, recall, F1 and support over the labels present in y_true ∪ y_pred."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} labels but y_pred has {y_pred.size}")
    labels = np.union1d(y_true, y_pred)
    cm = confusion(y_true, y_pred, labels)
    tp = np.diag(cm).astype(np.float64)
    prec, rec = _safe_div(tp, cm.sum(0)), _safe_div(tp, cm.sum(1))
    f1 = _safe_div(2 * prec * rec, prec + rec)
    return {"labels": labels, "precision": prec, "recall": rec, "f1": f1, "support": cm.sum(1)}


def classification(y_true, y_pred) -> dict[str, float]:
    """``acc, f1, prec, rec`` (macro) and ``weighted_f1, weighted_prec, weighted_rec``."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.size == 0:
        raise ValueError("classification metrics need at least one example")
    pc = per_class(y_true, y_pred)
    w = pc["support"] / pc["support"].sum()
    return {"acc": float(np.mean(y_true == y_pred)),
            "f1": float(pc["f1"].mean()), "prec": float(pc["precision"].mean()),
            "rec": float(pc["recall"].mean()),
            "weighted_f1": float((w * pc["f1"]).sum()), "weighted_prec": float((w * pc["precision"]).sum()),
            "weighted_rec": float((w * pc["recall"]).sum())}
