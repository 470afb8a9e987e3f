"""Open-intent (out-of-scope) detection as in the official MIntRec2.0 single-turn baselines.

Read from thuiar/MIntRec2.0 ``methods/single_turn/{TEXT,MAG_BERT,MULT}/manager_ood.py`` and
``utils/functions.py``:

* The classifier has C = 30 outputs (the known intents); OOS is label C (``ood_label_id``).
* DOC (Shu et al. 2017), ``cal_mu_std`` + ``classify_doc``: p = sigmoid(logits). For each class c
  fit a normal distribution (``scipy.stats.norm.fit``, maximum likelihood) to the mirrored scores
  {p_c, 2 - p_c} of the *in-scope training* examples of class c; its mean is 1 and its standard
  deviation is σ_c = sqrt(mean((1 - p_c)^2)). Threshold t_c = max(0.5, 1 - scale·σ_c), scale = 1
  (``configs/single_turn/*_ood.py``). A test example takes c* = argmax p; it is OOS unless
  p_{c*} > t_{c*} (strict). A class with no training example gets σ = NaN from ``norm.fit`` and
  Python's ``max(0.5, nan)`` is 0.5: its threshold is 0.5, here too.
* Outlier exposure (the ``*_ood`` methods; implemented in `losses.classification_loss`, which
  every classifier uses, so OOS training rows, label C, are handled by every model):
  loss = CE(in-scope batch) + mean over an OOS batch of the cross-entropy to the uniform
  distribution over the C known classes
  (``softmax_cross_entropy_with_softtarget``; MAG_BERT_OOD writes it as ``-log_softmax.mean()``,
  the same number). Plain baselines (``text``, ``mag_bert``, ``mult`` with ``--ood``) train on
  in-scope data only and use DOC at test time.
* Test: in-scope metrics on the in-scope test rows with softmax-argmax predictions
  (``test_ind``); open-intent metrics (`metrics.open_intent`) on in-scope + OOS test rows with
  DOC predictions.

``--ood_detection_method`` (maxlogit, ma, ...) only names runs in the released single-turn code:
no MSP/energy/MaxLogit scoring is implemented there, DOC is the only open-intent decision, so it
is the only one here.

The thresholds fitted at evaluation are saved in ``<run_dir>/doc_thresholds.json`` with the
checkpoint step they belong to (`save_doc_thresholds` / `load_doc_thresholds`), so the report and
the `Predictor` make the same decisions as eval.py.
"""
from __future__ import annotations

import json
import os

import numpy as np

from mmfuse_jax import metrics

# ------------------------------------------------------------------------------- DOC (numpy)


