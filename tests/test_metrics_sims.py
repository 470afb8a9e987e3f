"""CH-SIMS / CH-SIMSv2 metrics against a transcription of thuiar/MMSA utils/metricsTop.py."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from mmfuse_jax import metrics


def reference_sims(y_pred: np.ndarray, y_true: np.ndarray) -> dict[str, float]:
    """MMSA ``__eval_sims_regression`` line by line (numpy instead of torch; argument order kept)."""
    test_preds = np.clip(y_pred.reshape(-1), a_min=-1., a_max=1.)
    test_truth = np.clip(y_true.reshape(-1), a_min=-1., a_max=1.)

    def binned(x, ms):
        out = x.copy()
        for i in range(len(ms) - 1):
            out[np.logical_and(x > ms[i], x <= ms[i + 1])] = i
        return out

    res = {}
    for k, ms in ((2, [-1.01, 0.0, 1.01]), (3, [-1.01, -0.1, 0.1, 1.01]),
                  (5, [-1.01, -0.7, -0.1, 0.1, 0.7, 1.01])):
        p, t = binned(test_preds, ms), binned(test_truth, ms)
        res[f"acc_{k}"] = np.sum(np.round(p) == np.round(t)) / float(len(t))
        if k == 2:
            res["f1_2"] = f1_score(t, p, average="weighted")
    res["mae"] = np.mean(np.absolute(test_preds - test_truth)).astype(np.float64)
    res["corr"] = np.corrcoef(test_preds, test_truth)[0][1]
    return res


def sims_labels(rng, n):
    # SIMS labels are means of 5 annotations on {-1, -0.5, 0, 0.5, 1}... plus exact bin edges
    y = rng.choice(np.round(np.arange(-1.0, 1.01, 0.1), 1), n)
    y[:6] = [-1.0, -0.7, -0.1, 0.0, 0.1, 0.7]
    return y.astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_matches_the_mmsa_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    y_true = sims_labels(rng, n)
    y_pred = (y_true + rng.normal(0, 0.5, n)).astype(np.float32)
    y_pred[:4] = [-0.7, 0.1, 1.7, -2.0]  # predictions on bin edges and outside [-1, 1]
    ours, ref = metrics.sims_regression(y_true, y_pred), reference_sims(y_pred, y_true)
    assert set(ours) == set(ref)
    for k in ref:
        assert ours[k] == pytest.approx(float(ref[k]), abs=1e-4), k


def test_hand_checked_case():
    y_true = np.array([-1.0, -0.4, 0.0, 0.2, 0.8, 1.0], np.float32)
    y_pred = np.array([-2.0, 0.05, -0.05, 0.3, 0.6, 0.5], np.float32)
    m = metrics.sims_regression(y_true, y_pred)
    # clipped preds: -1, .05, -.05, .3, .6, .5 ; acc_2 bins: t 0,0,0,1,1,1  p 0,1,0,1,1,1 -> 5/6
    assert m["acc_2"] == pytest.approx(5 / 6)
    # acc_3 (-.1, .1]: t 0,0,1,2,2,2  p 0,1,1,2,2,2 -> 5/6
    assert m["acc_3"] == pytest.approx(5 / 6)
    # acc_5: t 0,1,2,3,4,4  p 0,2,2,3,3,3 -> 3/6
    assert m["acc_5"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx(np.mean([0, .45, .05, .1, .2, .5]), abs=1e-6)


def test_f1_uses_the_standard_argument_order():
    # weighted F1 weights by *true* support: swapping the arguments changes it here
    y_true = np.array([-0.5, -0.5, -0.5, 0.5, 0.5], np.float32)
    y_pred = np.array([-0.5, 0.5, 0.5, 0.5, 0.5], np.float32)
    t, p = (y_true > 0).astype(int), (y_pred > 0).astype(int)
    m = metrics.sims_regression(y_true, y_pred)
    assert m["f1_2"] == pytest.approx(f1_score(t, p, average="weighted"))
    assert m["f1_2"] != pytest.approx(f1_score(p, t, average="weighted"))


def test_scorers_registered_for_sims_and_unimodal_labels():
    rng = np.random.default_rng(0)
    y, u = sims_labels(rng, 30), sims_labels(rng, 30)
    pred = {"label": y, "label_text": u, "prediction": (u + 0.1).astype(np.float32)[:, None]}
    for name in ("sims", "simsv2"):
        assert metrics.metric_names(name) == ["acc_2", "acc_3", "acc_5", "f1_2", "mae", "corr"]
        assert metrics.score(name, pred) == metrics.sims_regression(y, pred["prediction"])
    assert metrics.score("sims_text", pred) == metrics.sims_regression(u, pred["prediction"])


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        metrics.sims_regression(np.zeros(3), np.zeros(2))
