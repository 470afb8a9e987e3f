"""MOSI/MOSEI regression, IEMOCAP emotion and binary metrics against numpy/scikit-learn
transcriptions of the official evaluation functions (thuiar/MMSA ``__eval_mosei_regression``,
yaohungt/Multimodal-Transformer ``eval_mosei_senti`` / ``eval_iemocap``) and hand-checked cases."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from mmfuse_jax import metrics


def mmsa_eval_mosei_regression(y_pred, y_true):
    """Transcription of MMSA metricsTop.__eval_mosei_regression (argument order as there)."""
    test_preds, test_truth = np.asarray(y_pred).reshape(-1), np.asarray(y_true).reshape(-1)
    a7p, a7t = np.clip(test_preds, -3., 3.), np.clip(test_truth, -3., 3.)
    a5p, a5t = np.clip(test_preds, -2., 2.), np.clip(test_truth, -2., 2.)
    mult = lambda p, t: np.sum(np.round(p) == np.round(t)) / float(len(t))
    non_zeros = np.array([i for i, e in enumerate(test_truth) if e != 0])
    nz_t, nz_p = test_truth[non_zeros] > 0, test_preds[non_zeros] > 0
    b_t, b_p = test_truth >= 0, test_preds >= 0
    return {"has0_acc_2": accuracy_score(b_p, b_t), "has0_f1_2": f1_score(b_t, b_p, average="weighted"),
            "non0_acc_2": accuracy_score(nz_p, nz_t), "non0_f1_2": f1_score(nz_t, nz_p, average="weighted"),
            "acc_5": mult(a5p, a5t), "acc_7": mult(a7p, a7t),
            "mae": np.mean(np.absolute(test_preds - test_truth)), "corr": np.corrcoef(test_preds, test_truth)[0][1]}


def mult_eval_iemocap(logits, truths):
    """Transcription of MulT eval_iemocap (single < 0)."""
    out = {}
    for k, emo in enumerate(["neutral", "happy", "sad", "angry"]):
        p, t = np.argmax(logits[:, k], axis=1), truths[:, k]
        out[f"{emo}_f1"], out[f"{emo}_acc"] = f1_score(t, p, average="weighted"), accuracy_score(t, p)
    return out


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dataset", ["mosi", "mosei"])
def test_regression_matches_mmsa(seed, dataset):
    rng = np.random.default_rng(seed)
    n = 101
    truth = np.round(rng.uniform(-3.4, 3.4, n) * 3) / 3           # MOSI labels are averages of thirds
    truth[rng.choice(n, 9, replace=False)] = 0.0                   # zeros in the truth
    pred = rng.normal(0, 2.2, n).astype(np.float32)                # some beyond +-3 (clipping)
    pred[:6] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5]                   # halves: np.round goes to even
    got = metrics.regression(truth.astype(np.float32), pred, dataset)
    ref = mmsa_eval_mosei_regression(pred, truth.astype(np.float32))
    assert set(got) == set(metrics.REGRESSION_NAMES)
    for k in ref:
        assert got[k] == pytest.approx(float(ref[k]), abs=1e-4), k


def test_regression_hand_case():
    truth = np.array([0.0, 0.6, -1.4, 2.5, -3.0, 1.0])
    pred = np.array([0.2, -0.1, -1.6, 3.7, -2.5, 0.5])
    got = metrics.regression(truth, pred, "mosi")
    # has0: truth>=0 [T,T,F,T,F,T]; pred>=0 [T,F,F,T,F,T] -> 5/6
    assert got["has0_acc_2"] == pytest.approx(5 / 6)
    # non0 drops truth 0: [T,F,T,F,T] vs [F,F,T,F,T] -> 4/5
    assert got["non0_acc_2"] == pytest.approx(4 / 5)
    # acc_7: round(clip) truth [0,1,-1,2,-3,1], pred [0,-0,-2,3,-2,0] (2.5 -> 2, 0.5 -> 0 half to even)
    assert got["acc_7"] == pytest.approx(1 / 6)
    # acc_5: clip to +-2 first: truth [0,1,-1,2,-2,1], pred [0,-0,-2,2,-2,0]
    assert got["acc_5"] == pytest.approx(3 / 6)
    assert got["mae"] == pytest.approx(np.mean([0.2, 0.7, 0.2, 1.2, 0.5, 0.5]))  # unclipped
    assert got["corr"] == pytest.approx(np.corrcoef(pred, truth)[0, 1])


def test_regression_bad_inputs():
    with pytest.raises(ValueError, match="'mosi', 'mosei', 'sims', 'simsv2'; got 'iemocap'"):
        metrics.regression([0, 1], [0, 1], "iemocap")
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        metrics.regression([0, 1, 2], [0, 1], "mosi")
    assert metrics.regression([1.0, 1.0], [0.5, -0.5], "mosi")["corr"] == 0.0  # constant truth: 0, not NaN


@pytest.mark.parametrize("seed", range(3))
def test_emotion_matches_mult(seed):
    rng = np.random.default_rng(seed)
    logits, labels = rng.normal(size=(57, 4, 2)), rng.integers(0, 2, (57, 4))
    got, ref = metrics.emotion(logits, labels), mult_eval_iemocap(logits, labels)
    for k in ref:
        assert got[k] == pytest.approx(ref[k], abs=1e-4), k
    assert got["f1"] == pytest.approx(np.mean([ref[f"{e}_f1"] for e in metrics.EMOTIONS]))


def test_emotion_hand_case_and_shape_errors():
    labels = np.array([[1, 0, 0, 0], [0, 1, 0, 0]])
    logits = np.zeros((2, 4, 2))
    logits[:, :, 0] = 1.0        # predicts "no" everywhere
    got = metrics.emotion(logits, labels)
    assert got["neutral_acc"] == 0.5 and got["sad_acc"] == 1.0 and got["sad_f1"] == 1.0
    # MulT's validation loss: 6 of the 8 (example, emotion) labels are 0, predicted with p = e/(e + 1).
    assert got["ce"] == pytest.approx((6 * np.log1p(np.exp(-1.0)) + 2 * np.log1p(np.exp(1.0))) / 8)
    with pytest.raises(ValueError, match=r"logits \[N, 4, 2\] and labels \[N, 4\]"):
        metrics.emotion(np.zeros((2, 8)), labels)


def test_binary_matches_sklearn():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 77), rng.integers(0, 2, 77)
    got = metrics.binary(t, p)
    assert got["acc"] == pytest.approx(accuracy_score(t, p))
    assert got["f1"] == pytest.approx(f1_score(t, p, average="weighted"))
    assert got["binary_f1"] == pytest.approx(f1_score(t, p))
    assert metrics.binary([0, 0], [0, 0])["binary_f1"] == 0.0
    with pytest.raises(ValueError, match=r"labels in \{0, 1\}"):
        metrics.binary([0, 2], [0, 1])


def test_scorers_name_their_outputs():
    rng = np.random.default_rng(0)
    preds = {"mosi": {"label": rng.normal(size=10), "prediction": rng.normal(size=10)},
             "iemocap": {"label": rng.integers(0, 2, (10, 4)), "logits": rng.normal(size=(10, 4, 2))},
             "binary": {"label": rng.integers(0, 2, 10), "logits": rng.normal(size=(10, 2))}}
    preds["mosei"] = preds["mosi"]
    for name, pred in preds.items():
        assert list(metrics.score(name, pred)) == metrics.metric_names(name), name
