"""Find which smear a crop was cut from, so splits keep them together (ALL-IDB2 -> ALL-IDB1).

ALL-IDB2's 260 crops were cut from ALL-IDB1 photographs, but the distribution does not say
from which. Template matching recovers it: each crop is matched against every candidate
smear of the same diagnosis at 1/``scale`` resolution (normalised cross-correlation,
:func:`skimage.feature.match_template`); a peak of at least ``threshold`` is a match. On the
shared data true matches score 0.98-1.00 and the best wrong image at most ~0.86.

A matched crop gets ``parent_key`` (the smear's key) and the smear's ``group_id``; run
``alldata split`` afterwards so the split uses the new groups.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["OWN_GROUP_ID", "PARENT_KEY", "PARENT_SCORE", "CropMatch", "link_crops", "match_crops"]

PARENT_KEY = "parent_key"
OWN_GROUP_ID = "own_group_id"
PARENT_SCORE = "parent_score"  # best cross-correlation found, kept for review


@dataclass(frozen=True)
class CropMatch:
    crop: str  # crop key
    parent: str | None  # parent key, or None when no smear scored >= threshold
    score: float  # best normalised cross-correlation
    x: int  # top-left of the crop in the parent, full-resolution pixels
    y: int


def _grey(path: str, scale: int) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("L").reduce(scale), dtype=np.float32)


def match_crops(
    crops: Sequence[tuple[str, str, str | None]],
    parents: Sequence[tuple[str, str, str | None]],
    *,
    scale: int = 4,
    threshold: float = 0.95,
    progress: bool = True,
) -> list[CropMatch]:
    """Best parent of each crop. Items are ``(key, filepath, diagnosis)``; a crop is only
    matched against parents of the same diagnosis (all parents when either is None)."""
    from skimage.feature import match_template
    from tqdm import tqdm

    if scale < 1:
        raise AlldataError(f"scale={scale} must be >= 1 (4 is fast and still exact on ALL-IDB)")
    smears = [(k, _grey(p, scale), d) for k, p, d in parents]
    out = []
    for key, path, diag in tqdm(crops, desc="match crops", disable=not progress):
        crop = _grey(path, scale)
        best = (-1.0, None, 0, 0)
        for pkey, smear, pdiag in smears:
            if diag and pdiag and diag != pdiag:
                continue
            if crop.shape[0] > smear.shape[0] or crop.shape[1] > smear.shape[1]:
                continue
            ncc = match_template(smear, crop)
            y, x = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
            if ncc[y, x] > best[0]:
                best = (float(ncc[y, x]), pkey, int(x) * scale, int(y) * scale)
        score, pkey, x, y = best
        out.append(CropMatch(key, pkey if score >= threshold else None, score, x, y))
    return out


def link_crops(
    ds: fo.Dataset,
    *,
    crop_source: str = "all_idb2",
    parent_source: str = "all_idb1",
    scale: int = 4,
    threshold: float = 0.95,
    progress: bool = True,
) -> list[CropMatch]:
    """Match ``crop_source`` samples to ``parent_source`` smears and record the links in ``ds``."""
    def items(source: str) -> list[tuple[str, str, str | None]]:
        view = ds.match({F.SOURCE: source})
        if not len(view):
            raise AlldataError(f"no {source!r} samples in {ds.name!r}; ingest it first (`alldata ingest {source}`)")
        return list(zip(*view.values([F.KEY, "filepath", f"{F.DIAGNOSIS}.label"])))

    matches = match_crops(items(crop_source), items(parent_source), scale=scale, threshold=threshold, progress=progress)
    parent_group = dict(zip(*ds.match({F.SOURCE: parent_source}).values([F.KEY, F.GROUP_ID])))
    linked = {m.crop: m.parent for m in matches if m.parent}
    crops = ds.match({F.SOURCE: crop_source})
    if not ds.has_field(OWN_GROUP_ID):  # keep the ingested group, so a re-run can undo a link
        crops.set_values(OWN_GROUP_ID, crops.values(F.GROUP_ID))
    keys, own = crops.values([F.KEY, OWN_GROUP_ID])
    score = {m.crop: m.score for m in matches}
    crops.set_values(PARENT_KEY, [linked.get(k) for k in keys])
    crops.set_values(PARENT_SCORE, [score.get(k) for k in keys])
    crops.set_values(F.GROUP_ID, [parent_group[linked[k]] if k in linked else g for k, g in zip(keys, own)])
    info = dict(ds.info)
    info.setdefault("links", {})[f"{crop_source}->{parent_source}"] = {
        "linked": len(linked), "crops": len(keys), "threshold": threshold, "scale": scale
    }
    ds.info = info
    ds.save()
    return matches
