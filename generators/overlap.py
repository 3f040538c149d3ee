"""Overlapping-cell composites with exact labels: real cells pasted onto real smear backgrounds.

Not a trained network: :class:`OverlapComposer` cuts real white cells out of single-cell
images (with their masks), pastes several of them onto a crop of a real smear with a
controlled overlap, a feathered edge and a per-cell stain jitter, and records exactly
which pixel belongs to which pasted cell. That is how overlapped-cell training data with
perfect instance labels is made.

Cell donors (a FiftyOne view of the store, ``image_kind == "cell"``, duplicates and
synthetic samples left out):

* samples with a ``segmentation`` (else ``segmentation_alt``) mask, e.g. ALL-IDB2: the cell
  is ``mask > 0``, its nucleus / cytoplasm classes are kept;
* samples with a ``segmented_filepath`` field (Taleqani): a black-background segmented
  copy of the image. Cell = non-black pixels, after a small morphological clean-up
  (opening, closing, hole filling) the largest component, kept only when it is compact
  (solidity), darker than the field around it (a stained white cell, not a pale red cell)
  and of a plausible size; the pixels are taken from the original image;
* C-NMC crops (``source == "cnmc"``): the image itself is the black-background cell.

A donor whose cell touches its image border (cut off), or whose mask is empty or
implausible, is rejected with a reason (:attr:`OverlapComposer.rejected`) and another is
drawn. Donors without classes (Taleqani, C-NMC) are labelled cytoplasm over the whole cell
in the semantic mask. Each pasted instance keeps its donor's ``cell_type`` (``wbc`` when
the donor has none), ``diagnosis``, ``subtype`` and key.

Backgrounds: real smears (``image_kind == "smear"``; BCCD and ALL-IDB1 by default). A
square crop is cut where no annotated white cell is (BCCD WBC boxes; ALL-IDB1 WBC
instance masks and blast / other-WBC centroids), whenever the pool has a background that
allows it; the crop is then resized to ``output_size`` and flipped / rotated by a random
multiple of 90 degrees. **The red cells and platelets of the background are unlabelled
background**: the only labelled cells of a composite are the pasted ones. Where no clean
crop exists at all, the crop with the least WBC overlap is used and the composite's
recipe says ``"clean": false`` (an unlabelled real WBC may then be visible).

Scale: every source has a pixel scale, the diameter of a red cell in its pixels
(``rbc_px``; measured on the data: BCCD RBC boxes ~100 px, ALL-IDB1 / ALL-IDB2 RBC masks
~70 px, Taleqani ~25 px; C-NMC is an estimate). Backgrounds and cells are resampled so a
red cell is ``rbc_diameter`` x ``output_size`` pixels in every composite, so cells and
background agree in size whatever their source; ``scale_range`` jitters each cell's scale.

Overlap: the overlap of two cells is the area of their intersection (full masks, before
occlusion) divided by the area of the smaller cell. The first cell is placed at random;
each further cell is placed against an earlier one (its anchor) at a random angle and at
the distance that gives a target overlap drawn from ``overlap_range`` (bisection on the
distance), then checked: the anchor pair must be within ``overlap_range``, no other pair
above its maximum, every earlier cell at least ``min_visible`` visible and the whole cell
inside the image. Up to ``max_tries`` angles are tried; then the best placement is kept
and its achieved value recorded (``in_range`` false). Cells are pasted in order: later
cells cover earlier ones, and the masks of earlier cells are reduced to their visible
part. Composite ``i`` of a run with seed ``s`` is drawn from
``numpy.random.default_rng([s, i])`` alone (no global random state), so any one composite
can be re-made, and a resumed run makes the same images.

Generated donors (``synthetic_donors``, off by default): cells made by ``alldata generate``
(``is_synthetic``, ``image_kind == "cell"``, not val/test, not tagged ``reject``) can be
donors too. ``"all"`` takes every such cell, a generator name (``"gan"``, ``"diffusion"``
or ``"generator=NAME"``) the cells of that generator, ``"view=NAME"`` (or a bare saved-view
name) the synthetic cells of a saved view. They have no mask, so a reference segmenter
(:func:`alldata.models.get_segmenter`, ``otsu_hsv`` with ``keep="center"`` by default)
gives one **when the pool is loaded**; its masks are cached on disk by segmenter settings
and image sha256 (``$ALLDATA_HOME/cache/overlap-masks/``), so re-runs do not segment again.
A generated cell whose mask is empty, not compact (solidity < 0.85; the largest component
is kept), cut by the image border or of an implausible size is rejected then, with a
reason (:attr:`OverlapComposer.synthetic_rejected`). Their pixel scale is unknown (a
generator mixes the scales of its training sources) unless ``rbc_px`` names their source
(``"synthetic/gan"``): they are then drawn at the typical white-cell size, the geometric
mean of ``cell_diameter_range`` red cells, and kept when the cell spans 0.15 to 0.95 of
the image side. With ``balance_sources`` each generator is one more donor source. The
config records the selection, the segmenter and ``synthetic_donor_keys``; the pool
fingerprint covers the generated cells and their masks; every pasted instance says
``synthetic`` (True for a generated cell) and its ``donor_key``. The instance masks are
exact for what was pasted (the segmenter's mask); its nucleus / cytoplasm split is the
segmenter's estimate.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from alldata.generators.base import CONFIG_NAME, GENERATORS, WEIGHTS_NAME, Generator, GeneratorError, checkpoint_sha256
from PIL import Image
from scipy import ndimage

from alldata.schema import Box, CellType, F, ImageKind, Provenance, Sample, SegMask
from alldata.synthetic import add_synthetic, make_synthetic_sample, synthetic_source

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "DEFAULT_BACKGROUND_SOURCES",
    "DEFAULT_CONFIG",
    "DEFAULT_DONOR_SOURCES",
    "RBC_PX",
    "SYNTHETIC_CELLS_FIELD",
    "ComposePlan",
    "ComposeReport",
    "Composite",
    "Instance",
    "OverlapComposer",
    "PairOverlap",
    "compose_to_dataset",
    "hed_jitter",
    "load_synthetic_donor_records",
    "plan_compose",
    "rejection_counts",
    "run_compose",
    "segmenter_spec",
    "synthetic_donor_view",
]

FAMILY = "overlap"
SOURCE = synthetic_source(FAMILY)
DEFAULT_DONOR_SOURCES = ("all_idb2", "taleqani")
DEFAULT_BACKGROUND_SOURCES = ("bccd", "all_idb1")
#: Red-cell diameter in each source's pixels (the pixel scale; see the module docstring).
RBC_PX: dict[str, float] = {"all_idb2": 70.0, "all_idb1": 72.0, "bccd": 100.0, "taleqani": 25.0, "cnmc": 150.0}
#: Labels that are not white cells: background boxes with these labels need not be avoided.
_NOT_WBC = {CellType.rbc.value, CellType.platelet.value}
_BLACK = 30  # a black-background pixel is one whose brightest channel is at most this
_SEGMENTED_FIELD = "segmented_filepath"
#: Composites made with generated donors record how many of their cells are generated here.
SYNTHETIC_CELLS_FIELD = "synthetic_cells"

DEFAULT_CONFIG: dict[str, Any] = {
    "output_size": 256,
    "cells_per_image": [2, 4],
    "overlap_range": [0.1, 0.5],
    "scale_range": [0.9, 1.1],
    "rbc_diameter": 0.2,  # red-cell diameter as a fraction of output_size
    "cell_diameter_range": [1.0, 2.2],  # pasted cells' diameters are clamped to this, in red-cell diameters
    "stain_jitter": 0.05,  # HED-like: per-stain factor 1 +- s and shift +- s (optical density)
    "match_illumination": True,  # scale each cell's colours by background plasma / donor plasma
    "feather": 2.0,  # alpha ramp width in output pixels, centred on the mask edge
    "max_tries": 50,  # placements tried per cell before the best one is kept
    "min_visible": 0.25,  # every pasted cell keeps at least this fraction visible
    "rotate": True,  # random rotation and flip of each cell
    "balance_sources": True,  # draw a donor source uniformly, then a donor of it
    "rbc_px": RBC_PX,
    "dataset": None,  # where the pools live (FiftyOne dataset name)
    "donor_keys": [],
    "background_keys": [],
    "pool_sha256": None,
    "synthetic_donors": None,  # which generated cells may be donors (None: none; see the module doc)
    "synthetic_segmenter": None,  # {"name": ..., "params": {...}} giving their masks
    "synthetic_donor_keys": [],  # the donor_keys that are generated cells
}
#: Config keys left out of a saved config when no generated donors are used (older
#: checkpoints, and their sha256, stay exactly as they were).
_SYNTHETIC_KEYS = ("synthetic_donors", "synthetic_segmenter", "synthetic_donor_keys")
#: Pool keys a ``sample`` condition may not override.
_POOL_KEYS = {"dataset", "donor_keys", "background_keys", "pool_sha256", *_SYNTHETIC_KEYS}
#: A generated cell of unknown pixel scale must span this fraction of its image side.
SYNTHETIC_DIAMETER_RANGE = (0.15, 0.95)
DEFAULT_SYNTHETIC_SEGMENTER = "otsu_hsv"


# --- small helpers ----------------------------------------------------------------------
def _pair(value: Any, name: str, kind: type = float) -> list:
    try:
        lo, hi = (kind(v) for v in value)
    except (TypeError, ValueError):
        raise GeneratorError(f"{name} must be a pair [low, high], got {value!r}") from None
    if not lo <= hi:  # also NaN
        raise GeneratorError(f"{name} = {[lo, hi]}: low must not exceed high")
    return [lo, hi]


def _check_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, JSON-ready values, every value checked."""
    unknown = set(cfg) - set(DEFAULT_CONFIG) - {"family"}
    if unknown:
        raise GeneratorError(f"unknown overlap config keys {sorted(unknown)}; known: {sorted(DEFAULT_CONFIG)}")
    out = {**DEFAULT_CONFIG, **{k: v for k, v in cfg.items() if k != "family"}}
    out["output_size"] = int(out["output_size"])
    if out["output_size"] < 32:
        raise GeneratorError(f"output_size = {out['output_size']}: must be at least 32 pixels")
    out["cells_per_image"] = _pair(out["cells_per_image"], "cells_per_image", int)
    if out["cells_per_image"][0] < 1:
        raise GeneratorError(f"cells_per_image = {out['cells_per_image']}: at least 1 cell per image")
    out["overlap_range"] = _pair(out["overlap_range"], "overlap_range")
    if not 0.0 <= out["overlap_range"][0] <= out["overlap_range"][1] <= 1.0:
        raise GeneratorError(f"overlap_range = {out['overlap_range']}: both ends must be in [0, 1]")
    out["scale_range"] = _pair(out["scale_range"], "scale_range")
    if out["scale_range"][0] <= 0:
        raise GeneratorError(f"scale_range = {out['scale_range']}: scales must be positive")
    out["cell_diameter_range"] = _pair(out["cell_diameter_range"], "cell_diameter_range")
    if out["cell_diameter_range"][0] <= 0:
        raise GeneratorError(f"cell_diameter_range = {out['cell_diameter_range']}: diameters must be positive")
    for k, lo, hi in (("rbc_diameter", 0.01, 1.0), ("stain_jitter", 0.0, 1.0), ("min_visible", 1e-6, 1.0)):
        out[k] = float(out[k])
        if not lo <= out[k] <= hi:
            raise GeneratorError(f"{k} = {out[k]}: must be in [{lo}, {hi}]")
    out["feather"] = float(out["feather"])
    if not 0.0 <= out["feather"] <= 32.0:
        raise GeneratorError(f"feather = {out['feather']}: must be in [0, 32] pixels")
    out["max_tries"] = int(out["max_tries"])
    if out["max_tries"] < 1:
        raise GeneratorError("max_tries must be at least 1")
    for k in ("rotate", "balance_sources", "match_illumination"):
        out[k] = bool(out[k])
    out["rbc_px"] = {str(k): float(v) for k, v in sorted(dict(out["rbc_px"]).items())}
    if any(not v > 0 for v in out["rbc_px"].values()):
        raise GeneratorError(f"rbc_px values must be positive, got {out['rbc_px']}")
    out["donor_keys"] = [str(k) for k in out["donor_keys"]]
    out["background_keys"] = [str(k) for k in out["background_keys"]]
    out["synthetic_donor_keys"] = [str(k) for k in out["synthetic_donor_keys"]]
    if out["synthetic_donors"] is not None:
        out["synthetic_donors"] = str(out["synthetic_donors"])
    seg = out["synthetic_segmenter"]
    if seg is not None:
        if not isinstance(seg, dict) or not isinstance(seg.get("name"), str) or not isinstance(seg.get("params", {}), dict):
            raise GeneratorError(f"synthetic_segmenter = {seg!r}: must be {{'name': <segmenter>, 'params': {{...}}}}")
        out["synthetic_segmenter"] = {"name": seg["name"], "params": dict(seg.get("params", {}))}
    if out["synthetic_donor_keys"] and (seg is None or out["synthetic_donors"] is None):
        raise GeneratorError("synthetic_donor_keys need synthetic_donors and synthetic_segmenter (build with from_dataset)")
    if set(out["synthetic_donor_keys"]) - set(out["donor_keys"]):
        raise GeneratorError("synthetic_donor_keys must be a subset of donor_keys")
    return out


