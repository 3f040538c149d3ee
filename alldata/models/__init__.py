"""Reference models, registered by name (torch-free import; modules load on first use).

* :data:`SEGMENTERS`: ``otsu_hsv``, ``kmeans_color``, ``watershed`` (scikit-image) and ``unet``.
* :data:`CLASSIFIERS`: ``svm``, ``random_forest``, ``knn`` on :func:`extract_features`
  (``input_kind = "features"``) and ``resnet18``, ``mobilenetv3``, ``efficientnet_b0``
  (timm, trained from scratch, ``input_kind = "image"``).
* :mod:`alldata.models.augment`: the training augmentations and :func:`augment_images`.

Examples:
    >>> from alldata.models import SEGMENTERS, CLASSIFIERS
    >>> SEGMENTERS.names()
    ['kmeans_color', 'otsu_hsv', 'unet', 'watershed']
    >>> CLASSIFIERS.list("*net*")
    ['efficientnet_b0', 'mobilenetv3', 'resnet18']
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
    "UNet": "alldata.models.unet",
    "ResNet18": "alldata.models.cnn",
    "MobileNetV3": "alldata.models.cnn",
    "EfficientNetB0": "alldata.models.cnn",
    "TimmClassifier": "alldata.models.cnn",
    "load_cnn": "alldata.models.cnn",
    "augment_images": "alldata.models.augment",
}

__all__ = (
    "CLASSIFIERS",
    "CLASSIFIER_MODULES",
    "KNN",
    "SEGMENTERS",
    "SEGMENTER_MODULES",
    "SVM",
    "EfficientNetB0",
    "KMeansColor",
    "MobileNetV3",
    "ModelError",
    "OtsuHSV",
    "RandomForest",
    "ResNet18",
    "Segmenter",
    "TimmClassifier",
    "UNet",
    "Watershed",
    "augment_images",
    "extract_features",
    "feature_names",
    "get_classifier",
    "get_segmenter",
    "load_classifier",
    "load_cnn",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
