"""Stain and scale harmonisation: Macenko and Reinhard normalisation, HED jitter, a common red-cell size.

One config, :class:`StainTransform`, names what to do to every image of an arm; :func:`build_stain_transform`
turns it into a callable ``uint8 RGB -> uint8 RGB`` (fitted on target images where the kind needs it):

* ``"macenko"``: Macenko et al. (ISBI 2009) through torchstain's numpy backend: the stain matrix
  (two optical-density vectors, the nuclear stain first) and the 99th-percentile concentrations are
  estimated on the targets; each image is unmixed with its own matrix and remixed with the targets'.
  ``transmitted`` (Io) should be the images' background brightness: pixels darker than it by
  ``beta`` in optical density in every channel are the "stained" ones the matrix is estimated from.
* ``"reinhard"``: Reinhard et al. (2001) through torchstain: each LAB channel standardised and given
  the targets' mean and standard deviation.
* ``"hed_jitter"``: a seeded augmentation (Tellez et al.): per image, each stain of the Ruifrok-Johnston
  HED deconvolution scaled by ``U(1 - strength, 1 + strength)`` and shifted by ``U(-strength,
  strength)`` in optical density (the overlap compositor's :func:`alldata.generators.image_ops.hed_jitter`).
* ``"none"``: the image unchanged.

A set of targets is pooled pixel by pixel (a seeded sample of at most ``max_pixels``). Smear stains
(May-Grunwald-Giemsa, Wright) are not H&E: Macenko's two vectors are the two dominant stain directions
in optical density (nuclei, then cytoplasm and red cells), which is what harmonisation needs.

:func:`resample_to_rbc` brings an image to a common pixel scale (a red cell :data:`RBC_PX` pixels
across), from the per-source red-cell diameters of :data:`alldata.generators.overlap.RBC_PX`.

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    >>> jitter = build_stain_transform(StainTransform(kind="hed_jitter", strength=0.05, seed=1))
    >>> jitter(img).shape, jitter(img).dtype
    ((32, 32, 3), dtype('uint8'))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alldata.models.base import ModelError

__all__ = [
    "KINDS",
    "RBC_PX",
    "HedJitter",
    "MacenkoNormaliser",
    "ReinhardNormaliser",
    "StainError",
    "StainTransform",
    "build_stain_transform",
    "lab_stats",
    "resample_to_rbc",
    "stain_matrix",
    "stained_fraction",
]

#: The transform kinds :class:`StainTransform` accepts.
KINDS = ("macenko", "reinhard", "hed_jitter", "none")
#: The common scale of :func:`resample_to_rbc`: a red cell's diameter in pixels (as the segmentation benchmark's).
RBC_PX = 16.0

Image = np.ndarray  # (h, w, 3) uint8 RGB


class StainError(ModelError):
    """An image stain normalisation cannot use (blank, flat, wrong shape) or a bad stain setting."""


class StainTransform(BaseModel):
    """What to do to an arm's images; validated when built, frozen.

    Examples:
        >>> StainTransform(kind="macenko").beta
        0.15
        >>> StainTransform(kind="hed_jitter", strength=0.1, seed=3).seed
        3
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["macenko", "reinhard", "hed_jitter", "none"]
    #: hed_jitter: per-stain factor 1 +- strength and shift +- strength (optical density)
    strength: float = Field(0.05, ge=0.0, le=1.0)
    #: hed_jitter: the seed of the draws (a fresh transform repeats them)
    seed: int = 0
    #: macenko: transmitted light intensity Io (the brightest background)
    transmitted: float = Field(240.0, gt=0.0, le=255.0)
    #: macenko: percentile of the stain angles taken as the two extreme directions
    alpha: float = Field(1.0, gt=0.0, lt=50.0)
    #: macenko: optical density below which a pixel (in any channel) counts as background
    beta: float = Field(0.15, gt=0.0)
    #: macenko: stained pixels an image needs for the stain matrix to be estimated
    min_stained: int = Field(100, ge=3)
    #: fitting on a set: at most this many target pixels (a seeded sample) are pooled
    max_pixels: int = Field(2_000_000, ge=1_000)


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] != 3 or a.dtype != np.uint8:
        raise StainError(f"{name}: expected an (h, w, 3) uint8 RGB image, got {a.dtype} {a.shape}; "
                         "convert it first (e.g. np.asarray(PIL.Image.open(path).convert('RGB')))")
    return a


