"""Classical cell / nucleus segmenters: Otsu on HSV saturation, k-means colour clustering, and
a distance-transform watershed for touching cells.

Each takes an RGB ``uint8`` ``(H, W, 3)`` image (else :class:`~alldata.errors.ImageError`):
``segment(image)`` -> ``uint8`` 0/1/2 mask (:data:`~alldata.schema.SEG_CLASSES`) and
``instances(image)`` -> ``int32`` labels 1..N (``watershed`` splits touching cells, the
others give one label per connected region). A white cell is a stained region with a
nucleus; ``radius`` / ``min_size`` set the morphology; ``keep="all"`` (smears) or
``keep="center"`` (single-cell crops); an image with nothing to find gives an all-zero
mask, never an error; deterministic (k-means uses its ``seed``).

What the three share in detail: docs/models.md#classical-segmenters; Dice against the
ALL-IDB2 masks: bench/RESULTS.md (floors in ``tests/models/test_real_data_models.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import color, filters, morphology, segmentation
from skimage.feature import peak_local_max

from alldata.errors import ImageError
from alldata.models.base import SEGMENTERS, ModelError

__all__ = ["KMeansColor", "OtsuHSV", "Watershed"]

_KEEP = ("all", "center")


# --- shared pieces ------------------------------------------------------------------------
def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ImageError(
            f"segmenters take an RGB uint8 array of shape (H, W, 3); got {img.dtype} {img.shape}. "
            "Convert first, e.g. np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if min(img.shape[:2]) < 8:
        raise ImageError(f"image of shape {img.shape} is too small to segment (need at least 8x8 pixels)")
    return img


def _saturation(img: np.ndarray) -> np.ndarray:
    """HSV saturation ``(max - min) / max`` of an RGB uint8 image (0 where max is 0), in [0, 1].

    The same values as ``skimage.color.rgb2hsv(img)[..., 1]``, without computing H and V.
    """
    mx = img.max(axis=-1).astype(np.float64)
    mn = img.min(axis=-1).astype(np.float64)
    return np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)


# sRGB uint8 -> linear RGB, and the D65 (2 degree) rows of the RGB -> XYZ matrix skimage uses
_V = np.arange(256) / 255.0
_LINEAR = np.where(_V > 0.04045, ((_V + 0.055) / 1.055) ** 2.4, _V / 12.92)
_Y_ROW = np.array([0.212671, 0.715160, 0.072169])
_Z_ROW = np.array([0.019334, 0.119193, 0.950227])
_Z_WHITE = 1.08883


def _lab_f(t: np.ndarray) -> np.ndarray:
    return np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)


def _bstar(img: np.ndarray) -> np.ndarray:
    """CIELAB b* (D65) of an RGB uint8 image: ``skimage.color.rgb2lab(img)[..., 2]``, cheaper."""
    lin = _LINEAR[img]
    return 200.0 * (_lab_f(lin @ _Y_ROW) - _lab_f((lin @ _Z_ROW) / _Z_WHITE))


def _check_common(radius: int, min_size: int, keep: str) -> None:
    if keep not in _KEEP:
        raise ModelError(f"keep={keep!r} is not one of {_KEEP}; 'all' for smears, 'center' for single-cell crops")
    if int(radius) != radius or radius < 0:
        raise ModelError(f"radius={radius!r} must be a non-negative integer (pixels)")
    if int(min_size) != min_size or min_size < 0:
        raise ModelError(f"min_size={min_size!r} must be a non-negative integer (pixels)")


def _clean(binary: np.ndarray, radius: int, min_size: int) -> np.ndarray:
    """Opening, closing (disk of ``radius``, edge-padded), hole filling, small-object removal."""
    b = binary.astype(bool)
    if radius > 0:
        se = morphology.disk(radius).astype(bool)
        padded = np.pad(b, radius, mode="edge")
        padded = ndi.binary_closing(ndi.binary_opening(padded, se), se)
        b = padded[radius:-radius, radius:-radius]
    b = ndi.binary_fill_holes(b)
    if min_size > 0 and b.any():
        lab, _ = ndi.label(b)
        keep = np.bincount(lab.ravel()) >= min_size
        keep[0] = False
        b = keep[lab]
    return b


def _attached(candidate: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components of ``candidate`` that contain at least one ``seeds`` pixel."""
    lab, n = ndi.label(candidate)
    keep = np.zeros(n + 1, bool)
    keep[np.unique(lab[seeds & candidate])] = True
    keep[0] = False
    return keep[lab]


