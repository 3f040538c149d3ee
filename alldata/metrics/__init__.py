"""Metrics: classification, segmentation, generative quality, and the statistics around them.

* :mod:`~alldata.metrics.classification`: a thin layer over ``sklearn.metrics``
  (:func:`classification_metrics`, ROC/AUC) with one NaN policy.
* :mod:`~alldata.metrics.segmentation`: Dice/IoU, instance F1, AJI, and the pooled-count
  API of the segmentation benchmark (:func:`count_instances`, :func:`count_boxes`,
  :func:`pooled_scores`); instances and boxes matched by the Hungarian method.
* :mod:`~alldata.metrics.generative`: FD, KID, precision/recall, density/coverage,
  memorisation, pixel statistics and CAS.
* :mod:`~alldata.metrics.stats`: cluster-bootstrap intervals, paired gains, gap recovered.

Everywhere a ratio whose denominator is 0 is NaN. Importing this package is light: numpy
only; scikit-learn and SciPy are imported inside the functions that use them.
"""

from __future__ import annotations

from alldata.metrics._common import MetricError
from alldata.metrics.classification import (
    CLASS_METRICS,
    ClassificationReport,
    RocCurve,
    auc,
    classification_metrics,
    confusion_matrix,
    roc_auc,
    roc_curve,
    roc_ovr,
)
from alldata.metrics.generative import (
    Memorisation,
    PixelStats,
    cas,
    density_coverage,
    frechet_distance,
    kid,
    memorisation,
    pixel_statistics,
    precision_recall,
)
from alldata.metrics.segmentation import (
    InstanceReport,
    SegmentationReport,
    aji,
    aji_terms,
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
from alldata.metrics.stats import (
    CI,
    GainResult,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_metric,
    format_ci,
    gap_recovered,
    paired_gain,
)

__all__ = (
    "CI",
    "CLASS_METRICS",
    "ClassificationReport",
    "GainResult",
    "InstanceReport",
    "Memorisation",
    "MetricError",
    "PixelStats",
    "RocCurve",
    "SegmentationReport",
    "aji",
    "aji_terms",
    "auc",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_metric",
    "box_iou",
    "boxes_from_instances",
    "cas",
    "classification_metrics",
    "confusion_matrix",
    "count_boxes",
    "count_instances",
    "density_coverage",
    "dice",
    "format_ci",
    "frechet_distance",
    "gap_recovered",
    "instance_metrics",
    "iou",
    "kid",
    "match_boxes",
    "memorisation",
    "paired_gain",
    "pixel_statistics",
    "pooled_scores",
    "precision_recall",
    "roc_auc",
    "roc_curve",
    "roc_ovr",
    "segmentation_metrics",
    "touching_ids",
)
