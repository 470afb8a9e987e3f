"""Open-intent detection (mmfuse_jax/ood.py) and metrics.open_intent vs the official MIntRec2.0 code.

References are transcriptions of thuiar/MIntRec2.0 ``methods/single_turn/TEXT/manager_ood.py``
(``fit``, ``cal_mu_std``, ``classify_doc``: scipy ``norm.fit`` on {p, 2-p}, Python loops) and
``utils/metrics.py`` (``OID_Metrics``: sklearn ``confusion_matrix`` + the ``_F_measure`` loop),
plus hand-made cases worked out below.
"""
from __future__ import annotations

import json
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm
from sklearn import metrics as skm

from mmfuse_jax import losses, metrics, ood

# --------------------------------------------------------------------------- official transcriptions


def official_doc(train_logits, train_labels, logits, num_labels, scale=1.0):
    """cal_mu_std + classify_doc on sigmoid scores (ood_label_id = num_labels)."""
    sig = lambda x: 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))  # noqa: E731
    train_p, p_all = sig(train_logits), sig(logits)
    mu_stds = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # norm.fit of an empty class
        for i in range(num_labels):
            x = train_p[train_labels == i, i]
            mu_stds.append(list(norm.fit([p for p in x] + [2 - p for p in x])))  # noqa: C416 (as official)
    y_pred = []
    for p in p_all:
        c = np.argmax(p)
        threshold = max(0.5, 1 - scale * mu_stds[c][1])
        y_pred.append(c if np.max(p) > threshold else num_labels)
    return np.array(y_pred), np.array(mu_stds)


def official_oid(y_true, y_pred, rounded=False):
    """OID_Metrics.__call__ / _F_measure (rounding to 4 decimals optional, as the official does)."""
    cm = skm.confusion_matrix(y_true, y_pred)
    fs = []
    for idx in range(cm.shape[0]):
        tp = cm[idx][idx]
        r = tp / cm[idx].sum() if cm[idx].sum() != 0 else 0
        p = tp / cm[:, idx].sum() if cm[:, idx].sum() != 0 else 0
        fs.append(2 * r * p / (r + p) if (r + p) != 0 else 0)
    f, f_seen, f_unseen = np.mean(fs), np.mean(fs[:-1]), fs[-1]
    if rounded:
        f, f_seen, f_unseen = np.round(f, 4), np.round(f_seen, 4), round(f_unseen, 4)
    return {"acc": skm.accuracy_score(y_true, y_pred), "f1": f, "f1_known": f_seen, "f1_oos": f_unseen}


def logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


# ----------------------------------------------------------------------------------------- DOC

# Class 3 has no training example. Expected sigmas by the explicit formula sqrt(mean((1-p)^2)).
TRAIN_P = [(0, 0.9), (0, 0.8), (1, 0.6), (2, 0.99), (2, 0.95), (2, 0.3)]
SIGMA = [math.sqrt((0.1**2 + 0.2**2) / 2), 0.4, math.sqrt((0.01**2 + 0.05**2 + 0.7**2) / 3), float("nan")]


def hand_train():
    logits = np.full((len(TRAIN_P), 4), -3.0)
    labels = np.array([c for c, _ in TRAIN_P])
    logits[np.arange(len(TRAIN_P)), labels] = logit([p for _, p in TRAIN_P])
    return logits, labels


def test_doc_sigma_and_thresholds_hand_case():
    logits, labels = hand_train()
    sigma = ood.doc_sigma(logits, labels)
    np.testing.assert_allclose(sigma[:3], SIGMA[:3], rtol=1e-12)
    assert np.isnan(sigma[3])
    for c in range(3):  # scipy's maximum-likelihood normal fit of the mirrored scores
        p = np.array([q for k, q in TRAIN_P if k == c])
        assert sigma[c] == pytest.approx(norm.fit(np.concatenate([p, 2 - p]))[1], abs=1e-12)
    t = ood.doc_thresholds(sigma)
    want = [1 - SIGMA[0], 0.6, 1 - SIGMA[2], 0.5]   # max(0.5, 1 - sigma); 1 - 0.405 = 0.595 > 0.5
    np.testing.assert_allclose(t, want, rtol=1e-12)
    assert np.isfinite(t).all()
    np.testing.assert_allclose(ood.doc_thresholds(sigma, scale=2.0), [1 - 2 * SIGMA[0], 0.5, 0.5, 0.5])


def test_doc_predict_hand_case():
    logits, labels = hand_train()
    t = ood.doc_thresholds(ood.doc_sigma(logits, labels))
    test_p = [[0.85, 0.1, 0.2, 0.1],   # 0.85 > 0.8419: class 0
              [0.83, 0.1, 0.1, 0.1],   # below: OOS
              [0.1, 0.61, 0.2, 0.1],   # 0.61 > 0.6: class 1
              [0.1, 0.59, 0.2, 0.1],   # OOS
              [0.1, 0.1, 0.1, 0.55],   # empty class 3, threshold 0.5: class 3
              [0.5, 0.1, 0.1, 0.1],    # OOS
              [0.1, 0.1, 0.1, 0.5]]    # 0.5 is not > 0.5 (strict): OOS
    pred = ood.doc_predict(logit(test_p), t, oos_label=4)
    np.testing.assert_array_equal(pred, [0, 4, 1, 4, 3, 4, 4])
    np.testing.assert_array_equal(ood.doc_fit_predict(logits, labels, logit(test_p)), pred)  # OOS = C
    official, _ = official_doc(logits, labels, logit(test_p), 4)
    np.testing.assert_array_equal(pred, official)