def _central(binary: np.ndarray) -> np.ndarray:
    """The connected component with the pixel closest to the image centre."""
    lab, n = ndi.label(binary)
    if n <= 1:
        return binary
    h, w = binary.shape
    yy, xx = np.indices(binary.shape)
    dist = np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    nearest = ndi.minimum(dist, lab, index=np.arange(1, n + 1))
    return lab == int(np.argmin(nearest)) + 1


def _to_classes(cell: np.ndarray, nucleus: np.ndarray) -> np.ndarray:
    out = np.zeros(cell.shape, np.uint8)
    out[cell] = 1
    out[cell & nucleus] = 2
    return out


def _components(mask: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(mask > 0)
    return lab.astype(np.int32)


class _Params:
    """``params`` / ``__repr__`` from the constructor arguments a subclass stores, and the
    default ``instances`` (connected regions of ``segment``) that watershed overrides."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    def segment(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def instances(self, image: np.ndarray) -> np.ndarray:
        """One label per connected cell region (touching cells are not split)."""
        return _components(self.segment(image))


# --- otsu_hsv -----------------------------------------------------------------------------
@SEGMENTERS.register("otsu_hsv")
class OtsuHSV(_Params):
    """Otsu thresholds on the HSV saturation (S) channel, plus morphology.

    Stained white cells are the saturated part of a smear: the nucleus most of all, the
    cytoplasm less, the plasma background least. So S (Gaussian-smoothed by ``sigma``)
    gets **two Otsu thresholds at once** (three-class multi-Otsu, ``t_low < t_high``):

    * nucleus = ``S > t_high``, cleaned;
    * cell = nucleus plus cytoplasm candidates ``S > t_low``, cleaned, keeping only the
      regions that contain a nucleus.

    Why not "Otsu for the cell, then a second Otsu inside it"? On real crops the nucleus
    dominates the S histogram, so a single global Otsu already falls between cytoplasm and
    nucleus (on ALL-IDB2 it returns the nucleus: Dice 0.89 with the expert nuclei); the
    three-class split finds both boundaries in one pass and also works when the cytoplasm
    dominates.

    Two guards keep red cells out of the cytoplasm, because on Giemsa / May-Grünwald
    smears a red cell has about the same saturation as pale cytoplasm:

    * ``max_bstar``: a cytoplasm pixel must be bluish, CIELAB ``b* < max_bstar`` (the
      cytoplasm of lymphoid cells is basophilic, blue-violet; red cells are pink,
      ``b* > 0``). ``None`` turns the guard off.
    * ``cytoplasm_ratio``: a cytoplasm pixel must lie within ``cytoplasm_ratio`` x the
      equivalent radius of its nearest nucleus (lymphocytes and lymphoblasts have a thin
      rim of cytoplasm). ``None`` turns it off; turn it off for cells with a wide
      cytoplasm (neutrophils, monocytes) or use ``kmeans_color``.

    Both defaults were chosen on ALL-IDB2 against the Putzu & Loddo masks (``keep="center"``,
    mean cell Dice over all 260 crops): 0.890 with both guards, 0.871 without the rim
    limit, 0.849 without the colour guard, 0.742 with neither.

    Args:
        sigma: Gaussian smoothing of S (and b*) before thresholding, in pixels (0: none).
        radius: disk radius of the opening / closing, in pixels (0: none).
        min_size: smallest kept region, in pixels.
        cytoplasm_ratio: widest cytoplasm rim as a fraction of the nucleus equivalent
            radius, or ``None``.
        max_bstar: upper bound on CIELAB b* for cytoplasm pixels, or ``None``.
        keep: ``"all"`` cells, or only the one nearest the ``"center"``.

    Examples:
        >>> import numpy as np
        >>> img = np.full((64, 64, 3), 235, np.uint8)
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img[np.hypot(yy - 32, xx - 32) < 20] = (170, 150, 215)
        >>> img[np.hypot(yy - 32, xx - 32) < 14] = (90, 40, 130)
        >>> mask = OtsuHSV().segment(img)
        >>> sorted(np.unique(mask).tolist())
        [0, 1, 2]
    """

    def __init__(
        self,
        *,
        sigma: float = 1.0,
        radius: int = 2,
        min_size: int = 64,
        cytoplasm_ratio: float | None = 0.5,
        max_bstar: float | None = 0.0,
        keep: str = "all",
    ) -> None:
        _check_common(radius, min_size, keep)
        if sigma < 0:
            raise ModelError(f"sigma={sigma!r} must be >= 0 (pixels)")
        if cytoplasm_ratio is not None and cytoplasm_ratio <= 0:
            raise ModelError(f"cytoplasm_ratio={cytoplasm_ratio!r} must be > 0, or None for no limit")
        super().__init__(
            sigma=sigma,
            radius=radius,
            min_size=min_size,
            cytoplasm_ratio=cytoplasm_ratio,
            max_bstar=max_bstar,
            keep=keep,
        )
        self.sigma, self.radius, self.min_size = float(sigma), int(radius), int(min_size)
        self.cytoplasm_ratio, self.max_bstar, self.keep = cytoplasm_ratio, max_bstar, keep

    def _smooth(self, channel: np.ndarray) -> np.ndarray:
        return filters.gaussian(channel, self.sigma, preserve_range=True) if self.sigma > 0 else channel

    def thresholds(self, image: np.ndarray) -> tuple[float, float] | None:
        """``(t_low, t_high)`` on smoothed S, or ``None`` when S is flat (nothing to find)."""
        return self._thresholds(self._smooth(_saturation(_check_image(image))))

    @staticmethod
    def _thresholds(s: np.ndarray) -> tuple[float, float] | None:
        if float(s.max() - s.min()) < 1e-3:
            return None
        try:
            lo, hi = filters.threshold_multiotsu(s, classes=3)
        except ValueError:  # fewer than three grey levels: one threshold, no cytoplasm class
            lo = hi = filters.threshold_otsu(s)
        return float(lo), float(hi)

    def _band(self, nucleus: np.ndarray) -> np.ndarray:
        """Pixels within ``cytoplasm_ratio`` x (equivalent radius of the nearest nucleus)."""
        lab, _ = ndi.label(nucleus)
        r_eq = np.sqrt(np.bincount(lab.ravel()) / np.pi)
        dist, (iy, ix) = ndi.distance_transform_edt(~nucleus, return_indices=True)
        return dist <= self.cytoplasm_ratio * r_eq[lab[iy, ix]]

    def segment(self, image: np.ndarray) -> np.ndarray:
        """0/1/2 mask (background, cytoplasm, nucleus) of ``image``."""
        img = _check_image(image)
        s = self._smooth(_saturation(img))
        t = self._thresholds(s)
        empty = np.zeros(img.shape[:2], np.uint8)
        if t is None:
            return empty
        t_low, t_high = t
        nucleus = _clean(s > t_high, self.radius, self.min_size)
        if not nucleus.any():
            return empty
        cand = s > t_low
        if self.max_bstar is not None:
            cand &= self._smooth(_bstar(img)) < self.max_bstar
        if self.cytoplasm_ratio is not None:
            cand &= self._band(nucleus)
        cell = _attached(_clean(cand | nucleus, self.radius, self.min_size), nucleus)
        if self.keep == "center":
            cell = _central(cell)
        return _to_classes(cell, nucleus)


# --- kmeans_color -------------------------------------------------------------------------
@SEGMENTERS.register("kmeans_color")
class KMeansColor(_Params):
    """k-means colour clustering (k = 3) in CIELAB, clusters named by lightness.

    The pixels (a seeded random subset of at most ``max_pixels`` of them, for speed) are
    clustered into three colours with scikit-learn ``KMeans(random_state=seed)``; every
    pixel then takes its nearest centre. By the L* of the centres: the darkest cluster is
    the nucleus, the middle one cytoplasm, the lightest background. Then the shared
    morphology, and only cell regions that contain a nucleus are kept (a pale red cell
    that falls in the middle cluster is dropped unless it touches a nucleus).

    No colour prior beyond "nucleus darkest, background lightest", so it also works on
    cells with a wide cytoplasm, but a red cell touching the white cell joins it.

    Args:
        seed: k-means and pixel-subset seed.
        max_pixels: pixels used to fit the centres.
        radius: disk radius of the opening / closing, in pixels (0: none).
        min_size: smallest kept region, in pixels.
        keep: ``"all"`` cells, or only the one nearest the ``"center"``.

    Examples:
        >>> import numpy as np
        >>> img = np.full((64, 64, 3), 235, np.uint8)
        >>> yy, xx = np.mgrid[:64, :64]
        >>> img[np.hypot(yy - 32, xx - 32) < 20] = (170, 150, 215)
        >>> img[np.hypot(yy - 32, xx - 32) < 14] = (90, 40, 130)
        >>> int((KMeansColor(seed=0).segment(img) == 2).sum()) > 500
        True
    """

    n_clusters = 3

    def __init__(
        self,
        *,
        seed: int = 0,
        max_pixels: int = 20_000,
        radius: int = 2,
        min_size: int = 64,
        keep: str = "all",
    ) -> None:
        _check_common(radius, min_size, keep)
        if max_pixels < 100:
            raise ModelError(f"max_pixels={max_pixels!r} must be at least 100")
        super().__init__(seed=seed, max_pixels=max_pixels, radius=radius, min_size=min_size, keep=keep)
        self.seed, self.max_pixels = int(seed), int(max_pixels)
        self.radius, self.min_size, self.keep = int(radius), int(min_size), keep

    def clusters(self, image: np.ndarray) -> np.ndarray | None:
        """Per-pixel cluster index ordered by lightness (0 darkest), or ``None`` if < 3 colours."""
        from sklearn.cluster import KMeans
        from threadpoolctl import threadpool_limits

        img = _check_image(image)
        h, w = img.shape[:2]
        rng = np.random.default_rng(self.seed)
        flat = img.reshape(-1, 3)
        idx = np.sort(rng.choice(len(flat), size=min(len(flat), self.max_pixels), replace=False))
        if len(np.unique(flat[idx], axis=0)) < self.n_clusters:
            return None
        lab = color.rgb2lab(img).reshape(-1, 3)
        # one thread: on small images, thread start-up costs 10x the work on a busy machine
        with threadpool_limits(1):
            km = KMeans(n_clusters=self.n_clusters, n_init=4, random_state=self.seed).fit(lab[idx])
            assigned = km.predict(lab)
        rank = np.argsort(np.argsort(km.cluster_centers_[:, 0]))  # cluster id -> lightness rank
        return rank[assigned].reshape(h, w)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """0/1/2 mask (background, cytoplasm, nucleus) of ``image``."""
        img = _check_image(image)
        ranks = self.clusters(img)
        if ranks is None:
            return np.zeros(img.shape[:2], np.uint8)
        nucleus = _clean(ranks == 0, self.radius, self.min_size)
        cell = _attached(_clean((ranks < 2) | nucleus, self.radius, self.min_size), nucleus)
        if self.keep == "center":
            cell = _central(cell)
        return _to_classes(cell, nucleus)


# --- watershed ----------------------------------------------------------------------------
@SEGMENTERS.register("watershed")
class Watershed(_Params):
    """Marker-based watershed on the distance transform of the cell foreground.

    The foreground (and the 0/1/2 classes ``segment`` returns) come from
    :class:`OtsuHSV` with the same ``sigma`` / ``radius`` / ``min_size`` /
    ``cytoplasm_ratio`` / ``max_bstar`` and ``keep="all"``. ``instances`` then takes the
    Euclidean distance to the background (smoothed by ``smooth`` pixels), puts one marker
    at each local maximum at least ``min_distance`` pixels from a higher one
    (``skimage.feature.peak_local_max``, per connected region, so every region gets at least
    one marker), and floods ``-distance`` from the markers inside the foreground. Two
    touching round cells give two maxima and are split along the neck between them.

    ``min_distance`` should be about the radius of the smallest cell to split: smaller
    values over-split elongated or irregular cells. Measured on the five ALL-IDB1 smears
    that have Loddo & Putzu WBC instance masks (``min_distance=20``, ``min_size=400``): 51
    of the 55 expert white cells are matched by an instance at IoU > 0.5, but 103
    instances are returned (irregular cells split in several, plus stained regions that
    are not annotated white cells), so expect over-segmentation on smears.

    Args:
        min_distance: minimum distance between markers, in pixels.
        smooth: Gaussian smoothing of the distance map, in pixels (0: none).
        sigma, radius, min_size, cytoplasm_ratio, max_bstar: as in :class:`OtsuHSV`.

    Examples:
        >>> import numpy as np
        >>> img = np.full((80, 120, 3), 235, np.uint8)
        >>> yy, xx = np.mgrid[:80, :120]
        >>> for cx in (38, 82):
        ...     img[np.hypot(yy - 40, xx - cx) < 25] = (90, 40, 130)
        >>> int(Watershed(min_distance=10).instances(img).max())
        2
    """

    def __init__(
        self,
        *,
        min_distance: int = 10,
        smooth: float = 1.0,
        sigma: float = 1.0,
        radius: int = 2,
        min_size: int = 64,
        cytoplasm_ratio: float | None = 0.5,
        max_bstar: float | None = 0.0,
    ) -> None:
        if int(min_distance) != min_distance or min_distance < 1:
            raise ModelError(f"min_distance={min_distance!r} must be a positive integer (pixels)")
        if smooth < 0:
            raise ModelError(f"smooth={smooth!r} must be >= 0 (pixels)")
        self.foreground = OtsuHSV(
            sigma=sigma, radius=radius, min_size=min_size, cytoplasm_ratio=cytoplasm_ratio, max_bstar=max_bstar
        )
        super().__init__(
            min_distance=min_distance, smooth=smooth, **{k: v for k, v in self.foreground.params.items() if k != "keep"}
        )
        self.min_distance, self.smooth = int(min_distance), float(smooth)

    def segment(self, image: np.ndarray) -> np.ndarray:
        """0/1/2 mask (background, cytoplasm, nucleus), as :class:`OtsuHSV` ``keep="all"``."""
        return self.foreground.segment(image)

    def instances(self, image: np.ndarray) -> np.ndarray:
        """``int32`` instance map: touching cells split by the distance-transform watershed."""
        return self.split(self.segment(image) > 0)

    def split(self, foreground: np.ndarray) -> np.ndarray:
        """Watershed instances of a boolean foreground mask (any source of foreground)."""
        fg = np.asarray(foreground, bool)
        out = np.zeros(fg.shape, np.int32)
        if not fg.any():
            return out
        dist = ndi.distance_transform_edt(fg)
        if self.smooth > 0:
            dist = filters.gaussian(dist, self.smooth, preserve_range=True)
        regions, n = ndi.label(fg)
        peaks = peak_local_max(dist, min_distance=self.min_distance, labels=regions, exclude_border=False)
        markers = np.zeros(fg.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # a region with no marker (possible on plateaus) gets one at its deepest point
        missing = sorted(set(range(1, n + 1)) - set(np.unique(regions[markers > 0]).tolist()))
        if missing:
            deepest = ndi.maximum_position(dist, regions, index=missing)
            for k, (y, x) in enumerate(deepest, start=int(markers.max()) + 1):
                markers[y, x] = k
        labels = segmentation.watershed(-dist, markers, mask=fg)
        relabelled, _, _ = segmentation.relabel_sequential(labels)
        return relabelled.astype(np.int32)
