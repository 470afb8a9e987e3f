"""Tests for mmfuse_jax/metrics.py: classification metrics as in thuiar/MIntRec utils/metrics.py.

The official code calls scikit-learn ``accuracy_score`` and ``f1/precision/recall_score`` with
``average='macro'`` (MIntRec2.0 adds ``average='weighted'``), so scikit-learn is the independent
reference here; the small example below is worked out by hand.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from mmfuse_jax.metrics import classification, confusion, per_class

TOL = 1e-4
KEYS = ("acc", "f1", "prec", "rec", "weighted_f1", "weighted_prec", "weighted_rec")


def sklearn_reference(y_true, y_pred, zero_division=0) -> dict[str, float]:
    """The official MIntRec calls, one sklearn function per number."""
    out = {"acc": skm.accuracy_score(y_true, y_pred)}
    for prefix, average in (("", "macro"), ("weighted_", "weighted")):
        kw = {"average": average, "zero_division": zero_division}
        out[prefix + "f1"] = skm.f1_score(y_true, y_pred, **kw)
        out[prefix + "prec"] = skm.precision_score(y_true, y_pred, **kw)
        out[prefix + "rec"] = skm.recall_score(y_true, y_pred, **kw)
    return {k: float(v) for k, v in out.items()}


def sklearn_reference_fast(y_true, y_pred) -> dict[str, float]:
    """The same numbers from the function f1/precision/recall_score wrap: 3 sklearn calls, not 7.

    Used for the bulk loops so the file stays fast; `test_fast_reference_equals_official_calls`
    checks it against the official calls.
    """
    out = {"acc": skm.accuracy_score(y_true, y_pred)}
    for prefix, average in (("", "macro"), ("weighted_", "weighted")):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average, zero_division=0)
        out.update({prefix + "prec": p, prefix + "rec": r, prefix + "f1": f})
    return {k: float(v) for k, v in out.items()}


def assert_matches_sklearn(y_true, y_pred, case="", reference=sklearn_reference) -> None:
    got, want = classification(y_true, y_pred), reference(y_true, y_pred)
    assert set(got) == set(KEYS)
    for key in KEYS:
        assert abs(got[key] - want[key]) <= TOL, f"{case} {key}: got {got[key]}, sklearn {want[key]}"


# --------------------------------------------------------------------------- hand-computed example

# 3 classes, 7 examples. Class 1 is true 3 times but never predicted (precision 0/0);
# class 2 is predicted twice but never true (recall 0/0).
HAND_TRUE = np.array([0, 0, 0, 0, 1, 1, 1])
HAND_PRED = np.array([0, 0, 0, 2, 0, 2, 0])
# Confusion, rows = true, columns = predicted:
#   true 0 -> pred [0, 0, 0, 2] -> [3, 0, 1]
#   true 1 -> pred [0, 2, 0]    -> [2, 0, 1]
#   true 2 -> (none)            -> [0, 0, 0]
HAND_CM = np.array([[3, 0, 1], [2, 0, 1], [0, 0, 0]])
# class 0: P = 3/5, R = 3/4, F1 = 2(3/5)(3/4)/(3/5 + 3/4) = 2/3, support 4
# class 1: P = 0/0 -> 0, R = 0/3 = 0, F1 = 0, support 3
# class 2: P = 0/2 = 0, R = 0/0 -> 0, F1 = 0, support 0
HAND_PER_CLASS = {"precision": [3 / 5, 0, 0], "recall": [3 / 4, 0, 0], "f1": [2 / 3, 0, 0], "support": [4, 3, 0]}
HAND_EXPECTED = {
    "acc": 3 / 7,
    "prec": (3 / 5) / 3,                # 0.2
    "rec": (3 / 4) / 3,                 # 0.25
    "f1": (2 / 3) / 3,                  # 2/9 (equals the F1 of macro P and R here only by chance)
    "weighted_prec": (4 / 7) * (3 / 5),  # 12/35
    "weighted_rec": (4 / 7) * (3 / 4),   # 3/7
    "weighted_f1": (4 / 7) * (2 / 3),    # 8/21
}


def test_hand_computed_example():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 0/0 must be handled, not warned about or turned into NaN
        got = classification(HAND_TRUE, HAND_PRED)
    assert set(got) == set(KEYS)
    for key, want in HAND_EXPECTED.items():
        assert isinstance(got[key], float)
        assert got[key] == pytest.approx(want, abs=1e-12), key


def test_hand_computed_per_class_and_confusion():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pc = per_class(HAND_TRUE, HAND_PRED)
    np.testing.assert_array_equal(pc["labels"], [0, 1, 2])
    for key, want in HAND_PER_CLASS.items():
        np.testing.assert_allclose(pc[key], want, atol=1e-12, err_msg=key)
        assert not np.isnan(pc[key]).any()
    np.testing.assert_array_equal(confusion(HAND_TRUE, HAND_PRED, np.array([0, 1, 2])), HAND_CM)


def test_hand_example_matches_sklearn():
    assert_matches_sklearn(HAND_TRUE, HAND_PRED, "hand example")


def test_macro_f1_is_mean_of_per_class_f1_not_f1_of_macro_p_r():
    # 3 labels, 5 examples: P = [1/2, 1/3, 0], R = [1/2, 1, 0], F1 = [1/2, 1/2, 0] -> macro F1 1/3;
    # macro P = 5/18 and macro R = 1/2, whose harmonic mean 5/14 the metric must not return.
    y_true, y_pred = [0, 0, 1, 2, 2], [0, 1, 1, 1, 0]
    got = classification(y_true, y_pred)
    assert got["prec"] == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    assert got["rec"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert got["f1"] == pytest.approx((1 / 2 + 1 / 2 + 0) / 3)
    assert got["f1"] != pytest.approx(2 * got["prec"] * got["rec"] / (got["prec"] + got["rec"]))
    assert_matches_sklearn(y_true, y_pred, "macro-f1 example")


def test_perfect_predictions_weighted_scores_are_exactly_one():
    # supports 1, 3, 3, 3, 3 of 13: summing the weights 1/13 + 4 * 3/13 one by one rounds to 1 + 2**-52,
    # while sklearn (np.average: sum(s * x) / sum(s)) returns exactly 1.0.
    y = np.array([0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4])
    want = sklearn_reference(y, y)
    assert want == dict.fromkeys(KEYS, 1.0)
    got = classification(y, y.copy())
    for key in KEYS:
        assert got[key] <= 1.0, f"{key} = {got[key]!r} > 1 for perfect predictions"
        assert got[key] == want[key], key


def test_labels_absent_from_both_do_not_count():
    # Label ids 2, 5 and 9 only; ids 0, 1, 3, ... never occur, so the average runs over 3 labels.
    y_true, y_pred = np.array([2, 5, 9, 9, 5]), np.array([2, 9, 9, 9, 5])
    pc = per_class(y_true, y_pred)
    np.testing.assert_array_equal(pc["labels"], [2, 5, 9])
    got = classification(y_true, y_pred)
    assert got["prec"] == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert got["rec"] == pytest.approx((1 + 1 / 2 + 1) / 3)
    assert_matches_sklearn(y_true, y_pred, "sparse label ids")


# --------------------------------------------------------------------------- parity with sklearn

def _random_cases():
    """Seeded (name, y_true, y_pred) cases covering the awkward label sets."""
    rng = np.random.default_rng(20240611)
    sizes = (1, 3, 7, 13, 29, 57)
    for i in range(30):
        n, k = sizes[i % len(sizes)], int(rng.integers(1, 10))
        y_true, y_pred = rng.integers(0, k, n), rng.integers(0, k, n)
        yield f"uniform#{i} n={n} k={k}", y_true, y_pred
        # labels that occur only in y_pred (never true)
        extra = rng.integers(k, k + 3, n)
        y_pred_extra = np.where(rng.random(n) < 0.3, extra, y_pred)
        yield f"pred-only#{i} n={n} k={k}", y_true, y_pred_extra
        # labels that occur only in y_true (never predicted)
        yield f"true-only#{i} n={n} k={k}", np.where(rng.random(n) < 0.3, extra, y_true), y_pred
        # mostly right, as a trained model would be
        noisy = np.where(rng.random(n) < 0.8, y_true, rng.integers(0, k + 1, n))
        yield f"mostly-right#{i} n={n} k={k}", y_true, noisy
        # perfect predictions
        yield f"perfect#{i} n={n} k={k}", y_true, y_true.copy()
        # single class in y_true (and in both)
        c = int(rng.integers(0, k))
        yield f"single-true#{i} n={n} c={c}", np.full(n, c), y_pred
        yield f"single-both#{i} n={n} c={c}", np.full(n, c), np.full(n, c)
        # all wrong with disjoint label sets
        yield f"disjoint#{i} n={n}", rng.integers(0, 3, n), rng.integers(3, 6, n)
    # big label ids, as in MIntRec2.0 (30 classes + OOS)
    yield "mintrec2-sized", rng.integers(0, 31, 101), rng.integers(0, 31, 101)


CASES = list(_random_cases())


def test_parity_with_sklearn_random_cases():
    assert len(CASES) > 200
    for name, y_true, y_pred in CASES:
        assert_matches_sklearn(y_true, y_pred, name, reference=sklearn_reference_fast)


def test_fast_reference_equals_official_calls():
    for name, y_true, y_pred in CASES[::9]:
        fast, official = sklearn_reference_fast(y_true, y_pred), sklearn_reference(y_true, y_pred)
        for key in KEYS:
            assert fast[key] == pytest.approx(official[key], abs=1e-12), f"{name} {key}"


def test_per_class_and_confusion_parity_with_sklearn():
    for name, y_true, y_pred in CASES[::3]:
        pc = per_class(y_true, y_pred)
        labels = np.union1d(y_true, y_pred)
        np.testing.assert_array_equal(pc["labels"], labels, err_msg=name)
        p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                         zero_division=0)
        for key, want in (("precision", p), ("recall", r), ("f1", f), ("support", s)):
            np.testing.assert_allclose(pc[key], want, atol=TOL, err_msg=f"{name} {key}")
        np.testing.assert_array_equal(confusion(y_true, y_pred, labels),
                                      skm.confusion_matrix(y_true, y_pred, labels=labels), err_msg=name)


def test_sklearn_default_warn_equals_zero_division_zero():
    """The official code passes no zero_division: sklearn warns and uses 0, which is what we match."""
    checked = 0
    for name, y_true, y_pred in CASES[::9]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            default = sklearn_reference(y_true, y_pred, zero_division="warn")
        zero = sklearn_reference(y_true, y_pred, zero_division=0)
        assert default == zero, name
        checked += 1
    assert checked > 15
    # and on the hand example the default really does hit the 0/0 path
    with pytest.warns(UndefinedMetricWarning):
        skm.precision_score(HAND_TRUE, HAND_PRED, average="macro")


def test_accepts_lists_column_vectors_and_jax_arrays():
    import jax.numpy as jnp

    want = classification(HAND_TRUE, HAND_PRED)
    for y_true, y_pred in ((HAND_TRUE.tolist(), HAND_PRED.tolist()),
                           (HAND_TRUE[:, None], HAND_PRED[:, None]),
                           (jnp.asarray(HAND_TRUE), jnp.asarray(HAND_PRED)),
                           (HAND_TRUE.astype(np.int32), HAND_PRED.astype(np.int64))):
        assert classification(y_true, y_pred) == pytest.approx(want)


# --------------------------------------------------------------------------- properties

@st.composite
def label_pairs(draw, max_label: int = 6):
    n = draw(st.integers(1, 41))
    labels = st.integers(0, max_label)
    y_true = draw(st.lists(labels, min_size=n, max_size=n))
    y_pred = draw(st.lists(labels, min_size=n, max_size=n))
    return np.array(y_true), np.array(y_pred)


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_property_values_in_unit_interval_and_finite(pair):
    y_true, y_pred = pair
    for got in (classification(y_true, y_pred), classification(y_true, y_true)):
        for key in KEYS:
            assert np.isfinite(got[key]) and 0.0 <= got[key] <= 1.0, (key, got[key])


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_property_perfect_predictions_score_exactly_one(pair):
    # sklearn's weighted average is sum(s * x) / sum(s), exactly 1.0 when every x is 1.0
    got = classification(pair[0], pair[0].copy())
    assert {key: got[key] for key in KEYS} == dict.fromkeys(KEYS, 1.0)


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_property_accuracy_is_mean_of_matches(pair):
    y_true, y_pred = pair
    assert classification(y_true, y_pred)["acc"] == pytest.approx(np.mean(y_true == y_pred), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(label_pairs(), st.randoms(use_true_random=False))
def test_property_invariant_to_example_order(pair, random):
    y_true, y_pred = pair
    order = list(range(len(y_true)))
    random.shuffle(order)
    got, permuted = classification(y_true, y_pred), classification(y_true[order], y_pred[order])
    for key in KEYS:
        assert permuted[key] == pytest.approx(got[key], abs=1e-12), key


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_property_swapping_true_and_pred_swaps_macro_p_and_r(pair):
    y_true, y_pred = pair
    got, swapped = classification(y_true, y_pred), classification(y_pred, y_true)
    assert swapped["prec"] == pytest.approx(got["rec"], abs=1e-12)
    assert swapped["rec"] == pytest.approx(got["prec"], abs=1e-12)
    assert swapped["f1"] == pytest.approx(got["f1"], abs=1e-12)
    assert swapped["acc"] == pytest.approx(got["acc"], abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(label_pairs())
def test_property_matches_sklearn(pair):
    assert_matches_sklearn(*pair, "hypothesis", reference=sklearn_reference_fast)


# --------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("fn", [classification, per_class])
@pytest.mark.parametrize("n_true,n_pred", [(5, 3), (3, 5), (7, 0)])
def test_mismatched_lengths_raise(fn, n_true, n_pred):
    with pytest.raises(ValueError, match=rf"{n_true}.*{n_pred}"):
        fn(np.zeros(n_true, np.int64), np.zeros(n_pred, np.int64))


@pytest.mark.parametrize("y_true,y_pred", [([], []), (np.zeros(0, np.int64), np.zeros(0, np.int64)),
                                            ([], [1, 2, 3])])
def test_empty_input_raises(y_true, y_pred):
    with pytest.raises(ValueError):
        classification(y_true, y_pred)
