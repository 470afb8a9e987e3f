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
    weighted = lambda x: float((s * x).sum() / s.sum())
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


# ----------------------------------------------------------------------- open intent (MIntRec2.0)

def open_intent(y_true, y_pred, oos_label: int) -> dict[str, float]:
    """``acc, f1, f1_known, f1_oos`` as thuiar/MIntRec2.0 utils/metrics.py ``OID_Metrics`` (unrounded).

    The official code builds ``confusion_matrix(y_true, y_pred)`` over the labels present, so OOS
    (the largest label) is its last row/column; per class r = TP/row, p = TP/column, F1 = 2rp/(r+p)
    (0/0 -> 0); f1 = mean over all rows, f1_known = mean without the last, f1_oos = the last.
    When ``oos_label`` is absent from y_true and y_pred the official code would call the largest
    *known* label "open"; here f1_oos is 0 and f1_known averages every present label. When OOS is
    the only label present, f1_known is 0 (official: the mean of nothing, NaN).
    """
    pc = per_class(y_true, y_pred)
    labels, f1 = pc["labels"], pc["f1"]
    if labels[-1] > oos_label:
        raise ValueError(f"labels must be <= oos_label={oos_label} (OOS is the largest), got {labels[-1]}")
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    has_oos = labels[-1] == oos_label
    known = f1[:-1] if has_oos else f1
    return {"acc": float(np.mean(y_true == y_pred)), "f1": float(f1.mean()),
            "f1_known": float(known.mean()) if known.size else 0.0,
            "f1_oos": float(f1[-1]) if has_oos else 0.0}


def _score_in_scope(pred: dict[str, np.ndarray]) -> dict[str, float]:
    # MIntRec2.0 in-scope table: rows whose label is no classifier output (OOS, label >= C) are left
    # out, as the official test_ind does (y_true != ood_label_id); prediction = argmax.
    label, logits = np.asarray(pred["label"]), np.asarray(pred["logits"])
    known = label < logits.shape[-1]
    return classification(label[known], logits[known].argmax(-1))


SCORERS["mintrec2"] = (_score_in_scope, SCORERS["classification"][1])


# ----------------------------------------------------------------------- CH-SIMS / CH-SIMSv2 (MMSA)

_SIMS_EDGES = {2: (0.0,), 3: (-0.1, 0.1), 5: (-0.7, -0.1, 0.1, 0.7)}  # inner bin edges, right-closed


