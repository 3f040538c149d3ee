"""The feature-extractor protocol: uint8 images in, one feature row per image out.

Every feature extractor of alldata has the same shape, so scoring
(:mod:`alldata.score`), embeddings (:mod:`alldata.embeddings`) and CAS can take any of them:

* ``name``: a short string recorded in reports;
* ``__call__(images)``: uint8 ``(N, H, W, 3)`` -> float ``(N, D)``;
* ``fit(images, labels)`` (optional): train it, returning itself.

Implementations: :class:`alldata.encoder.Encoder` (the project's CNN encoder, or
Inception), :class:`alldata.models.features.HandcraftedFeatures` (colour/shape/texture) and
:class:`Embedding` (the penultimate layer of a CNN classifier of :mod:`alldata.models.cnn`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Embedding", "FeatureExtractor", "check_images", "extract"]


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images to features. ``fit(images, labels) -> self`` is optional (see the module docstring)."""

    name: str

    def __call__(self, images: np.ndarray) -> np.ndarray: ...


def check_images(images: Any, error: type[Exception] = ValueError) -> np.ndarray:
    """``images`` as a uint8 ``(N, H, W, 3)`` array, else ``error`` naming what was given."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise error(f"images must be a uint8 (N, H, W, 3) array, got {images.dtype} {images.shape}")
    return images


def extract(extractor: FeatureExtractor, images: np.ndarray) -> np.ndarray:
    """``extractor(images)`` as float64 ``(N, D)``, checked to hold one row per image."""
    x = np.asarray(extractor(check_images(images)), np.float64)
    if x.ndim != 2 or len(x) != len(images):
        raise ValueError(f"feature extractor {extractor.name!r} returned shape {x.shape} for {len(images)} images; "
                         "it must return one row per image, (N, D)")
    return x


class Embedding:
    """A CNN classifier's penultimate layer (its ``embed``) as a :class:`FeatureExtractor`.

    Examples:
        >>> from alldata.models import ResNet18
        >>> extractor = Embedding(ResNet18(image_size=32, epochs=1))  # fit(images, labels) trains it
    """

    def __init__(self, classifier: Any) -> None:
        self.classifier = classifier
        self.name = f"{getattr(classifier, 'name', None) or getattr(classifier, 'arch', 'cnn')}-embedding"

    def fit(self, images: np.ndarray, labels: Sequence[Any]) -> Embedding:
        self.classifier.fit(images, labels)
        return self

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.classifier.embed(images)
