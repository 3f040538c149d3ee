"""Pure image operations of the overlap compositor, on numpy arrays.

Masks are ``(h, w)`` bool, images ``(h, w, 3)`` RGB (uint8 when read, float32 in [0, 255]
while composing). Nothing here reads a dataset; :func:`read_rgb` reads one image file.
The stain matrix is scikit-image's (Ruifrok & Johnston); see :func:`hed_jitter` for why
the jitter is not ``rgb2hed`` / ``hed2rgb``.
"""

from __future__ import annotations

import numpy as np
from alldata.generators.base import GeneratorError
from PIL import Image
from scipy import ndimage
from skimage.color import rgb_from_hed

__all__ = [
    "feather_alpha",
    "hed_jitter",
    "largest_component",
    "luminance",
    "nearest_fill",
    "plasma_colour",
    "read_rgb",
    "solidity",
    "touches_border",
]

_HED_FROM_RGB = np.linalg.inv(rgb_from_hed)
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def read_rgb(path: str) -> np.ndarray:
    """The image at ``path`` as ``(h, w, 3)`` uint8 RGB.

    Raises:
        GeneratorError: the file cannot be read or decoded (the message names it).
    """
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise GeneratorError(f"{path}: cannot read image ({e})") from None


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of ``mask`` (``mask`` itself when it has at most one)."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def luminance(img: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of RGB pixels ``(..., 3)``, float32."""
    return img.astype(np.float32) @ _LUMA


def touches_border(mask: np.ndarray) -> bool:
    """Whether a non-empty ``mask`` reaches the first or last row or column (a cut-off cell)."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return bool(ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1)


def solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area (1 for a convex shape; 0 for fewer than 3 pixels).

    The hull is that of the pixel squares' corners, so a convex pixel region scores ~1
    (``regionprops(...).solidity`` counts hull pixels instead and scores small cells lower).
    """
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return 0.0
    pts = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
    try:
        return float(mask.sum()) / ConvexHull(pts).volume
    except QhullError:
        return 0.0


def nearest_fill(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every pixel outside ``mask`` takes the colour of the nearest pixel inside it."""
    if mask.all() or not mask.any():
        return img
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return img[iy, ix]


def plasma_colour(img: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """Median colour of the brightest quarter of ``img[where]`` (the plasma between cells).

    None when fewer than 16 pixels are given or the colour is dark (a black surround).
    """
    px = img[where].astype(np.float32)
    if len(px) < 16:
        return None
    lum = luminance(px)
    bright = px[lum >= np.percentile(lum, 75)]
    out = np.median(bright, axis=0)
    return out if float(out.min()) > 40 else None


def feather_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Opacity ramping from 0 to 1 across ``feather`` pixels centred on the mask edge."""
    if feather <= 0:
        return mask.astype(np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    signed = np.where(mask, inside - 0.5, 0.5 - outside)
    return np.clip(0.5 + signed / feather, 0.0, 1.0).astype(np.float32)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """HED stain jitter (after Tellez et al.): per-stain ``c * a + b`` in optical density.

    ``a ~ U(1 - strength, 1 + strength)``, ``b ~ U(-strength, strength)`` for each stain of
    Ruifrok & Johnston's deconvolution (``skimage.color.rgb_from_hed``). ``img`` is float
    RGB in [0, 255]; the result too. ``strength = 0`` returns ``img`` and draws nothing.
    Unlike ``skimage.color.rgb2hed`` the concentrations are not clipped at 0: plasma and
    pale cytoplasm have negative ones, and clipping them would recolour them.

    Examples:
        >>> img = np.full((2, 2, 3), 200.0, np.float32)
        >>> hed_jitter(img, np.random.default_rng(0), 0.0) is img
        True
    """
    if strength <= 0:
        return img
    a = rng.uniform(1 - strength, 1 + strength, 3)
    b = rng.uniform(-strength, strength, 3)
    od = -np.log(np.clip(img / 255.0, 1 / 255.0, 1.0))
    conc = od.reshape(-1, 3) @ _HED_FROM_RGB
    od2 = (conc * a + b) @ rgb_from_hed
    return np.clip(255.0 * np.exp(-od2), 0, 255).reshape(img.shape).astype(np.float32)
