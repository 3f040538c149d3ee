"""Classification metrics: hand-computed numbers, the NaN policy, ROC/AUC, agreement with scikit-learn.

Every expected number is worked out by hand in the comments next to it, so a change in a
definition (a swapped TP/FP, a different tie rule) fails a test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alldata.metrics import (
    MetricError,
    classification_metrics,
    confusion_matrix,
    roc_auc,
    roc_curve,
    roc_ovr,
)

approx = pytest.approx


# --- classification -------------------------------------------------------------------------

# Confusion matrix (rows true, columns predicted), N = 10:
#        a  b  c
#   a [  3  1  0 ]   support 4
#   b [  1  1  1 ]   support 3
#   c [  0  0  3 ]   support 3
Y_TRUE = list("aaaabbbccc")
Y_PRED = list("aabaabcccc")


def test_three_class_metrics_by_hand():
    r = classification_metrics(Y_TRUE, Y_PRED)
    assert r.labels == ["a", "b", "c"]
    np.testing.assert_array_equal(r.confusion, [[3, 1, 0], [1, 1, 1], [0, 0, 3]])
    a, b, c = (r.per_class[k] for k in "abc")
    # a: TP 3, FP 1 (b->a), FN 1 (a->b), TN 10-3-1-1 = 5
    assert (a["tp"], a["fp"], a["fn"], a["tn"], a["support"]) == (3, 1, 1, 5, 4)
    assert a["sensitivity"] == approx(3 / 4) and a["specificity"] == approx(5 / 6)
    assert a["precision"] == approx(3 / 4) and a["f1"] == approx(3 / 4) and a["ovr_accuracy"] == approx(8 / 10)
    # b: TP 1, FP 1 (a->b), FN 2, TN 6; F1 = 2*1 / (2*1 + 1 + 2) = 2/5
    assert (b["tp"], b["fp"], b["fn"], b["tn"]) == (1, 1, 2, 6)
    assert b["sensitivity"] == approx(1 / 3) and b["specificity"] == approx(6 / 7)
    assert b["precision"] == approx(1 / 2) and b["f1"] == approx(2 / 5) and b["ovr_accuracy"] == approx(7 / 10)
    # c: TP 3, FP 1 (b->c), FN 0, TN 6; F1 = 6 / 7
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (3, 1, 0, 6)
    assert c["sensitivity"] == approx(1.0) and c["specificity"] == approx(6 / 7)
    assert c["precision"] == approx(3 / 4) and c["f1"] == approx(6 / 7)
    # macro: plain means over the three classes
    assert r.macro["sensitivity"] == approx((3 / 4 + 1 / 3 + 1) / 3)  # 25/36
    assert r.macro["specificity"] == approx((5 / 6 + 6 / 7 + 6 / 7) / 3)  # 107/126
    assert r.macro["precision"] == approx((3 / 4 + 1 / 2 + 3 / 4) / 3)  # 2/3
    assert r.macro["f1"] == approx((3 / 4 + 2 / 5 + 6 / 7) / 3)  # 281/420
    # weighted by support 4, 3, 3
    assert r.weighted["sensitivity"] == approx(7 / 10)  # = accuracy, always
    assert r.weighted["precision"] == approx((4 * 3 / 4 + 3 * 1 / 2 + 3 * 3 / 4) / 10)  # 27/40
    assert r.weighted["f1"] == approx((4 * 3 / 4 + 3 * 2 / 5 + 3 * 6 / 7) / 10)  # 237/350
    assert r.weighted["specificity"] == approx((4 * 5 / 6 + 3 * 6 / 7 + 3 * 6 / 7) / 10)  # 89/105
    assert r.accuracy == approx(7 / 10)
    assert r.balanced_accuracy == approx(25 / 36)
    rows = r.rows()
    assert [row["class"] for row in rows] == ["a", "b", "c", "macro", "weighted"]
    assert rows[1]["f1"] == approx(0.4)


def test_binary_sensitivity_specificity():
    # positives 1: TP 2 (idx 0,1), FN 1 (idx 2); negatives 0: TN 3 (idx 3-5), FP 2 (idx 6,7)
    r = classification_metrics([1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 1, 1])
    pos, neg = r.per_class[1], r.per_class[0]
    assert pos["sensitivity"] == approx(2 / 3) and pos["specificity"] == approx(3 / 5)
    assert pos["precision"] == approx(2 / 4) and pos["f1"] == approx(4 / 7)
    # the negative class mirrors the positive one
    assert neg["sensitivity"] == approx(3 / 5) and neg["specificity"] == approx(2 / 3)
    assert r.accuracy == approx(5 / 8)


def test_zero_division_is_nan_not_a_crash():
    # class "d" is listed but neither present nor predicted
    r = classification_metrics(Y_TRUE, Y_PRED, labels=["a", "b", "c", "d"])
    d = r.per_class["d"]
    assert math.isnan(d["sensitivity"]) and math.isnan(d["precision"]) and math.isnan(d["f1"])
    assert d["specificity"] == approx(1.0)  # TN 10, FP 0
    assert r.macro["sensitivity"] == approx(25 / 36)  # NaN class left out of the mean
    assert r.confusion.shape == (4, 4) and r.confusion[3].sum() == 0
    # class 1 present but never predicted: precision undefined, sensitivity and F1 are 0
    r = classification_metrics([0, 0, 1, 1], [0, 0, 0, 0])
    assert math.isnan(r.per_class[1]["precision"])
    assert r.per_class[1]["sensitivity"] == 0 and r.per_class[1]["f1"] == 0
    assert r.per_class[0]["specificity"] == 0  # TN 0, FP 2
    assert r.macro["precision"] == approx(0.5)  # class 0 only
    assert r.macro["f1"] == approx((2 / 3 + 0) / 2)
    # specificity undefined when every sample is of the class
    r = classification_metrics([0, 0], [0, 1])
    assert math.isnan(r.per_class[0]["specificity"])


def test_unknown_label_and_length_errors_name_the_values():
    with pytest.raises(MetricError, match=r"\['z'\].*labels=None"):
        classification_metrics(["a", "z"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(MetricError, match="lengths differ"):
        confusion_matrix([0, 1, 1], [0, 1])


# --- ROC / AUC --------------------------------------------------------------------------------


def test_auc_perfect_reversed_tied_and_mixed():
    y = [0, 0, 1, 1]
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert roc_auc(y, [0.5, 0.5, 0.5, 0.5]) == 0.5
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs won 0.35>0.1, 0.8>0.1, 0.8>0.4 -> 3/4
    assert roc_auc(y, [0.1, 0.4, 0.35, 0.8]) == approx(0.75)
    fpr, tpr, thr = roc_curve(y, [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])
    # a tie between a positive and a negative counts one half: (1 + 0.5) / 2
    assert roc_auc([0, 1, 1], [0.5, 0.5, 0.9]) == approx(0.75)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))  # no negatives: undefined
    assert roc_auc(["neg", "ALL"], [0.1, 0.7], pos_label="ALL") == 1.0


def test_auc_equals_pair_counting_on_random_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.random(60), 1)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == approx(wins / (len(pos) * len(neg)))


def test_one_vs_rest_auc_by_hand():
    y = [0, 0, 1, 1, 2, 2]
    scores = np.array(
        [
            [0.9, 0.05, 0.05],
            [0.5, 0.30, 0.20],
            [0.6, 0.30, 0.10],
            [0.1, 0.80, 0.10],
            [0.2, 0.10, 0.70],
            [0.3, 0.40, 0.30],
        ]
    )
    curves = roc_ovr(y, scores, [0, 1, 2])
    # class 0: positives .9, .5 vs negatives .6, .1, .2, .3 -> (4 + 3) / 8
    assert curves[0].auc == approx(7 / 8)
    # class 1: positives .3, .8 vs .05, .3, .1, .4 -> (2 + 0.5 tie + 4) / 8
    assert curves[1].auc == approx(13 / 16)
    # class 2: positives .7, .3 vs .05, .2, .1, .1 -> 8 / 8
    assert curves[2].auc == approx(1.0)
    r = classification_metrics(y, scores.argmax(axis=1), labels=[0, 1, 2], scores=scores)
    assert r.macro["auc"] == approx(43 / 48)
    assert r.per_class[1]["auc"] == approx(13 / 16)
    with pytest.raises(MetricError, match=r"\(6, 3\)"):
        classification_metrics(y, y, labels=[0, 1, 2], scores=scores[:, :2])


def test_binary_scores_need_pos_label():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    r = classification_metrics(y, [0, 1, 0, 1], scores=s, pos_label=1)
    assert r.per_class[1]["auc"] == approx(0.75) and r.per_class[0]["auc"] == approx(0.75)
    with pytest.raises(MetricError, match="pos_label"):
        classification_metrics(y, [0, 1, 0, 1], scores=s)


@pytest.mark.slow  # importing sklearn.metrics alone takes ~13 s on the shared CI cores
def test_agrees_with_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    r = classification_metrics(y, p)
    prec, rec, f1, _ = metrics.precision_recall_fscore_support(y, p, labels=[0, 1, 2, 3], zero_division=np.nan)
    np.testing.assert_allclose([r.per_class[c]["sensitivity"] for c in range(4)], rec)
    np.testing.assert_allclose([r.per_class[c]["precision"] for c in range(4)], prec)
    np.testing.assert_allclose([r.per_class[c]["f1"] for c in range(4)], f1)
    assert r.macro["f1"] == approx(metrics.f1_score(y, p, average="macro"))
    assert r.weighted["f1"] == approx(metrics.f1_score(y, p, average="weighted"))
    np.testing.assert_array_equal(r.confusion, metrics.confusion_matrix(y, p))
    logits = rng.normal(size=(200, 4)) + 1.5 * np.eye(4)[y]
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    r = classification_metrics(y, p, scores=prob)
    assert r.macro["auc"] == approx(metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro"))
    assert roc_auc(y == 2, prob[:, 2], pos_label=True) == approx(metrics.roc_auc_score(y == 2, prob[:, 2]))