def _names(images: Sequence[np.ndarray], names: Sequence[str] | None) -> list[str]:
    if names is not None and len(names) != len(images):
        raise StainError(f"{len(images)} images but {len(names)} names")
    return list(names) if names is not None else [f"image {i}" for i in range(len(images))]


def _pool(images: Sequence[np.ndarray], names: list[str], max_pixels: int) -> np.ndarray:
    """The images' pixels as one ``(n, 1, 3)`` uint8 image; a seeded sample when more than ``max_pixels``."""
    if not len(images):
        raise StainError("no target images to fit on; pass one image or a list of them")
    pixels = np.concatenate([_check_image(im, n).reshape(-1, 3) for im, n in zip(images, names)])
    if len(pixels) > max_pixels:
        pixels = pixels[np.sort(np.random.default_rng(0).choice(len(pixels), max_pixels, replace=False))]
    return pixels[:, None, :]


def stained_fraction(image: Image, *, transmitted: float = 240.0, beta: float = 0.15) -> tuple[int, int]:
    """(stained pixels, all pixels): pixels whose optical density is >= ``beta`` in every channel,
    the pixels Macenko estimates the stains from."""
    od = -np.log((np.asarray(image, np.float64).reshape(-1, 3) + 1) / transmitted)
    return int(np.all(od >= beta, axis=1).sum()), od.shape[0]


def _check_stained(image: Image, name: str, cfg: StainTransform) -> None:
    n, total = stained_fraction(image, transmitted=cfg.transmitted, beta=cfg.beta)
    if n < cfg.min_stained:
        raise StainError(
            f"{name}: only {n} of {total} pixels are stained (optical density >= {cfg.beta} in every channel; "
            f"Macenko needs >= {cfg.min_stained}): the image looks blank or background only. Use a target "
            "with stained cells in it, leave such images out, or use kind='reinhard'"
        )


def stain_matrix(image: Image, *, transmitted: float = 240.0, alpha: float = 1.0, beta: float = 0.15,
                 name: str = "image") -> np.ndarray:
    """Macenko's ``(3, 2)`` stain matrix of ``image`` (unit optical-density vectors as columns, the
    nuclear stain first), estimated as :class:`MacenkoNormaliser` ``.fit`` does."""
    cfg = StainTransform(kind="macenko", transmitted=transmitted, alpha=alpha, beta=beta)
    return MacenkoNormaliser(cfg).fit([image], [name]).stain_matrix_


