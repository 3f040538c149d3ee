"""The model registries and the one error the models raise.

:data:`SEGMENTERS` and :data:`CLASSIFIERS` are lazy :class:`~alldata.registry.Registry`
objects: each name is declared as ``"module:Class"``, so ``import alldata.models`` imports
neither scikit-image, scikit-learn nor torch; a module is imported the first time one of its
names is asked for. Listing names (``names()``, ``list()``, ``in``, ``len``) imports nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from alldata.errors import AlldataError
from alldata.registry import Registry

__all__ = [
    "CLASSIFIERS",
    "CLASSIFIER_MODULES",
    "SEGMENTERS",
    "SEGMENTER_MODULES",
    "ModelError",
    "Segmenter",
    "get_classifier",
    "get_segmenter",
    "read_saved_config",
]

_SEGMENTERS_LAZY = {
    "otsu_hsv": "alldata.models.segment_classic:OtsuHSV",
    "kmeans_color": "alldata.models.segment_classic:KMeansColor",
    "watershed": "alldata.models.segment_classic:Watershed",
    "unet": "alldata.models.unet:UNet",
}
_CLASSIFIERS_LAZY = {
    "svm": "alldata.models.classify_classic:SVM",
    "random_forest": "alldata.models.classify_classic:RandomForest",
    "knn": "alldata.models.classify_classic:KNN",
    "resnet18": "alldata.models.cnn:ResNet18",
    "mobilenetv3": "alldata.models.cnn:MobileNetV3",
    "efficientnet_b0": "alldata.models.cnn:EfficientNetB0",
}
#: Registry key -> the module that defines it.
SEGMENTER_MODULES: dict[str, str] = {k: v.partition(":")[0] for k, v in _SEGMENTERS_LAZY.items()}
CLASSIFIER_MODULES: dict[str, str] = {k: v.partition(":")[0] for k, v in _CLASSIFIERS_LAZY.items()}

_INSTALL_HINT = "the reference models need scikit-learn and scikit-image: pip install 'alldata[gen]'"


class ModelError(AlldataError, ValueError):
    """Bad model arguments or inputs, or a saved model that cannot be used."""


#: Segmenters by name: classes with ``segment(image) -> 0/1/2 mask`` and ``instances(image)``.
SEGMENTERS: Registry[type] = Registry("segmenter", _SEGMENTERS_LAZY, install_hint=_INSTALL_HINT)
#: Classifiers by name: classes with ``fit/predict/predict_proba/save/load``.
CLASSIFIERS: Registry[type] = Registry("classifier", _CLASSIFIERS_LAZY, install_hint=_INSTALL_HINT)


@runtime_checkable
class Segmenter(Protocol):
    """What every registered segmenter does.

    ``segment`` returns a ``uint8`` mask with :data:`alldata.schema.SEG_CLASSES` values
    (0 background, 1 cytoplasm, 2 nucleus); ``instances`` an ``int32`` map, 0 background
    and 1..N one label per cell.
    """

    def segment(self, image: np.ndarray) -> np.ndarray: ...

    def instances(self, image: np.ndarray) -> np.ndarray: ...


def get_segmenter(name: str, **params: Any) -> Segmenter:
    """Build the segmenter registered as ``name`` with ``params``.

    Examples:
        >>> seg = get_segmenter("otsu_hsv", keep="center")
        >>> type(seg).__name__
        'OtsuHSV'
    """
    return SEGMENTERS.get(name)(**params)


def get_classifier(name: str, **params: Any) -> Any:
    """Build the (unfitted) classifier registered as ``name`` with ``params``.

    Examples:
        >>> clf = get_classifier("knn", n_neighbors=3)
        >>> clf.params["n_neighbors"]
        3
    """
    return CLASSIFIERS.get(name)(**params)


def read_saved_config(directory: str | Path, config_name: str, data_name: str, fmt: str, what: str) -> dict[str, Any]:
    """The JSON config of a saved model folder, checked: both files present, readable, ``format == fmt``.

    Raises:
        ModelError: naming the folder or file and the problem (``what`` says which kind of model).
    """
    d = Path(directory)
    cfg = d / config_name
    if not cfg.is_file() or not (d / data_name).is_file():
        raise ModelError(f"{d} is not a saved {what}: it needs {config_name} and {data_name} (written by save())")
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{cfg}: cannot read ({e})") from None
    found = config.get("format") if isinstance(config, dict) else None
    if found != fmt:
        raise ModelError(f"{cfg}: format {found!r} is not {fmt!r}; this folder holds another kind of model")
    return config
