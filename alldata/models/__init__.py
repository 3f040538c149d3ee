"""Reference models, registered by name: classical and U-Net segmenters, hand-crafted
features, classical classifiers on those features and CNN classifiers on images.

* :data:`SEGMENTERS`: ``otsu_hsv``, ``kmeans_color``, ``watershed``
  (:mod:`alldata.models.segment_classic`) and ``unet`` (:mod:`alldata.models.unet`, torch).
* :func:`extract_features` (:mod:`alldata.models.features`): colour, shape and GLCM
  texture features per single-cell image.
* :data:`CLASSIFIERS`: ``svm``, ``random_forest``, ``knn``
  (:mod:`alldata.models.classify_classic`, ``input_kind = "features"``) and ``resnet18``,
  ``mobilenetv3``, ``efficientnet_b0`` (:mod:`alldata.models.cnn`, timm, trained from
  scratch, ``input_kind = "image"``).
* :mod:`alldata.models.augment`: the albumentations pipelines the deep models train with,
  and :func:`augment_images` (classic augmentation of a rare class).

Importing this package is light (numpy only): the modules, and scikit-image /
scikit-learn / torch / timm with them, are imported when a name is first used.

Examples:
    >>> from alldata.models import SEGMENTERS, CLASSIFIERS
    >>> SEGMENTERS.names()
    ['kmeans_color', 'otsu_hsv', 'unet', 'watershed']
    >>> CLASSIFIERS.names()
    ['efficientnet_b0', 'knn', 'mobilenetv3', 'random_forest', 'resnet18', 'svm']
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
