"""Synthetic stained-cell images with known masks, for the model tests."""

from __future__ import annotations

import numpy as np

#: Giemsa-like colours: dark violet nucleus, pale blue-violet cytoplasm, off-white plasma,
#: and a pink red cell (no nucleus) as a distractor.
NUC, CYTO, BG, RBC = (90, 40, 130), (170, 150, 215), (235, 228, 230), (225, 165, 170)


def cell_image(
    size: int | tuple[int, int] = 128,
    cells: tuple[tuple[int, int], ...] = ((64, 64),),
    r_cell: float = 38,
    r_nuc: float = 28,
    rbcs: tuple[tuple[int, int, int], ...] = (),
    noise: float = 4.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 image of round cells (centres ``cells``, rows/cols) and its 0/1/2 mask.

    ``rbcs`` are ``(row, col, radius)`` pink disks without nucleus (background in the mask).
    """
    h, w = (size, size) if isinstance(size, int) else size
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3))
    img[:] = BG
    mask = np.zeros((h, w), np.uint8)
    for cy, cx, r in rbcs:
        img[np.hypot(yy - cy, xx - cx) < r] = RBC
    for cy, cx in cells:
        inside = np.hypot(yy - cy, xx - cx) < r_cell
        img[inside] = CYTO
        mask[inside] = np.maximum(mask[inside], 1)
    for cy, cx in cells:
        inside = np.hypot(yy - cy, xx - cx) < r_nuc
        img[inside] = NUC
        mask[inside] = 2
    img += np.random.default_rng(seed).normal(0.0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), mask


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)
