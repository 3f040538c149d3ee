"""Hand-crafted features of single-cell images: colour, shape and GLCM texture (37 columns).

One row per image, in the order of :func:`feature_names`:

* colour (12): ``color_{r,g,b,h,s,v}_{mean,std}`` over the pixels of the cell (mask > 0);
* shape (13): ``{cell,nucleus}_{area,perimeter,circularity,eccentricity,solidity}`` (pixels),
  ``nc_ratio``, ``cell_found``, ``nucleus_found``;
* texture (12): ``glcm_{contrast,homogeneity,energy,correlation}_d{1,2,4}``, averaged over
  four angles, pixel pairs inside the cell only.

A missing mask is made by ``otsu_hsv`` (``keep="center"``) or the ``segmenter`` given.
Failures give NaN, never an error (no cell: colour and texture over the whole image, shape
NaN; no nucleus: nucleus shape and ``nc_ratio`` NaN); :mod:`alldata.models.classify_classic`
fills NaN with training medians. Every definition: docs/models.md#hand-crafted-features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skimage import color
from skimage.feature import graycomatrix, graycoprops
from skimage.measure import regionprops

from alldata.models.base import ModelError

__all__ = [
    "GLCM_ANGLES",
    "GLCM_DISTANCES",
    "GLCM_LEVELS",
    "GLCM_PROPS",
    "HandcraftedFeatures",
    "extract_features",
    "feature_names",
]

#: GLCM settings (distances in pixels, angles in radians, grey levels inside the cell).
GLCM_DISTANCES = (1, 2, 4)
GLCM_ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)
GLCM_PROPS = ("contrast", "homogeneity", "energy", "correlation")
GLCM_LEVELS = 31

_CHANNELS = ("r", "g", "b", "h", "s", "v")
_SHAPE = ("area", "perimeter", "circularity", "eccentricity", "solidity")


def feature_names() -> list[str]:
    """The column names of :func:`extract_features`, in order.

    Examples:
        >>> names = feature_names()
        >>> len(names), names[0], names[-1]
        (37, 'color_r_mean', 'glcm_correlation_d4')
    """
    names = [f"color_{c}_{stat}" for c in _CHANNELS for stat in ("mean", "std")]
    names += [f"{region}_{p}" for region in ("cell", "nucleus") for p in _SHAPE]
    names += ["nc_ratio", "cell_found", "nucleus_found"]
    names += [f"glcm_{p}_d{d}" for p in GLCM_PROPS for d in GLCM_DISTANCES]
    return names


def _colour(img: np.ndarray, region: np.ndarray) -> list[float]:
    pixels = img[region]
    rgb = pixels.astype(np.float64) / 255.0
    hsv = color.rgb2hsv(pixels[:, None, :])[:, 0, :]  # only the region's pixels
    px = np.concatenate([rgb, hsv], axis=1)
    return [v for ch in range(6) for v in (float(px[:, ch].mean()), float(px[:, ch].std()))]


def _shape(region: np.ndarray) -> list[float]:
    if not region.any():
        return [np.nan] * len(_SHAPE)
    props = regionprops(region.astype(np.uint8))[0]
    area, perimeter = float(props.area), float(props.perimeter_crofton)
    circularity = 4 * np.pi * area / perimeter**2 if perimeter > 0 else np.nan
    return [area, perimeter, circularity, float(props.eccentricity), float(props.solidity)]


def _texture(img: np.ndarray, region: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(region)
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    grey = color.rgb2gray(img[box])
    levels = GLCM_LEVELS + 1  # level 0 = outside the cell
    q = (1 + np.round(grey * (GLCM_LEVELS - 1))).astype(np.uint8)
    q[~region[box]] = 0
    glcm = graycomatrix(q, GLCM_DISTANCES, GLCM_ANGLES, levels=levels, symmetric=True, normed=False)
    glcm = glcm[1:, 1:]
    has_pairs = glcm.sum(axis=(0, 1, 3)) > 0  # per distance
    out = []
    for prop in GLCM_PROPS:
        values = graycoprops(glcm, prop).mean(axis=1)
        out += [float(v) if ok else np.nan for v, ok in zip(values, has_pairs)]
    return out


def _features_one(img: np.ndarray, mask: np.ndarray) -> list[float]:
    cell = mask > 0
    nucleus = mask == 2
    region = cell if cell.any() else np.ones(mask.shape, bool)
    cell_shape, nuc_shape = _shape(cell), _shape(nucleus)
    nc = nuc_shape[0] / cell_shape[0] if cell.any() and nucleus.any() else np.nan
    flags = [float(cell.any()), float(nucleus.any())]
    return _colour(img, region) + cell_shape + nuc_shape + [nc] + flags + _texture(img, region)


def _check_pair(i: int, img: np.ndarray, mask: np.ndarray | None) -> None:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ModelError(f"image {i}: expected an RGB uint8 array (H, W, 3), got {img.dtype} {img.shape}")
    if mask is None:
        return
    if mask.shape != img.shape[:2]:
        raise ModelError(f"image {i}: mask shape {mask.shape} != image shape {img.shape[:2]}")
    if mask.size and (mask.min() < 0 or mask.max() > 2):
        raise ModelError(f"image {i}: mask values {sorted(np.unique(mask).tolist())[:5]}... are not 0/1/2")


def extract_features(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    segmenter=None,
) -> tuple[np.ndarray, list[str]]:
    """Colour, shape and texture features of single-cell images.

    Args:
        images: RGB ``uint8`` arrays ``(H, W, 3)``, one cell each (sizes may differ).
        masks: 0/1/2 masks (background / cytoplasm / nucleus) matching the images, or
            ``None``; a ``None`` (the whole argument or one entry) is made by ``segmenter``.
        segmenter: an object with ``segment(image)``; default
            ``OtsuHSV(keep="center")``.

    Returns:
        ``(features, names)``: a float64 array ``(len(images), 37)`` (NaN where a
        feature is undefined, see the module docstring) and :func:`feature_names`.

    Raises:
        ModelError: a non-RGB-uint8 image, a mask of another size or with other values,
            or ``masks`` of another length than ``images``.

    Examples:
        >>> import numpy as np
        >>> img = np.full((64, 64, 3), 235, np.uint8)
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img[np.hypot(yy - 32, xx - 32) < 20] = (170, 150, 215)
        >>> img[np.hypot(yy - 32, xx - 32) < 14] = (90, 40, 130)
        >>> X, names = extract_features([img])
        >>> X.shape, bool(np.isfinite(X).all())
        ((1, 37), True)
    """
    if masks is not None and len(masks) != len(images):
        raise ModelError(f"got {len(images)} images but {len(masks)} masks; pass one mask (or None) per image")
    rows = []
    for i, image in enumerate(images):
        img = np.asarray(image)
        mask = None if masks is None or masks[i] is None else np.asarray(masks[i])
        _check_pair(i, img, mask)
        if mask is None:
            if segmenter is None:
                from alldata.models.segment_classic import OtsuHSV

                segmenter = OtsuHSV(keep="center")
            mask = segmenter.segment(img)
        rows.append(_features_one(img, mask))
    names = feature_names()
    return np.asarray(rows, np.float64).reshape(len(rows), len(names)), names


class HandcraftedFeatures:
    """:func:`extract_features` as a :class:`alldata.features.FeatureExtractor` (``name = "handcrafted"``).

    Calling it on uint8 ``(N, H, W, 3)`` images returns the float64 ``(N, 37)`` features
    (NaN where a segmentation failed; masks are made by ``segmenter``). Nothing to fit.

    Examples:
        >>> HandcraftedFeatures()(np.full((2, 32, 32, 3), 200, np.uint8)).shape
        (2, 37)
    """

    name = "handcrafted"

    def __init__(self, segmenter=None) -> None:
        self.segmenter = segmenter

    def __call__(self, images: np.ndarray) -> np.ndarray:
        from alldata.features import check_images

        return extract_features(list(check_images(images, ModelError)), segmenter=self.segmenter)[0]
