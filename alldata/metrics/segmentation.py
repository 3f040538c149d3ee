"""Segmentation metrics: Dice/IoU, instance F1, AJI, touching-cell recall and box F1.

Per-image functions (:func:`dice`, :func:`segmentation_metrics`, :func:`instance_metrics`,
:func:`aji`) and one **pooled-count API** for a benchmark that scores many images: each
image gives integer counts (:func:`count_instances` for instance maps, :func:`count_boxes`
for boxes), the counts are summed, and :func:`pooled_scores` divides the sums (so an image
with few cells weighs little). Instances and boxes are both paired one-to-one by the
Hungarian method (``scipy.optimize.linear_sum_assignment``) at IoU >= a threshold.
A ratio whose denominator is 0 is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from alldata.metrics._common import MetricError, _average, _div

__all__ = [
    "BOX_COUNTS",
    "INSTANCE_COUNTS",
    "InstanceReport",
    "SegmentationReport",
    "aji",
    "aji_terms",
    "box_iou",
    "boxes_from_instances",
    "count_boxes",
    "count_instances",
    "dice",
    "instance_metrics",
    "iou",
    "match_boxes",
    "pooled_scores",
    "segmentation_metrics",
    "touching_ids",
]

#: Ways :func:`instance_metrics` may pair true and predicted instances.
MATCHING = ("hungarian", "greedy")
#: Keys of :func:`count_instances` and :func:`count_boxes`, summed by :func:`pooled_scores`.
INSTANCE_COUNTS = ("inter", "true_px", "pred_px", "tp", "fp", "fn", "aji_c", "aji_u", "touching", "touching_tp")
BOX_COUNTS = ("box_tp", "box_fp", "box_fn")


def _masks(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true), np.asarray(pred)
    if t.shape != p.shape:
        raise MetricError(f"true mask {t.shape} and predicted mask {p.shape} differ in shape; resize one to the other")
    return t, p


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Dice = 2|A ∩ B| / (|A| + |B|) of two boolean masks; NaN when both are empty."""
    a, b = (m.astype(bool) for m in _masks(true, pred))
    return float(_div(2 * np.logical_and(a, b).sum(), a.sum() + b.sum()))


def iou(true: np.ndarray, pred: np.ndarray) -> float:
    """IoU (Jaccard) = |A ∩ B| / |A ∪ B| of two boolean masks; NaN when both are empty."""
    a, b = (m.astype(bool) for m in _masks(true, pred))
    return float(_div(np.logical_and(a, b).sum(), np.logical_or(a, b).sum()))


@dataclass(frozen=True)
class SegmentationReport:
    """Semantic-segmentation scores (see :func:`segmentation_metrics`).

    Attributes:
        per_class: ``{label: {"dice", "iou", "true_pixels", "pred_pixels"}}``.
        macro: ``{"dice", "iou"}`` averaged over classes, NaN classes left out.
    """

    per_class: dict[int, dict[str, float]]
    macro: dict[str, float]


def segmentation_metrics(
    true_mask: np.ndarray, pred_mask: np.ndarray, *, labels: Sequence[int] | None = None, background: int | None = 0
) -> SegmentationReport:
    """Per-class Dice and IoU of two label masks (class id per pixel).

    For class c with A = {true == c}, B = {pred == c}: Dice = 2|A∩B| / (|A|+|B|),
    IoU = |A∩B| / |A∪B|. A class absent from both masks is NaN and left out of the macro
    mean. ``labels`` default to every value present in either mask except ``background``
    (None keeps every value).
    """
    t, p = _masks(true_mask, pred_mask)
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(t), np.unique(p)) if background is None or v != background]
    per_class = {}
    for c in labels:
        a, b = t == c, p == c
        inter, sa, sb = np.logical_and(a, b).sum(), a.sum(), b.sum()
        per_class[c] = {"dice": float(_div(2 * inter, sa + sb)), "iou": float(_div(inter, sa + sb - inter)),
                        "true_pixels": float(sa), "pred_pixels": float(sb)}
    macro = {m: _average(np.array([v[m] for v in per_class.values()])) for m in ("dice", "iou")}
    return SegmentationReport(per_class=per_class, macro=macro)


