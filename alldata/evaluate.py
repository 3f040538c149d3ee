"""Evaluation core of the benchmark: leak-free folds, metrics, group bootstrap, paired gains, plots.

The question the benchmark answers is "how much does real+synthetic gain over real-only",
and the module is built so that the answer is honest:

* :func:`grouped_kfold` makes k folds in which no group (patient, source image) and no
  byte-identical file spans two folds, and checks it.
* Classification (:func:`classification_metrics`, :func:`roc_curve`, :func:`roc_ovr`) and
  segmentation (:func:`segmentation_metrics`, :func:`instance_metrics`, :func:`aji`) metrics
  are counted here with NumPy (SciPy only for the Hungarian matching), so the definitions
  are the ones written in the docstrings and nothing else.
* Confidence intervals resample **groups**, not images (:func:`bootstrap_metric`,
  :func:`bootstrap_ci`): images of one patient are not independent.
* :func:`paired_gain` and :func:`gap_recovered` compare arms on the same ``(seed, fold)``
  pairs as the baseline and refuse pairs that do not match.

The zero-division rule, everywhere: a ratio whose denominator is 0 is **NaN** ("undefined"),
never 0 or 1 and never an exception. NaN values are left out of averages (macro, weighted,
means over pairs) and out of bootstrap replicates; a warning says how many were left out
where that happens during resampling.

Randomness only ever comes from ``np.random.default_rng(seed)``; the same inputs and seed
give the same folds and the same intervals.

Plots need matplotlib, imported inside the plotting functions; they draw on a bare
:class:`matplotlib.figure.Figure` (Agg canvas) and never touch pyplot's global state.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np

from alldata.errors import AlldataError, SplitError
from alldata.split import UnionFind

__all__ = [
    "CI",
    "ClassificationReport",
    "EvaluationError",
    "GainResult",
    "InstanceReport",
    "RocCurve",
    "SegmentationReport",
    "aji",
    "aji_terms",
    "auc",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_metric",
    "check_folds",
    "classification_metrics",
    "confusion_matrix",
    "dice",
    "format_ci",
    "gap_recovered",
    "grouped_kfold",
    "instance_metrics",
    "iou",
    "markdown_table",
    "paired_gain",
    "plot_confusion",
    "plot_gains",
    "plot_roc",
    "roc_auc",
    "roc_curve",
    "roc_ovr",
    "segmentation_metrics",
]

#: Metrics reported per class, and averaged macro and weighted, by :func:`classification_metrics`.
CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "ovr_accuracy")
#: Ways :func:`instance_metrics` may pair true and predicted instances.
MATCHING = ("hungarian", "greedy")
#: Units :func:`paired_gain` and :func:`gap_recovered` may resample.
RESAMPLE = ("pair", "seed", "fold")
#: Ways :func:`gap_recovered` may aggregate the per-pair shares.
GAP_AGGREGATE = ("mean_of_ratios", "ratio_of_means")


class EvaluationError(AlldataError, ValueError):
    """Bad evaluation input: mismatched lengths, unknown labels, pairs that do not match."""


# --- small helpers -------------------------------------------------------------------------


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0`` (the module's zero-division rule)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _vector(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise EvaluationError(f"{name} must be one-dimensional (one entry per sample); got shape {arr.shape}")
    if arr.size == 0:
        raise EvaluationError(f"{name} is empty; pass at least one sample")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise EvaluationError(f"lengths differ: {lengths}; pass one entry per sample in each")
    return next(iter(lengths.values()))


def _sorted_keys(keys: Any) -> list:
    try:
        return sorted(keys)
    except TypeError:  # mixed key types: any fixed order will do
        return sorted(keys, key=repr)


def _average(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean of the defined (non-NaN) values, weighted when ``weights`` is given; NaN if none."""
    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    if weights is None:
        return float(values[ok].mean()) if ok.any() else math.nan
    w = np.asarray(weights, dtype=float)[ok]
    return float(np.dot(values[ok], w) / w.sum()) if w.sum() > 0 else math.nan


def _check_alpha(alpha: float, n_boot: int) -> None:
    if not 0 < alpha < 1:
        raise EvaluationError(f"alpha={alpha!r} must lie strictly between 0 and 1; use 0.05 for a 95 % interval")
    if int(n_boot) != n_boot or n_boot < 1:
        raise EvaluationError(
            f"n_boot={n_boot!r} must be a positive integer; 1000 is usual, 2000+ for the final report"
        )


# --- leak-free folds ------------------------------------------------------------------------


