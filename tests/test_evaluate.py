"""Evaluation core: hand-computed metrics, leak-free folds, group bootstrap, paired gains, plots.

Every expected number below is worked out by hand in the comments next to it, so a change
in a definition (a swapped TP/FP, a different tie rule, images resampled instead of
groups) fails a test.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict

import numpy as np
import pytest

from alldata.errors import SplitError
from alldata.evaluate import (
    CI,
    EvaluationError,
    GainResult,
    aji,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_metric,
    check_folds,
    classification_metrics,
    confusion_matrix,
    dice,
    format_ci,
    gap_recovered,
    grouped_kfold,
    instance_metrics,
    iou,
    markdown_table,
    paired_gain,
    plot_confusion,
    plot_gains,
    plot_roc,
    roc_auc,
    roc_curve,
    roc_ovr,
    segmentation_metrics,
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
    with pytest.raises(EvaluationError, match=r"\['z'\].*labels=None"):
        classification_metrics(["a", "z"], ["a", "a"], labels=["a", "b"])
    with pytest.raises(EvaluationError, match="lengths differ"):
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
    with pytest.raises(EvaluationError, match=r"\(6, 3\)"):
        classification_metrics(y, y, labels=[0, 1, 2], scores=scores[:, :2])


def test_binary_scores_need_pos_label():
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    r = classification_metrics(y, [0, 1, 0, 1], scores=s, pos_label=1)
    assert r.per_class[1]["auc"] == approx(0.75) and r.per_class[0]["auc"] == approx(0.75)
    with pytest.raises(EvaluationError, match="pos_label"):
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


# --- segmentation ---------------------------------------------------------------------------

TRUE = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 0, 0], [2, 2, 0, 0]])
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 0], [2, 2, 2, 0], [0, 0, 0, 0]])


def test_dice_and_iou_per_class_by_hand():
    r = segmentation_metrics(TRUE, PRED)
    assert sorted(r.per_class) == [1, 2]  # background 0 left out by default
    # class 1: |A| 4, |B| 4, |A∩B| 3 -> Dice 6/8, IoU 3/5
    assert r.per_class[1]["dice"] == approx(6 / 8) and r.per_class[1]["iou"] == approx(3 / 5)
    # class 2: |A| 4, |B| 3, |A∩B| 2 -> Dice 4/7, IoU 2/5
    assert r.per_class[2]["dice"] == approx(4 / 7) and r.per_class[2]["iou"] == approx(2 / 5)
    assert r.macro["dice"] == approx((6 / 8 + 4 / 7) / 2) and r.macro["iou"] == approx(0.5)
    assert dice(TRUE == 1, PRED == 1) == approx(0.75) and iou(TRUE == 2, PRED == 2) == approx(0.4)
    r = segmentation_metrics(TRUE, PRED, labels=[1, 3])
    assert math.isnan(r.per_class[3]["dice"]) and r.macro["dice"] == approx(0.75)
    assert math.isnan(dice(np.zeros((2, 2)), np.zeros((2, 2))))
    with pytest.raises(EvaluationError, match="shape"):
        dice(TRUE, PRED[:2])


# Two touching cells, side by side: ids 1 (left 2x2) and 2 (right 2x2).
TOUCHING = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])


def test_instances_touching_pair_found_with_other_ids():
    r = instance_metrics(TOUCHING, np.array([[7, 7, 3, 3], [7, 7, 3, 3]]))
    assert (r.tp, r.fp, r.fn, r.f1) == (2, 0, 0, 1.0)
    assert r.matches == [(1, 7, 1.0), (2, 3, 1.0)]
    assert aji(TOUCHING, np.array([[7, 7, 3, 3], [7, 7, 3, 3]])) == 1.0


def test_instances_merged_pair():
    merged = np.full((2, 4), 5)
    # IoU(1, 5) = IoU(2, 5) = 4 / 8 = 0.5 >= 0.5: one match, one true cell missed
    for method in ("hungarian", "greedy"):
        r = instance_metrics(TOUCHING, merged, matching=method)
        assert (r.tp, r.fp, r.fn) == (1, 0, 1)
        assert r.f1 == approx(2 / 3) and r.recall == approx(0.5) and r.precision == 1.0
    assert instance_metrics(TOUCHING, merged, matching="greedy").matches == [(1, 5, 0.5)]
    # AJI: both true cells take prediction 5: C = 4 + 4, U = 8 + 8 -> 1/2
    assert aji(TOUCHING, merged) == approx(0.5)
    assert instance_metrics(TOUCHING, merged, iou_threshold=0.51).tp == 0


def test_instances_split_cell():
    one = np.ones((2, 4), dtype=int)
    r = instance_metrics(one, TOUCHING)
    assert (r.tp, r.fp, r.fn) == (1, 1, 0) and r.f1 == approx(2 / 3)
    # AJI: the cell takes half 1 (tie -> smaller id): C = 4, U = 8, plus unused half 2: U = 12
    assert aji(one, TOUCHING) == approx(4 / 12)


def test_instances_shifted_boundary():
    pred = np.array([[1, 1, 1, 2], [1, 1, 1, 2]])
    # IoU(1,1) = 4/6, IoU(2,1) = 2/8, IoU(2,2) = 2/4
    r = instance_metrics(TOUCHING, pred)
    assert (r.tp, r.fp, r.fn) == (2, 0, 0)
    assert r.mean_matched_iou == approx((4 / 6 + 2 / 4) / 2)
    assert instance_metrics(TOUCHING, pred, iou_threshold=0.6).f1 == approx(2 * 1 / (2 * 1 + 1 + 1))
    # AJI: cell 1 -> pred 1 (C 4, U 6); cell 2 -> pred 2 (C 2, U 4): 6 / 10
    assert aji(TOUCHING, pred) == approx(0.6)


def test_hungarian_finds_more_pairs_than_greedy():
    # one row: T1 = cols 0-9, T2 = cols 10-29; P2 = cols 0-2, P1 = cols 3-11
    t = np.zeros((1, 30), dtype=int)
    t[0, :10], t[0, 10:] = 1, 2
    p = np.zeros((1, 30), dtype=int)
    p[0, :3], p[0, 3:12] = 2, 1
    # IoU(T1,P1) = 7/12, IoU(T1,P2) = 3/10, IoU(T2,P1) = 2/27; threshold 0.07 allows all three.
    # The most pairs (T1-P2, T2-P1) has less total IoU (0.374) than T1-P1 alone (0.583).
    greedy = instance_metrics(t, p, iou_threshold=0.07, matching="greedy")
    hung = instance_metrics(t, p, iou_threshold=0.07, matching="hungarian")
    assert greedy.tp == 1 and greedy.matches == [(1, 1, approx(7 / 12))]
    assert hung.tp == 2 and hung.matches == [(1, 2, approx(3 / 10)), (2, 1, approx(2 / 27))]


def test_instances_miss_false_positive_and_empty():
    t, p = np.array([[1, 0, 0, 2]]), np.array([[1, 0, 3, 0]])
    r = instance_metrics(t, p)
    assert (r.tp, r.fp, r.fn, r.f1) == (1, 1, 1, 0.5)
    # C = 1; U = 1 (cell 1) + 1 (cell 2, unmatched) + 1 (pred 3, unused)
    assert aji(t, p) == approx(1 / 3)
    empty = np.zeros((2, 2), dtype=int)
    assert math.isnan(instance_metrics(empty, empty).f1) and math.isnan(aji(empty, empty))
    assert aji(empty, np.ones((2, 2), dtype=int)) == 0.0
    assert instance_metrics(empty, np.ones((2, 2), dtype=int)).f1 == 0.0
    with pytest.raises(EvaluationError, match="integer ids"):
        aji(t.astype(float), p)
    with pytest.raises(EvaluationError, match="hungarian"):
        instance_metrics(t, p, matching="best")


# --- folds --------------------------------------------------------------------------------------


def _groups(n_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    groups, strata, hashes = [], [], []
    for g in range(n_groups):
        for i in range(int(rng.integers(1, 6))):
            groups.append(f"p{g}")
            strata.append("ALL" if g % 3 else "healthy")
            hashes.append(f"h{g}-{i}")
    hashes[0] = hashes[-1] = "same-bytes"  # an identical file in the first and the last group
    return groups, strata, hashes


def test_grouped_kfold_leaks_nothing():
    groups, strata, hashes = _groups()
    folds = grouped_kfold(groups, strata, k=5, seed=3, hashes=hashes)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))  # a partition
    fold_of_group = defaultdict(set)
    for f, (train, test) in enumerate(folds):
        assert not set(train) & set(test) and len(train) + len(test) == len(groups)
        for i in test:
            fold_of_group[groups[i]].add(f)
        assert {strata[i] for i in test} == {"ALL", "healthy"}  # both strata in every fold
    assert all(len(v) == 1 for v in fold_of_group.values())
    assert fold_of_group["p0"] == fold_of_group[groups[-1]]  # tied by the identical file
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 6


def test_grouped_kfold_deterministic_and_order_free():
    groups, strata, _ = _groups()
    a = grouped_kfold(groups, strata, k=4, seed=1)
    b = grouped_kfold(groups, strata, k=4, seed=1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    c = grouped_kfold(groups, strata, k=4, seed=2)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    n = len(groups)
    rev = grouped_kfold(groups[::-1], strata[::-1], k=4, seed=1)
    assert all(np.array_equal(np.sort(n - 1 - x[1]), y[1]) for x, y in zip(rev, a))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_kfold_balances_each_stratum(seed):
    # stratum A: one big group (10 samples) and 4 singles; stratum B: 10 singles.
    # Balancing totals alone would pile B into the fold without the big group.
    groups = ["big"] * 10 + [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(10)]
    strata = ["A"] * 14 + ["B"] * 10
    folds = grouped_kfold(groups, strata, k=2, seed=seed)
    assert sorted(sum(strata[i] == "B" for i in te) for _, te in folds) == [5, 5]


def test_grouped_kfold_bad_k_and_leak_check():
    groups = ["a", "a", "b", "c"]
    with pytest.raises(SplitError, match="k <= 3"):
        grouped_kfold(groups, None, k=4, seed=0)
    with pytest.raises(SplitError, match=">= 2"):
        grouped_kfold(groups, None, k=1, seed=0)
    bad = [
        (np.array([1, 2, 3]), np.array([0])),
        (np.array([0, 3]), np.array([1, 2])),
        (np.array([0, 1, 2]), np.array([3])),
    ]
    with pytest.raises(SplitError, match="'a' is in test folds 0 and 1"):
        check_folds(groups, bad)


# --- bootstrap --------------------------------------------------------------------------------


def _accuracy(t, p):
    return float(np.mean(t == p))


def _grouped_predictions(n_groups, per_group=5, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.integers(0, 2, len(groups))
    correct = rng.random(len(groups)) < 0.8
    return y, np.where(correct, y, 1 - y), groups


def test_bootstrap_contains_point_narrows_and_is_deterministic():
    y, p, g = _grouped_predictions(20)
    ci = bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=0)
    assert isinstance(ci, CI) and ci.low <= ci.point <= ci.high and ci.low < ci.high
    assert ci.point == approx(_accuracy(y, p))
    assert bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=0) == ci
    assert bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=1) != ci
    y2, p2, g2 = _grouped_predictions(400)
    wide = ci.high - ci.low
    point, low, high = bootstrap_metric(y2, p2, g2, _accuracy, n_boot=500, seed=0)
    assert low <= point <= high and high - low < wide / 2  # 20x the groups: about 1/sqrt(20) the width


def test_bootstrap_resamples_groups_not_images():
    # 10 patients of 20 images; a patient's images are all right or all wrong
    groups = np.repeat(np.arange(10), 20)
    right = np.repeat(np.arange(10) % 2 == 0, 20)
    y = np.zeros(200, dtype=int)
    p = np.where(right, 0, 1)
    by_group = bootstrap_metric(y, p, groups, _accuracy, n_boot=400, seed=0)
    by_image = bootstrap_metric(y, p, np.arange(200), _accuracy, n_boot=400, seed=0)
    assert by_group.point == by_image.point == 0.5
    assert (by_group.high - by_group.low) > 3 * (by_image.high - by_image.low)


def test_bootstrap_ci_matches_index_form_and_scores_are_passed():
    rng = np.random.default_rng(4)
    values = rng.random(30)
    groups = np.repeat(np.arange(10), 3)
    a = bootstrap_ci(values, groups, n_boot=300, seed=5)
    b = bootstrap_indices(groups, lambda idx: values[idx].mean(), n_boot=300, seed=5)
    assert a.point == approx(b.point) and a.low == approx(b.low) and a.high == approx(b.high)
    y, p, g = _grouped_predictions(30)
    s = np.where(y == 1, 0.9, 0.1)
    ci = bootstrap_metric(y, p, g, lambda t, _p, sc: roc_auc(t, sc), scores=s, n_boot=100, seed=0)
    assert ci == (1.0, 1.0, 1.0)


def test_bootstrap_single_group_and_bad_alpha():
    with pytest.warns(RuntimeWarning, match="only 1 group"):
        ci = bootstrap_ci([0.5, 0.7], ["a", "a"])
    assert ci.point == approx(0.6) and math.isnan(ci.low) and math.isnan(ci.high)
    with pytest.raises(EvaluationError, match="alpha"):
        bootstrap_ci([0.1, 0.2], alpha=5)


# --- paired gains -----------------------------------------------------------------------------

PAIRS = [(s, f) for s in range(3) for f in range(5)]


def _base(offset=0.0):
    return {k: 0.6 + 0.02 * k[1] - 0.01 * k[0] + offset for k in PAIRS}


def test_paired_gain_constant_shift_is_degenerate():
    g = paired_gain(_base(), _base(0.05), n_boot=200, seed=0)
    assert isinstance(g, GainResult) and g.n_pairs == 15
    assert g.mean == approx(0.05) and g.low == approx(0.05) and g.high == approx(0.05)
    assert set(g.per_pair) == set(PAIRS) and all(v == approx(0.05) for v in g.per_pair.values())
    assert str(g) == "+0.050 [+0.050, +0.050] (n=15)"


def test_paired_gain_mixed_differences():
    base = {(0, 0): 0.5, (0, 1): 0.5, (0, 2): 0.5, (1, 0): 0.5}
    arm = {(0, 0): 0.6, (0, 1): 0.5, (0, 2): 0.7, (1, 0): 0.6}
    g = paired_gain(base, arm, n_boot=500, seed=0)
    assert g.mean == approx(0.1)  # (0.1 + 0 + 0.2 + 0.1) / 4
    assert 0.0 <= g.low < 0.1 < g.high <= 0.2
    f = paired_gain(base, arm, n_boot=500, seed=0, resample="fold")
    assert f.mean == approx(0.1) and 0.0 <= f.low <= f.high <= 0.2


def test_paired_gain_mismatched_pairs_named():
    base, arm = _base(), _base(0.05)
    del arm[(1, 4)]
    arm[(9, 0)] = 0.7
    with pytest.raises(EvaluationError, match=r"missing from baseline: \[\(9, 0\)\].*missing from arm: \[\(1, 4\)\]"):
        paired_gain(base, arm)


def test_paired_gain_leaves_out_nan_pairs():
    base, arm = _base(), _base(0.05)
    arm[(2, 2)] = math.nan
    with pytest.warns(RuntimeWarning, match=r"\(2, 2\)"):
        g = paired_gain(base, arm, n_boot=100)
    assert g.n_pairs == 14 and g.mean == approx(0.05) and math.isnan(g.per_pair[(2, 2)])


def test_gap_recovered_halfway():
    base, oracle, arm = _base(), _base(0.2), _base(0.1)
    g = gap_recovered(base, oracle, arm, n_boot=200, seed=0)
    assert g.mean == approx(0.5) and g.low == approx(0.5) and g.high == approx(0.5) and g.n_pairs == 15
    r = gap_recovered(base, oracle, arm, n_boot=200, seed=0, aggregate="ratio_of_means")
    assert r.mean == approx(0.5)
    # no gap on one pair: that pair is undefined and left out, not a crash
    oracle[(0, 0)] = base[(0, 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g = gap_recovered(base, oracle, arm, n_boot=200, seed=0)
    assert g.n_pairs == 14 and g.mean == approx(0.5) and math.isnan(g.per_pair[(0, 0)])
    del oracle[(0, 1)]
    with pytest.raises(EvaluationError, match=r"missing from oracle: \[\(0, 1\)\]"):
        gap_recovered(base, oracle, arm)


# --- plots and text ---------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    r = classification_metrics(Y_TRUE, Y_PRED)
    curves = {"perfect": roc_ovr([0, 0, 1, 1], np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]), [0, 1])[1]}
    fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    curves["mixed"] = (fpr, tpr, 0.75)
    gains = {
        "real+ddpm": paired_gain(_base(), _base(0.05), n_boot=50),
        "real+gan": GainResult(-0.01, -0.04, 0.02, 15, {}),
        "no pairs": GainResult(math.nan, math.nan, math.nan, 0, {}),
    }
    paths = [
        plot_roc(curves, tmp_path / "roc.png"),
        plot_confusion(r.confusion, r.labels, tmp_path / "sub" / "cm.png"),
        plot_confusion(r.confusion, r.labels, tmp_path / "cm_norm.png", normalize=True),
        plot_gains(gains, tmp_path / "gains.png", "macro F1"),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, path
    with pytest.raises(EvaluationError, match="square"):
        plot_confusion(r.confusion, ["a", "b"], tmp_path / "bad.png")


def test_format_ci_and_markdown_table():
    assert format_ci(0.8123, 0.7741, 0.8449) == "0.812 [0.774, 0.845]"
    assert format_ci(0.05, -0.01, 0.1, signed=True) == "+0.050 [-0.010, +0.100]"
    assert format_ci(math.nan, math.nan, math.nan) == "n/a [n/a, n/a]"
    assert format_ci(0.5, digits=1) == "0.5"
    table = markdown_table(
        [{"arm": "real", "f1": 0.81234, "ci": CI(0.8, 0.7, 0.9)}, {"arm": "a|b", "f1": math.nan}],
        {"arm": "Arm", "f1": "macro F1", "ci": "95 % CI"},
    )
    assert table.splitlines() == [
        "| Arm | macro F1 | 95 % CI |",
        "| --- | --- | --- |",
        "| real | 0.812 | 0.800 [0.700, 0.900] |",
        "| a\\|b | n/a |  |",
    ]
    rows = classification_metrics(Y_TRUE, Y_PRED).rows()
    assert markdown_table(rows).splitlines()[0].startswith("| class | support | sensitivity")