def lab_stats(image: Image) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each LAB channel (torchstain's conversion, L in [0, 100]),
    the statistics Reinhard normalisation matches."""
    from torchstain.numpy.utils.rgb2lab import rgb2lab
    from torchstain.numpy.utils.split import lab_split

    lab = lab_split(rgb2lab(np.asarray(image).astype(np.float32) / 255))
    return np.array([c.mean() for c in lab]), np.array([c.std() for c in lab])


def _torchstain_macenko():
    """torchstain's numpy Macenko normaliser with the two stain vectors ordered by blue optical density.

    torchstain puts first the vector with the larger red optical density ("H" in H&E). On smears
    that rule flips between images of one slide (ALL-IDB2 Im001_1 against Im002_1), and a flipped
    image is remixed with its stains swapped (yellow nuclei). Here the vector that absorbs less
    blue (the nuclear, purple-blue stain) comes first, in the targets and in every image.
    """
    from torchstain.numpy.normalizers import NumpyMacenkoNormalizer

    class _Macenko(NumpyMacenkoNormalizer):
        def _NumpyMacenkoNormalizer__find_HE(self, ODhat, eigvecs, alpha):
            he = super()._NumpyMacenkoNormalizer__find_HE(ODhat, eigvecs, alpha)
            return he[:, ::-1] if he[2, 0] > he[2, 1] else he

    return _Macenko()


class MacenkoNormaliser:
    """Macenko normalisation (torchstain, numpy backend) fitted on one target image or a pooled set.

    The stain vectors are ordered nuclear stain first by blue optical density (see
    :func:`_torchstain_macenko`); otherwise this is torchstain's ``MacenkoNormalizer(backend="numpy")``.
    """

    def __init__(self, config: StainTransform | None = None) -> None:
        self.config = config or StainTransform(kind="macenko")
        self._norm = None

    def fit(self, targets: Image | Sequence[Image], names: Sequence[str] | None = None) -> MacenkoNormaliser:
        """Estimate the target stain matrix and maximum concentrations; returns ``self``."""
        images = [targets] if isinstance(targets, np.ndarray) else list(targets)
        names = _names(images, names)
        for im, n in zip(images, names):
            _check_stained(_check_image(im, n), n, self.config)
        cfg = self.config
        norm = _torchstain_macenko()
        norm.fit(_pool(images, names, cfg.max_pixels), Io=cfg.transmitted, alpha=cfg.alpha, beta=cfg.beta)
        if not np.all(np.isfinite(norm.HERef)) or not np.all(np.isfinite(norm.maxCRef)):
            raise StainError(f"{', '.join(names[:3])}: the stain matrix could not be estimated (not finite); "
                             "use targets with more stained cells")
        self._norm = norm
        return self

    @property
    def stain_matrix_(self) -> np.ndarray:
        """The fitted ``(3, 2)`` target stain matrix."""
        return np.asarray(self._fitted().HERef, np.float64)

    @property
    def max_concentrations_(self) -> np.ndarray:
        """The fitted targets' 99th-percentile stain concentrations."""
        return np.asarray(self._fitted().maxCRef, np.float64)

    def _fitted(self):
        if self._norm is None:
            raise StainError("the Macenko normaliser is not fitted; call fit(target_images) first")
        return self._norm

    def __call__(self, image: Image, name: str = "image") -> Image:
        """``image`` with the targets' stains (uint8 RGB, same shape)."""
        norm = self._fitted()
        image = _check_image(image, name)
        _check_stained(image, name, self.config)
        cfg = self.config
        with np.errstate(divide="raise", invalid="raise"):
            try:
                out, _, _ = norm.normalize(image, Io=cfg.transmitted, alpha=cfg.alpha, beta=cfg.beta, stains=False)
            except (FloatingPointError, np.linalg.LinAlgError) as e:
                raise StainError(f"{name}: Macenko normalisation failed ({e}); the image has too few stained "
                                 "pixels or a single stain; leave it out or use kind='reinhard'") from None
        return out


class ReinhardNormaliser:
    """Reinhard normalisation (torchstain, numpy backend): LAB means and standard deviations of the targets."""

    def __init__(self, config: StainTransform | None = None) -> None:
        self.config = config or StainTransform(kind="reinhard")
        self._norm = None

    def fit(self, targets: Image | Sequence[Image], names: Sequence[str] | None = None) -> ReinhardNormaliser:
        """Record the pooled targets' LAB statistics; returns ``self``."""
        import torchstain

        images = [targets] if isinstance(targets, np.ndarray) else list(targets)
        names = _names(images, names)
        pooled = _pool(images, names, self.config.max_pixels)
        _, std = lab_stats(pooled)
        if np.any(std < 1e-3):
            raise StainError(f"{', '.join(names[:3])}: the targets are one flat colour (LAB std {std.round(4)}); "
                             "Reinhard needs targets with cells and background")
        norm = torchstain.normalizers.ReinhardNormalizer(backend="numpy")
        norm.fit(pooled)
        self._norm = norm
        return self

    @property
    def target_stats_(self) -> tuple[np.ndarray, np.ndarray]:
        """The fitted targets' LAB (means, stds)."""
        if self._norm is None:
            raise StainError("the Reinhard normaliser is not fitted; call fit(target_images) first")
        return np.asarray(self._norm.target_means), np.asarray(self._norm.target_stds)

    def __call__(self, image: Image, name: str = "image") -> Image:
        """``image`` with the targets' LAB statistics (uint8 RGB, same shape)."""
        self.target_stats_  # noqa: B018 - raises when not fitted
        image = _check_image(image, name)
        _, std = lab_stats(image)
        if np.any(std < 1e-3):
            raise StainError(f"{name}: the image is one flat colour (LAB std {std.round(4)}); Reinhard cannot "
                             "rescale it; leave it out")
        return self._norm.normalize(image)


class HedJitter:
    """Seeded HED stain jitter, an augmentation: each call draws new factors from one generator,
    so a fresh ``HedJitter`` with the same seed repeats the sequence. Geometry is untouched."""

    def __init__(self, strength: float = 0.05, seed: int = 0) -> None:
        self.config = StainTransform(kind="hed_jitter", strength=strength, seed=seed)
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: Image, name: str = "image") -> Image:
        from alldata.generators.image_ops import hed_jitter

        image = _check_image(image, name)
        out = hed_jitter(image.astype(np.float32), self.rng, self.config.strength)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def build_stain_transform(
    config: StainTransform,
    targets: Image | Sequence[Image] = (),
    names: Sequence[str] | None = None,
) -> Callable[..., Image]:
    """The callable ``image -> image`` that ``config`` describes, fitted on ``targets`` when it needs them.

    Args:
        config: the kind and its settings.
        targets: the target image(s) for ``macenko`` / ``reinhard`` (e.g. a sample of the training pool);
            ignored otherwise.
        names: the targets' file names, for error messages.

    Raises:
        StainError: a normaliser without targets, or a target without stained pixels (named).
    """
    if config.kind == "none":
        return lambda image, name="image": _check_image(image, name)
    if config.kind == "hed_jitter":
        return HedJitter(config.strength, config.seed)
    no_targets = targets is None or (not isinstance(targets, np.ndarray) and not len(targets))
    if no_targets:
        raise StainError(f"kind={config.kind!r} needs target images to fit on (targets=[...]); "
                         "for a transform without targets use 'hed_jitter' or 'none'")
    cls = MacenkoNormaliser if config.kind == "macenko" else ReinhardNormaliser
    return cls(config).fit(targets, names)