def _saved_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config as saved: without the generated-donor keys when none are used."""
    if cfg.get("synthetic_donors") is None:
        return {k: v for k, v in cfg.items() if k not in _SYNTHETIC_KEYS}
    return dict(cfg)


def _write_empty_safetensors(path: Path, metadata: dict[str, str]) -> None:
    """A valid safetensors file holding no tensors (8-byte header length + JSON header)."""
    header = json.dumps({"__metadata__": metadata}, separators=(",", ":"), sort_keys=True).encode()
    header += b" " * (-len(header) % 8)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(struct.pack("<Q", len(header)) + header)
    tmp.replace(path)


def _read_rgb(path: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise GeneratorError(f"{path}: cannot read image ({e})") from None


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(np.argmax(sizes))


def _solidity(mask: np.ndarray) -> float:
    """Area / convex-hull area (1 for a convex shape)."""
    from scipy.spatial import ConvexHull, QhullError

    ys, xs = np.nonzero(mask)
    if len(ys) < 3:
        return 0.0
    # hull of the pixel squares' corners, so a convex pixel region scores ~1
    pts = np.concatenate([np.stack([ys + dy, xs + dx], 1) for dy in (0, 1) for dx in (0, 1)])
    try:
        return float(mask.sum()) / ConvexHull(pts).volume
    except QhullError:
        return 0.0


def _nearest_fill(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Every pixel outside ``mask`` takes the colour of the nearest pixel inside it."""
    if mask.all() or not mask.any():
        return img
    _, (iy, ix) = ndimage.distance_transform_edt(~mask, return_indices=True)
    return img[iy, ix]


def _plasma(img: np.ndarray, where: np.ndarray) -> np.ndarray | None:
    """Median colour of the brightest quarter of ``img[where]`` (the plasma between cells)."""
    px = img[where].astype(np.float32)
    if len(px) < 16:
        return None
    lum = px @ np.array([0.299, 0.587, 0.114], np.float32)
    bright = px[lum >= np.percentile(lum, 75)]
    out = np.median(bright, axis=0)
    return out if float(out.min()) > 40 else None  # a dark (black) surround says nothing


