"""Augmentation pipelines for the deep models (albumentations 2): pure functions returning ``A.Compose``.

* :func:`train_transform` - classification: resize, flips, 90-degree rotations, a small affine
  (scale, shift, rotation; reflected borders), brightness / contrast and hue / saturation jitter;
* :func:`seg_transform` - the same geometry on an image and its masks together (``mask=`` or
  ``masks=[...]``; nearest-neighbour, so values are never blended), colour jitter on the image only;
* :func:`eval_transform` - the resize alone (what prediction sees);
* :func:`augment_images` - ``n`` augmented copies drawn cyclically from a few images (the
  benchmark's "classic augmentation" arm fills a rare class with it).

Each pipeline draws from its own generator seeded by ``seed`` (``Compose(seed=...)``): the same
seed and calls give the same outputs, no global random state is read, and ``seed=None`` draws a
fresh seed. Images are ``uint8`` RGB ``(H, W, 3)``; shrinking uses area interpolation, enlarging
bilinear. The colour jitter stands for stain and lamp variation between labs.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from alldata.models.base import ModelError

__all__ = ["STRENGTHS", "augment_images", "eval_transform", "seg_transform", "train_transform"]

#: Augmentation strength -> (affine probability, max rotation (deg), scale range, max shift
#: (fraction), brightness/contrast limit, hue / saturation / value shift limits, colour probability).
STRENGTHS: dict[str, dict[str, Any]] = {
    "light": {"affine_p": 0.3, "rotate": 10, "scale": (0.95, 1.05), "shift": 0.03, "bc": 0.1,
              "hsv": (5, 10, 5), "color_p": 0.3},
    "default": {"affine_p": 0.5, "rotate": 15, "scale": (0.9, 1.1), "shift": 0.05, "bc": 0.15,
                "hsv": (8, 15, 10), "color_p": 0.5},
    "strong": {"affine_p": 0.7, "rotate": 30, "scale": (0.8, 1.2), "shift": 0.1, "bc": 0.25,
               "hsv": (15, 25, 15), "color_p": 0.8},
}


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int | np.integer) or image_size < 8:
        raise ModelError(f"image_size={image_size!r} must be an integer >= 8 (pixels of the square model input)")
    return int(image_size)


def _strength(strength: str) -> dict[str, Any]:
    if strength not in STRENGTHS:
        raise ModelError(f"strength={strength!r} is not one of {sorted(STRENGTHS)}")
    return STRENGTHS[strength]


def _resize(image_size: int) -> A.BasicTransform:
    # INTER_LINEAR when enlarging, INTER_AREA when shrinking the image; masks stay nearest
    return A.Resize(image_size, image_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                    area_for_downscale="image")


def _geometry(s: dict[str, Any]) -> list[A.BasicTransform]:
    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomRotate90(p=1.0),
        A.Affine(
            scale=s["scale"],
            translate_percent=(-s["shift"], s["shift"]),
            rotate=(-s["rotate"], s["rotate"]),
            interpolation=cv2.INTER_LINEAR,
            mask_interpolation=cv2.INTER_NEAREST,
            border_mode=cv2.BORDER_REFLECT_101,
            p=s["affine_p"],
        ),
    ]


def _colour(s: dict[str, Any]) -> list[A.BasicTransform]:
    h, sat, v = s["hsv"]
    return [
        A.RandomBrightnessContrast(brightness_limit=s["bc"], contrast_limit=s["bc"], p=s["color_p"]),
        A.HueSaturationValue(hue_shift_limit=h, sat_shift_limit=sat, val_shift_limit=v, p=s["color_p"]),
    ]


def train_transform(image_size: int, strength: str = "default", seed: int | None = None) -> A.Compose:
    """Classification augmentation ending in ``image_size`` x ``image_size`` images.

    Args:
        image_size: side of the square output, pixels.
        strength: ``"light"``, ``"default"`` or ``"strong"`` (see :data:`STRENGTHS`).
        seed: seeds the pipeline's own generator (``None``: a fresh random seed).

    Examples:
        >>> img = np.full((50, 40, 3), 200, np.uint8)
        >>> train_transform(32, seed=0)(image=img)["image"].shape
        (32, 32, 3)
    """
    s = _strength(strength)
    return A.Compose([_resize(_check_size(image_size)), *_geometry(s), *_colour(s)], seed=seed)


def seg_transform(image_size: int, strength: str = "default", seed: int | None = None) -> A.Compose:
    """Joint image + mask augmentation ending in ``image_size`` x ``image_size``.

    Call it as ``t(image=img, mask=m)`` or ``t(image=img, masks=[m1, m2])``; every mask gets
    the image's geometry with nearest-neighbour sampling (values are never mixed), pixels
    shifted in from outside are reflected, and colour jitter touches the image only.

    Examples:
        >>> img, m = np.full((40, 40, 3), 200, np.uint8), np.zeros((40, 40), np.uint8)
        >>> out = seg_transform(32, seed=0)(image=img, mask=m)
        >>> out["image"].shape, out["mask"].shape
        ((32, 32, 3), (32, 32))
    """
    s = _strength(strength)
    return A.Compose([_resize(_check_size(image_size)), *_geometry(s), *_colour(s)], seed=seed)


def eval_transform(image_size: int) -> A.Compose:
    """Only the resize to ``image_size`` x ``image_size`` (deterministic; masks nearest).

    Examples:
        >>> eval_transform(16)(image=np.zeros((40, 30, 3), np.uint8))["image"].shape
        (16, 16, 3)
    """
    return A.Compose([_resize(_check_size(image_size))])


def augment_images(images: np.ndarray | list[np.ndarray], n: int, seed: int, image_size: int,
                   strength: str = "default") -> np.ndarray:
    """``n`` augmented copies of ``images``, taken in turn (image ``i % len(images)`` for copy ``i``).

    Args:
        images: uint8 RGB images, ``(N, H, W, 3)`` or a list (sizes may differ).
        n: how many copies to make (0 gives an empty array).
        seed: the same seed gives the same copies.
        image_size: side of the square copies.
        strength: see :func:`train_transform`.

    Returns:
        ``uint8`` array ``(n, image_size, image_size, 3)``.

    Examples:
        >>> imgs = np.zeros((2, 20, 20, 3), np.uint8)
        >>> augment_images(imgs, 5, seed=0, image_size=16).shape
        (5, 16, 16, 3)
    """
    from alldata.models._torch import check_images

    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ModelError(f"n={n!r} must be a non-negative integer (the number of copies)")
    size = _check_size(image_size)
    items = check_images(images, "augment_images: images", min_size=1)
    transform = train_transform(size, strength, seed=int(seed))
    out = np.empty((int(n), size, size, 3), np.uint8)
    for i in range(int(n)):
        out[i] = transform(image=items[i % len(items)])["image"]
    return out