def resample_to_rbc(image: np.ndarray, source_rbc_px: float | str, *, rbc_px: float = RBC_PX,
                    nearest: bool = False) -> np.ndarray:
    """``image`` (or a mask, with ``nearest=True``) resampled so a red cell is ``rbc_px`` pixels across.

    ``source_rbc_px`` is the red-cell diameter in the image's pixels, or a source name looked up in
    :data:`alldata.generators.overlap.RBC_PX` (``all_idb1`` 72, ``all_idb2`` 70, ``bccd`` 100,
    ``taleqani`` 25, ``cnmc`` 150, ``pbc`` 74).

    Examples:
        >>> resample_to_rbc(np.zeros((144, 72, 3), np.uint8), 72.0).shape
        (32, 16, 3)
    """
    from PIL import Image as PILImage

    if isinstance(source_rbc_px, str):
        from alldata.generators.overlap import RBC_PX as SOURCE_RBC

        if source_rbc_px not in SOURCE_RBC:
            raise StainError(f"no red-cell diameter known for source {source_rbc_px!r}; known: {sorted(SOURCE_RBC)}; "
                             "pass the diameter in pixels instead")
        source_rbc_px = SOURCE_RBC[source_rbc_px]
    if not source_rbc_px > 0 or not rbc_px > 0:
        raise StainError(f"red-cell diameters must be > 0 pixels, got {source_rbc_px} and {rbc_px}")
    a = np.asarray(image)
    scale = rbc_px / float(source_rbc_px)
    h, w = a.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if a.dtype in (np.int32, np.int64):
        return np.asarray(PILImage.fromarray(a.astype(np.int32), mode="I").resize(size, PILImage.NEAREST)).astype(a.dtype)
    if a.dtype == bool:
        return np.asarray(PILImage.fromarray(a).resize(size, PILImage.NEAREST))
    return np.asarray(PILImage.fromarray(a).resize(size, PILImage.NEAREST if nearest else PILImage.BILINEAR))
