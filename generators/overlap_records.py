"""Records in and out of the overlap compositor (pure: numpy arrays and dataclasses).

In: :class:`DonorRecord` and :class:`BackgroundRecord`, what a pool holds (whoever loads
the pool fills them, e.g. :mod:`alldata.overlap_pools` from a FiftyOne dataset), and
:class:`Donor`, a cell cut out of its image by :func:`prepare_donor`. Out: :class:`Instance`
(one pasted cell as visible), :class:`PairOverlap` and :class:`Composite`.
Coordinates: boxes are relative ``[x, y, w, h]`` in [0, 1] of the composite; masks are
bool over their box. See docs/overlap.md for the donor rules.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from alldata.generators.image_ops import (
    largest_component,
    luminance,
    nearest_fill,
    plasma_colour,
    read_rgb,
    solidity,
    touches_border,
)
from scipy import ndimage

from alldata.schema import Box, CellType

__all__ = [
    "SYNTHETIC_DIAMETER_RANGE",
    "BackgroundRecord",
    "Composite",
    "Donor",
    "DonorRecord",
    "Instance",
    "PairOverlap",
    "generated_mask_problem",
    "prepare_donor",
    "rejection_counts",
]

_BLACK = 30  # a black-background pixel is one whose brightest channel is at most this
#: A generated cell of unknown pixel scale must span this fraction of its image side.
SYNTHETIC_DIAMETER_RANGE = (0.15, 0.95)


# --- what a pool holds --------------------------------------------------------------------
@dataclass(frozen=True)
class DonorRecord:
    """One donor cell image (pixels are read when it is drawn).

    ``seg``: a 0/1/2 class mask of the image (0 background, 1 cytoplasm, 2 nucleus), or None
    when the cell is the non-black part of ``segmented_filepath`` (or, without one, of the
    image itself: a cell on black).
    """

    key: str
    source: str
    filepath: str
    segmented_filepath: str | None
    seg: np.ndarray | None = field(repr=False)
    cell_type: str | None
    diagnosis: str | None
    subtype: str | None
    synthetic: bool = False  # a generated cell (its ``seg`` comes from a reference segmenter)


@dataclass(frozen=True)
class BackgroundRecord:
    """A smear and the pixel boxes ``(x0, y0, x1, y1)`` (end exclusive) of its annotated WBCs.

    ``annotated`` is false when nothing records where its white cells are (then no crop
    can be called clean).
    """

    key: str
    source: str
    filepath: str
    width: int
    height: int
    avoid: tuple[tuple[int, int, int, int], ...]
    annotated: bool


@dataclass
class Donor:
    """A prepared donor: the cell cut out at its native scale."""

    key: str
    source: str
    image: np.ndarray  # (h, w, 3) float32, pixels outside the mask filled with the nearest cell colour
    mask: np.ndarray  # (h, w) bool
    classes: np.ndarray | None  # (h, w) uint8 0/1/2, or None (cytoplasm over the whole cell)
    label: CellType
    diagnosis: str | None
    subtype: str | None
    diameter: float  # equivalent diameter of the cell in its own pixels
    plasma: np.ndarray | None = None  # RGB of the donor image's background, when it has one
    synthetic: bool = False  # a generated cell


def _black_background_mask(img: np.ndarray, seg_img: np.ndarray, segmented: bool) -> np.ndarray | str:
    """The cell of a black-background copy: cleaned, largest component, compact, stained."""
    fg = seg_img.max(axis=2) > _BLACK
    fg = ndimage.binary_opening(fg, np.ones((3, 3), bool))
    fg = ndimage.binary_closing(fg, np.ones((5, 5), bool), border_value=0)
    fg = ndimage.binary_fill_holes(fg)
    mask = largest_component(fg)
    if not segmented:  # drop the dark anti-aliased rim against black
        mask = ndimage.binary_erosion(mask, np.ones((3, 3), bool))
    if mask.any():
        s = solidity(mask)
        if s < 0.85:
            return f"largest segmented component is not compact (solidity {s:.2f} < 0.85)"
    if mask.any() and segmented:
        lum = luminance(img)
        cell, field_ = float(np.median(lum[mask])), float(np.median(lum[~mask]))
        if cell > field_ - 15:
            return f"segmented component is not a stained white cell (median brightness {cell:.0f} vs field {field_:.0f})"
    return mask


def prepare_donor(rec: DonorRecord, rbc: float | None) -> Donor | str:
    """Cut out the cell of ``rec``, or say why it cannot be used.

    Args:
        rec: the donor.
        rbc: a red cell's diameter in the donor's pixels (None: unknown, a generated cell).

    Raises:
        GeneratorError: an image file cannot be read.
    """
    img = read_rgb(rec.filepath)
    classes = None
    if rec.seg is not None:
        seg = np.asarray(rec.seg)
        if seg.shape != img.shape[:2]:
            return f"mask shape {seg.shape} != image shape {img.shape[:2]}"
        mask = ndimage.binary_fill_holes(largest_component(seg > 0))
        classes = np.where(mask, np.maximum(seg, 1), 0).astype(np.uint8)
    else:
        seg_img = img
        if rec.segmented_filepath:
            seg_img = read_rgb(rec.segmented_filepath)
            if seg_img.shape != img.shape:
                return f"segmented copy {seg_img.shape[:2]} != image {img.shape[:2]}"
        mask = _black_background_mask(img, seg_img, bool(rec.segmented_filepath))
        if isinstance(mask, str):
            return mask
    if not mask.any():
        return "empty cell mask"
    if touches_border(mask):
        return "the cell touches the image border (cut off)"
    diameter = 2 * math.sqrt(mask.sum() / math.pi)
    if rbc is not None and not 0.6 <= diameter / rbc <= 4.0:
        return f"cell diameter {diameter / rbc:.2f} red cells is implausible for a white cell (kept: 0.6 to 4)"
    plasma = plasma_colour(img, ~ndimage.binary_dilation(mask, iterations=3))
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    m = 3
    y0, y1 = max(ys.min() - m, 0), min(ys.max() + 1 + m, h)
    x0, x1 = max(xs.min() - m, 0), min(xs.max() + 1 + m, w)
    mask = mask[y0:y1, x0:x1]
    image = nearest_fill(img[y0:y1, x0:x1].astype(np.float32), mask)
    label = CellType(rec.cell_type) if rec.cell_type in CellType._value2member_map_ else CellType.wbc
    return Donor(
        rec.key, rec.source, image, mask, None if classes is None else classes[y0:y1, x0:x1],
        label, rec.diagnosis, rec.subtype, diameter, plasma, rec.synthetic,
    )


def generated_mask_problem(seg: np.ndarray, rbc: float | None) -> str | None:
    """Why a segmenter's mask of a generated cell cannot be used (``"kind: detail"``), or None."""
    mask = ndimage.binary_fill_holes(largest_component(seg > 0))
    if not mask.any():
        return "empty mask: the segmenter found no cell"
    s = solidity(mask)
    if s < 0.85:
        return f"not compact: solidity {s:.2f} < 0.85"
    if touches_border(mask):
        return "cut off: the cell touches the image border"
    h, w = mask.shape
    diameter = 2 * math.sqrt(mask.sum() / math.pi)
    if rbc is not None and not 0.6 <= diameter / rbc <= 4.0:
        return f"implausible size: {diameter / rbc:.2f} red cells (kept: 0.6 to 4)"
    lo, hi = SYNTHETIC_DIAMETER_RANGE
    if rbc is None and not lo <= diameter / min(h, w) <= hi:
        return f"implausible size: the cell spans {diameter / min(h, w):.2f} of the image side (kept: {lo} to {hi})"
    return None