def test_doc_matches_official_on_random_cases():
    rng = np.random.default_rng(0)
    for trial in range(30):
        c, n = int(rng.integers(2, 8)), int(rng.integers(5, 80))
        train_labels = rng.integers(0, c + 1, n)          # label c: OOS training rows, ignored
        train_logits = rng.normal(0, 2, (n, c)) + 3 * np.eye(c + 1)[train_labels][:, :c]
        logits = rng.normal(0, 2.5, (40, c))
        scale = 1.0 if trial % 2 else float(rng.uniform(0.5, 2.0))
        pred = ood.doc_fit_predict(train_logits, train_labels, logits, scale=scale)
        want, mu_std = official_doc(train_logits, train_labels, logits, c, scale=scale)
        np.testing.assert_array_equal(pred, want, err_msg=f"trial {trial}")
        np.testing.assert_allclose(ood.doc_sigma(train_logits, train_labels), mu_std[:, 1], atol=1e-12)


def test_doc_is_invariant_to_row_order():
    rng = np.random.default_rng(1)
    train_logits, train_labels = rng.normal(0, 2, (60, 5)), rng.integers(0, 5, 60)
    logits = rng.normal(0, 2, (25, 5))
    t = ood.doc_thresholds(ood.doc_sigma(train_logits, train_labels))
    perm = rng.permutation(60)
    np.testing.assert_allclose(ood.doc_thresholds(ood.doc_sigma(train_logits[perm], train_labels[perm])), t,
                               rtol=1e-13)
    pred = ood.doc_predict(logits, t, 5)
    order = rng.permutation(25)
    np.testing.assert_array_equal(ood.doc_predict(logits[order], t, 5), pred[order])


def test_doc_no_nan_with_empty_class_and_bad_shapes():
    logits = np.array([[4.0, -1.0, 0.0], [3.0, 0.0, -2.0]])
    t = ood.doc_thresholds(ood.doc_sigma(logits, np.array([0, 0])))  # classes 1, 2 empty
    assert np.isfinite(t).all() and t[1] == t[2] == 0.5
    pred = ood.doc_predict(np.array([[-5.0, 1.0, 0.0], [-5.0, -1.0, -2.0]]), t, 3)
    np.testing.assert_array_equal(pred, [1, 3])   # sigmoid(1) = 0.73 > 0.5; sigmoid(-1) < 0.5
    with pytest.raises(ValueError, match="thresholds of shape"):
        ood.doc_predict(logits, t[:2], 3)
    with pytest.raises(ValueError, match=r"\[N, C\] logits"):
        ood.doc_sigma(logits[0], np.array([0]))


# --------------------------------------------------------------------------------- open intent

def test_open_intent_hand_case():
    # cm rows (true 0..3): [1,1,0,0] [0,1,0,1] [0,0,1,0] [0,0,0,3]; F1 per class 2/3, 1/2, 1, 6/7.
    y_true = [0, 0, 1, 1, 2, 3, 3, 3]
    y_pred = [0, 1, 1, 3, 2, 3, 3, 3]
    got = metrics.open_intent(y_true, y_pred, oos_label=3)
    want = {"acc": 6 / 8, "f1": (2 / 3 + 1 / 2 + 1 + 6 / 7) / 4, "f1_known": (2 / 3 + 1 / 2 + 1) / 3, "f1_oos": 6 / 7}
    for k, v in want.items():
        assert got[k] == pytest.approx(v, abs=1e-12), k
    for k, v in official_oid(y_true, y_pred).items():
        assert got[k] == pytest.approx(v, abs=1e-12), k


def test_open_intent_matches_official_on_random_cases():
    rng = np.random.default_rng(2)
    for trial in range(200):
        k, n = int(rng.integers(2, 31)), int(rng.integers(5, 300))
        y_true = rng.integers(0, k + 1, n)
        y_true[0] = k  # the OOS class is present (the official test set always has OOS rows)
        noise = rng.integers(0, k + 1, n)
        y_pred = np.where(rng.random(n) < rng.uniform(0.2, 0.9), y_true, noise)
        got = metrics.open_intent(y_true, y_pred, oos_label=k)
        ref, rounded = official_oid(y_true, y_pred), official_oid(y_true, y_pred, rounded=True)
        for key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), f"trial {trial} {key}"
            assert abs(got[key] - rounded[key]) <= 5e-5 + 1e-12, f"trial {trial} {key}"