def _instance_overlaps(
    true_inst: np.ndarray, pred_inst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids, areas, the intersection and the union matrices ``(n_true, n_pred)`` of two instance maps."""
    t, p = _masks(true_inst, pred_inst)
    for name, m in (("true", t), ("predicted", p)):
        if not np.issubdtype(m.dtype, np.integer) and not np.issubdtype(m.dtype, np.bool_):
            raise MetricError(f"{name} instance map has dtype {m.dtype}; pass integer ids (0 = background)")
        if m.size and m.min() < 0:
            raise MetricError(f"{name} instance map holds negative id {int(m.min())}; use 0 for background, >0 for cells")
    t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    both = (t > 0) & (p > 0)
    ti, pi = np.searchsorted(t_ids, t[both]), np.searchsorted(p_ids, p[both])
    inter = np.bincount(ti * len(p_ids) + pi, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    return t_ids, p_ids, t_area, p_area, inter, t_area[:, None] + p_area[None, :] - inter


def _match(ious: np.ndarray, iou_threshold: float, matching: str = "hungarian") -> list[tuple[int, int]]:
    """One-to-one ``(row, col)`` pairs of an IoU matrix at IoU >= ``iou_threshold``.

    ``"hungarian"``: the most pairs possible (``linear_sum_assignment`` on weight
    ``min(shape) + 1 + IoU`` for allowed pairs, 0 otherwise), ties broken by the largest
    total IoU. ``"greedy"``: allowed pairs by decreasing IoU (ties: smaller row, then
    smaller column), each taken when both ends are still free.
    """
    if not 0 < iou_threshold <= 1:
        raise MetricError(f"iou_threshold={iou_threshold!r} must lie in (0, 1]; 0.5 is the usual choice")
    if matching not in MATCHING:
        raise MetricError(f"matching={matching!r} is not one of {MATCHING}; use 'hungarian' (default)")
    allowed = ious >= iou_threshold
    if not allowed.any():
        return []
    if matching == "hungarian":
        from scipy.optimize import linear_sum_assignment

        rows, cols = linear_sum_assignment(np.where(allowed, min(ious.shape) + 1 + ious, 0.0), maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
    pairs: list[tuple[int, int]] = []
    used_t: set[int] = set()
    used_p: set[int] = set()
    for r, c in sorted(zip(*np.nonzero(allowed)), key=lambda rc: (-ious[rc], rc[0], rc[1])):
        if r not in used_t and c not in used_p:
            pairs.append((int(r), int(c)))
            used_t.add(r)
            used_p.add(c)
    return pairs


@dataclass(frozen=True)
class InstanceReport:
    """Instance-detection scores at one IoU threshold (see :func:`instance_metrics`).

    Attributes:
        tp: matched pairs; fp: unmatched predicted instances; fn: unmatched true instances.
        precision: TP / (TP + FP); recall: TP / (TP + FN); f1: 2TP / (2TP + FP + FN).
        mean_matched_iou: mean IoU of the matched pairs (NaN if none).
        matches: ``(true_id, pred_id, iou)`` of each matched pair.
    """

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float
    mean_matched_iou: float
    matches: list[tuple[int, int, float]]


def instance_metrics(
    true_inst: np.ndarray,
    pred_inst: np.ndarray,
    *,
    iou_threshold: float = 0.5,
    matching: Literal["hungarian", "greedy"] = "hungarian",
) -> InstanceReport:
    """Instance F1: one-to-one matching of true and predicted instances at IoU >= threshold.

    Instance maps hold 0 for background and one positive id per cell, so touching cells
    are told apart by their ids. Pairs are chosen by ``matching`` (see :func:`_match`;
    Hungarian gives the most pairs). Above 0.5 both methods give the same pairs (an
    instance can overlap at most one other by IoU > 0.5); at exactly 0.5 they may differ.
    Precision = TP/(TP+FP), recall = TP/(TP+FN), F1 = 2TP/(2TP+FP+FN), NaN when 0/0.

    Raises:
        MetricError: shapes differ, non-integer or negative ids, bad threshold or method.
    """
    t_ids, p_ids, _, _, inter, union = _instance_overlaps(true_inst, pred_inst)
    ious = _div(inter, union) if inter.size else np.zeros(inter.shape)
    pairs = _match(ious, iou_threshold, matching)
    tp = len(pairs)
    fp, fn = len(p_ids) - tp, len(t_ids) - tp
    matched = [float(ious[r, c]) for r, c in pairs]
    return InstanceReport(
        tp=tp, fp=fp, fn=fn,
        precision=float(_div(tp, tp + fp)), recall=float(_div(tp, tp + fn)), f1=float(_div(2 * tp, 2 * tp + fp + fn)),
        mean_matched_iou=float(np.mean(matched)) if matched else math.nan,
        matches=sorted((int(t_ids[r]), int(p_ids[c]), float(ious[r, c])) for r, c in pairs),
    )


def aji_terms(true_inst: np.ndarray, pred_inst: np.ndarray) -> tuple[int, int]:
    """The AJI's numerator C and denominator U for one image (see :func:`aji`).

    Summing C and U over images and dividing gives the dataset-level AJI.
    """
    _, p_ids, t_area, p_area, inter, union = _instance_overlaps(true_inst, pred_inst)
    if len(t_area) == 0:
        return 0, int(p_area.sum())
    if len(p_ids) == 0:
        return 0, int(t_area.sum())
    best = np.argmax(inter / union, axis=1)
    rows = np.arange(len(t_area))
    hit = inter[rows, best] > 0
    c = inter[rows[hit], best[hit]].sum()
    u = union[rows[hit], best[hit]].sum() + t_area[~hit].sum()
    unused = np.ones(len(p_ids), dtype=bool)
    unused[best[hit]] = False
    u += p_area[unused].sum()
    return int(c), int(u)


def aji(true_inst: np.ndarray, pred_inst: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, IEEE TMI 36(7)) of two instance maps.

    For each true instance G_i take the predicted S_j of largest IoU with it (ties: the
    smallest id). If they overlap, add |G_i ∩ S_j| to C and |G_i ∪ S_j| to U and mark S_j
    used; if G_i overlaps no prediction, add |G_i| to U. Finally add |S_k| to U for every
    predicted instance never used. AJI = C / U. As in the original (and HoVer-Net's
    ``get_fast_aji``) one prediction may serve several true instances, so merges are
    penalised. 1 for a perfect match, 0 with no overlap, NaN when both maps are empty.
    """
    c, u = aji_terms(true_inst, pred_inst)
    return math.nan if u == 0 else float(c / u)


# --- pooled counts ---------------------------------------------------------------------------


def touching_ids(inst: np.ndarray, distance: int = 2) -> set[int]:
    """Ids of the instances within ``distance`` px of another instance."""
    from scipy import ndimage

    ids = set()
    for i in np.unique(inst[inst > 0]):
        ring = ndimage.binary_dilation(inst == i, iterations=distance)
        if np.any((inst[ring] > 0) & (inst[ring] != i)):
            ids.add(int(i))
    return ids


def boxes_from_instances(inst: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Pixel ``(x0, y0, x1, y1)`` box of each instance (x1, y1 exclusive), in id order."""
    from scipy import ndimage

    return [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in ndimage.find_objects(inst) if s is not None]


def box_iou(true: Sequence[Sequence[float]], pred: Sequence[Sequence[float]]) -> np.ndarray:
    """IoU matrix ``(n_true, n_pred)`` of ``(x0, y0, x1, y1)`` boxes; 0 where the union is empty."""
    t = np.asarray(true, float).reshape(-1, 4)
    p = np.asarray(pred, float).reshape(-1, 4)
    ix = np.clip(np.minimum(t[:, None, 2], p[None, :, 2]) - np.maximum(t[:, None, 0], p[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(t[:, None, 3], p[None, :, 3]) - np.maximum(t[:, None, 1], p[None, :, 1]), 0, None)
    inter = ix * iy
    area_t, area_p = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1]), (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
    return np.nan_to_num(_div(inter, area_t[:, None] + area_p[None, :] - inter), nan=0.0)


def match_boxes(true: Sequence[Sequence[float]], pred: Sequence[Sequence[float]], iou_threshold: float = 0.5) -> int:
    """Number of one-to-one (Hungarian) matches of true and predicted boxes at IoU >= threshold."""
    ious = box_iou(true, pred)
    return len(_match(ious, iou_threshold)) if ious.size else 0


def count_instances(true_inst: np.ndarray, pred_inst: np.ndarray, *, iou_threshold: float = 0.5) -> dict[str, int]:
    """The pooled counts (:data:`INSTANCE_COUNTS`) of one image's instance maps.

    ``inter``/``true_px``/``pred_px``: foreground pixels (Dice, IoU); ``tp``/``fp``/``fn``:
    Hungarian instance matches; ``aji_c``/``aji_u``: :func:`aji_terms`; ``touching`` /
    ``touching_tp``: true instances within 2 px of another, and how many were matched.
    """
    t, p = _masks(true_inst, pred_inst)
    fg_t, fg_p = t > 0, p > 0
    rep = instance_metrics(t, p, iou_threshold=iou_threshold)
    c, u = aji_terms(t, p)
    touching = touching_ids(t)
    matched = {ti for ti, _, _ in rep.matches}
    return {"inter": int(np.logical_and(fg_t, fg_p).sum()), "true_px": int(fg_t.sum()), "pred_px": int(fg_p.sum()),
            "tp": rep.tp, "fp": rep.fp, "fn": rep.fn, "aji_c": c, "aji_u": u,
            "touching": len(touching), "touching_tp": len(touching & matched)}


def count_boxes(true: Sequence[Sequence[float]], pred: Sequence[Sequence[float]], *,
                iou_threshold: float = 0.5) -> dict[str, int]:
    """The pooled counts (:data:`BOX_COUNTS`) of one image's boxes: Hungarian matches at IoU >= threshold."""
    tp = match_boxes(true, pred, iou_threshold)
    return {"box_tp": tp, "box_fp": len(pred) - tp, "box_fn": len(true) - tp}


def pooled_scores(rows: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Dice, IoU, instance F1/precision/recall, AJI, touching recall and box F1 from summed counts.

    ``rows`` are per-image count dicts (:func:`count_instances` and/or :func:`count_boxes`,
    other keys ignored). The instance metrics are returned when a row has instance counts
    (``"tp"``), ``box_f1`` when one has box counts (``"box_tp"``); NaN where 0/0.
    """
    rows = list(rows)

    def total(key: str) -> float:
        return float(sum(r.get(key, 0) for r in rows))

    out: dict[str, float] = {}
    if any("tp" in r for r in rows):
        inter, t, p = total("inter"), total("true_px"), total("pred_px")
        tp, fp, fn = total("tp"), total("fp"), total("fn")
        out.update(
            dice=float(_div(2 * inter, t + p)), iou=float(_div(inter, t + p - inter)),
            instance_f1=float(_div(2 * tp, 2 * tp + fp + fn)), instance_precision=float(_div(tp, tp + fp)),
            instance_recall=float(_div(tp, tp + fn)), aji=float(_div(total("aji_c"), total("aji_u"))),
            touching_recall=float(_div(total("touching_tp"), total("touching"))),
        )
    if any("box_tp" in r for r in rows):
        tp, fp, fn = total("box_tp"), total("box_fp"), total("box_fn")
        out["box_f1"] = float(_div(2 * tp, 2 * tp + fp + fn))
    return out
