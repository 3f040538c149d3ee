"""Placing cells at a controlled overlap, pasting them, and reading the result back (pure).

Overlap of two cells: the area of their intersection (full masks, before occlusion)
divided by the smaller cell's area. A canvas keeps ``owner``, ``(S, S)`` int64 holding
1 + the paste order of the cell on top (0: background); later cells cover earlier ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from alldata.generators.overlap_records import Donor, Instance, PairOverlap
from skimage.measure import regionprops

__all__ = ["PlacedCell", "covered", "inside", "intersection", "pair_overlaps", "paste", "place", "visible_instances"]


@dataclass
class PlacedCell:
    """A transformed cell: patch (with margin) whose top-left sits at ``(y, x)`` of the canvas."""

    donor: Donor
    image: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32
    mask: np.ndarray  # (h, w) bool
    classes: np.ndarray  # (h, w) uint8
    tight: tuple[int, int, int, int]  # mask rows y0:y1, cols x0:x1 within the patch
    centroid: tuple[float, float]  # (row, col) within the patch
    radius: float  # farthest mask pixel from the centroid
    area: int
    params: dict[str, Any]
    y: int = 0
    x: int = 0


def intersection(a: PlacedCell, b: PlacedCell, by: int, bx: int) -> int:
    """Pixels of ``a`` (at its position) and ``b`` (at ``by, bx``) both inside their masks."""
    y0, x0 = max(a.y, by), max(a.x, bx)
    y1, x1 = min(a.y + a.mask.shape[0], by + b.mask.shape[0]), min(a.x + a.mask.shape[1], bx + b.mask.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0
    ma = a.mask[y0 - a.y : y1 - a.y, x0 - a.x : x1 - a.x]
    mb = b.mask[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return int(np.count_nonzero(ma & mb))


def inside(c: PlacedCell, y: int, x: int, s: int) -> bool:
    """Whether the whole cell ``c`` at ``(y, x)`` lies within the ``s`` x ``s`` canvas."""
    y0, y1, x0, x1 = c.tight
    return y + y0 >= 0 and x + x0 >= 0 and y + y1 <= s and x + x1 <= s

def covered(owner: np.ndarray, c: PlacedCell, y: int, x: int, n: int) -> np.ndarray:
    """How many visible pixels of each of the ``n`` placed cells ``c`` at (y, x) would cover."""
    s = owner.shape[0]
    ya, xa = max(y, 0), max(x, 0)
    yb, xb = min(y + c.mask.shape[0], s), min(x + c.mask.shape[1], s)
    under = owner[ya:yb, xa:xb][c.mask[ya - y : yb - y, xa - x : xb - x]]
    return np.bincount(under, minlength=n + 1)[1 : n + 1]

def place(
    cell: PlacedCell,
    placed: list[PlacedCell],
    visible: list[int],
    owner: np.ndarray,
    rng: np.random.Generator,
    *,
    overlap_range: tuple[float, float],
    max_tries: int,
    min_visible: float,
) -> tuple[int, int, int | None, float | None, float | None, bool] | None:
    """Where ``cell`` goes: ``(y, x, anchor, target, achieved, in_range)``, or None if it cannot.

    The first cell goes anywhere inside. A later one is placed against a random earlier
    one (its anchor) at a random angle and, by bisection on the distance, at a target
    overlap drawn from ``overlap_range``; a placement must keep the whole cell inside,
    every earlier cell ``min_visible`` visible, and no other pair above the range. After
    ``max_tries`` angles the placement missing the range least is kept (``in_range`` False).
    ``visible``: visible pixels of each placed cell; ``owner``: 1 + paste order of the top cell.
    """
    s = owner.shape[0]
    lo, hi = overlap_range
    y0, y1, x0, x1 = cell.tight
    if not placed:
        y = int(rng.integers(-y0, s - y1 + 1))
        x = int(rng.integers(-x0, s - x1 + 1))
        return y, x, None, None, None, True
    anchor = int(rng.integers(len(placed)))
    a = placed[anchor]
    target = float(rng.uniform(lo, hi))
    ca = (a.y + a.centroid[0], a.x + a.centroid[1])
    denom_a = min(a.area, cell.area)

    def pos(d: float, u: tuple[float, float]) -> tuple[int, int]:
        return round(ca[0] + d * u[0] - cell.centroid[0]), round(ca[1] + d * u[1] - cell.centroid[1])

    best: tuple[float, tuple[int, int, float, bool]] | None = None
    for _ in range(max_tries):
        theta = float(rng.uniform(0.0, 2 * math.pi))
        u = (math.sin(theta), math.cos(theta))
        near, far = 0.0, a.radius + cell.radius + 1.0
        for _ in range(18):  # bisection: overlap falls as the centres move apart
            mid = (near + far) / 2
            if intersection(a, cell, *pos(mid, u)) / denom_a > target:
                near = mid
            else:
                far = mid
        for d in (far, near):
            y, x = pos(d, u)
            if not inside(cell, y, x, s):
                continue
            hidden = covered(owner, cell, y, x, len(placed))
            if any(v - c < min_visible * p.area for v, c, p in zip(visible, hidden, placed)):
                continue
            achieved = intersection(a, cell, y, x) / denom_a
            excess = 0.0
            for k, p in enumerate(placed):
                if k != anchor:
                    f = intersection(p, cell, y, x) / min(p.area, cell.area)
                    excess += max(0.0, f - hi)
            miss = max(lo - achieved, achieved - hi, 0.0) + excess
            if miss <= 1e-12:
                return y, x, anchor, target, achieved, True
            if best is None or miss < best[0]:
                best = (miss, (y, x, achieved, False))
    if best is None:
        return None
    y, x, achieved, ok = best[1]
    return y, x, anchor, target, achieved, ok


def paste(canvas: np.ndarray, owner: np.ndarray, semantic: np.ndarray, cell: PlacedCell, order: int) -> None:
    """Paste ``cell`` at its ``(y, x)`` in place: labels by its binary mask, pixels by its feathered alpha."""
    s = owner.shape[0]
    y, x = cell.y, cell.x
    ya, xa = max(y, 0), max(x, 0)
    yb, xb = min(y + cell.mask.shape[0], s), min(x + cell.mask.shape[1], s)
    sl = (slice(ya - y, yb - y), slice(xa - x, xb - x))
    m = cell.mask[sl]
    owner[ya:yb, xa:xb][m] = order + 1
    semantic[ya:yb, xa:xb][m] = cell.classes[sl][m]
    alpha = cell.alpha[sl][..., None]
    canvas[ya:yb, xa:xb] = alpha * cell.image[sl] + (1 - alpha) * canvas[ya:yb, xa:xb]


def visible_instances(owner: np.ndarray, placed: list[PlacedCell]) -> list[Instance]:
    """One :class:`Instance` per placed cell: its part of ``owner`` (1 + paste order of the cell on top)."""
    s = owner.shape[0]
    regions = {r.label: r for r in regionprops(owner)}
    out = []
    for k, c in enumerate(placed):
        vis = regions[k + 1]
        r0, c0, r1, c1 = vis.bbox
        out.append(
            Instance(
                label=c.donor.label,
                bbox=(c0 / s, r0 / s, (c1 - c0) / s, (r1 - r0) / s),
                mask=vis.image,
                donor_key=c.donor.key,
                area=c.area,
                visible_fraction=int(vis.area) / c.area,
                diagnosis=c.donor.diagnosis,
                subtype=c.donor.subtype,
                classes=c.donor.classes is not None,
                synthetic=c.donor.synthetic,
            )
        )
    return out


def pair_overlaps(placed: list[PlacedCell], controlled: dict[tuple[int, int], tuple[float, bool]]) -> list[PairOverlap]:
    """Every pair of placed cells that overlaps, and every pair placed on purpose."""
    out = []
    for j in range(len(placed)):
        for i in range(j):
            a, b = placed[i], placed[j]
            f = intersection(a, b, b.y, b.x) / min(a.area, b.area)
            target, ok = controlled.get((i, j), (None, None))
            if f > 0 or target is not None:
                out.append(PairOverlap(i, j, f, target, ok))
    return out