def grouped_kfold(
    groups: Sequence[Hashable],
    strata: Sequence[Hashable | None] | None = None,
    k: int = 5,
    seed: int = 0,
    *,
    hashes: Sequence[str | None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split samples into ``k`` folds so that no group (and no identical file) spans two folds.

    The unit is a *component*, as in :func:`alldata.split.assign_splits`: all samples of a
    group, merged with any other group holding a byte-identical file (same entry in
    ``hashes``). Each component's stratum is its majority stratum (ties: the smallest
    name; ``None`` entries do not vote, so one marked sample can stratify a component of
    unmarked ones, e.g. the one annotated smear among its crops). Within each stratum, in sorted order, components are shuffled with
    ``np.random.default_rng(seed)`` and each goes to the fold holding the fewest samples
    of that stratum, then the fewest samples overall, then a seeded random fold order.
    So every fold gets a share of every stratum with enough components, fold sizes stay
    close, and the same inputs and seed give the same folds whatever the sample order.

    Args:
        groups: one group id per sample (patient / source image).
        strata: one stratum per sample (the class to balance), or None for no strata.
        k: number of folds, at least 2 and at most the number of components.
        seed: shuffle seed; repeat the benchmark over several seeds for several fold draws.
        hashes: optional file hash per sample (None entries are ignored); samples with the
            same hash are kept in the same fold.

    Returns:
        ``k`` pairs ``(train_idx, test_idx)`` of sorted integer index arrays; the test
        parts partition ``range(len(groups))`` and each train part is the complement.

    Raises:
        SplitError: bad ``k`` or mismatched lengths (or, never expected, a leak).
    """
    groups_s = [str(g) for g in groups]
    n = len(groups_s)
    if n == 0:
        raise SplitError("groups is empty; pass one group id per sample")
    strata_l = list(strata) if strata is not None else [None] * n
    hashes_l = list(hashes) if hashes is not None else [None] * n
    if len(strata_l) != n or len(hashes_l) != n:
        raise SplitError(
            f"groups ({n}), strata ({len(strata_l)}) and hashes ({len(hashes_l)}) must have one entry per sample"
        )
    if int(k) != k or k < 2:
        raise SplitError(f"k={k!r} must be an integer >= 2; use 5 or 10 folds")
    uf = UnionFind()
    first_with_hash: dict[str, str] = {}
    for g, h in zip(groups_s, hashes_l):
        uf.find(g)
        if h:
            uf.union(g, first_with_hash.setdefault(h, g))
    comp_of = [uf.find(g) for g in groups_s]
    size: Counter[str] = Counter(comp_of)
    if k > len(size):
        raise SplitError(
            f"k={k} folds but only {len(size)} independent groups; use k <= {len(size)} or collect more groups"
        )
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for c, s in zip(comp_of, strata_l):
        votes[c]  # a component whose strata are all None gets stratum ""
        if s is not None:
            votes[c][str(s)] += 1
    votes = {c: v or Counter({"": 1}) for c, v in votes.items()}
    stratum_of = {c: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for c, v in votes.items()}
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for c in sorted(size):
        by_stratum[stratum_of[c]].append(c)

    rng = np.random.default_rng(seed)
    priority = rng.permutation(k)
    total = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for stratum in sorted(by_stratum):
        comps = by_stratum[stratum]
        in_stratum = np.zeros(k, dtype=np.int64)
        for idx in rng.permutation(len(comps)):
            c = comps[idx]
            f = min(range(k), key=lambda j: (in_stratum[j], total[j], priority[j]))
            fold_of[c] = f
            in_stratum[f] += size[c]
            total[f] += size[c]
    sample_fold = np.array([fold_of[c] for c in comp_of])
    everything = np.arange(n)
    folds = [(everything[sample_fold != f], everything[sample_fold == f]) for f in range(k)]
    check_folds(groups_s, folds, hashes=hashes_l)
    return folds


def check_folds(
    groups: Sequence[Hashable],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    hashes: Sequence[str | None] | None = None,
) -> None:
    """Raise :class:`SplitError` unless ``folds`` are leak-free k-fold splits of the samples.

    Checks that the test parts partition all samples, each train part is exactly the
    complement of its test part, and no group (and no non-None file hash) has samples in
    two test parts.
    """
    n = len(groups)
    seen = np.zeros(n, dtype=np.int64)
    for i, (train, test) in enumerate(folds):
        train, test = np.asarray(train), np.asarray(test)
        seen[test] += 1
        if len(np.intersect1d(train, test)) or len(train) + len(test) != n:
            raise SplitError(f"fold {i}: train and test overlap or do not cover all {n} samples; the folds are broken")
    if not (seen == 1).all():
        bad = np.nonzero(seen != 1)[0][:5].tolist()
        raise SplitError(f"samples {bad} are in {seen[bad].tolist()} test folds, not exactly one; the folds are broken")
    keyed = [("group", [str(g) for g in groups])]
    if hashes is not None:
        keyed.append(("file sha256", list(hashes)))
    for name, keys in keyed:
        where: dict[str, int] = {}
        for i, (_, test) in enumerate(folds):
            for j in np.asarray(test):
                key = keys[j]
                if key is None or key == "":
                    continue
                if where.setdefault(key, i) != i:
                    raise SplitError(f"{name} {key!r} is in test folds {where[key]} and {i}: the folds leak")


# --- classification ---------------------------------------------------------------------------


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Hashable] | None) -> list:
    present = set(y_true.tolist()) | set(y_pred.tolist())
    if labels is None:
        return _sorted_keys(present)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise EvaluationError(f"labels {labels} repeat a value; list each class once")
    unknown = present - set(labels)
    if unknown:
        raise EvaluationError(
            f"y_true/y_pred hold {_sorted_keys(unknown)}, not among labels {labels}; "
            "add them to labels or leave labels=None to use every value present"
        )
    return labels


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` default to the sorted values present in either array.
    """
    yt, yp = _vector("y_true", y_true), _vector("y_pred", y_pred)
    _same_length(y_true=yt, y_pred=yp)
    labs = _labels(yt, yp, labels)
    index = {lab: i for i, lab in enumerate(labs)}
    c = len(labs)
    codes = np.array([index[t] for t in yt.tolist()]) * c + np.array([index[p] for p in yp.tolist()])
    return np.bincount(codes, minlength=c * c).reshape(c, c)


@dataclass(frozen=True)
class ClassificationReport:
    """Per-class, macro and weighted classification metrics (see :func:`classification_metrics`).

    Attributes:
        labels: the classes, in the order of the confusion matrix rows/columns.
        confusion: ``C[i, j]`` = samples of true ``labels[i]`` predicted ``labels[j]``.
        per_class: ``{label: {"tp", "fp", "fn", "tn", "support", "sensitivity",
            "specificity", "precision", "f1", "ovr_accuracy"[, "auc"]}}``.
        macro: unweighted mean over classes of each metric (NaN classes left out).
        weighted: support-weighted mean over classes of each metric (NaN classes left out).
        accuracy: overall accuracy ``trace(C) / N``.
        balanced_accuracy: macro sensitivity.
        curves: one-vs-rest ROC curves per class when scores were given, else empty.
    """

    labels: list
    confusion: np.ndarray
    per_class: dict[Any, dict[str, float]]
    macro: dict[str, float]
    weighted: dict[str, float]
    accuracy: float
    balanced_accuracy: float
    curves: dict[Any, RocCurve] = field(default_factory=dict)

    def rows(self, digits: int | None = None) -> list[dict[str, Any]]:
        """One row per class, then ``macro`` and ``weighted``, for :func:`markdown_table`."""
        keys = [m for m in (*CLASS_METRICS, "auc") if m in self.macro]
        rows: list[dict[str, Any]] = [
            {
                "class": str(lab),
                "support": int(self.per_class[lab]["support"]),
                **{m: self.per_class[lab][m] for m in keys},
            }
            for lab in self.labels
        ]
        n = int(self.confusion.sum())
        rows.append({"class": "macro", "support": n, **{m: self.macro[m] for m in keys}})
        rows.append({"class": "weighted", "support": n, **{m: self.weighted[m] for m in keys}})
        if digits is not None:
            rows = [{k: round(v, digits) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
        return rows


def classification_metrics(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    *,
    labels: Sequence[Hashable] | None = None,
    scores: Sequence[float] | np.ndarray | None = None,
    pos_label: Hashable | None = None,
) -> ClassificationReport:
    """Confusion matrix and per-class, macro and weighted metrics, one-vs-rest.

    For each class, with TP/FP/FN/TN counted one-vs-rest from the confusion matrix:

    * sensitivity (recall, TPR) = TP / (TP + FN)
    * specificity (TNR) = TN / (TN + FP)
    * precision (PPV) = TP / (TP + FP)
    * F1 = 2·TP / (2·TP + FP + FN)  (= harmonic mean of precision and sensitivity)
    * ovr_accuracy (one-vs-rest accuracy) = (TP + TN) / N; not the overall accuracy
    * auc: area under the one-vs-rest ROC curve, when ``scores`` are given.

    Zero division gives NaN: sensitivity of a class with no true samples, precision of a
    class never predicted, specificity when every sample is of that class, F1 when the
    class is neither present nor predicted (F1 is 0, not NaN, for a class present but never
    predicted). *Macro* = mean over classes, *weighted* = mean weighted by support
    (TP + FN); both leave NaN classes out (as scikit-learn's ``zero_division=np.nan``)
    and are NaN if no class is defined. Overall accuracy = trace(C) / N; balanced
    accuracy = macro sensitivity.

    Args:
        y_true: true class per sample.
        y_pred: predicted class per sample.
        labels: the classes, in order; default the sorted values present. Give them to
            keep a class that is absent from this fold in the report.
        scores: optional scores for ROC/AUC: shape ``(N, C)`` with one column per entry of
            ``labels`` (e.g. softmax probabilities), or shape ``(N,)`` for two classes,
            the score of ``pos_label`` (higher = more likely ``pos_label``).
        pos_label: the positive class of 1-D ``scores`` (required with them).

    Raises:
        EvaluationError: mismatched lengths, values outside ``labels``, bad score shape.
    """
    yt, yp = _vector("y_true", y_true), _vector("y_pred", y_pred)
    n = _same_length(y_true=yt, y_pred=yp)
    labs = _labels(yt, yp, labels)
    cm = confusion_matrix(yt, yp, labs)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    support = tp + fn
    values = {
        "sensitivity": _div(tp, tp + fn),
        "specificity": _div(tn, tn + fp),
        "precision": _div(tp, tp + fp),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "ovr_accuracy": _div(tp + tn, np.full_like(tp, n)),
    }
    curves: dict[Any, RocCurve] = {}
    if scores is not None:
        curves = _class_curves(yt, np.asarray(scores, dtype=float), labs, pos_label, n)
        values["auc"] = np.array([curves[lab].auc for lab in labs])
    per_class = {
        lab: {
            "tp": tp[i],
            "fp": fp[i],
            "fn": fn[i],
            "tn": tn[i],
            "support": support[i],
            **{m: float(v[i]) for m, v in values.items()},
        }
        for i, lab in enumerate(labs)
    }
    macro = {m: _average(v) for m, v in values.items()}
    weighted = {m: _average(v, support) for m, v in values.items()}
    return ClassificationReport(
        labels=labs,
        confusion=cm,
        per_class=per_class,
        macro=macro,
        weighted=weighted,
        accuracy=float(np.trace(cm) / n),
        balanced_accuracy=macro["sensitivity"],
        curves=curves,
    )


def _class_curves(
    yt: np.ndarray, scores: np.ndarray, labs: list, pos_label: Hashable | None, n: int
) -> dict[Any, RocCurve]:
    if scores.ndim == 1:
        if len(labs) != 2 or pos_label not in labs:
            raise EvaluationError(
                f"1-D scores need exactly two classes (got {labs}) and pos_label one of them (got {pos_label!r}); "
                "pass pos_label=<the class the score favours>, or pass (N, C) scores with one column per label"
            )
        _same_length(y_true=yt, scores=scores)
        return {lab: _curve(yt == lab, scores if lab == pos_label else -scores) for lab in labs}
    if scores.ndim != 2 or scores.shape != (n, len(labs)):
        raise EvaluationError(
            f"scores have shape {scores.shape}; pass (N, C) = ({n}, {len(labs)}), one column per label in {labs}"
        )
    return roc_ovr(yt, scores, labs)


class RocCurve(NamedTuple):
    """A ROC curve: false- and true-positive rates at each distinct threshold, and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


def _roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not np.isfinite(scores).all():
        raise EvaluationError("scores hold NaN or infinite values; pass finite scores (probabilities or logits)")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each distinct score
    tps = np.r_[0, np.cumsum(y)[last]]
    fps = np.r_[0, last + 1 - tps[1:]]
    thresholds = np.r_[np.inf, s[last]]
    return _div(fps, fps[-1]), _div(tps, tps[-1]), thresholds


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule: Σ (fpr[i+1] − fpr[i]) · (tpr[i+1] + tpr[i]) / 2.

    NaN if the curve holds NaN (no positives or no negatives).
    """
    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def _curve(positive: np.ndarray, scores: np.ndarray) -> RocCurve:
    fpr, tpr, _ = _roc_points(positive, scores)
    return RocCurve(fpr, tpr, auc(fpr, tpr))


def roc_curve(
    y_true: Sequence[Hashable], scores: Sequence[float], pos_label: Hashable = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Binary ROC curve ``(fpr, tpr, thresholds)``, one point per distinct score.

    A sample is called positive when its score is ``>= threshold``; thresholds decrease
    from ``+inf`` (the point (0, 0)) to the lowest score (the point (1, 1)). Tied scores
    move both rates at once, so ties count one half in the area. ``fpr = FP / negatives``,
    ``tpr = TP / positives``; NaN when there are no negatives / no positives.
    """
    yt, s = _vector("y_true", y_true), _vector("scores", np.asarray(scores, dtype=float))
    _same_length(y_true=yt, scores=s)
    return _roc_points(yt == pos_label, s)


def roc_auc(y_true: Sequence[Hashable], scores: Sequence[float], pos_label: Hashable = 1) -> float:
    """Area under the binary ROC curve: P(score of a positive > score of a negative) + ½ P(tie).

    1 for a perfect ranking, 0 for a reversed one, 0.5 for chance; NaN when ``y_true``
    holds only one class.
    """
    fpr, tpr, _ = roc_curve(y_true, scores, pos_label)
    return auc(fpr, tpr)


def roc_ovr(y_true: Sequence[Hashable], scores: np.ndarray, labels: Sequence[Hashable]) -> dict[Any, RocCurve]:
    """One-vs-rest ROC curve of each class from ``(N, C)`` scores, column ``j`` for ``labels[j]``.

    The macro AUC is ``nanmean`` of the per-class ``auc`` (classes absent from ``y_true``
    have NaN AUC and are left out).
    """
    yt = _vector("y_true", y_true)
    s = np.asarray(scores, dtype=float)
    labels = list(labels)
    if s.ndim != 2 or s.shape != (len(yt), len(labels)):
        raise EvaluationError(
            f"scores have shape {s.shape}; pass (N, C) = ({len(yt)}, {len(labels)}), one column per label in {labels}"
        )
    return {lab: _curve(yt == lab, s[:, j]) for j, lab in enumerate(labels)}


# --- segmentation ---------------------------------------------------------------------------


def _masks(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true), np.asarray(pred)
    if t.shape != p.shape:
        raise EvaluationError(
            f"true mask {t.shape} and predicted mask {p.shape} differ in shape; resize one to the other"
        )
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
    true_mask: np.ndarray,
    pred_mask: np.ndarray,
    *,
    labels: Sequence[int] | None = None,
    background: int | None = 0,
) -> SegmentationReport:
    """Per-class Dice and IoU of two label masks (class id per pixel).

    For class c with A = {true == c}, B = {pred == c}: Dice = 2|A∩B| / (|A|+|B|),
    IoU = |A∩B| / |A∪B|. A class absent from both masks is NaN (undefined) and left out
    of the macro mean.

    Args:
        true_mask: reference label mask.
        pred_mask: predicted label mask, same shape.
        labels: classes to score; default every value present in either mask except
            ``background``.
        background: the class left out of the default labels (None keeps every value).
    """
    t, p = _masks(true_mask, pred_mask)
    if labels is None:
        labels = [int(v) for v in np.union1d(np.unique(t), np.unique(p)) if background is None or v != background]
    per_class = {}
    for c in labels:
        a, b = t == c, p == c
        inter, sa, sb = np.logical_and(a, b).sum(), a.sum(), b.sum()
        per_class[c] = {
            "dice": float(_div(2 * inter, sa + sb)),
            "iou": float(_div(inter, sa + sb - inter)),
            "true_pixels": float(sa),
            "pred_pixels": float(sb),
        }
    macro = {m: _average(np.array([v[m] for v in per_class.values()])) for m in ("dice", "iou")}
    return SegmentationReport(per_class=per_class, macro=macro)


def _instance_overlaps(
    true_inst: np.ndarray, pred_inst: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Ids, areas and the intersection matrix ``(n_true, n_pred)`` of two instance maps."""
    t, p = _masks(true_inst, pred_inst)
    for name, m in (("true", t), ("predicted", p)):
        if not np.issubdtype(m.dtype, np.integer) and not np.issubdtype(m.dtype, np.bool_):
            raise EvaluationError(f"{name} instance map has dtype {m.dtype}; pass integer ids (0 = background)")
        if m.size and m.min() < 0:
            raise EvaluationError(
                f"{name} instance map holds negative id {int(m.min())}; use 0 for background, >0 for cells"
            )
    t, p = t.ravel().astype(np.int64), p.ravel().astype(np.int64)
    t_ids, t_area = np.unique(t[t > 0], return_counts=True)
    p_ids, p_area = np.unique(p[p > 0], return_counts=True)
    both = (t > 0) & (p > 0)
    ti, pi = np.searchsorted(t_ids, t[both]), np.searchsorted(p_ids, p[both])
    inter = np.bincount(ti * len(p_ids) + pi, minlength=len(t_ids) * len(p_ids)).reshape(len(t_ids), len(p_ids))
    return t_ids, p_ids, t_area, p_area, inter, t_area[:, None] + p_area[None, :] - inter


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
    are told apart by their ids. A true and a predicted instance may be paired when their
    IoU is ``>= iou_threshold``; each instance is used at most once.

    * ``"hungarian"``: the most pairs possible (scipy ``linear_sum_assignment`` on
      weight ``min(n_true, n_pred) + 1 + IoU`` for allowed pairs, 0 otherwise), ties broken
      by the largest total IoU.
    * ``"greedy"``: allowed pairs by decreasing IoU (ties: smaller true id, then smaller
      predicted id), each taken when both ends are still free.

    Above 0.5 both give the same pairs (an instance can overlap at most one other by
    IoU > 0.5); at exactly 0.5 a split or merged cell can have two candidates and the
    methods may differ. Then precision = TP/(TP+FP), recall = TP/(TP+FN),
    F1 = 2TP/(2TP+FP+FN); NaN when the denominator is 0 (no instances on either side).

    Raises:
        EvaluationError: shapes differ, non-integer or negative ids, bad threshold or method.
    """
    if not 0 < iou_threshold <= 1:
        raise EvaluationError(f"iou_threshold={iou_threshold!r} must lie in (0, 1]; 0.5 is the usual choice")
    if matching not in MATCHING:
        raise EvaluationError(f"matching={matching!r} is not one of {MATCHING}; use 'hungarian' (default)")
    t_ids, p_ids, _, _, inter, union = _instance_overlaps(true_inst, pred_inst)
    ious = _div(inter, union) if inter.size else np.zeros(inter.shape)
    allowed = ious >= iou_threshold
    pairs: list[tuple[int, int]] = []
    if allowed.any():
        if matching == "hungarian":
            from scipy.optimize import linear_sum_assignment

            weight = np.where(allowed, min(ious.shape) + 1 + ious, 0.0)
            rows, cols = linear_sum_assignment(weight, maximize=True)
            pairs = [(int(r), int(c)) for r, c in zip(rows, cols) if allowed[r, c]]
        else:
            cand = sorted(zip(*np.nonzero(allowed)), key=lambda rc: (-ious[rc], rc[0], rc[1]))
            used_t: set[int] = set()
            used_p: set[int] = set()
            for r, c in cand:
                if r not in used_t and c not in used_p:
                    pairs.append((int(r), int(c)))
                    used_t.add(r)
                    used_p.add(c)
    tp = len(pairs)
    fp, fn = len(p_ids) - tp, len(t_ids) - tp
    matched = [float(ious[r, c]) for r, c in pairs]
    return InstanceReport(
        tp=tp,
        fp=fp,
        fn=fn,
        precision=float(_div(tp, tp + fp)),
        recall=float(_div(tp, tp + fn)),
        f1=float(_div(2 * tp, 2 * tp + fp + fn)),
        mean_matched_iou=float(np.mean(matched)) if matched else math.nan,
        matches=sorted((int(t_ids[r]), int(p_ids[c]), float(ious[r, c])) for r, c in pairs),
    )


def aji_terms(true_inst: np.ndarray, pred_inst: np.ndarray) -> tuple[int, int]:
    """The AJI's numerator C and denominator U for one image (see :func:`aji`).

    Summing C and U over images and dividing gives the dataset-level AJI, the usual way to
    pool it (an image with few cells then weighs little).
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
    predicted instance never used. AJI = C / U.

    As in the original (and HoVer-Net's ``get_fast_aji``), one prediction may serve
    several true instances, so a merged prediction is counted in U once per true cell it
    absorbs: merges are penalised. 1 for a perfect match, 0 with no overlap at all, NaN
    when both maps are empty.
    """
    c, u = aji_terms(true_inst, pred_inst)
    return math.nan if u == 0 else float(c / u)


# --- bootstrap --------------------------------------------------------------------------------


class CI(NamedTuple):
    """A point estimate and its percentile-bootstrap interval ``[low, high]``."""

    point: float
    low: float
    high: float


def _group_index(groups: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Integer code per sample of its group (groups in sorted order) and the number of groups."""
    g = np.asarray([str(x) for x in groups])
    _, codes = np.unique(g, return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1


def _draws(n_groups: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n_groups`` group codes, drawn with replacement, one at a time."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n_groups, size=n_groups)


def _interval(point: float, reps: np.ndarray, alpha: float, what: str) -> CI:
    ok = ~np.isnan(reps)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} of {len(reps)} bootstrap replicates of {what} were undefined (NaN) and were "
            "left out; the interval describes the resamples where it is defined",
            RuntimeWarning,
            stacklevel=3,
        )
    if not ok.any():
        return CI(float(point), math.nan, math.nan)
    low, high = np.quantile(reps[ok], [alpha / 2, 1 - alpha / 2])
    return CI(float(point), float(low), float(high))


def _too_few(n_groups: int, point: float, what: str) -> CI | None:
    if n_groups >= 2:
        return None
    warnings.warn(
        f"only {n_groups} group for {what}: no interval can be drawn (low/high are NaN); evaluate more groups",
        RuntimeWarning,
        stacklevel=3,
    )
    return CI(float(point), math.nan, math.nan)


def bootstrap_indices(
    groups: Sequence[Hashable],
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile bootstrap of ``statistic(sample_indices)``, resampling whole groups.

    Each replicate draws as many groups as there are, with replacement, and passes the
    indices of all their samples (a group drawn twice appears twice) to ``statistic``.
    The interval is the ``alpha/2`` and ``1 − alpha/2`` quantiles of the replicates
    (NaN replicates left out, with a warning); the point is ``statistic`` on all samples.
    Deterministic by ``seed``; with fewer than 2 groups low/high are NaN (warned).

    Args:
        groups: group id per sample (the independent unit: patient, source image, pair).
        statistic: maps an index array into the samples to a number.
        n_boot: replicates.
        alpha: 1 − confidence level (0.05 for 95 %).
        seed: seed of ``np.random.default_rng``.
    """
    _check_alpha(alpha, n_boot)
    codes, n_groups = _group_index(_vector("groups", groups))
    point = float(statistic(np.arange(len(codes))))
    if (few := _too_few(n_groups, point, "the statistic")) is not None:
        return few
    members = [np.nonzero(codes == g)[0] for g in range(n_groups)]
    reps = np.array(
        [float(statistic(np.concatenate([members[g] for g in row]))) for row in _draws(n_groups, n_boot, seed)]
    )
    return _interval(point, reps, alpha, "the statistic")


def bootstrap_metric(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    groups: Sequence[Hashable],
    metric_fn: Callable[..., float],
    *,
    scores: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile-bootstrap CI of ``metric_fn(y_true, y_pred)``, resampling groups, not images.

    Images of one patient or source image are correlated, so the honest unit to resample
    is the group (a *cluster bootstrap*): see :func:`bootstrap_indices`. With ``scores``
    the metric is called ``metric_fn(y_true, y_pred, scores)``.

    Returns:
        ``CI(point, low, high)``; unpacks as ``point, low, high``.

    Examples:
        >>> yt = [0, 0, 1, 1, 1, 0]; yp = [0, 1, 1, 1, 0, 0]; g = ["a", "a", "b", "b", "c", "c"]
        >>> acc = lambda t, p: float((t == p).mean())
        >>> bootstrap_metric(yt, yp, g, acc, n_boot=200, seed=0).point
        0.6666666666666666
    """
    yt, yp, gr = _vector("y_true", y_true), _vector("y_pred", y_pred), _vector("groups", groups)
    _same_length(y_true=yt, y_pred=yp, groups=gr)
    sc = None if scores is None else np.asarray(scores)
    if sc is not None and len(sc) != len(yt):
        raise EvaluationError(f"scores have {len(sc)} rows for {len(yt)} samples; pass one row per sample")

    def statistic(idx: np.ndarray) -> float:
        return metric_fn(yt[idx], yp[idx]) if sc is None else metric_fn(yt[idx], yp[idx], sc[idx])

    return bootstrap_indices(gr, statistic, n_boot=n_boot, alpha=alpha, seed=seed)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile-bootstrap CI of the mean of per-sample ``values``, resampling groups.

    For per-image (or per-pair) numbers such as Dice or a gain: the point is the mean of
    the values; each replicate draws the groups with replacement and takes the mean of all
    their values, Σ_drawn sum_g / Σ_drawn n_g. ``groups=None`` treats every value as its
    own group. NaN values (undefined) are left out first, with a warning.
    """
    v = _vector("values", np.asarray(values, dtype=float))
    g = np.arange(len(v)) if groups is None else _vector("groups", groups)
    _same_length(values=v, groups=g)
    _check_alpha(alpha, n_boot)
    ok = ~np.isnan(v)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} of {len(v)} values are NaN (undefined) and were left out", RuntimeWarning, stacklevel=2
        )
        v, g = v[ok], g[ok]
    if len(v) == 0:
        return CI(math.nan, math.nan, math.nan)
    codes, n_groups = _group_index(g)
    point = float(v.mean())
    if (few := _too_few(n_groups, point, "the mean")) is not None:
        return few
    sums = np.bincount(codes, weights=v, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    reps = np.array([sums[row].sum() / counts[row].sum() for row in _draws(n_groups, n_boot, seed)])
    return _interval(point, reps, alpha, "the mean")


# --- paired comparisons over (seed, fold) -----------------------------------------------------


@dataclass(frozen=True)
class GainResult:
    """A paired comparison over (seed, fold) pairs (see :func:`paired_gain`).

    Attributes:
        mean: the aggregate over defined pairs (mean difference, or share of gap recovered).
        low, high: its percentile-bootstrap interval.
        n_pairs: pairs with a defined value (NaN pairs are left out).
        per_pair: the value for every pair, NaN where undefined.
    """

    mean: float
    low: float
    high: float
    n_pairs: int
    per_pair: dict[Any, float]

    def __str__(self) -> str:
        return f"{format_ci(self.mean, self.low, self.high, signed=True)} (n={self.n_pairs})"


def _aligned(**named: Mapping[Any, float]) -> list:
    """Common keys of the dicts, sorted; raise naming the pairs missing from any of them."""
    names = list(named)
    if any(len(d) == 0 for d in named.values()):
        raise EvaluationError(
            f"{[n for n in names if not named[n]]} hold no (seed, fold) pairs; pass one value per pair"
        )
    every = set().union(*(set(d) for d in named.values()))
    missing = {n: _sorted_keys(every - set(d)) for n, d in named.items() if every - set(d)}
    if missing:
        where = "; ".join(f"missing from {n}: {m}" for n, m in missing.items())
        raise EvaluationError(
            f"(seed, fold) pairs do not match ({where}). Compare only runs on the same pairs: "
            "run the missing pairs or drop them from every side"
        )
    return _sorted_keys(every)


def _resample_groups(keys: list, resample: str) -> list:
    if resample not in RESAMPLE:
        raise EvaluationError(f"resample={resample!r} is not one of {RESAMPLE}; use 'pair' (default)")
    if resample == "pair":
        return [repr(k) for k in keys]
    pos = RESAMPLE.index(resample) - 1  # seed -> key[0], fold -> key[1]
    if not all(isinstance(k, tuple) and len(k) == 2 for k in keys):
        raise EvaluationError(f"resample={resample!r} needs (seed, fold) tuple keys; got e.g. {keys[0]!r}")
    return [repr(k[pos]) for k in keys]


def paired_gain(
    baseline: Mapping[Any, float],
    arm: Mapping[Any, float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resample: Literal["pair", "seed", "fold"] = "pair",
) -> GainResult:
    """Gain of an arm over the baseline, paired on (seed, fold): d = arm − baseline per pair.

    Pairing removes the fold-to-fold and seed-to-seed variation both arms share, so the
    interval describes the *gain*, not the spread of either score. ``mean`` = mean of the
    defined d; the interval is a percentile bootstrap of that mean over pairs
    (``resample="pair"``). Pairs that share a fold's test set are correlated;
    ``resample="fold"`` (or ``"seed"``) resamples whole folds (seeds) instead, a wider,
    more conservative interval when there are enough of them.

    Args:
        baseline: ``{(seed, fold): metric}`` of the real-only run.
        arm: ``{(seed, fold): metric}`` of the arm (e.g. real+synthetic), same pairs.
        n_boot, alpha, seed: bootstrap replicates, 1 − confidence level, and RNG seed.
        resample: the unit resampled: ``"pair"``, ``"seed"`` or ``"fold"``.

    Raises:
        EvaluationError: the pairs do not match (the message names the missing pairs).
    """
    keys = _aligned(baseline=baseline, arm=arm)
    d = np.array([float(arm[k]) - float(baseline[k]) for k in keys])
    return _summarise(keys, d, _resample_groups(keys, resample), n_boot, alpha, seed)


def _summarise(keys: list, per_pair: np.ndarray, groups: list, n_boot: int, alpha: float, seed: int) -> GainResult:
    ok = ~np.isnan(per_pair)
    if not ok.all():
        warnings.warn(
            f"pairs {[k for k, o in zip(keys, ok) if not o]} are undefined (NaN) and were left out of the mean",
            RuntimeWarning,
            stacklevel=3,
        )
    n = int(ok.sum())
    if n == 0:
        ci = CI(math.nan, math.nan, math.nan)
    else:
        ci = bootstrap_ci(per_pair[ok], np.asarray(groups)[ok], n_boot=n_boot, alpha=alpha, seed=seed)
    return GainResult(ci.point, ci.low, ci.high, n, dict(zip(keys, per_pair.tolist())))


def gap_recovered(
    baseline: Mapping[Any, float],
    oracle: Mapping[Any, float],
    arm: Mapping[Any, float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resample: Literal["pair", "seed", "fold"] = "pair",
    aggregate: Literal["mean_of_ratios", "ratio_of_means"] = "mean_of_ratios",
) -> GainResult:
    """Share of the baseline→oracle gap an arm recovers, per (seed, fold) pair, with a CI.

    The rare-class recovery protocol: the baseline keeps only a few training groups of a
    class, the oracle has all of them, and the arm adds synthetic samples to the baseline.
    Per pair, r = (arm − baseline) / (oracle − baseline): 0 = no help, 1 = as good as the
    full real data, < 0 = harmful, > 1 = better than the oracle. r is NaN (undefined, left
    out) where oracle == baseline. If the oracle falls below the baseline the sign of r
    flips meaning; check ``per_pair`` when the gap is small.

    ``aggregate="mean_of_ratios"`` reports the mean of r over defined pairs;
    ``"ratio_of_means"`` reports Σ(arm − baseline) / Σ(oracle − baseline), which small
    gaps cannot blow up (its interval resamples the pairs the same way).

    Raises:
        EvaluationError: the three dicts do not hold the same pairs (missing ones named).
    """
    if aggregate not in GAP_AGGREGATE:
        raise EvaluationError(f"aggregate={aggregate!r} is not one of {GAP_AGGREGATE}; use 'mean_of_ratios'")
    keys = _aligned(baseline=baseline, oracle=oracle, arm=arm)
    b = np.array([float(baseline[k]) for k in keys])
    o = np.array([float(oracle[k]) for k in keys])
    a = np.array([float(arm[k]) for k in keys])
    r = _div(a - b, o - b)
    r[np.isnan(a) | np.isnan(b) | np.isnan(o)] = np.nan
    groups = _resample_groups(keys, resample)
    if aggregate == "mean_of_ratios":
        return _summarise(keys, r, groups, n_boot, alpha, seed)
    ok = ~(np.isnan(a) | np.isnan(b) | np.isnan(o))
    gain, gap = (a - b)[ok], (o - b)[ok]

    def statistic(idx: np.ndarray) -> float:
        return float(_div(gain[idx].sum(), gap[idx].sum()))

    if not ok.any():
        return GainResult(math.nan, math.nan, math.nan, 0, dict(zip(keys, r.tolist())))
    ci = bootstrap_indices(np.asarray(groups)[ok], statistic, n_boot=n_boot, alpha=alpha, seed=seed)
    return GainResult(ci.point, ci.low, ci.high, int(ok.sum()), dict(zip(keys, r.tolist())))


# --- plots -----------------------------------------------------------------------------------


def _figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("alldata's plots need matplotlib: pip install matplotlib") from e
    return Figure(figsize=figsize, layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, *, title: str = "ROC"
) -> Path:
    """Draw ROC curves ``{name: (fpr, tpr, auc)}`` (e.g. :class:`RocCurve`) into a PNG at ``path``."""
    fig = _figure((5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (fpr, tpr, area) in curves.items():
        ax.step(fpr, tpr, where="post", label=f"{name} (AUC {format_ci(area)})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false-positive rate (1 − specificity)",
        ylabel="true-positive rate (sensitivity)",
        title=title,
        aspect="equal",
    )
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_confusion(
    cm: np.ndarray,
    labels: Sequence[Hashable],
    path: str | Path,
    *,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) with its counts into a PNG.

    ``normalize=True`` colours and prints each row's share (the per-class recall on the
    diagonal); rows with no samples stay empty.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise EvaluationError(
            f"cm has shape {cm.shape} for {len(labels)} labels; pass a square (C, C) matrix and C labels"
        )
    shown = _div(cm, cm.sum(axis=1, keepdims=True)) if normalize else cm.astype(float)
    side = 1.5 + 0.6 * len(labels)
    fig = _figure((side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(float(np.nanmax(shown)), 1.0))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = np.arange(len(labels))
    names = [str(lab) for lab in labels]
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            v = shown[i, j]
            text = "" if np.isnan(v) else (f"{v:.2f}" if normalize else str(int(cm[i, j])))
            ax.text(j, i, text, ha="center", va="center", color="white" if v > 0.5 * top else "black", fontsize="small")
    return _save(fig, path)


def plot_gains(
    gains: Mapping[str, GainResult], path: str | Path, metric_name: str, *, title: str | None = None
) -> Path:
    """Draw each arm's paired gain as a point with its CI bar and a zero line into a PNG.

    An interval that crosses the zero line is a gain the data cannot tell from none.
    """
    names = list(gains)
    fig = _figure((6.5, 1.2 + 0.5 * max(len(names), 1)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="black", linewidth=1)
    ys = np.arange(len(names))[::-1]
    for y, name in zip(ys, names):
        g = gains[name]
        err = np.nan_to_num(np.array([[g.mean - g.low], [g.high - g.mean]]), nan=0.0)
        colour = "tab:green" if g.low > 0 else "tab:red" if g.high < 0 else "tab:grey"
        ax.errorbar([g.mean], [y], xerr=err, fmt="o", color=colour, capsize=4)
        ax.annotate(str(g), (g.mean, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize="small")
    ax.set_yticks(ys, [f"{n} (n={gains[n].n_pairs})" for n in names])
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set(xlabel=f"paired gain in {metric_name} (mean, 95 % CI)", title=title or f"Gain over baseline: {metric_name}")
    return _save(fig, path)


# --- text output -----------------------------------------------------------------------------


def _num(x: float, digits: int, signed: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_ci(
    point: float, low: float | None = None, high: float | None = None, *, digits: int = 3, signed: bool = False
) -> str:
    """``"0.812 [0.774, 0.845]"``; just the point when no bounds are given, ``n/a`` for NaN.

    ``signed=True`` prints a sign on every number (for gains: ``"+0.050 [+0.020, +0.080]"``).

    Examples:
        >>> format_ci(0.8123, 0.7741, 0.8449)
        '0.812 [0.774, 0.845]'
    """
    text = _num(point, digits, signed)
    if low is None and high is None:
        return text
    return f"{text} [{_num(low, digits, signed)}, {_num(high, digits, signed)}]"


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return _num(float(v), digits, False)
    if isinstance(v, (CI, GainResult)):
        return format_ci(v[0], v[1], v[2], digits=digits) if isinstance(v, CI) else str(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str] | None = None, *, digits: int = 3
) -> str:
    """A GitHub-flavoured Markdown table of ``rows``.

    Args:
        rows: one mapping per row.
        columns: keys to show, in order, or ``{key: header}``; default every key in the
            order first seen. A key missing from a row leaves the cell empty.
        digits: decimals for floats (NaN prints ``n/a``); :class:`CI` and
            :class:`GainResult` values print with :func:`format_ci`.

    Examples:
        >>> print(markdown_table([{"arm": "real", "f1": 0.81234}], ["arm", "f1"]))
        | arm | f1 |
        | --- | --- |
        | real | 0.812 |
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    if not headers:
        raise EvaluationError("markdown_table has no columns; pass columns=[...] or rows with keys")
    lines = [
        "| " + " | ".join(_cell(h, digits) for h in headers.values()) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(_cell(r.get(k), digits) for k in headers) + " |" for r in rows]
    return "\n".join(lines)