def _regression_arrays(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Flat float arrays; float32 stays float32 so bin edges compare as in the reference (torch float32)."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    if y_true.size < 2:
        raise ValueError("regression metrics need at least two examples (correlation)")
    as_float = lambda y: y if np.issubdtype(y.dtype, np.floating) else y.astype(np.float64)
    return as_float(y_true), as_float(y_pred)


def sims_regression(y_true, y_pred) -> dict[str, float]:
    """``acc_2, acc_3, acc_5, f1_2, mae, corr`` as thuiar/MMSA utils/metricsTop.py ``__eval_sims_regression``.

    Predictions and truths are clipped to [-1, 1] first (for MAE and Corr too); classes are the
    right-closed bins [-1, 0], (0, 1] (acc_2), edges -0.1, 0.1 (acc_3) and -0.7, -0.1, 0.1, 0.7
    (acc_5); f1_2 is the weighted F1 on the acc_2 bins with scikit-learn's (y_true, y_pred) order, as
    MMSA calls it (KuDA's core/metric.py swaps the arguments; its published F1 is that variant).
    Unrounded fractions (the reference rounds to 4 decimals).
    """
    y_true, y_pred = _regression_arrays(y_true, y_pred)
    t, p = np.clip(y_true, -1.0, 1.0), np.clip(y_pred, -1.0, 1.0)
    bins = {k: (np.digitize(t, np.asarray(e, t.dtype), right=True), np.digitize(p, np.asarray(e, p.dtype),
                                                                                 right=True))
            for k, e in _SIMS_EDGES.items()}
    out = {f"acc_{k}": float(np.mean(bt == bp)) for k, (bt, bp) in bins.items()}
    out["f1_2"] = classification(*bins[2])["weighted_f1"]
    out["mae"] = float(np.mean(np.abs(p.astype(np.float64) - t.astype(np.float64))))
    out["corr"] = float(np.corrcoef(p.astype(np.float64), t.astype(np.float64))[0, 1])
    return out


def _sims_scorer(label_key: str):
    def scorer(pred: dict[str, np.ndarray]) -> dict[str, float]:
        return sims_regression(pred[label_key], pred["prediction"])
    return scorer


_SIMS_NAMES = ("acc_2", "acc_3", "acc_5", "f1_2", "mae", "corr")
for _name in ("sims", "simsv2"):
    SCORERS[_name] = (_sims_scorer("label"), _SIMS_NAMES)
    # KuDA stage 1: a unimodal prediction against that modality's label (label_text, ...).
    for _m in ("text", "audio", "video"):
        SCORERS[f"{_name}_{_m}"] = (_sims_scorer(f"label_{_m}"), _SIMS_NAMES)


# ----------------------------------------------------------------------- MOSI / MOSEI, IEMOCAP, binary (MulT family)

REGRESSION_NAMES = ("has0_acc_2", "has0_f1_2", "non0_acc_2", "non0_f1_2", "acc_5", "acc_7", "mae", "corr")
EMOTIONS = ("neutral", "happy", "sad", "angry")  # MulT IEMOCAP label order (src/eval_metrics.py)


def _flat_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    if y_true.size < 2:
        raise ValueError("regression metrics need at least two examples (correlation)")
    return y_true, y_pred


def _multiclass_acc(y_pred: np.ndarray, y_true: np.ndarray) -> float:
    return float(np.mean(np.round(y_pred) == np.round(y_true)))  # np.round: half to even, as official


def regression(y_true, y_pred, dataset: str) -> dict[str, float]:
    """MOSI/MOSEI sentiment regression as thuiar/MMSA ``__eval_mosei_regression`` (= MulT ``eval_mosei_senti``).

    has0: truth >= 0 vs prediction >= 0 over all examples; non0: rows with truth != 0 only,
    > 0 vs > 0 (MulT's published binary numbers, ``exclude_zero=True``); F1s are scikit-learn's
    weighted F1 with (y_true, y_pred); acc_5 / acc_7 clip both to [-2, 2] / [-3, 3] then
    ``np.round`` (half to even); mae and corr (Pearson) use the unclipped values. Fractions,
    unrounded (MMSA rounds to 4 decimals). Note the reference's argument order is (y_pred, y_true).
    """
    if dataset in ("sims", "simsv2"):
        return sims_regression(y_true, y_pred)
    if dataset not in ("mosi", "mosei"):
        raise ValueError(f"regression metrics are defined for 'mosi', 'mosei', 'sims', 'simsv2'; got {dataset!r}")
    y_true, y_pred = _flat_pair(y_true, y_pred)
    t, p = y_true.astype(np.float64), y_pred.astype(np.float64)
    non0 = y_true != 0
    has0_t, has0_p = (y_true >= 0).astype(np.int64), (y_pred >= 0).astype(np.int64)
    out = {"has0_acc_2": float(np.mean(has0_t == has0_p)),
           "has0_f1_2": classification(has0_t, has0_p)["weighted_f1"]}
    if non0.any():
        n0_t, n0_p = (y_true[non0] > 0).astype(np.int64), (y_pred[non0] > 0).astype(np.int64)
        out.update(non0_acc_2=float(np.mean(n0_t == n0_p)), non0_f1_2=classification(n0_t, n0_p)["weighted_f1"])
    else:  # every truth is 0: the reference fails on an empty selection; report 0
        out.update(non0_acc_2=0.0, non0_f1_2=0.0)
    out["acc_5"] = _multiclass_acc(np.clip(y_pred, -2.0, 2.0), np.clip(y_true, -2.0, 2.0))
    out["acc_7"] = _multiclass_acc(np.clip(y_pred, -3.0, 3.0), np.clip(y_true, -3.0, 3.0))
    out["mae"] = float(np.mean(np.abs(p - t)))
    # Constant predictions or truths: the reference's np.corrcoef gives NaN; 0 here.
    out["corr"] = float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else 0.0
    return out


def emotion(logits, labels) -> dict[str, float]:
    """IEMOCAP as MulT ``eval_iemocap``: per emotion, argmax over its 2 logits vs the 0/1 label;
    accuracy and weighted F1 (``{emotion}_acc``, ``{emotion}_f1``), plus their means ``acc``/``f1``
    (ours, for early stopping), and ``ce``: the mean 2-way cross-entropy over every (example,
    emotion), MulT's IEMOCAP validation loss (src/train.py ``CrossEntropyLoss`` on
    ``preds.view(-1, 2)``), which its learning-rate schedule watches. logits [N, 4, 2], labels [N, 4]."""
    logits, labels = np.asarray(logits), np.asarray(labels)
    if logits.ndim != 3 or logits.shape[1:] != (len(EMOTIONS), 2) or labels.shape != logits.shape[:2]:
        raise ValueError(f"emotion metrics need logits [N, 4, 2] and labels [N, 4], got {list(logits.shape)} "
                         f"and {list(labels.shape)}")
    out = {}
    for k, name in enumerate(EMOTIONS):
        res = classification(labels[:, k], logits[:, k].argmax(-1))
        out[f"{name}_acc"], out[f"{name}_f1"] = res["acc"], res["weighted_f1"]
    out["acc"] = float(np.mean([out[f"{e}_acc"] for e in EMOTIONS]))
    out["f1"] = float(np.mean([out[f"{e}_f1"] for e in EMOTIONS]))
    z = logits.astype(np.float64)
    log_p = z - np.logaddexp(z[..., 0], z[..., 1])[..., None]
    out["ce"] = float(-np.mean(np.take_along_axis(log_p, labels.astype(np.int64)[..., None], -1)))
    return out


def binary(y_true, y_pred) -> dict[str, float]:
    """Binary detection (UR-FUNNY humour, MUStARD sarcasm): ``acc``, ``f1`` (weighted, MUStARD's
    "weighted F-score") and ``binary_f1`` (F1 of the positive class 1, scikit-learn's default)."""
    y_true, y_pred = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if not (np.isin(y_true, (0, 1)).all() and np.isin(y_pred, (0, 1)).all()):
        raise ValueError("binary metrics need labels in {0, 1}")
    res = classification(y_true, y_pred)
    tp = float(np.sum((y_true == 1) & (y_pred == 1)))
    denom = float(np.sum(y_true == 1) + np.sum(y_pred == 1))
    return {"acc": res["acc"], "f1": res["weighted_f1"], "binary_f1": 2 * tp / denom if denom else 0.0}


def _regression_scorer(dataset: str):
    def scorer(pred: dict[str, np.ndarray]) -> dict[str, float]:
        return regression(pred["label"], pred["prediction"], dataset)
    return scorer


for _name in ("mosi", "mosei"):
    SCORERS[_name] = (_regression_scorer(_name), REGRESSION_NAMES)
SCORERS["iemocap"] = (lambda pred: emotion(pred["logits"], pred["label"]),
                      tuple(f"{e}_{m}" for e in EMOTIONS for m in ("acc", "f1")) + ("acc", "f1", "ce"))
SCORERS["binary"] = (lambda pred: binary(pred["label"], pred["logits"].argmax(-1)), ("acc", "f1", "binary_f1"))
