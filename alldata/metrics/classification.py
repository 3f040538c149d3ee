"""Classification metrics: a thin layer over :mod:`sklearn.metrics` with one NaN policy.

A ratio whose denominator is 0 is **NaN** ("undefined"), never 0 or 1, never a warning:
scikit-learn is called with ``zero_division=np.nan`` and its ``UndefinedMetricWarning`` is
silenced where NaN is the answer. Macro and weighted means leave NaN classes out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from alldata.metrics._common import MetricError, _average, _div, _same_length, _sorted_keys, _vector

__all__ = [
    "CLASS_METRICS",
    "ClassificationReport",
    "RocCurve",
    "auc",
    "classification_metrics",
    "confusion_matrix",
    "roc_auc",
    "roc_curve",
    "roc_ovr",
]

#: Metrics reported per class, and averaged macro and weighted, by :func:`classification_metrics`.
CLASS_METRICS = ("sensitivity", "specificity", "precision", "f1", "ovr_accuracy")


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[Hashable] | None) -> list:
    present = set(y_true.tolist()) | set(y_pred.tolist())
    if labels is None:
        return _sorted_keys(present)
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise MetricError(f"labels {labels} repeat a value; list each class once")
    unknown = present - set(labels)
    if unknown:
        raise MetricError(
            f"y_true/y_pred hold {_sorted_keys(unknown)}, not among labels {labels}; "
            "add them to labels or leave labels=None to use every value present"
        )
    return labels


def _pair(y_true: Any, y_pred: Any, labels: Sequence[Hashable] | None) -> tuple[np.ndarray, np.ndarray, list]:
    yt, yp = _vector("y_true", y_true), _vector("y_pred", y_pred)
    _same_length(y_true=yt, y_pred=yp)
    return yt, yp, _labels(yt, yp, labels)


def confusion_matrix(
    y_true: Sequence[Hashable], y_pred: Sequence[Hashable], labels: Sequence[Hashable] | None = None
) -> np.ndarray:
    """Counts ``C[i, j]`` of samples of true class ``labels[i]`` predicted as ``labels[j]``.

    ``labels`` default to the sorted values present in either array.
    """
    from sklearn import metrics

    yt, yp, labs = _pair(y_true, y_pred, labels)
    index = {lab: i for i, lab in enumerate(labs)}  # codes: sklearn refuses labels of mixed types
    codes_t, codes_p = [index[t] for t in yt.tolist()], [index[p] for p in yp.tolist()]
    return metrics.confusion_matrix(codes_t, codes_p, labels=list(range(len(labs))))


class RocCurve(NamedTuple):
    """A ROC curve: false- and true-positive rates at each distinct threshold, and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float


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
        """One row per class, then ``macro`` and ``weighted``, for a Markdown table."""
        keys = [m for m in (*CLASS_METRICS, "auc") if m in self.macro]
        rows: list[dict[str, Any]] = [
            {"class": str(lab), "support": int(self.per_class[lab]["support"]), **{m: self.per_class[lab][m] for m in keys}}
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
    (TP + FN); both leave NaN classes out and are NaN if no class is defined. Overall
    accuracy = trace(C) / N; balanced accuracy = macro sensitivity.

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
        MetricError: mismatched lengths, values outside ``labels``, bad score shape.
    """
    from sklearn import metrics

    yt, yp, labs = _pair(y_true, y_pred, labels)
    n = len(yt)
    cm = confusion_matrix(yt, yp, labs)
    tp = np.diag(cm).astype(float)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    codes = list(range(len(labs)))
    idx = {lab: i for i, lab in enumerate(labs)}
    ct, cp = [idx[t] for t in yt.tolist()], [idx[p] for p in yp.tolist()]
    prec, rec, f1, _ = metrics.precision_recall_fscore_support(ct, cp, labels=codes, average=None, zero_division=np.nan)
    values = {
        "sensitivity": np.asarray(rec, float),
        "specificity": _div(tn, tn + fp),
        "precision": np.asarray(prec, float),
        "f1": np.asarray(f1, float),
        "ovr_accuracy": _div(tp + tn, np.full_like(tp, n)),
    }
    curves: dict[Any, RocCurve] = {}
    if scores is not None:
        curves = _class_curves(yt, np.asarray(scores, dtype=float), labs, pos_label, n)
        values["auc"] = np.array([curves[lab].auc for lab in labs])
    per_class = {
        lab: {"tp": tp[i], "fp": fp[i], "fn": fn[i], "tn": tn[i], "support": tp[i] + fn[i],
              **{m: float(v[i]) for m, v in values.items()}}
        for i, lab in enumerate(labs)
    }
    macro = {m: _average(v) for m, v in values.items()}
    weighted = {m: _average(v, tp + fn) for m, v in values.items()}
    return ClassificationReport(
        labels=labs, confusion=cm, per_class=per_class, macro=macro, weighted=weighted,
        accuracy=float(metrics.accuracy_score(ct, cp)), balanced_accuracy=macro["sensitivity"], curves=curves,
    )


def _class_curves(
    yt: np.ndarray, scores: np.ndarray, labs: list, pos_label: Hashable | None, n: int
) -> dict[Any, RocCurve]:
    if scores.ndim == 1:
        if len(labs) != 2 or pos_label not in labs:
            raise MetricError(
                f"1-D scores need exactly two classes (got {labs}) and pos_label one of them (got {pos_label!r}); "
                "pass pos_label=<the class the score favours>, or pass (N, C) scores with one column per label"
            )
        _same_length(y_true=yt, scores=scores)
        return {lab: _curve(yt == lab, scores if lab == pos_label else -scores) for lab in labs}
    return roc_ovr(yt, scores, labs)


def _roc_points(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn import metrics
    from sklearn.exceptions import UndefinedMetricWarning

    if not np.isfinite(scores).all():
        raise MetricError("scores hold NaN or infinite values; pass finite scores (probabilities or logits)")
    with warnings.catch_warnings():  # no positives / no negatives: NaN rates are the answer
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        fpr, tpr, thresholds = metrics.roc_curve(positive.astype(bool), scores, pos_label=True, drop_intermediate=False)
    return fpr, tpr, thresholds


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under a curve by the trapezoid rule (:func:`sklearn.metrics.auc`); NaN if the curve holds NaN."""
    from sklearn import metrics

    fpr, tpr = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
    if np.isnan(fpr).any() or np.isnan(tpr).any():
        return math.nan
    return float(metrics.auc(fpr, tpr))


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
        raise MetricError(
            f"scores have shape {s.shape}; pass (N, C) = ({len(yt)}, {len(labels)}), one column per label in {labels}"
        )
    return {lab: _curve(yt == lab, s[:, j]) for j, lab in enumerate(labels)}