def _feather_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Opacity ramping from 0 to 1 across ``feather`` pixels centred on the mask edge."""
    if feather <= 0:
        return mask.astype(np.float32)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    signed = np.where(mask, inside - 0.5, 0.5 - outside)
    return np.clip(0.5 + signed / feather, 0.0, 1.0).astype(np.float32)


_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)


def hed_jitter(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """HED-like stain jitter (after Tellez et al.): per-stain ``c * a + b`` in optical density.

    ``a ~ U(1 - strength, 1 + strength)``, ``b ~ U(-strength, strength)`` for each of the
    three stain channels of Ruifrok & Johnston's colour deconvolution. ``img`` is float
    RGB in [0, 255]; the result too. ``strength = 0`` leaves the image as it is (and draws
    nothing from ``rng``).
    """
    if strength <= 0:
        return img
    a = rng.uniform(1 - strength, 1 + strength, 3)
    b = rng.uniform(-strength, strength, 3)
    od = -np.log(np.clip(img / 255.0, 1 / 255.0, 1.0))
    conc = od.reshape(-1, 3) @ _HED_FROM_RGB
    od2 = (conc * a + b) @ _RGB_FROM_HED
    return np.clip(255.0 * np.exp(-od2), 0, 255).reshape(img.shape).astype(np.float32)


# --- pools -------------------------------------------------------------------------------
@dataclass(frozen=True)
class DonorRecord:
    """What the store says about one donor cell image (pixels are read when it is drawn)."""

    key: str
    source: str
    filepath: str
    segmented_filepath: str | None
    seg: np.ndarray | None = field(repr=False)
    cell_type: str | None
    diagnosis: str | None
    subtype: str | None
    synthetic: bool = False  # a generated cell (its ``seg`` comes from a reference segmenter)


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


@dataclass(frozen=True)
class BackgroundRecord:
    """A smear and the pixel boxes ``(x0, y0, x1, y1)`` (end exclusive) of its annotated WBCs.

    ``annotated`` is false when the store records no white cell at all for it (no WBC box,
    no blast / other-WBC point list): then nobody knows where its white cells are.
    """

    key: str
    source: str
    filepath: str
    width: int
    height: int
    avoid: tuple[tuple[int, int, int, int], ...]
    annotated: bool


def _label(v: Any) -> str | None:
    return None if v is None else str(v)


def _donor_view(view: fo.Dataset | fo.DatasetView, sources: Sequence[str] | None) -> fo.DatasetView:
    # never val/test cells: a composite must not carry a held-out cell into training
    v = view.match({F.IMAGE_KIND: ImageKind.cell.value, F.IS_SYNTHETIC: {"$ne": True}, F.DUPLICATE_OF: None,
                    F.SPLIT: {"$nin": ["val", "test"]}})
    return v.match({F.SOURCE: {"$in": list(sources)}}) if sources else v


def _saved_view(ds: fo.Dataset, name: str | None) -> fo.Dataset | fo.DatasetView:
    """``ds`` itself, or its saved view ``name`` (an error lists the saved views)."""
    if not name:
        return ds
    if name not in ds.list_saved_views():
        have = ", ".join(ds.list_saved_views()) or "(none)"
        raise GeneratorError(f"dataset {ds.name!r} has no saved view {name!r}; saved views: {have}")
    return ds.load_saved_view(name)


def _background_view(view: fo.Dataset | fo.DatasetView, sources: Sequence[str] | None) -> fo.DatasetView:
    v = view.match({F.IMAGE_KIND: ImageKind.smear.value, F.IS_SYNTHETIC: {"$ne": True}, F.DUPLICATE_OF: None,
                    F.SPLIT: {"$nin": ["val", "test"]}})
    return v.match({F.SOURCE: {"$in": list(sources)}}) if sources else v


def load_donor_records(view: fo.Dataset | fo.DatasetView) -> tuple[list[DonorRecord], list[str]]:
    """Usable donor records of ``view`` (sorted by key) and its record fingerprints.

    Usable: a segmentation mask, a ``segmented_filepath``, or a C-NMC black-background crop.
    """
    keys, sources, paths, fps = view.values([F.KEY, F.SOURCE, "filepath", F.RECORD_SHA256])
    n = len(keys)
    segmented = view.values(_SEGMENTED_FIELD) if view.has_field(_SEGMENTED_FIELD) else [None] * n
    labels = [view.values(f"{f}.label") for f in (F.CELL_TYPE, F.DIAGNOSIS, F.SUBTYPE)]
    with_seg = view.exists(F.SEGMENTATION)
    seg = dict(zip(*with_seg.values([F.KEY, f"{F.SEGMENTATION}.mask"])))
    alt_view = view.exists(F.SEGMENTATION, False).exists(F.SEGMENTATION_ALT)
    seg.update(zip(*alt_view.values([F.KEY, f"{F.SEGMENTATION_ALT}.mask"])))
    recs, rec_fps = [], []
    for i in range(n):
        m = seg.get(keys[i])
        if m is None and not segmented[i] and sources[i] != "cnmc":
            continue
        recs.append(
            DonorRecord(
                keys[i], sources[i], paths[i], segmented[i] or None, m,
                _label(labels[0][i]), _label(labels[1][i]), _label(labels[2][i]),
            )
        )
        rec_fps.append(fps[i] or "")
    order = sorted(range(len(recs)), key=lambda j: recs[j].key)
    return [recs[j] for j in order], [rec_fps[j] for j in order]


def load_background_records(
    view: fo.Dataset | fo.DatasetView, rbc_px: dict[str, float]
) -> tuple[list[BackgroundRecord], list[str]]:
    """Background records of ``view`` (sorted by key) and their record fingerprints."""
    keys, sources, paths, ws, hs, fps = view.values([F.KEY, F.SOURCE, "filepath", F.WIDTH, F.HEIGHT, F.RECORD_SHA256])
    n = len(keys)
    det_labels = view.values(f"{F.CELLS}.detections.label") if view.has_field(F.CELLS) else [None] * n
    det_boxes = view.values(f"{F.CELLS}.detections.bounding_box") if view.has_field(F.CELLS) else [None] * n
    points = [
        view.values(f"{name}.keypoints.points") if view.has_field(name) else [None] * n
        for name in (F.BLASTS, F.OTHER_WBCS)
    ]
    recs, rec_fps = [], []
    for i in range(n):
        w, h = int(ws[i]), int(hs[i])
        avoid: list[tuple[int, int, int, int]] = []
        annotated = points[0][i] is not None or points[1][i] is not None
        for lab, bb in zip(det_labels[i] or [], det_boxes[i] or []):
            if lab in _NOT_WBC or bb is None:
                continue
            annotated = True
            x, y, bw, bh = bb
            avoid.append((math.floor(x * w), math.floor(y * h), math.ceil((x + bw) * w), math.ceil((y + bh) * h)))
        r = math.ceil(rbc_px.get(sources[i], 0.0))  # a WBC is at most ~2 red cells across
        for pts in (points[0][i] or []) + (points[1][i] or []):
            for px, py in pts or []:
                cx, cy = int(px * w), int(py * h)
                avoid.append((cx - r, cy - r, cx + r + 1, cy + r + 1))
        recs.append(BackgroundRecord(keys[i], sources[i], paths[i], w, h, tuple(avoid), annotated))
        rec_fps.append(fps[i] or "")
    order = sorted(range(len(recs)), key=lambda j: recs[j].key)
    return [recs[j] for j in order], [rec_fps[j] for j in order]


def synthetic_donor_view(ds: fo.Dataset, selector: str) -> fo.DatasetView:
    """The generated cells of ``ds`` that ``selector`` allows as donors.

    ``selector``: ``"all"``; a generator name (``"gan"``, ``"diffusion"``, any value of the
    ``generator`` field) or ``"generator=NAME"``; a saved view name or ``"view=NAME"``.
    Only synthetic, non-duplicate cell images outside val/test and not tagged ``reject`` are
    taken, whatever the selector.

    Raises:
        GeneratorError: an unknown selector, or no generated cell selected; the message lists
            the generators and saved views there are.
    """
    from alldata.curation import curated

    text = selector.strip()
    kind, _, value = text.partition("=") if "=" in text else ("", "", text)
    kind, value = kind.strip(), value.strip()
    usable = {F.IS_SYNTHETIC: True, F.IMAGE_KIND: ImageKind.cell.value, F.DUPLICATE_OF: None,
              F.SPLIT: {"$nin": ["val", "test"]}}
    base = ds.match(usable)
    have = sorted(v for v in base.distinct(F.GENERATOR) if v) if ds.has_field(F.GENERATOR) else []
    views = ds.list_saved_views()
    known = f"generators with cells here: {', '.join(have) or '(none)'}; saved views: {', '.join(views) or '(none)'}"
    if not kind:
        from alldata.generators.base import FAMILY_MODULES

        if value == "all":
            kind = "all"
        elif value in have or value in FAMILY_MODULES:
            kind = "generator"
        elif value in views:
            kind = "view"
    if kind == "all":
        view = base
    elif kind == "generator" and value:
        view = base.match({F.GENERATOR: value})
    elif kind == "view" and value in views:
        view = ds.load_saved_view(value).match(usable)
    else:
        raise GeneratorError(
            f"synthetic donors {selector!r}: not 'all', a generator, 'generator=NAME' or a saved view "
            f"('view=NAME') of dataset {ds.name!r} ({known})"
        )
    view = curated(view)
    if len(view) == 0:
        raise GeneratorError(
            f"synthetic donors {selector!r}: no generated cell images outside val/test in dataset {ds.name!r} "
            f"({known}). Generate some first, e.g. `alldata generate --checkpoint CKPT --dataset {ds.name}`, "
            "or pick one of those."
        )
    return view


def segmenter_spec(name: str = DEFAULT_SYNTHETIC_SEGMENTER) -> dict[str, Any]:
    """``{"name", "params"}`` of reference segmenter ``name`` as used on one generated cell.

    ``keep="center"`` where the segmenter takes it (one cell per image), every other
    parameter at its default and spelled out, so a config records exactly what ran.

    Raises:
        UnknownNameError: ``name`` is not a registered segmenter (with close matches).

    Examples:
        >>> segmenter_spec("otsu_hsv")["params"]["keep"]
        'center'
    """
    import inspect

    from alldata.models import SEGMENTERS

    cls = SEGMENTERS.get(name)
    params: dict[str, Any] = {"keep": "center"} if "keep" in inspect.signature(cls).parameters else {}
    return {"name": name, "params": dict(getattr(cls(**params), "params", params))}


def _mask_cache_dir(segmenter: dict[str, Any]) -> Path:
    """``$ALLDATA_HOME/cache/overlap-masks/<name>-<digest of the settings>``."""
    from alldata.config import home

    digest = hashlib.sha256(json.dumps(segmenter, sort_keys=True).encode()).hexdigest()[:16]
    return home() / "cache" / "overlap-masks" / f"{segmenter['name']}-{digest}"


def _read_mask(path: Path) -> np.ndarray | None:
    """A cached 0/1/2 mask, or None when it is missing or unreadable (then it is made again)."""
    try:
        with Image.open(path) as img:
            m = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError):
        return None
    return m if m.ndim == 2 and int(m.max(initial=0)) <= 2 else None


def _synthetic_problem(seg: np.ndarray, rbc: float | None) -> str | None:
    """Why the segmenter's mask of a generated cell cannot be used (``"kind: detail"``), or None."""
    mask = ndimage.binary_fill_holes(_largest_component(seg > 0))
    if not mask.any():
        return "empty mask: the segmenter found no cell"
    solidity = _solidity(mask)
    if solidity < 0.85:
        return f"not compact: solidity {solidity:.2f} < 0.85"
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    if ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1:
        return "cut off: the cell touches the image border"
    diameter = 2 * math.sqrt(mask.sum() / math.pi)
    if rbc is not None and not 0.6 <= diameter / rbc <= 4.0:
        return f"implausible size: {diameter / rbc:.2f} red cells (kept: 0.6 to 4)"
    lo, hi = SYNTHETIC_DIAMETER_RANGE
    if rbc is None and not lo <= diameter / min(h, w) <= hi:
        return f"implausible size: the cell spans {diameter / min(h, w):.2f} of the image side (kept: {lo} to {hi})"
    return None


