"""Overlap pools read from a FiftyOne dataset: the store side of the overlap compositor.

Donors are real cell images with a mask (``segmentation`` / ``segmentation_alt``), a
black-background ``segmented_filepath`` copy (Taleqani) or a C-NMC crop; backgrounds are
real smears with the boxes of their annotated white cells. Never val/test, duplicates or
(except as generated donors) synthetic samples. Generated cells are masked by a reference
segmenter, cached under ``$ALLDATA_HOME/cache/overlap-masks/``. :func:`composer_from_dataset`
builds an :class:`~alldata.generators.overlap.OverlapComposer` over them (recording a
fingerprint of every record); :func:`load_composer` reloads a saved one and checks that
fingerprint. See docs/overlap.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from alldata.errors import AlldataError, ImageError
from alldata.generators.base import GENERATORS, GeneratorError
from alldata.generators.image_ops import read_rgb
from alldata.generators.overlap import (
    DEFAULT_BACKGROUND_SOURCES,
    DEFAULT_DONOR_SOURCES,
    BackgroundRecord,
    DonorRecord,
    OverlapComposer,
)
from alldata.generators.overlap_records import generated_mask_problem, rejection_counts
from alldata.imageio import read_mask
from alldata.schema import CellType, F, ImageKind

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "DEFAULT_SYNTHETIC_SEGMENTER",
    "composer_from_dataset",
    "load_background_records",
    "load_composer",
    "load_donor_records",
    "load_pool",
    "load_synthetic_donor_records",
    "segmenter_spec",
    "synthetic_donor_view",
]

DEFAULT_SYNTHETIC_SEGMENTER = "otsu_hsv"
#: Labels that are not white cells: background boxes with these labels need not be avoided.
_NOT_WBC = {CellType.rbc.value, CellType.platelet.value}
_SEGMENTED_FIELD = "segmented_filepath"


# --- records of a view ----------------------------------------------------------------------
def _label(v: Any) -> str | None:
    return None if v is None else str(v)


def _usable_view(
    view: fo.Dataset | fo.DatasetView, kind: ImageKind, sources: Sequence[str] | None
) -> fo.DatasetView:
    """Real, non-duplicate images of ``kind`` outside val/test (a composite must never carry a
    held-out pixel into training), of ``sources`` when given."""
    v = view.match({F.IMAGE_KIND: kind.value, F.IS_SYNTHETIC: {"$ne": True}, F.DUPLICATE_OF: None,
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
        if value == "all":
            kind = "all"
        elif value in have or value in GENERATORS:
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
        m = read_mask(path).astype(np.uint8, copy=False)
    except ImageError:
        return None
    return m if m.ndim == 2 and int(m.max(initial=0)) <= 2 else None


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
                seg = np.asarray(model.segment(read_rgb(paths[i])), dtype=np.uint8)
            except AlldataError as e:  # unreadable, or too small to segment
                rejected[keys[i]] = f"unusable image: {e}"
                continue
            if cache and cached is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
                Image.fromarray(seg).save(tmp, format="PNG")
                tmp.replace(cached)
        why = generated_mask_problem(seg, rbc_px.get(sources[i]))
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


def _pool_sha(donors: list[DonorRecord], dfps: list[str], bgs: list[BackgroundRecord], bfps: list[str]) -> str:
    h = hashlib.sha256()
    for r, fp in zip(donors, dfps):
        h.update(f"{'synthetic' if r.synthetic else 'donor'}\t{r.key}\t{fp}\n".encode())
    for r, fp in zip(bgs, bfps):
        h.update(f"background\t{r.key}\t{fp}\n".encode())
    return h.hexdigest()


# --- composers over a dataset -----------------------------------------------------------------
def composer_from_dataset(
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
        **config: settings (see :data:`alldata.generators.overlap.DEFAULT_CONFIG`).

    Raises:
        GeneratorError: no usable donor or no background (the message says what to
            ingest), or generated donors asked for and none usable (with the reasons).

    Examples:
        >>> gen = composer_from_dataset("alldata", donor_sources=["all_idb2"])  # doctest: +SKIP
        >>> gen.compose_one(seed=0, index=0).instances  # doctest: +SKIP
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    cfg = OverlapComposer.check_config({**config, "dataset": dataset})
    donors, dfps = load_donor_records(_usable_view(_saved_view(ds, donors_view), ImageKind.cell, donor_sources))
    bgs, bfps = load_background_records(
        _usable_view(_saved_view(ds, backgrounds_view), ImageKind.smear, background_sources), cfg["rbc_px"]
    )
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
    cfg["pool_sha256"] = _pool_sha(donors, dfps, bgs, bfps)
    gen = OverlapComposer.from_records(donors, bgs, **cfg)
    gen.synthetic_rejected = dict(syn_rejected)
    gen.rejected.update(syn_rejected)
    return gen


def load_pool(composer: OverlapComposer) -> None:
    """Read ``composer``'s records by key from the dataset its config names and give them to it.

    Raises:
        GeneratorError: the composer names no pool, or its samples are gone or changed
            since it was saved (it would not reproduce its images).
    """
    from alldata.store import load_dataset

    cfg = composer.config
    if not cfg.get("dataset") or not cfg["donor_keys"] or not cfg["background_keys"]:
        raise GeneratorError("this composer has no donor or background pool; build it with composer_from_dataset")
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
            f"{cfg['dataset']!r}; rebuild it with composer_from_dataset"
        )
    if cfg.get("pool_sha256") and _pool_sha(donors, dfps, bgs, bfps) != cfg["pool_sha256"]:
        raise GeneratorError(
            f"the donor/background samples in {cfg['dataset']!r} changed since this composer was saved "
            "(re-ingested files or masks), so it would not reproduce its images; rebuild it with "
            "composer_from_dataset"
        )
    composer.set_pool(donors, bgs)


def load_composer(directory: str | Path) -> OverlapComposer:
    """The composer saved in ``directory``, with its pools read from its dataset (:func:`load_pool`)."""
    composer = OverlapComposer.from_pretrained(directory)
    load_pool(composer)
    return composer
