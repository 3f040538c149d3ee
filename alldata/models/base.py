"""The model registries, their lazy loading, and the one error the models raise.

:data:`SEGMENTERS` and :data:`CLASSIFIERS` are ordinary :class:`~alldata.registry.Registry`
objects that know which module defines each name (:data:`SEGMENTER_MODULES`,
:data:`CLASSIFIER_MODULES`), so ``import alldata.models`` imports neither scikit-image nor
scikit-learn: a module is imported the first time one of its names is asked for (the same
idea as :func:`alldata.generators.get_family`). Listing the names (``names()``, ``in``,
``len``) imports them all, so a listing is always complete.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

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

T = TypeVar("T")

#: Registry key -> the module that registers it.
SEGMENTER_MODULES: dict[str, str] = {
    "otsu_hsv": "alldata.models.segment_classic",
    "kmeans_color": "alldata.models.segment_classic",
    "watershed": "alldata.models.segment_classic",
    "unet": "alldata.models.unet",
}
CLASSIFIER_MODULES: dict[str, str] = {
    "svm": "alldata.models.classify_classic",
    "random_forest": "alldata.models.classify_classic",
    "knn": "alldata.models.classify_classic",
    "resnet18": "alldata.models.cnn",
    "mobilenetv3": "alldata.models.cnn",
    "efficientnet_b0": "alldata.models.cnn",
}

_INSTALL_HINT = "the reference models need scikit-learn and scikit-image: pip install 'alldata[gen]'"


class ModelError(AlldataError, ValueError):
    """Bad model arguments or inputs, or a saved model that cannot be used."""


class _LazyRegistry(Registry[T]):
    """A :class:`Registry` that imports the module defining a name before looking it up."""

    def __init__(self, kind: str, modules: dict[str, str]) -> None:
        super().__init__(kind)
        self._modules = modules

    def _import(self, module: str) -> None:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ImportError(f"cannot import {module} ({e}); {_INSTALL_HINT}") from e

    def _import_all(self) -> None:
        for module in sorted(set(self._modules.values())):
            self._import(module)

    def get(self, name: str) -> T:
        if name not in self._items:
            if name in self._modules:
                self._import(self._modules[name])
            else:  # unknown: load everything so the did-you-mean hint sees every name
                self._import_all()
        return super().get(name)

    def names(self) -> list[str]:
        self._import_all()
        return super().names()

    def __contains__(self, name: object) -> bool:
        return name in self._modules or name in self._items

    def __len__(self) -> int:
        return len(self.names())


#: Segmenters by name: classes with ``segment(image) -> 0/1/2 mask`` and ``instances(image)``.
SEGMENTERS: Registry[type] = _LazyRegistry("segmenter", SEGMENTER_MODULES)
#: Classifiers by name: classes with ``fit/predict/predict_proba/save/load``.
CLASSIFIERS: Registry[type] = _LazyRegistry("classifier", CLASSIFIER_MODULES)


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