def load_synthetic_donor_records(
    view: fo.Dataset | fo.DatasetView,
    segmenter: dict[str, Any],
    rbc_px: dict[str, float],
    *,
    cache: bool = True,
) -> tuple[list[DonorRecord], list[str], dict[str, str]]:
    """Generated-cell donors of ``view``, masked by ``segmenter`` (see :func:`segmenter_spec`).

    Masks are read from the on-disk cache (``$ALLDATA_HOME/cache/overlap-masks/<segmenter>-<settings
    digest>/<image sha256>.png``, keyed by the image's stored sha256) or made and, when
    ``cache``, written there.

    Returns:
        The usable records (sorted by key), their fingerprints (record sha256, segmenter,
        mask sha256) and ``{key: reason}`` for the generated cells rejected.
    """
    from alldata.errors import AlldataError

    keys, sources, paths, shas, fps = view.values([F.KEY, F.SOURCE, "filepath", F.SHA256, F.RECORD_SHA256])
    labels = [view.values(f"{f}.label") for f in (F.CELL_TYPE, F.DIAGNOSIS, F.SUBTYPE)]
    cache_dir = _mask_cache_dir(segmenter)
    model = None
    recs, rec_fps, rejected = [], [], {}
    for i in sorted(range(len(keys)), key=lambda j: keys[j]):
        cached = cache_dir / f"{shas[i]}.png" if shas[i] else None
        seg = _read_mask(cached) if cached is not None and cached.is_file() else None
        if seg is None:
            if model is None:
                from alldata.models import get_segmenter

                model = get_segmenter(segmenter["name"], **segmenter["params"])
            try:
                seg = np.asarray(model.segment(_read_rgb(paths[i])), dtype=np.uint8)
            except AlldataError as e:  # unreadable, or too small to segment
                rejected[keys[i]] = f"unusable image: {e}"
                continue
            if cache and cached is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
                Image.fromarray(seg).save(tmp, format="PNG")
                tmp.replace(cached)
        why = _synthetic_problem(seg, rbc_px.get(sources[i]))
        if why:
            rejected[keys[i]] = why
            continue
        recs.append(
            DonorRecord(
                keys[i], sources[i], paths[i], None, seg,
                _label(labels[0][i]), _label(labels[1][i]), _label(labels[2][i]), synthetic=True,
            )
        )
        mask_sha = hashlib.sha256(f"{seg.shape}".encode() + seg.tobytes()).hexdigest()
        rec_fps.append(f"{fps[i] or ''}\t{cache_dir.name}\t{mask_sha}")
    return recs, rec_fps, rejected


def _merge_donors(
    a: list[DonorRecord], afps: list[str], b: list[DonorRecord], bfps: list[str]
) -> tuple[list[DonorRecord], list[str]]:
    """Two sorted donor lists (and their fingerprints) as one, sorted by key."""
    pairs = sorted(zip(a + b, afps + bfps), key=lambda p: p[0].key)
    return [r for r, _ in pairs], [fp for _, fp in pairs]


def rejection_counts(rejected: dict[str, str]) -> dict[str, int]:
    """``{kind: count}`` of rejection reasons (the part before the first ``": "``), most common first."""
    return dict(Counter(why.split(": ", 1)[0] for why in rejected.values()).most_common())


def _pool_sha(donors: list[DonorRecord], dfps: list[str], bgs: list[BackgroundRecord], bfps: list[str]) -> str:
    h = hashlib.sha256()
    for r, fp in zip(donors, dfps):
        h.update(f"{'synthetic' if r.synthetic else 'donor'}\t{r.key}\t{fp}\n".encode())
    for r, fp in zip(bgs, bfps):
        h.update(f"background\t{r.key}\t{fp}\n".encode())
    return h.hexdigest()


# --- results -----------------------------------------------------------------------------
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


@dataclass
class _Placed:
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


def _intersection(a: _Placed, b: _Placed, by: int, bx: int) -> int:
    """Pixels of ``a`` (at its position) and ``b`` (at ``by, bx``) both inside their masks."""
    y0, x0 = max(a.y, by), max(a.x, bx)
    y1, x1 = min(a.y + a.mask.shape[0], by + b.mask.shape[0]), min(a.x + a.mask.shape[1], bx + b.mask.shape[1])
    if y1 <= y0 or x1 <= x0:
        return 0
    ma = a.mask[y0 - a.y : y1 - a.y, x0 - a.x : x1 - a.x]
    mb = b.mask[y0 - by : y1 - by, x0 - bx : x1 - bx]
    return int(np.count_nonzero(ma & mb))