def test_open_intent_edge_cases():
    # No OOS anywhere: the official code would call label 2 "open"; we report f1_oos = 0.
    got = metrics.open_intent([0, 1, 2], [0, 1, 1], oos_label=5)
    assert got["f1_oos"] == 0.0 and got["f1_known"] == pytest.approx(got["f1"]) and got["acc"] == pytest.approx(2 / 3)
    only_oos = metrics.open_intent([5, 5], [5, 5], oos_label=5)
    assert only_oos == {"acc": 1.0, "f1": 1.0, "f1_known": 0.0, "f1_oos": 1.0}
    with pytest.raises(ValueError, match="oos_label=5"):
        metrics.open_intent([0, 6], [0, 1], oos_label=5)


def test_in_scope_scorer_and_open_intent_scores():
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(0, 2, (40, 4)), rng.integers(0, 5, 40)   # label 4: OOS rows
    got = metrics.score("mintrec2", {"label": labels, "logits": logits})
    known = labels < 4
    assert got == metrics.classification(labels[known], logits[known].argmax(1))
    assert metrics.metric_names("mintrec2") == metrics.metric_names("classification")
    train_logits, train_labels = rng.normal(0, 2, (30, 4)), rng.integers(0, 4, 30)
    tables = ood.open_intent_scores(train_logits, train_labels, logits, labels)
    assert tables["in_scope"] == got
    official_pred, _ = official_doc(train_logits, train_labels, logits, 4)
    assert tables["open_intent"] == pytest.approx(official_oid(labels, official_pred), abs=1e-12)


# --------------------------------------------------------------------------- outlier exposure

def test_outlier_exposure_hand_case():
    logits = jnp.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 0.0, 0.0]])
    row1 = math.log(math.e + math.e**2 + math.e**3) - 2.0   # logsumexp - mean logit
    got = losses.outlier_exposure_loss(logits, jnp.array([1, 1, 0]), jnp.array([1.0, 1.0, 1.0]))
    assert float(got) == pytest.approx((math.log(3) + row1) / 2, rel=1e-6)
    got = losses.outlier_exposure_loss(logits, jnp.array([True, True, False]), jnp.array([1.0, 0.0, 1.0]))
    assert float(got) == pytest.approx(math.log(3), rel=1e-6)
    assert float(losses.outlier_exposure_loss(logits, jnp.zeros(3), jnp.ones(3))) == 0.0


def test_open_set_cross_entropy_masks_oos_rows():
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 1, (3, 4)).astype(np.float32)
    labels, valid = np.array([1, 4, 2]), np.array([1.0, 1.0, 0.0])  # label 4 = OOS; row 2 padding
    loss, aux = jax.jit(losses.open_set_cross_entropy)(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(valid))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(aux["ce"]) == pytest.approx(-logp[0, 1], rel=1e-5)
    assert float(aux["oe"]) == pytest.approx(-logp[1].mean(), rel=1e-5)
    assert float(loss) == pytest.approx(-logp[0, 1] - logp[1].mean(), rel=1e-5)
    grads = jax.grad(lambda x: losses.open_set_cross_entropy(x, jnp.asarray(labels), jnp.asarray(valid))[0])(
        jnp.asarray(logits))
    assert np.isfinite(np.asarray(grads)).all() and not np.asarray(grads)[2].any()
    # Without OOS rows it is the plain classification loss.
    batch = {"label": jnp.array([1, 0, 2]), "valid": jnp.asarray(valid)}
    loss, aux = losses.classification_loss({"logits": jnp.asarray(logits)}, batch)
    plain = losses.cross_entropy(jnp.asarray(logits), batch["label"], batch["valid"])
    assert float(loss) == pytest.approx(float(plain), rel=1e-6) and float(aux["oe"]) == 0.0


# --------------------------------------------------------------------------- saved thresholds


def test_doc_thresholds_file_round_trip_and_step_check(tmp_path):
    rng = np.random.default_rng(3)
    train_logits, train_labels = rng.normal(size=(40, 4)) * 3, rng.integers(0, 5, 40)  # 4: OOS rows, ignored
    t = ood.fit_doc_thresholds(train_logits, train_labels, scale=1.5)
    _, mu_stds = official_doc(train_logits, train_labels, train_logits, 4, scale=1.5)
    np.testing.assert_allclose(t, np.maximum(0.5, 1 - 1.5 * mu_stds[:, 1]))
    assert ood.load_doc_thresholds(str(tmp_path)) is None  # nothing saved yet
    path = ood.save_doc_thresholds(str(tmp_path), t, scale=1.5, checkpoint_step=12)
    assert os.path.basename(path) == ood.DOC_THRESHOLDS_FILE and not os.path.exists(path + ".tmp")
    with open(path) as f:
        assert json.load(f)["scale"] == 1.5
    np.testing.assert_array_equal(ood.load_doc_thresholds(str(tmp_path)), t)  # float64, exactly
    np.testing.assert_array_equal(ood.load_doc_thresholds(str(tmp_path), 12), t)
    assert ood.load_doc_thresholds(str(tmp_path), 13) is None  # fitted for another checkpoint
