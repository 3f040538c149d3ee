"""Training data for generators: cell images from a FiftyOne view, square and resized,
with their labels and morphology attributes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["LABEL_FIELDS", "CellSet", "load_cells", "morphology", "square_resize"]

#: Label fields a generator can be conditioned on.
LABEL_FIELDS = (F.CELL_TYPE, F.DIAGNOSIS, F.SUBTYPE)


def morphology(mask: np.ndarray | None) -> tuple[float, float]:
    """(cell area as a fraction of the image, nucleus / (nucleus + cytoplasm)) from a 0/1/2 mask.

    NaN for both when there is no mask or the mask is empty.
    """
    if mask is None:
        return float("nan"), float("nan")
    nucleus = float((mask == 2).sum())
    cell = float((mask > 0).sum())
    if cell == 0:
        return float("nan"), float("nan")
    return cell / mask.size, nucleus / cell


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Centre-crop to a square and resize to ``size`` (bicubic); uint8 (size, size, 3)."""
    img = img.convert("RGB")
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    img = img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


@dataclass
class CellSet:
    """Images ``(N, H, W, 3)`` uint8 with per-sample labels and morphology (NaN = unknown)."""

    images: np.ndarray
    labels: dict[str, list[str | None]]
    area: np.ndarray
    nc_ratio: np.ndarray
    keys: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def vocabulary(self) -> dict[str, list[str]]:
        """Sorted known values of each label field (fields with no value at all left out)."""
        return {k: sorted({v for v in vals if v}) for k, vals in self.labels.items() if any(vals)}


def load_cells(
    view: fo.Dataset | fo.DatasetView,
    image_size: int,
    *,
    label_fields: Sequence[str] = LABEL_FIELDS,
    max_samples: int | None = None,
    progress: bool = True,
) -> CellSet:
    """Read the cell images of ``view`` (``image_kind == "cell"``), squared and resized.

    Raises:
        AlldataError: the view holds no cell images.
    """
    from tqdm import tqdm

    view = view.match({F.IMAGE_KIND: "cell"})
    if max_samples:
        view = view.limit(max_samples)
    paths, keys = view.values(["filepath", F.KEY])
    if not paths:
        raise AlldataError("the view holds no cell images (image_kind == 'cell'); ingest a cell source first")
    labels = {f: view.values(f"{f}.label") for f in label_fields}
    has_seg = view.has_field(F.SEGMENTATION)
    images, area, ncr = [], [], []
    segs = view.values(f"{F.SEGMENTATION}.mask") if has_seg else [None] * len(paths)
    for p, seg in tqdm(zip(paths, segs), total=len(paths), desc="load cells", disable=not progress):
        with Image.open(p) as img:
            images.append(square_resize(img, image_size))
        a, r = morphology(seg)
        area.append(a)
        ncr.append(r)
    return CellSet(np.stack(images), labels, np.asarray(area, np.float32), np.asarray(ncr, np.float32), list(keys))