def rejection_counts(rejected: dict[str, str]) -> dict[str, int]:
    """``{kind: count}`` of rejection reasons (the part before the first ``": "``), most common first."""
    return dict(Counter(why.split(": ", 1)[0] for why in rejected.values()).most_common())


# --- what a composite holds ---------------------------------------------------------------
@dataclass
class Instance:
    """One pasted cell as it is visible in the composite."""

    label: CellType
    bbox: tuple[float, float, float, float]  # relative [x, y, w, h] of the visible part
    mask: np.ndarray  # bool over the box: the visible pixels
    donor_key: str
    area: int  # full cell area in output pixels (before occlusion)
    visible_fraction: float
    diagnosis: str | None = None
    subtype: str | None = None
    classes: bool = False  # whether the donor had nucleus / cytoplasm classes
    synthetic: bool = False  # whether the donor is a generated cell

    def to_box(self, order: int) -> Box:
        attrs: dict[str, Any] = {
            "donor_key": self.donor_key,
            "synthetic": bool(self.synthetic),
            "cell_area_px": int(self.area),
            "visible_fraction": float(self.visible_fraction),
            "paste_order": int(order),
        }
        if self.diagnosis:
            attrs["diagnosis"] = self.diagnosis
        if self.subtype:
            attrs["subtype"] = self.subtype
        return Box(label=self.label, bbox=self.bbox, mask=self.mask, attributes=attrs)


@dataclass
class PairOverlap:
    """Overlap of instances ``i < j`` (paste order): intersection / smaller cell's area."""

    i: int
    j: int
    fraction: float
    target: float | None = None  # set for the pairs placed on purpose (j against anchor i)
    in_range: bool | None = None

    @property
    def controlled(self) -> bool:
        return self.target is not None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"i": self.i, "j": self.j, "fraction": round(self.fraction, 6)}
        if self.target is not None:
            d.update(target=round(self.target, 6), in_range=self.in_range)
        return d


@dataclass
class Composite:
    """One composed image with exact labels."""

    image: np.ndarray  # (S, S, 3) uint8
    instances: list[Instance]
    semantic: np.ndarray  # (S, S) uint8, 0 background, 1 cytoplasm, 2 nucleus
    overlaps: list[PairOverlap]  # every pair that overlaps, plus every controlled pair
    seed: int
    index: int
    recipe: dict[str, Any] = field(default_factory=dict)

    @property
    def controlled_overlaps(self) -> list[PairOverlap]:
        return [p for p in self.overlaps if p.controlled]

    @property
    def background_clean(self) -> bool | None:
        """True: the crop avoids every annotated WBC; None: its smear has no WBC annotation; False: it does not."""
        return self.recipe.get("background", {}).get("clean")

    def boxes(self) -> list[Box]:
        return [inst.to_box(k) for k, inst in enumerate(self.instances)]