def _logits(x, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be [N, C] logits, got shape {list(x.shape)}")
    return x


def sigmoid(logits) -> np.ndarray:
    """Elementwise logistic function in float64 (tanh form: no overflow for large |x|)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(logits, np.float64)))


def doc_sigma(train_logits_nc, train_labels_n) -> np.ndarray:
    """σ_c [C] of the normal fit to {p, 2 - p}, p = sigmoid(logit_c) of the training rows of class c.

    Rows whose label is not in 0..C-1 (OOS rows, label C) are ignored; a class with no row gets NaN
    (as ``norm.fit`` of an empty sample).
    """
    logits = _logits(train_logits_nc, "train_logits_nc")
    labels = np.asarray(train_labels_n).reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits but {labels.shape[0]} labels")
    c = logits.shape[1]
    known = (labels >= 0) & (labels < c)
    rows, cls = np.nonzero(known)[0], labels[known].astype(np.int64)
    gap_sq = (1.0 - sigmoid(logits[rows, cls])) ** 2  # (p - 1)^2 = ((2 - p) - 1)^2: mean of {p, 2-p} is 1
    sums = np.bincount(cls, weights=gap_sq, minlength=c)
    counts = np.bincount(cls, minlength=c)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(sums / counts)


def doc_thresholds(sigma_c, scale: float = 1.0) -> np.ndarray:
    """t_c [C] = max(0.5, 1 - scale·σ_c); NaN σ (class without training rows) gives 0.5."""
    t = 1.0 - scale * np.asarray(sigma_c, np.float64)
    return np.where(np.isnan(t), 0.5, np.maximum(0.5, t))


def doc_predict(logits_nc, thresholds_c, oos_label: int) -> np.ndarray:
    """Predictions [N] int64: argmax class if its sigmoid score exceeds its threshold, else oos_label."""
    probs = sigmoid(_logits(logits_nc, "logits_nc"))
    thresholds_c = np.asarray(thresholds_c, np.float64)
    if thresholds_c.shape != (probs.shape[1],):
        raise ValueError(f"{probs.shape[1]} classes of logits but thresholds of shape {list(thresholds_c.shape)}")
    best = probs.argmax(axis=1)  # first maximum, as np.argmax in classify_doc
    accept = probs[np.arange(len(best)), best] > thresholds_c[best]
    return np.where(accept, best, oos_label).astype(np.int64)


def doc_fit_predict(train_logits_nc, train_labels_n, logits_nc, *, scale: float = 1.0,
                    oos_label: int | None = None) -> np.ndarray:
    """DOC in one call: thresholds from the training rows, predictions [N] for ``logits_nc``
    (``oos_label`` defaults to C, the official ``ood_label_id``)."""
    c = _logits(logits_nc, "logits_nc").shape[1]
    thresholds = fit_doc_thresholds(train_logits_nc, train_labels_n, scale)
    return doc_predict(logits_nc, thresholds, c if oos_label is None else oos_label)


def open_intent_scores(train_logits_nc, train_labels_n, logits_nc, labels_n, *,
                       scale: float = 1.0) -> dict[str, dict[str, float]]:
    """The two official test tables: ``in_scope`` (`metrics.classification` of the argmax on the
    rows with a known label) and ``open_intent`` (`metrics.open_intent` of the DOC predictions on
    every row, OOS = C). Train rows: the in-scope training split (OOS rows there are ignored)."""
    logits = _logits(logits_nc, "logits_nc")
    labels = np.asarray(labels_n).reshape(-1)
    c = logits.shape[1]
    known = labels < c
    in_scope = metrics.classification(labels[known], logits[known].argmax(1)) if known.any() else {}
    pred = doc_fit_predict(train_logits_nc, train_labels_n, logits, scale=scale, oos_label=c)
    return {"in_scope": in_scope, "open_intent": metrics.open_intent(labels, pred, c)}


# ------------------------------------------------------------------------------- saved thresholds

DOC_THRESHOLDS_FILE = "doc_thresholds.json"


def fit_doc_thresholds(train_logits_nc, train_labels_n, scale: float = 1.0) -> np.ndarray:
    """t_c [C] from the training split's logits and labels: `doc_thresholds` of `doc_sigma`."""
    return doc_thresholds(doc_sigma(train_logits_nc, train_labels_n), scale)


def save_doc_thresholds(run_dir: str, thresholds_c, *, scale: float, checkpoint_step: int) -> str:
    """Write ``<run_dir>/doc_thresholds.json`` (the thresholds of one checkpoint step); returns its path.

    Written to a temporary file and renamed, so a reader never sees half a file.
    """
    path = os.path.join(run_dir, DOC_THRESHOLDS_FILE)
    record = {"checkpoint_step": int(checkpoint_step), "scale": float(scale),
              "thresholds": [float(t) for t in np.asarray(thresholds_c, np.float64).reshape(-1)]}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, path)
    return path


def load_doc_thresholds(run_dir: str, checkpoint_step: int | None = None) -> np.ndarray | None:
    """The thresholds [C] saved in ``run_dir``; None when absent or fitted for another checkpoint
    step than ``checkpoint_step`` (when given)."""
    path = os.path.join(run_dir, DOC_THRESHOLDS_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        record = json.load(f)
    if checkpoint_step is not None and record.get("checkpoint_step") != checkpoint_step:
        return None
    return np.asarray(record["thresholds"], np.float64)
