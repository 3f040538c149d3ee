"""Segmentation metrics: Dice/IoU, instance matching, AJI by hand, and the pooled counts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alldata.metrics import (
    MetricError,
    aji,
    box_iou,
    boxes_from_instances,
    count_boxes,
    count_instances,
    dice,
    instance_metrics,
    iou,
    match_boxes,
    pooled_scores,
    segmentation_metrics,
    touching_ids,
)
from alldata.metrics.segmentation import _match

approx = pytest.approx


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
    with pytest.raises(MetricError, match="shape"):
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
    with pytest.raises(MetricError, match="integer ids"):
        aji(t.astype(float), p)
    with pytest.raises(MetricError, match="hungarian"):
        instance_metrics(t, p, matching="best")


# --- pooled counts ----------------------------------------------------------------------------


def test_pooled_counts_by_hand():
    true = np.zeros((8, 12), np.int32)
    true[0:4, 0:4] = 1
    true[0:4, 4:8] = 2  # touches 1
    true[5:8, 9:12] = 3
    pred = np.zeros_like(true)
    pred[0:4, 0:4] = 7  # = true 1
    pred[0:4, 5:8] = 8  # true 2 minus a column: IoU 12/16
    pred[6:8, 0:2] = 9  # a false positive
    c = count_instances(true, pred)
    assert c == {"inter": 28, "true_px": 41, "pred_px": 32, "tp": 2, "fp": 1, "fn": 1, "aji_c": 28,
                 "aji_u": 16 + 16 + 9 + 4, "touching": 2, "touching_tp": 2}
    assert touching_ids(true) == {1, 2}
    assert boxes_from_instances(true) == [(0, 0, 4, 4), (4, 0, 8, 4), (9, 5, 12, 8)]
    b = count_boxes([(0, 0, 4, 4), (10, 10, 12, 12)], [(0, 0, 4, 3)])  # IoU 0.75, and a miss
    assert b == {"box_tp": 1, "box_fp": 0, "box_fn": 1}
    s = pooled_scores([c, b, {"id": "no counts"}])
    assert s["dice"] == approx(2 * 28 / (41 + 32)) and s["iou"] == approx(28 / (41 + 32 - 28))
    assert s["instance_f1"] == approx(4 / 6) and s["aji"] == approx(28 / 45) and s["touching_recall"] == 1.0
    assert s["box_f1"] == approx(2 / 3)
    assert pooled_scores([b]) == {"box_f1": approx(2 / 3)} and pooled_scores([]) == {}
    assert math.isnan(pooled_scores([count_instances(true * 0, pred * 0)])["instance_f1"])


def test_box_matching_is_hungarian():
    # boxes may overlap, so the best pair (true 0, pred 0; IoU 0.9) can block two others: greedy
    # matching finds 1 pair, Hungarian 2 (true 0 - pred 1, IoU 10/13; true 1 - pred 0, IoU 6/12)
    true = [(0, 0, 10, 10), (3, 0, 12, 10)]
    pred = [(0, 0, 9, 10), (-3, 0, 10, 10)]
    ious = box_iou(true, pred)
    np.testing.assert_allclose(ious, [[0.9, 10 / 13], [0.5, 7 / 15]])
    assert len(_match(ious, 0.5, "greedy")) == 1
    assert match_boxes(true, pred, 0.5) == 2
    assert count_boxes(true, pred) == {"box_tp": 2, "box_fp": 0, "box_fn": 0}
    assert match_boxes([], pred) == 0 and box_iou([], pred).shape == (0, 2)