# --- the composer ------------------------------------------------------------------------
@GENERATORS.register(FAMILY)
class OverlapComposer(Generator):
    """Composes real cells onto real smear crops with controlled overlap (see the module doc).

    Build one from a dataset with :meth:`from_dataset`; :meth:`compose` makes
    :class:`Composite` records, :meth:`sample` just their images (the generator contract).
    The checkpoint is ``config.json`` (the settings, the donor and background keys and a
    fingerprint of their records) beside an empty ``model.safetensors``: there are no
    weights, but :func:`~alldata.generators.base.checkpoint_sha256` works as for every family.
    """

    family: ClassVar[str] = FAMILY
    cache_size: ClassVar[int] = 512  # prepared donors kept in memory
    background_cache_size: ClassVar[int] = 4  # decoded backgrounds kept in memory

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(_check_config(config))
        self._donors: list[DonorRecord] | None = None
        self._backgrounds: list[BackgroundRecord] | None = None
        self._prepared: OrderedDict[str, Donor] = OrderedDict()
        self._bg_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._crops: dict[int, tuple[int, np.ndarray, bool]] = {}
        self._donor_index: dict[str, list[int]] | None = None
        #: donors that could not be used, and why (filled as they are drawn)
        self.rejected: dict[str, str] = {}
        #: generated cells refused as donors when the pool was loaded, and why
        self.synthetic_rejected: dict[str, str] = {}

    # --- construction ------------------------------------------------------------------
    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> OverlapComposer:
        return cls(config)

    @classmethod
    def from_dataset(
        cls,
        dataset: str,
        *,
        donor_sources: Sequence[str] | None = DEFAULT_DONOR_SOURCES,
        background_sources: Sequence[str] | None = DEFAULT_BACKGROUND_SOURCES,
        donors_view: str | None = None,
        backgrounds_view: str | None = None,
        synthetic_donors: str | None = None,
        synthetic_segmenter: str = DEFAULT_SYNTHETIC_SEGMENTER,
        cache_masks: bool = True,
        **config: Any,
    ) -> OverlapComposer:
        """A composer whose pools are the donors and backgrounds of ``dataset``.

        Args:
            dataset: FiftyOne dataset name (must exist).
            donor_sources: donor sources (``None``: every source of the donor view).
            background_sources: background sources (``None``: every smear source).
            donors_view: a saved view of ``dataset`` to take the donors from.
            backgrounds_view: a saved view of ``dataset`` to take the backgrounds from (the
                benchmark passes a fold's training side, so no test smear becomes a background).
            synthetic_donors: which generated cells may be donors too (``None``: none;
                ``"all"``, a generator such as ``"gan"``, or a saved view; see
                :func:`synthetic_donor_view`).
            synthetic_segmenter: the reference segmenter that masks them.
            cache_masks: write the generated cells' masks to the on-disk cache.
            **config: settings (see :data:`DEFAULT_CONFIG`).

        Raises:
            GeneratorError: no usable donor or no background (the message says what to
                ingest), or generated donors asked for and none usable (with the reasons).
        """
        from alldata.store import load_dataset

        ds = load_dataset(dataset)
        cfg = _check_config({**config, "dataset": dataset})
        base = _saved_view(ds, donors_view)
        donors, dfps = load_donor_records(_donor_view(base, donor_sources))
        bgs, bfps = load_background_records(
            _background_view(_saved_view(ds, backgrounds_view), background_sources), cfg["rbc_px"]
        )
        synthetic: list[DonorRecord] = []
        syn_rejected: dict[str, str] = {}
        if synthetic_donors is not None:
            spec = segmenter_spec(synthetic_segmenter)
            view = synthetic_donor_view(ds, synthetic_donors)
            synthetic, sfps, syn_rejected = load_synthetic_donor_records(view, spec, cfg["rbc_px"], cache=cache_masks)
            if not synthetic:
                counts = ", ".join(f"{k} {n}" for k, n in rejection_counts(syn_rejected).items())
                key, why = next(iter(syn_rejected.items()))
                raise GeneratorError(
                    f"none of the {len(syn_rejected)} generated cells selected by synthetic donors "
                    f"{synthetic_donors!r} in {dataset!r} (val/test cells are never donors) is usable: "
                    f"segmenter {synthetic_segmenter} rejected "
                    f"them all ({counts}; e.g. {key}: {why}). Check the images (a short or failed generator "
                    "run gives no cells), try another segmenter, or leave synthetic donors out."
                )
            donors, dfps = _merge_donors(donors, dfps, synthetic, sfps)
            cfg.update(
                synthetic_donors=synthetic_donors,
                synthetic_segmenter=spec,
                synthetic_donor_keys=[r.key for r in synthetic],
            )
        if not donors:
            which = ", ".join(donor_sources) if donor_sources else "any source"
            raise GeneratorError(
                f"no donor cells in dataset {dataset!r} from {which}: a donor is a cell image with a "
                "segmentation mask (ALL-IDB2), a segmented copy (Taleqani) or a C-NMC crop. "
                "Ingest one first, e.g. `alldata ingest all_idb2 --dataset " + dataset + "`."
            )
        if not bgs:
            which = ", ".join(background_sources) if background_sources else "any source"
            raise GeneratorError(
                f"no smear backgrounds in dataset {dataset!r} from {which}. "
                f"Ingest one first, e.g. `alldata ingest bccd --dataset {dataset}`."
            )
        missing = sorted(({r.source for r in donors if not r.synthetic} | {r.source for r in bgs}) - set(cfg["rbc_px"]))
        if missing:
            raise GeneratorError(
                f"no pixel scale (red-cell diameter in pixels) for source(s) {missing}; "
                f"pass rbc_px={{'{missing[0]}': <pixels>, ...}} in the config (known: {sorted(cfg['rbc_px'])})"
            )
        cfg.update(
            donor_keys=[r.key for r in donors],
            background_keys=[r.key for r in bgs],
            pool_sha256=_pool_sha(donors, dfps, bgs, bfps),
        )
        gen = cls(cfg)
        gen._donors, gen._backgrounds = donors, bgs
        gen.synthetic_rejected = dict(syn_rejected)
        gen.rejected.update(syn_rejected)
        return gen

    def _ensure_pool(self) -> tuple[list[DonorRecord], list[BackgroundRecord]]:
        """The pools, read from ``config["dataset"]`` by key when not loaded yet."""
        if self._donors is not None and self._backgrounds is not None:
            return self._donors, self._backgrounds
        from alldata.store import load_dataset

        cfg = self.config
        if not cfg.get("dataset") or not cfg["donor_keys"] or not cfg["background_keys"]:
            raise GeneratorError("this composer has no donor or background pool; build it with OverlapComposer.from_dataset")
        ds = load_dataset(cfg["dataset"])
        syn_keys = set(cfg["synthetic_donor_keys"])
        real_keys = [k for k in cfg["donor_keys"] if k not in syn_keys]
        donors, dfps = load_donor_records(ds.match({F.KEY: {"$in": real_keys}}))
        if syn_keys:
            view = ds.match({F.KEY: {"$in": sorted(syn_keys)}, F.IS_SYNTHETIC: True})
            synthetic, sfps, _ = load_synthetic_donor_records(view, cfg["synthetic_segmenter"], cfg["rbc_px"])
            donors, dfps = _merge_donors(donors, dfps, synthetic, sfps)
        bgs, bfps = load_background_records(ds.match({F.KEY: {"$in": cfg["background_keys"]}}), cfg["rbc_px"])
        if [r.key for r in donors] != cfg["donor_keys"] or [r.key for r in bgs] != cfg["background_keys"]:
            lost = len(set(cfg["donor_keys"]) - {r.key for r in donors}) + len(set(cfg["background_keys"]) - {r.key for r in bgs})
            raise GeneratorError(
                f"{lost} donor/background samples of this composer are no longer usable in dataset "
                f"{cfg['dataset']!r}; rebuild it with OverlapComposer.from_dataset"
            )
        if cfg.get("pool_sha256") and _pool_sha(donors, dfps, bgs, bfps) != cfg["pool_sha256"]:
            raise GeneratorError(
                f"the donor/background samples in {cfg['dataset']!r} changed since this composer was saved "
                "(re-ingested files or masks), so it would not reproduce its images; rebuild it with "
                "OverlapComposer.from_dataset"
            )
        self._donors, self._backgrounds = donors, bgs
        return donors, bgs

    # --- checkpoint --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise GeneratorError(f"an overlap composer has no weights, got tensors {sorted(state)}")

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and a tensor-less ``model.safetensors`` into ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        _write_empty_safetensors(d / WEIGHTS_NAME, {"family": self.family, "weights": "none"})
        cfg = dict(_saved_config(self.config), family=self.family)
        tmp = d / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
        tmp.replace(d / CONFIG_NAME)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> OverlapComposer:
        """Load a composer saved by :meth:`save_pretrained` (its pools are read on first use)."""
        d = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (d / name).is_file():
                raise GeneratorError(f"{d} is not a checkpoint: {name} is missing")
        cfg = json.loads((d / CONFIG_NAME).read_text())
        family = cfg.pop("family", FAMILY)
        if family != FAMILY:
            raise GeneratorError(f"{d} holds a {family!r} checkpoint, not an overlap composer")
        return cls(cfg)

    # --- the generator contract --------------------------------------------------------
    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, **kwargs: Any) -> np.ndarray:
        """The images of :meth:`compose` as ``(N, S, S, 3)`` uint8.

        ``condition`` may override settings for this call (e.g. ``{"overlap_range": [0.2, 0.3]}``).
        """
        gen = self
        if condition:
            bad = set(condition) - (set(DEFAULT_CONFIG) - _POOL_KEYS)
            if bad:
                raise GeneratorError(f"unknown condition {sorted(bad)} for an overlap composer; it takes settings such as overlap_range")
            gen = type(self)({**self.config, **condition})
            gen._donors, gen._backgrounds = self._ensure_pool()
            gen.synthetic_rejected = dict(self.synthetic_rejected)
        s = gen.config["output_size"]
        if num_samples <= 0:
            return np.zeros((0, s, s, 3), np.uint8)
        return np.stack([c.image for c in gen.compose(num_samples, seed)])

    def compose(self, num_samples: int, seed: int, *, start: int = 0) -> list[Composite]:
        """Composites ``start .. start + num_samples - 1`` of ``seed`` (each independent of the others)."""
        return [self.compose_one(seed, i) for i in range(start, start + num_samples)]

    # --- donors ------------------------------------------------------------------------
    def _prepare(self, rec: DonorRecord) -> Donor | str:
        """Cut out the cell of ``rec`` or say why it cannot be used."""
        rbc = self.config["rbc_px"].get(rec.source)  # None: a generated cell of unknown scale
        classes = None
        if rec.seg is not None:
            img = _read_rgb(rec.filepath)
            seg = np.asarray(rec.seg)
            if seg.shape != img.shape[:2]:
                return f"mask shape {seg.shape} != image shape {img.shape[:2]}"
            mask = ndimage.binary_fill_holes(_largest_component(seg > 0))
            classes = np.where(mask, np.maximum(seg, 1), 0).astype(np.uint8)
        else:
            img = _read_rgb(rec.filepath)
            if rec.segmented_filepath:
                seg_img = _read_rgb(rec.segmented_filepath)
                if seg_img.shape != img.shape:
                    return f"segmented copy {seg_img.shape[:2]} != image {img.shape[:2]}"
            else:  # the image itself is the cell on black
                seg_img = img
            fg = seg_img.max(axis=2) > _BLACK
            fg = ndimage.binary_opening(fg, np.ones((3, 3), bool))
            fg = ndimage.binary_closing(fg, np.ones((5, 5), bool), border_value=0)
            fg = ndimage.binary_fill_holes(fg)
            mask = _largest_component(fg)
            if rec.segmented_filepath is None:  # drop the dark anti-aliased rim against black
                mask = ndimage.binary_erosion(mask, np.ones((3, 3), bool))
            if mask.any():
                solidity = _solidity(mask)
                if solidity < 0.85:
                    return f"largest segmented component is not compact (solidity {solidity:.2f} < 0.85)"
            if mask.any() and rec.segmented_filepath:
                lum = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
                cell, field_ = float(np.median(lum[mask])), float(np.median(lum[~mask]))
                if cell > field_ - 15:
                    return f"segmented component is not a stained white cell (median brightness {cell:.0f} vs field {field_:.0f})"
        if not mask.any():
            return "empty cell mask"
        ys, xs = np.nonzero(mask)
        h, w = mask.shape
        if ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1:
            return "the cell touches the image border (cut off)"
        diameter = 2 * math.sqrt(mask.sum() / math.pi)
        if rbc is not None and not 0.6 <= diameter / rbc <= 4.0:
            return f"cell diameter {diameter / rbc:.2f} red cells is implausible for a white cell (kept: 0.6 to 4)"
        plasma = _plasma(img, ~ndimage.binary_dilation(mask, iterations=3))
        m = 3
        y0, y1 = max(ys.min() - m, 0), min(ys.max() + 1 + m, h)
        x0, x1 = max(xs.min() - m, 0), min(xs.max() + 1 + m, w)
        mask = mask[y0:y1, x0:x1]
        image = _nearest_fill(img[y0:y1, x0:x1].astype(np.float32), mask)
        label = CellType(rec.cell_type) if rec.cell_type in CellType._value2member_map_ else CellType.wbc
        return Donor(
            rec.key, rec.source, image, mask, None if classes is None else classes[y0:y1, x0:x1],
            label, rec.diagnosis, rec.subtype, diameter, plasma, rec.synthetic,
        )

    def donor(self, rec: DonorRecord) -> Donor | None:
        """The prepared donor of ``rec`` (cached), or None when it is rejected."""
        if rec.key in self.rejected:
            return None
        d = self._prepared.get(rec.key)
        if d is not None:
            self._prepared.move_to_end(rec.key)
            return d
        try:
            out = self._prepare(rec)
        except GeneratorError as e:
            out = str(e)
        if isinstance(out, str):
            self.rejected[rec.key] = out
            return None
        self._prepared[rec.key] = out
        if len(self._prepared) > self.cache_size:
            self._prepared.popitem(last=False)
        return out

    def _by_source(self) -> dict[str, list[int]]:
        if self._donor_index is None:
            donors, _ = self._ensure_pool()
            index: dict[str, list[int]] = {}
            for i, r in enumerate(donors):
                index.setdefault(r.source, []).append(i)
            self._donor_index = dict(sorted(index.items()))
        return self._donor_index

    def _draw_donor(self, rng: np.random.Generator) -> Donor:
        donors, _ = self._ensure_pool()
        by_source = self._by_source()
        names = list(by_source)
        for _ in range(200):
            if self.config["balance_sources"]:
                idx = by_source[names[int(rng.integers(len(names)))]]
                rec = donors[idx[int(rng.integers(len(idx)))]]
            else:
                rec = donors[int(rng.integers(len(donors)))]
            d = self.donor(rec)
            if d is not None:
                return d
        raise GeneratorError(
            f"200 donors in a row could not be used (e.g. {next(iter(self.rejected.items()))}); "
            "check the donor sources' masks"
        )

    def _transform(self, donor: Donor, rng: np.random.Generator, plasma: np.ndarray | None = None) -> _Placed:
        cfg = self.config
        s_out = cfg["output_size"]
        rbc_out = cfg["rbc_diameter"] * s_out
        # the source's pixel scale, then the cell's size clamped to a plausible white-cell size
        # (sources mix magnifications: some ALL-IDB2 crops are zoomed far more than others)
        d_lo, d_hi = cfg["cell_diameter_range"]
        if donor.source in cfg["rbc_px"]:
            d_rbc = donor.diameter / cfg["rbc_px"][donor.source]
        else:  # a generated cell of unknown scale: the typical white-cell size
            d_rbc = math.sqrt(d_lo * d_hi)
        jitter = float(rng.uniform(*cfg["scale_range"]))
        scale = rbc_out * min(max(d_rbc, d_lo), d_hi) / donor.diameter * jitter
        angle = float(rng.uniform(0.0, 360.0)) if cfg["rotate"] else 0.0
        flip = bool(rng.random() < 0.5) if cfg["rotate"] else False
        h, w = donor.mask.shape
        fit = 0.9 * s_out / (math.hypot(h, w) * scale)  # the whole cell must fit in the image
        if fit < 1:
            scale *= fit
        t = math.radians(angle)
        fwd = scale * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        if flip:
            fwd = fwd @ np.array([[1.0, 0.0], [0.0, -1.0]])
        corners = np.array([[0, 0], [0, w], [h, 0], [h, w]], float) - [h / 2, w / 2]
        ext = np.abs(corners @ fwd.T).max(axis=0)
        pad = math.ceil(cfg["feather"]) + 2
        out_shape = (math.ceil(2 * ext[0]) + 2 * pad, math.ceil(2 * ext[1]) + 2 * pad)
        inv = np.linalg.inv(fwd)
        c_in = np.array([(h - 1) / 2, (w - 1) / 2])
        c_out = np.array([(out_shape[0] - 1) / 2, (out_shape[1] - 1) / 2])
        offset = c_in - inv @ c_out

        def warp(a: np.ndarray, order: int) -> np.ndarray:
            return ndimage.affine_transform(a, inv, offset=offset, output_shape=out_shape, order=order, mode="nearest")

        mask = warp(donor.mask.astype(np.float32), 1) > 0.5
        if not mask.any():  # a sliver scaled away; keep the centre pixel
            mask[out_shape[0] // 2, out_shape[1] // 2] = True
        mask = _largest_component(mask)
        image = np.stack([warp(donor.image[..., c], 1) for c in range(3)], axis=-1)
        image = _nearest_fill(np.clip(image, 0, 255), mask)
        if cfg["match_illumination"] and plasma is not None and donor.plasma is not None:
            gain = np.clip(plasma / np.maximum(donor.plasma, 1.0), 0.5, 2.0).astype(np.float32)
            image = np.clip(image * gain, 0, 255)
        image = hed_jitter(image, rng, cfg["stain_jitter"])
        if donor.classes is not None:
            classes = warp(donor.classes, 0)
            classes = np.where(mask, np.maximum(classes, 1), 0).astype(np.uint8)
        else:
            classes = mask.astype(np.uint8)
        ys, xs = np.nonzero(mask)
        area = int(mask.sum())
        cy, cx = float(ys.mean()), float(xs.mean())
        radius = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())) + 1.0
        return _Placed(
            donor, image.astype(np.float32), _feather_alpha(mask, cfg["feather"]), mask, classes,
            (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1), (cy, cx), radius, area,
            {"scale": round(scale, 6), "angle": round(angle, 3), "flip": flip},
        )

    # --- backgrounds -------------------------------------------------------------------
    def _crop_options(self, i: int) -> tuple[int, np.ndarray, bool | None]:
        """(crop side, candidate top-left corners (N, 2) as (x, y), clean).

        ``clean``: True when the corners avoid every annotated WBC of an annotated
        background, None when the background has no WBC annotation (unknown), False when
        no crop avoids them (the corners are then those of least overlap).
        """
        if i in self._crops:
            return self._crops[i]
        _, bgs = self._ensure_pool()
        bg = bgs[i]
        cfg = self.config
        side = round(cfg["output_size"] * cfg["rbc_px"][bg.source] / (cfg["rbc_diameter"] * cfg["output_size"]))
        side = max(8, min(side, bg.width, bg.height))
        step = max(1, side // 32)
        xs = np.arange(0, bg.width - side + 1, step)
        ys = np.arange(0, bg.height - side + 1, step)
        gx, gy = np.meshgrid(xs, ys)
        corners = np.stack([gx.ravel(), gy.ravel()], 1)
        hit = np.zeros(len(corners), np.int64)
        for x0, y0, x1, y1 in bg.avoid:
            ox = np.clip(np.minimum(corners[:, 0] + side, x1) - np.maximum(corners[:, 0], x0), 0, None)
            oy = np.clip(np.minimum(corners[:, 1] + side, y1) - np.maximum(corners[:, 1], y0), 0, None)
            hit += ox * oy
        clean = hit == 0
        if not bg.annotated:
            out: tuple[int, np.ndarray, bool | None] = (side, corners, None)
        elif clean.any():
            out = (side, corners[clean], True)
        else:
            out = (side, corners[hit == hit.min()], False)
        self._crops[i] = out
        return out

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
        _, bgs = self._ensure_pool()
        options = [self._crop_options(i) for i in range(len(bgs))]
        # clean crops of annotated smears first, then smears nobody annotated, then the rest
        pool = next(
            tier for tier in (
                [i for i, o in enumerate(options) if o[2] is True],
                [i for i, o in enumerate(options) if o[2] is None],
                list(range(len(bgs))),
            ) if tier
        )
        i = pool[int(rng.integers(len(pool)))]
        side, corners, is_clean = options[i]
        x, y = (int(v) for v in corners[int(rng.integers(len(corners)))])
        turn = int(rng.integers(8))
        bg = bgs[i]
        img = self._bg_cache.get(bg.key)
        if img is None:
            img = _read_rgb(bg.filepath)
            if img.shape[:2] != (bg.height, bg.width):
                raise GeneratorError(f"{bg.filepath}: image is {img.shape[1]}x{img.shape[0]}, the store says {bg.width}x{bg.height}")
            self._bg_cache[bg.key] = img
            if len(self._bg_cache) > self.background_cache_size:
                self._bg_cache.popitem(last=False)
        s = self.config["output_size"]
        crop = Image.fromarray(img[y : y + side, x : x + side]).resize((s, s), Image.Resampling.LANCZOS)
        arr = np.rot90(np.asarray(crop), turn % 4)
        if turn >= 4:
            arr = arr[:, ::-1]
        return np.ascontiguousarray(arr).astype(np.float32), {
            "key": bg.key, "crop": [x, y, side], "turn": turn, "clean": is_clean,
        }

    # --- placement ---------------------------------------------------------------------
    def _inside(self, c: _Placed, y: int, x: int) -> bool:
        s = self.config["output_size"]
        y0, y1, x0, x1 = c.tight
        return y + y0 >= 0 and x + x0 >= 0 and y + y1 <= s and x + x1 <= s

    def _covered(self, owner: np.ndarray, c: _Placed, y: int, x: int, n: int) -> np.ndarray:
        """How many visible pixels of each of the ``n`` placed cells ``c`` at (y, x) would cover."""
        s = owner.shape[0]
        ya, xa = max(y, 0), max(x, 0)
        yb, xb = min(y + c.mask.shape[0], s), min(x + c.mask.shape[1], s)
        under = owner[ya:yb, xa:xb][c.mask[ya - y : yb - y, xa - x : xb - x]]
        return np.bincount(under, minlength=n + 1)[1 : n + 1]

    def _place(
        self, cell: _Placed, placed: list[_Placed], visible: list[int], owner: np.ndarray, rng: np.random.Generator
    ) -> tuple[int, int, int | None, float | None, float | None, bool] | None:
        """Where ``cell`` goes: (y, x, anchor, target, achieved, in_range), or None if it cannot."""
        cfg = self.config
        s = cfg["output_size"]
        lo, hi = cfg["overlap_range"]
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
        for _ in range(cfg["max_tries"]):
            theta = float(rng.uniform(0.0, 2 * math.pi))
            u = (math.sin(theta), math.cos(theta))
            near, far = 0.0, a.radius + cell.radius + 1.0
            for _ in range(18):  # bisection: overlap falls as the centres move apart
                mid = (near + far) / 2
                if _intersection(a, cell, *pos(mid, u)) / denom_a > target:
                    near = mid
                else:
                    far = mid
            for d in (far, near):
                y, x = pos(d, u)
                if not self._inside(cell, y, x):
                    continue
                covered = self._covered(owner, cell, y, x, len(placed))
                if any(v - c < cfg["min_visible"] * p.area for v, c, p in zip(visible, covered, placed)):
                    continue
                achieved = _intersection(a, cell, y, x) / denom_a
                excess = 0.0
                for k, p in enumerate(placed):
                    if k != anchor:
                        f = _intersection(p, cell, y, x) / min(p.area, cell.area)
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

    def compose_one(self, seed: int, index: int) -> Composite:
        """Composite ``index`` of ``seed``: drawn from ``default_rng([seed, index])`` alone."""
        if seed < 0 or index < 0:
            raise GeneratorError(f"seed and index must be non-negative, got seed={seed}, index={index}")
        cfg = self.config
        s = cfg["output_size"]
        rng = np.random.default_rng([seed, index])
        canvas, bg_info = self._background(rng)
        plasma = _plasma(canvas, np.ones(canvas.shape[:2], bool))
        n_cells = int(rng.integers(cfg["cells_per_image"][0], cfg["cells_per_image"][1] + 1))
        owner = np.zeros((s, s), np.int64)  # 1 + paste order of the cell on top, 0 background
        semantic = np.zeros((s, s), np.uint8)
        placed: list[_Placed] = []
        visible: list[int] = []
        controlled: dict[tuple[int, int], tuple[float, bool]] = {}
        dropped = 0
        for _ in range(n_cells):
            cell = self._transform(self._draw_donor(rng), rng, plasma)
            where = self._place(cell, placed, visible, owner, rng)
            if where is None:
                dropped += 1
                continue
            y, x, anchor, target, _, ok = where
            cell.y, cell.x = y, x
            covered = self._covered(owner, cell, y, x, len(placed))
            visible = [v - int(c) for v, c in zip(visible, covered)]
            k = len(placed)
            placed.append(cell)
            visible.append(cell.area)
            if anchor is not None:
                controlled[(anchor, k)] = (float(target), ok)
            # paste: labels by the binary mask, pixels by the feathered alpha
            ya, xa = max(y, 0), max(x, 0)
            yb, xb = min(y + cell.mask.shape[0], s), min(x + cell.mask.shape[1], s)
            sl = (slice(ya - y, yb - y), slice(xa - x, xb - x))
            m = cell.mask[sl]
            owner[ya:yb, xa:xb][m] = k + 1
            semantic[ya:yb, xa:xb][m] = cell.classes[sl][m]
            alpha = cell.alpha[sl][..., None]
            canvas[ya:yb, xa:xb] = alpha * cell.image[sl] + (1 - alpha) * canvas[ya:yb, xa:xb]
        instances: list[Instance] = []
        for k, c in enumerate(placed):
            vis = owner == k + 1
            rows, cols = np.nonzero(vis.any(axis=1))[0], np.nonzero(vis.any(axis=0))[0]
            r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            instances.append(
                Instance(
                    label=c.donor.label,
                    bbox=(c0 / s, r0 / s, (c1 - c0) / s, (r1 - r0) / s),
                    mask=vis[r0:r1, c0:c1].copy(),
                    donor_key=c.donor.key,
                    area=c.area,
                    visible_fraction=int(vis.sum()) / c.area,
                    diagnosis=c.donor.diagnosis,
                    subtype=c.donor.subtype,
                    classes=c.donor.classes is not None,
                    synthetic=c.donor.synthetic,
                )
            )
        overlaps: list[PairOverlap] = []
        for j in range(len(placed)):
            for i in range(j):
                a, b = placed[i], placed[j]
                f = _intersection(a, b, b.y, b.x) / min(a.area, b.area)
                target, ok = controlled.get((i, j), (None, None))
                if f > 0 or target is not None:
                    overlaps.append(PairOverlap(i, j, f, target, ok))
        recipe = {
            "seed": seed,
            "index": index,
            "background": bg_info,
            "cells": [
                {"donor": c.donor.key, "y": c.y, "x": c.x, **c.params, **({"synthetic": True} if c.donor.synthetic else {})}
                for c in placed
            ],
            "overlaps": [p.to_dict() for p in overlaps],
            "dropped_cells": dropped,
        }
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        return Composite(image, instances, semantic, overlaps, seed, index, recipe)


# --- writing to a dataset ----------------------------------------------------------------
def source_id(seed: int, index: int) -> str:
    """The ``source_id`` of composite ``index`` of ``seed`` (its PNG is ``overlap_<seed>_<index>.png``)."""
    return f"{seed}_{index}"


def png_name(seed: int, index: int) -> str:
    return f"overlap_{seed}_{index}.png"


@dataclass
class ComposeReport:
    """What one :func:`run_compose` did."""

    dataset: str
    out_dir: str
    checkpoint_sha256: str
    requested: int = 0
    added: int = 0
    skipped_existing: int = 0
    rejected_donors: dict[str, str] = field(default_factory=dict)
    controlled_overlaps: list[float] = field(default_factory=list)
    in_range: int = 0
    unclean_backgrounds: int = 0  # crops that overlap an annotated WBC
    unannotated_backgrounds: int = 0  # crops of smears with no WBC annotation
    dropped_cells: int = 0
    synthetic_donors: int = 0  # generated cells accepted as donors
    synthetic_rejected: dict[str, str] = field(default_factory=dict)  # generated cells refused, and why
    pasted_cells: int = 0  # cells pasted into the composites added by this run
    pasted_synthetic: int = 0  # of which generated

    @property
    def mean_overlap(self) -> float | None:
        return float(np.mean(self.controlled_overlaps)) if self.controlled_overlaps else None

    @property
    def synthetic_rejected_by_reason(self) -> dict[str, int]:
        return rejection_counts(self.synthetic_rejected)


@dataclass
class ComposePlan:
    """What :func:`run_compose` would do (nothing is written to make it)."""

    dataset: str
    out_dir: str
    seed: int
    requested: int
    existing: int
    to_make: int
    donors: dict[str, int]  # candidate donors by source
    backgrounds: dict[str, int]
    config: dict[str, Any]
    first_file: str | None
    synthetic_donors: int = 0  # generated cells usable as donors
    synthetic_rejected: dict[str, int] = field(default_factory=dict)  # generated cells refused, by reason


def _condition(cfg: dict[str, Any], donor_sources: Sequence[str] | None, background_sources: Sequence[str] | None) -> dict[str, Any]:
    keys = ("overlap_range", "cells_per_image", "output_size", "scale_range", "rbc_diameter", "stain_jitter", "feather")
    cond = {k: cfg[k] for k in keys}
    cond["donor_sources"] = sorted(donor_sources) if donor_sources else None
    cond["background_sources"] = sorted(background_sources) if background_sources else None
    if cfg["synthetic_donors"] is not None:
        cond["synthetic_donors"] = cfg["synthetic_donors"]
        cond["synthetic_segmenter"] = cfg["synthetic_segmenter"]["name"]
    return cond


def _to_sample(c: Composite, path: Path, sha: str, condition: dict[str, Any]) -> Sample:
    extra = {}
    if "synthetic_donors" in condition:  # how many pasted cells are generated ones
        extra[SYNTHETIC_CELLS_FIELD] = sum(inst.synthetic for inst in c.instances)
    return make_synthetic_sample(
        path,
        family=FAMILY,
        source_id=source_id(c.seed, c.index),
        provenance=Provenance(
            generator=FAMILY,
            checkpoint_sha256=sha,
            seed=c.seed,
            condition=condition,
            recipe=json.dumps(c.recipe, sort_keys=True),
        ),
        image_kind=ImageKind.smear,
        cells=c.boxes(),
        segmentation=SegMask(mask=c.semantic, annotator=FAMILY),
        wbc_labels=[inst.label for inst in c.instances],
        extra=extra,
    )


def _existing(dataset: str, keys: list[str]) -> dict[str, str | None]:
    """{key: checkpoint_sha256} of the wanted keys already in ``dataset``."""
    import fiftyone as fo

    if not fo.dataset_exists(dataset):
        return {}
    view = fo.load_dataset(dataset).match({F.SOURCE: SOURCE, F.KEY: {"$in": keys}})
    return dict(zip(*view.values([F.KEY, F.CHECKPOINT_SHA256])))


def plan_compose(
    dataset: str,
    num_samples: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    donor_sources: Sequence[str] | None = DEFAULT_DONOR_SOURCES,
    background_sources: Sequence[str] | None = DEFAULT_BACKGROUND_SOURCES,
    donors_view: str | None = None,
    synthetic_donors: str | None = None,
    synthetic_segmenter: str = DEFAULT_SYNTHETIC_SEGMENTER,
    **config: Any,
) -> ComposePlan:
    """What :func:`run_compose` would make, reading the store only (writes nothing, not even
    the generated cells' mask cache)."""
    gen = OverlapComposer.from_dataset(
        dataset, donor_sources=donor_sources, background_sources=background_sources, donors_view=donors_view,
        synthetic_donors=synthetic_donors, synthetic_segmenter=synthetic_segmenter, cache_masks=False, **config
    )
    donors, bgs = gen._ensure_pool()
    keys = [f"{SOURCE}/{source_id(seed, i)}" for i in range(num_samples)]
    have = _existing(dataset, keys)
    todo = [i for i, k in enumerate(keys) if k not in have]
    count = lambda recs: dict(sorted(Counter(r.source for r in recs).items()))
    return ComposePlan(
        dataset=dataset,
        out_dir=str(Path(out_dir)),
        seed=seed,
        requested=num_samples,
        existing=len(have),
        to_make=len(todo),
        donors=count(donors),
        backgrounds=count(bgs),
        config={k: v for k, v in _saved_config(gen.config).items() if k not in ("donor_keys", "background_keys", "synthetic_donor_keys")},
        first_file=str(Path(out_dir) / png_name(seed, todo[0])) if todo else None,
        synthetic_donors=len(gen.config["synthetic_donor_keys"]),
        synthetic_rejected=rejection_counts(gen.synthetic_rejected),
    )


def run_compose(
    dataset: str,
    num_samples: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    donor_sources: Sequence[str] | None = DEFAULT_DONOR_SOURCES,
    background_sources: Sequence[str] | None = DEFAULT_BACKGROUND_SOURCES,
    donors_view: str | None = None,
    synthetic_donors: str | None = None,
    synthetic_segmenter: str = DEFAULT_SYNTHETIC_SEGMENTER,
    progress: bool = True,
    batch_size: int = 32,
    **config: Any,
) -> ComposeReport:
    """Compose ``num_samples`` images into ``dataset``, resumably; see :func:`compose_to_dataset`."""
    from tqdm import tqdm

    if seed < 0:
        raise GeneratorError(f"seed must be non-negative, got {seed}")
    gen = OverlapComposer.from_dataset(
        dataset, donor_sources=donor_sources, background_sources=background_sources, donors_view=donors_view,
        synthetic_donors=synthetic_donors, synthetic_segmenter=synthetic_segmenter, **config
    )
    out = Path(out_dir)
    new_cfg = json.dumps(dict(_saved_config(gen.config), family=FAMILY), indent=2, sort_keys=True)
    if (out / CONFIG_NAME).is_file() and (out / CONFIG_NAME).read_text() != new_cfg:
        raise GeneratorError(
            f"{out} already holds composites of another overlap configuration (its {CONFIG_NAME} differs: "
            "other settings, sources, or donors/backgrounds re-ingested since). Use a new --out folder, "
            "or the same settings to resume."
        )
    keys = [f"{SOURCE}/{source_id(seed, i)}" for i in range(num_samples)]
    have = _existing(dataset, keys)
    gen.save_pretrained(out)
    sha = checkpoint_sha256(out)
    other = sorted(k for k, v in have.items() if v != sha)
    if other:
        raise GeneratorError(
            f"{len(other)} composites of seed {seed} in dataset {dataset!r} (e.g. {other[0]}) were made with "
            "another overlap configuration, so these would not be the same images. Use another --seed, "
            "another dataset, or the settings they were made with."
        )
    report = ComposeReport(
        dataset, str(out), sha, requested=num_samples, skipped_existing=len(have),
        synthetic_donors=len(gen.config["synthetic_donor_keys"]), synthetic_rejected=dict(gen.synthetic_rejected),
    )
    condition = _condition(gen.config, donor_sources, background_sources)
    todo = [i for i, k in enumerate(keys) if k not in have]

    def samples():
        for i in tqdm(todo, desc="compose overlaps", unit="img", disable=not progress):
            c = gen.compose_one(seed, i)
            path = out / png_name(seed, i)
            tmp = path.with_name(path.name + ".tmp")
            Image.fromarray(c.image).save(tmp, format="PNG")
            tmp.replace(path)
            report.controlled_overlaps += [p.fraction for p in c.controlled_overlaps]
            report.in_range += sum(bool(p.in_range) for p in c.controlled_overlaps)
            report.unclean_backgrounds += c.background_clean is False
            report.unannotated_backgrounds += c.background_clean is None
            report.dropped_cells += c.recipe["dropped_cells"]
            report.pasted_cells += len(c.instances)
            report.pasted_synthetic += sum(inst.synthetic for inst in c.instances)
            yield _to_sample(c, path, sha, condition)

    it = samples()
    while True:  # batches, so an interrupted run keeps what it finished
        batch = [s for _, s in zip(range(batch_size), it)]
        if not batch:
            break
        report.added += add_synthetic(dataset, batch)
    report.rejected_donors = dict(gen.rejected)
    return report


def compose_to_dataset(
    dataset: str,
    num_samples: int,
    out_dir: str | Path,
    seed: int = 0,
    *,
    donor_sources: Sequence[str] | None = DEFAULT_DONOR_SOURCES,
    background_sources: Sequence[str] | None = DEFAULT_BACKGROUND_SOURCES,
    donors_view: str | None = None,
    synthetic_donors: str | None = None,
    synthetic_segmenter: str = DEFAULT_SYNTHETIC_SEGMENTER,
    progress: bool = True,
    **config: Any,
) -> int:
    """Compose ``num_samples`` overlap images from ``dataset``'s cells into ``dataset``.

    PNGs go to ``out_dir/overlap_<seed>_<index>.png``; the composer's checkpoint
    (``config.json`` + empty ``model.safetensors``) is saved to ``out_dir`` first and its
    :func:`~alldata.generators.base.checkpoint_sha256` is recorded in every sample's
    provenance. Samples have source ``synthetic/overlap``, ``source_id`` ``<seed>_<index>``,
    ``image_kind`` smear, ``cells`` (instance boxes with visible masks; attributes
    ``donor_key`` and ``synthetic``), ``segmentation`` (annotator ``overlap``). With
    ``synthetic_donors`` generated cells are donors too (see :func:`synthetic_donor_view`)
    and each composite records how many of its cells are generated in
    :data:`SYNTHETIC_CELLS_FIELD`. Resumable: composites already in the dataset are skipped and
    not re-rendered; composites of the same seed made with another configuration are an error.

    Returns:
        How many samples were added.
    """
    return run_compose(
        dataset, num_samples, out_dir, seed,
        donor_sources=donor_sources, background_sources=background_sources, donors_view=donors_view,
        synthetic_donors=synthetic_donors, synthetic_segmenter=synthetic_segmenter, progress=progress, **config,
    ).added
