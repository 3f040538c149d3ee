"""Reference models, registered by name: classical segmenters, hand-crafted features and
classical classifiers (the deep U-Net and CNNs come later).

* :data:`SEGMENTERS`: ``otsu_hsv``, ``kmeans_color``, ``watershed``
  (:mod:`alldata.models.segment_classic`).
* :func:`extract_features` (:mod:`alldata.models.features`): colour, shape and GLCM
  texture features per single-cell image.
* :data:`CLASSIFIERS`: ``svm``, ``random_forest``, ``knn``
  (:mod:`alldata.models.classify_classic`).

Importing this package is light (numpy only): the modules, and scikit-image /
scikit-learn with them, are imported when a name is first used.

Examples:
    >>> from alldata.models import SEGMENTERS, CLASSIFIERS
    >>> SEGMENTERS.names()
    ['kmeans_color', 'otsu_hsv', 'watershed']
    >>> CLASSIFIERS.names()
    ['knn', 'random_forest', 'svm']
"""

from __future__ import annotations

import importlib
from typing import Any

from alldata.models.base import (
    CLASSIFIER_MODULES,
    CLASSIFIERS,
    SEGMENTER_MODULES,
    SEGMENTERS,
    ModelError,
    Segmenter,
    get_classifier,
    get_segmenter,
)

#: Public names defined in submodules, imported on first access (PEP 562).
_LAZY = {
    "OtsuHSV": "alldata.models.segment_classic",
    "KMeansColor": "alldata.models.segment_classic",
    "Watershed": "alldata.models.segment_classic",
    "extract_features": "alldata.models.features",
    "feature_names": "alldata.models.features",
    "SVM": "alldata.models.classify_classic",
    "RandomForest": "alldata.models.classify_classic",
    "KNN": "alldata.models.classify_classic",
    "load_classifier": "alldata.models.classify_classic",
}

__all__ = (
    "CLASSIFIERS",
    "CLASSIFIER_MODULES",
    "KNN",
    "SEGMENTERS",
    "SEGMENTER_MODULES",
    "SVM",
    "KMeansColor",
    "ModelError",
    "OtsuHSV",
    "RandomForest",
    "Segmenter",
    "Watershed",
    "extract_features",
    "feature_names",
    "get_classifier",
    "get_segmenter",
    "load_classifier",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
