"""Find which smear a crop was cut from, so splits keep them together (ALL-IDB2 -> ALL-IDB1).

ALL-IDB2's 260 crops were cut from ALL-IDB1 photographs, but the distribution does not say
from which. Template matching recovers it: each crop is matched against every candidate
smear of the same diagnosis at 1/``scale`` resolution (normalised cross-correlation, the
response of :func:`skimage.feature.match_template`); a peak of at least ``threshold`` is a
match. On the shared data true matches score 0.97-1.00 and the best wrong image at most ~0.88.
The search runs coarse to fine (:func:`match_crops`): FFT correlation at 1/(``scale`` x
``coarse``) finds each smear's best position, which is then refined at 1/``scale``; it finds
the same parents and positions as the exhaustive search at 1/``scale`` did, ~10x faster
(bench/link.py).

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


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    """``a`` averaged over ``f`` x ``f`` blocks (a partial last row/column of blocks is dropped)."""
    h, w = a.shape[0] // f * f, a.shape[1] // f * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)) if f > 1 else a


def _integral(a: np.ndarray) -> np.ndarray:
    """Summed-area table with a leading zero row and column: window sums in O(1) each."""
    return np.pad(a, ((1, 0), (1, 0))).cumsum(0).cumsum(1)


def _window_sums(c: np.ndarray, h: int, w: int, y0: int = 0, y1: int | None = None, x0: int = 0,
                 x1: int | None = None) -> np.ndarray:
    """Sums over the (h, w) windows with top-left in [y0, y1] x [x0, x1] (default: all) from a
    summed-area table ``c`` (its last two axes)."""
    y1 = c.shape[-2] - 1 - h if y1 is None else y1
    x1 = c.shape[-1] - 1 - w if x1 is None else x1
    ys, xs = slice(y0, y1 + 1), slice(x0, x1 + 1)
    ye, xe = slice(y0 + h, y1 + h + 1), slice(x0 + w, x1 + w + 1)
    return c[..., ye, xe] - c[..., ys, xe] - c[..., ye, xs] + c[..., ys, xs]


#: match_template's cut-off for a flat window (float32 epsilon, the images' dtype there)
_EPS = float(np.finfo(np.float32).eps)


class _Smear:
    """A smear at the matching scale: float64 grey pixels and the summed-area tables of them and their squares."""

    def __init__(self, key: str, grey: np.ndarray, diagnosis: str | None) -> None:
        self.key, self.diagnosis = key, diagnosis
        self.image = grey.astype(np.float64)
        self.sums, self.sums2 = _integral(self.image), _integral(self.image**2)

    def best_near(self, t: np.ndarray, t_norm: float, y: int, x: int, r: int) -> tuple[float, int, int]:
        """Best (score, y, x) of zero-mean template ``t`` at top-left positions within ``r`` of (y, x).

        The score is match_template's normalised cross-correlation (0 where the window is flat);
        ties go to the first position in row-major order, as ``np.argmax`` over a full map.
        """
        from numpy.lib.stride_tricks import sliding_window_view

        h, w = t.shape
        y0, y1 = max(0, y - r), min(self.image.shape[0] - h, y + r)
        x0, x1 = max(0, x - r), min(self.image.shape[1] - w, x + r)
        corr = np.einsum("ijkl,kl->ij", sliding_window_view(self.image[y0 : y1 + h, x0 : x1 + w], (h, w)), t)
        s1 = _window_sums(self.sums, h, w, y0, y1, x0, x1)
        s2 = _window_sums(self.sums2, h, w, y0, y1, x0, x1)
        den = np.sqrt(np.maximum(s2 - s1 * s1 / (h * w), 0)) * t_norm
        ncc = np.divide(corr, den, out=np.zeros_like(corr), where=den > _EPS)
        iy, ix = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
        return float(ncc[iy, ix]), y0 + int(iy), x0 + int(ix)


class _CoarseGroup:
    """Coarse smears of one shape, searched in one batch by FFT (float32; it only picks positions).

    Holds each smear's spectrum (at a fast length >= its size, so the valid region never
    wraps) and, per template shape, 1 / sqrt(sum (I - window mean)^2) of every window.
    """

    def __init__(self, images: list[np.ndarray]) -> None:
        from scipy import fft

        self.images = np.stack(images).astype(np.float64)
        self.shape = self.images.shape[1:]
        self.fshape = tuple(fft.next_fast_len(n, real=True) for n in self.shape)
        self.spectra = fft.rfft2(self.images.astype(np.float32), s=self.fshape)
        self._inv_norm: dict[tuple[int, int], np.ndarray] = {}

    def _inverse_norm(self, h: int, w: int) -> np.ndarray:
        if (h, w) not in self._inv_norm:
            s1 = _window_sums(np.stack([_integral(a) for a in self.images]), h, w)
            s2 = _window_sums(np.stack([_integral(a * a) for a in self.images]), h, w)
            norm = np.sqrt(np.maximum(s2 - s1 * s1 / (h * w), 0))
            inv = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > _EPS)
            self._inv_norm[(h, w)] = inv.astype(np.float32)
        return self._inv_norm[(h, w)]

    def peaks(self, template: np.ndarray, n: int, radius: int = 2) -> list[list[tuple[int, int]]]:
        """Per smear, up to ``n`` (y, x) maxima of the NCC of ``template``, ``radius`` apart."""
        from scipy import fft

        h, w = template.shape
        t = (template - template.mean()).astype(np.float32)
        spec = self.spectra * np.conj(fft.rfft2(t, s=self.fshape))
        corr = fft.irfft2(spec, s=self.fshape)[:, : self.shape[0] - h + 1, : self.shape[1] - w + 1]
        score = corr * self._inverse_norm(h, w)  # the NCC times the template's norm: same maxima
        out = []
        for r in score:
            found: list[tuple[int, int]] = []
            for _ in range(n):
                y, x = np.unravel_index(int(np.argmax(r)), r.shape)
                if found and r[y, x] == -np.inf:
                    break
                found.append((int(y), int(x)))
                r[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1] = -np.inf
            out.append(found)
        return out


def match_crops(
    crops: Sequence[tuple[str, str, str | None]],
    parents: Sequence[tuple[str, str, str | None]],
    *,
    scale: int = 4,
    coarse: int = 2,
    peaks: int = 1,
    threshold: float = 0.95,
    workers: int = 1,
    progress: bool = True,
) -> list[CropMatch]:
    """Best parent of each crop. Items are ``(key, filepath, diagnosis)``; a crop is only
    matched against parents of the same diagnosis (all parents when either is None).

    Coarse to fine: the crop is correlated with every candidate smear at ``scale * coarse``
    (FFT, the smears of one size in one batch); around each smear's
    ``peaks`` best coarse positions the normalised cross-correlation of
    :func:`skimage.feature.match_template` is computed at ``scale``, ``coarse + 1`` pixels
    each way, and the best of those is the smear's score. Ties go to the earlier parent.
    A crop scoring ``threshold`` or more is matched; for one that is not, ``score`` is the
    best window found, a lower bound of an exhaustive search's (on ALL-IDB within 0.005).
    ``workers`` threads decode the smears and match the crops (-1: one per core; on a busy
    2-core machine one thread was faster, bench/link.py).
    """
    import os
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    if scale < 1:
        raise AlldataError(f"scale={scale} must be >= 1 (4 is fast and still exact on ALL-IDB)")
    if coarse < 1 or peaks < 1:
        raise AlldataError(f"coarse={coarse} and peaks={peaks} must be >= 1 (the defaults 2 and 1 find every "
                           "ALL-IDB2 crop the exhaustive search finds)")
    if workers == 0 or workers < -1:
        raise AlldataError(f"workers={workers} must be >= 1, or -1 for one per core")
    threads = (os.cpu_count() or 1) if workers == -1 else workers
    with ThreadPoolExecutor(threads) as pool:
        smears = list(pool.map(lambda item: _Smear(item[0], _grey(item[1], scale), item[2]), parents))
        small = [_block_mean(s.image, coarse) for s in smears]
        groups: dict[tuple[int, ...], _CoarseGroup] = {}

        def match_one(item: tuple[str, str, str | None]) -> CropMatch:
            key, path, diag = item
            crop = _grey(path, scale).astype(np.float64)
            t = crop - crop.mean()
            t_norm = float(np.sqrt(np.sum(t * t)))
            tc = _block_mean(crop, coarse)
            fits = [i for i, s in enumerate(smears) if not (diag and s.diagnosis and diag != s.diagnosis)
                    and crop.shape[0] <= s.image.shape[0] and crop.shape[1] <= s.image.shape[1]
                    and 0 < tc.shape[0] <= small[i].shape[0] and 0 < tc.shape[1] <= small[i].shape[1]]
            found: dict[int, tuple[float, int, int]] = {}
            for shape in dict.fromkeys(small[i].shape for i in fits):
                members = tuple(i for i in fits if small[i].shape == shape)
                if members not in groups:  # two threads may both build it: the same object either way
                    groups.setdefault(members, _CoarseGroup([small[i] for i in members]))
                for i, cands in zip(members, groups[members].peaks(tc, peaks)):
                    near = [smears[i].best_near(t, t_norm, cy * coarse, cx * coarse, coarse + 1) for cy, cx in cands]
                    found[i] = max(near, key=lambda c: (c[0], -c[1], -c[2]))
            best = (-1.0, None, 0, 0)
            for i in fits:  # in the parents' order: the first of equal scores wins
                score, y, x = found[i]
                if score > best[0]:
                    best = (score, smears[i].key, x * scale, y * scale)
            score, pkey, x, y = best
            return CropMatch(key, pkey if score >= threshold else None, score, x, y)

        return list(tqdm(pool.map(match_one, crops), total=len(crops), desc="match crops", disable=not progress))


def link_crops(
    ds: fo.Dataset,
    *,
    crop_source: str = "all_idb2",
    parent_source: str = "all_idb1",
    scale: int = 4,
    coarse: int = 2,
    threshold: float = 0.95,
    workers: int = 1,
    progress: bool = True,
) -> list[CropMatch]:
    """Match ``crop_source`` samples to ``parent_source`` smears and record the links in ``ds``
    (the search: :func:`match_crops`)."""
    def items(source: str) -> list[tuple[str, str, str | None]]:
        view = ds.match({F.SOURCE: source})
        if not len(view):
            raise AlldataError(f"no {source!r} samples in {ds.name!r}; ingest it first (`alldata ingest {source}`)")
        return list(zip(*view.values([F.KEY, "filepath", f"{F.DIAGNOSIS}.label"])))

    matches = match_crops(items(crop_source), items(parent_source), scale=scale, coarse=coarse, threshold=threshold,
                          workers=workers, progress=progress)
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
        "linked": len(linked), "crops": len(keys), "threshold": threshold, "scale": scale, "coarse": coarse
    }
    ds.info = info
    ds.save()
    return matches
