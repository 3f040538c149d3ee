"""Overlapping-cell composites with exact labels: real cells pasted onto real smear crops.

The pure compositor. :class:`OverlapComposer` takes donor and background records
(:mod:`alldata.generators.overlap_records`), cuts each donor's cell out with its mask,
pastes several onto a crop of a smear at a controlled overlap with a feathered edge and a
per-cell stain jitter (:mod:`alldata.generators.image_ops`), and records which pixel
belongs to which pasted cell. Composite ``i`` of seed ``s`` is drawn from
``numpy.random.default_rng([s, i])`` alone. Nothing here reads a dataset: pools are read
from FiftyOne and composites written back by the job, :mod:`alldata.compose`.
Design notes (donor rules, scale, placement, generated donors): docs/overlap.md.
"""

from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from alldata.generators.base import CONFIG_NAME, GENERATORS, WEIGHTS_NAME, Generator, GeneratorError
from alldata.generators.image_ops import (
    feather_alpha,
    hed_jitter,
    largest_component,
    nearest_fill,
    plasma_colour,
    read_rgb,
)
from alldata.generators.overlap_placement import PlacedCell, covered, pair_overlaps, paste, place, visible_instances
from alldata.generators.overlap_records import (
    BackgroundRecord,
    Composite,
    Donor,
    DonorRecord,
    Instance,
    PairOverlap,
    prepare_donor,
)
from PIL import Image
from scipy import ndimage
from skimage.measure import regionprops

__all__ = [
    "DEFAULT_BACKGROUND_SOURCES",
    "DEFAULT_CONFIG",
    "DEFAULT_DONOR_SOURCES",
    "FAMILY",
    "RBC_PX",
    "BackgroundRecord",
    "Composite",
    "Donor",
    "DonorRecord",
    "Instance",
    "OverlapComposer",
    "PairOverlap",
    "saved_config",
]

FAMILY = "overlap"
DEFAULT_DONOR_SOURCES = ("all_idb2", "taleqani")
DEFAULT_BACKGROUND_SOURCES = ("bccd", "all_idb1")
#: Red-cell diameter in each source's pixels (the pixel scale; see docs/overlap.md).
#: ``pbc``: the median equivalent diameter (73.5 px, IQR 67-102) of 33 red cells found in the first 10
#: lymphocyte + 10 neutrophil PBC images (Otsu threshold on the green channel, holes filled, regions
#: off the border with eccentricity <= 0.6 and solidity >= 0.93; skimage regionprops), checked by eye.
RBC_PX: dict[str, float] = {"all_idb2": 70.0, "all_idb1": 72.0, "bccd": 100.0, "taleqani": 25.0, "cnmc": 150.0,
                            "pbc": 74.0}

DEFAULT_CONFIG: dict[str, Any] = {
    "output_size": 256,
    "cells_per_image": [2, 4],
    "overlap_range": [0.1, 0.5],
    "scale_range": [0.9, 1.1],
    "rbc_diameter": 0.2,  # red-cell diameter as a fraction of output_size
    "cell_diameter_range": [1.0, 2.2],  # pasted cells' diameters are clamped to this, in red-cell diameters
    "stain_jitter": 0.05,  # HED: per-stain factor 1 +- s and shift +- s (optical density)
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
    "synthetic_donors": None,  # which generated cells may be donors (None: none; see docs/overlap.md)
    "synthetic_segmenter": None,  # {"name": ..., "params": {...}} giving their masks
    "synthetic_donor_keys": [],  # the donor_keys that are generated cells
}
#: Config keys left out of a saved config when no generated donors are used (older
#: checkpoints, and their sha256, stay exactly as they were).
_SYNTHETIC_KEYS = ("synthetic_donors", "synthetic_segmenter", "synthetic_donor_keys")
#: Pool keys a ``sample`` condition may not override.
_POOL_KEYS = {"dataset", "donor_keys", "background_keys", "pool_sha256", *_SYNTHETIC_KEYS}


# --- config -------------------------------------------------------------------------------
def _pair(value: Any, name: str, kind: type = float) -> list:
    try:
        lo, hi = (kind(v) for v in value)
    except (TypeError, ValueError):
        raise GeneratorError(f"{name} must be a pair [low, high], got {value!r}") from None
    if not lo <= hi:  # also NaN
        raise GeneratorError(f"{name} = {[lo, hi]}: low must not exceed high")
    return [lo, hi]


def saved_config(cfg: dict[str, Any]) -> dict[str, Any]:
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


# --- the composer -------------------------------------------------------------------------
@GENERATORS.register(FAMILY)
class OverlapComposer(Generator):
    """Composes real cells onto real smear crops with controlled overlap (see the module doc).

    Build one over records with :meth:`from_records` (or from a FiftyOne dataset with
    :func:`alldata.compose.composer_from_dataset`); :meth:`compose` makes :class:`Composite`
    records, :meth:`sample` just their images (the generator contract). The checkpoint is
    ``config.json`` (settings, donor and background keys, a fingerprint of their records)
    beside an empty ``model.safetensors``: there are no weights, but
    :func:`~alldata.generators.base.checkpoint_sha256` works as for every family. A loaded
    checkpoint holds no pool until :meth:`set_pool` (:func:`alldata.compose.load_composer`
    reads it from the dataset).

    Examples:
        >>> gen = OverlapComposer.from_records(donors, backgrounds, output_size=128)  # doctest: +SKIP
        >>> c = gen.compose_one(seed=0, index=0)  # doctest: +SKIP
        >>> c.image.shape, [i.donor_key for i in c.instances]  # doctest: +SKIP
    """

    family: ClassVar[str] = FAMILY
    DEFAULTS: ClassVar[dict[str, Any]] = DEFAULT_CONFIG
    cache_size: ClassVar[int] = 512  # prepared donors kept in memory
    background_cache_size: ClassVar[int] = 4  # decoded backgrounds kept in memory

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(self.check_config(config))
        self._donors: list[DonorRecord] | None = None
        self._backgrounds: list[BackgroundRecord] | None = None
        self._prepared: OrderedDict[str, Donor] = OrderedDict()
        self._bg_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._crops: dict[int, tuple[int, np.ndarray, bool | None]] = {}
        self._donor_index: dict[str, list[int]] | None = None
        #: donors that could not be used, and why (filled as they are drawn)
        self.rejected: dict[str, str] = {}
        #: generated cells refused as donors when the pool was loaded, and why (set by the loader)
        self.synthetic_rejected: dict[str, str] = {}

    # --- config -------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: dict[str, Any]) -> dict[str, Any]:
        """``cfg`` with :data:`DEFAULT_CONFIG` filled in, as JSON-ready values, every value checked.

        Raises:
            GeneratorError: an unknown key or a bad value (the message names it and what is allowed).
        """
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
            raise GeneratorError("synthetic_donor_keys need synthetic_donors and synthetic_segmenter (build with alldata.compose.composer_from_dataset)")
        if set(out["synthetic_donor_keys"]) - set(out["donor_keys"]):
            raise GeneratorError("synthetic_donor_keys must be a subset of donor_keys")
        return out

    # --- construction and pools ---------------------------------------------------------
    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> OverlapComposer:
        return cls(config)

    @classmethod
    def from_records(
        cls, donors: Sequence[DonorRecord], backgrounds: Sequence[BackgroundRecord], **config: Any
    ) -> OverlapComposer:
        """A composer over these pools; draws index into them in the order given.

        Args:
            donors: donor cells (every real donor's source needs a pixel scale in ``rbc_px``).
            backgrounds: smears to crop.
            **config: settings (see :data:`DEFAULT_CONFIG`); ``donor_keys`` and
                ``background_keys`` are set from the records.

        Raises:
            GeneratorError: an empty pool, a bad setting, or a source without a pixel scale.
        """
        donors, backgrounds = list(donors), list(backgrounds)
        if not donors or not backgrounds:
            raise GeneratorError(
                "an overlap composer needs at least one donor and one background, "
                f"got {len(donors)} and {len(backgrounds)}"
            )
        cfg = {**config, "donor_keys": [r.key for r in donors], "background_keys": [r.key for r in backgrounds]}
        rbc_px = cls.check_config(cfg)["rbc_px"]
        sources = {r.source for r in donors if not r.synthetic} | {r.source for r in backgrounds}
        missing = sorted(sources - set(rbc_px))
        if missing:
            raise GeneratorError(
                f"no pixel scale (red-cell diameter in pixels) for source(s) {missing}; "
                f"pass rbc_px={{'{missing[0]}': <pixels>, ...}} in the config (known: {sorted(rbc_px)})"
            )
        gen = cls(cfg)
        gen.set_pool(donors, backgrounds)
        return gen

    def set_pool(self, donors: Sequence[DonorRecord], backgrounds: Sequence[BackgroundRecord]) -> None:
        """Give this composer its records: exactly those of ``donor_keys`` / ``background_keys``, in order."""
        donors, backgrounds = list(donors), list(backgrounds)
        keys = ([r.key for r in donors], [r.key for r in backgrounds])
        if keys != (self.config["donor_keys"], self.config["background_keys"]):
            raise GeneratorError(
                "these records are not this composer's pool: their keys differ from its donor_keys / "
                "background_keys (build a new composer with OverlapComposer.from_records)"
            )
        self._donors, self._backgrounds = donors, backgrounds
        self._donor_index = None
        self._crops = {}

    def pool(self) -> tuple[list[DonorRecord], list[BackgroundRecord]]:
        """The donor and background records.

        Raises:
            GeneratorError: none set yet (a composer loaded from a checkpoint); says how to load them.
        """
        if self._donors is None or self._backgrounds is None:
            where = f" (its cells are in dataset {self.config['dataset']!r})" if self.config.get("dataset") else ""
            raise GeneratorError(
                f"this overlap composer has no donor/background pool loaded{where}: load a saved one with "
                "alldata.compose.load_composer(directory) or `alldata compose-overlaps`, or give it records "
                "with OverlapComposer.from_records / set_pool"
            )
        return self._donors, self._backgrounds

    # --- checkpoint ---------------------------------------------------------------------
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
        cfg = dict(saved_config(self.config), family=self.family)
        tmp = d / (CONFIG_NAME + ".tmp")
        tmp.write_text(json.dumps(cfg, indent=2, sort_keys=True))
        tmp.replace(d / CONFIG_NAME)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> OverlapComposer:
        """Load a composer saved by :meth:`save_pretrained`, without its pool (see :meth:`set_pool`)."""
        d = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (d / name).is_file():
                raise GeneratorError(f"{d} is not a checkpoint: {name} is missing")
        cfg = json.loads((d / CONFIG_NAME).read_text())
        family = cfg.pop("family", FAMILY)
        if family != FAMILY:
            raise GeneratorError(f"{d} holds a {family!r} checkpoint, not an overlap composer")
        return cls(cfg)

    # --- the generator contract ---------------------------------------------------------
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
            gen.set_pool(*self.pool())
            gen.synthetic_rejected = dict(self.synthetic_rejected)
        s = gen.config["output_size"]
        if num_samples <= 0:
            return np.zeros((0, s, s, 3), np.uint8)
        return np.stack([c.image for c in gen.compose(num_samples, seed)])

    def compose(self, num_samples: int, seed: int, *, start: int = 0) -> list[Composite]:
        """Composites ``start .. start + num_samples - 1`` of ``seed`` (each independent of the others)."""
        return [self.compose_one(seed, i) for i in range(start, start + num_samples)]

    # --- donors ---------------------------------------------------------------------------
    def donor(self, rec: DonorRecord) -> Donor | None:
        """The prepared donor of ``rec`` (cached), or None when it is rejected."""
        if rec.key in self.rejected:
            return None
        d = self._prepared.get(rec.key)
        if d is not None:
            self._prepared.move_to_end(rec.key)
            return d
        try:
            out = prepare_donor(rec, self.config["rbc_px"].get(rec.source))
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
            donors, _ = self.pool()
            index: dict[str, list[int]] = {}
            for i, r in enumerate(donors):
                index.setdefault(r.source, []).append(i)
            self._donor_index = dict(sorted(index.items()))
        return self._donor_index

    def _draw_donor(self, rng: np.random.Generator) -> Donor:
        donors, _ = self.pool()
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

    def _transform(self, donor: Donor, rng: np.random.Generator, plasma: np.ndarray | None = None) -> PlacedCell:
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
        mask = largest_component(mask)
        image = np.stack([warp(donor.image[..., c], 1) for c in range(3)], axis=-1)
        image = nearest_fill(np.clip(image, 0, 255), mask)
        if cfg["match_illumination"] and plasma is not None and donor.plasma is not None:
            gain = np.clip(plasma / np.maximum(donor.plasma, 1.0), 0.5, 2.0).astype(np.float32)
            image = np.clip(image * gain, 0, 255)
        image = hed_jitter(image, rng, cfg["stain_jitter"])
        if donor.classes is not None:
            classes = warp(donor.classes, 0)
            classes = np.where(mask, np.maximum(classes, 1), 0).astype(np.uint8)
        else:
            classes = mask.astype(np.uint8)
        cell = regionprops(mask.astype(np.uint8))[0]
        r0, c0, r1, c1 = cell.bbox
        cy, cx = (float(v) for v in cell.centroid)
        ys, xs = cell.coords.T
        radius = float(np.sqrt(((ys - cy) ** 2 + (xs - cx) ** 2).max())) + 1.0
        return PlacedCell(
            donor, image.astype(np.float32), feather_alpha(mask, cfg["feather"]), mask, classes,
            (int(r0), int(r1), int(c0), int(c1)), (cy, cx), radius, int(cell.area),
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
        _, bgs = self.pool()
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
        _, bgs = self.pool()
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
            img = read_rgb(bg.filepath)
            if img.shape[:2] != (bg.height, bg.width):
                raise GeneratorError(f"{bg.filepath}: image is {img.shape[1]}x{img.shape[0]}, its record says {bg.width}x{bg.height}")
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

    def compose_one(self, seed: int, index: int) -> Composite:
        """Composite ``index`` of ``seed``: drawn from ``default_rng([seed, index])`` alone."""
        if seed < 0 or index < 0:
            raise GeneratorError(f"seed and index must be non-negative, got seed={seed}, index={index}")
        cfg = self.config
        s = cfg["output_size"]
        rng = np.random.default_rng([seed, index])
        canvas, bg_info = self._background(rng)
        plasma = plasma_colour(canvas, np.ones(canvas.shape[:2], bool))
        n_cells = int(rng.integers(cfg["cells_per_image"][0], cfg["cells_per_image"][1] + 1))
        owner = np.zeros((s, s), np.int64)  # 1 + paste order of the cell on top, 0 background
        semantic = np.zeros((s, s), np.uint8)
        placed: list[PlacedCell] = []
        visible: list[int] = []
        controlled: dict[tuple[int, int], tuple[float, bool]] = {}
        dropped = 0
        for _ in range(n_cells):
            cell = self._transform(self._draw_donor(rng), rng, plasma)
            where = place(
                cell, placed, visible, owner, rng,
                overlap_range=cfg["overlap_range"], max_tries=cfg["max_tries"], min_visible=cfg["min_visible"],
            )
            if where is None:
                dropped += 1
                continue
            y, x, anchor, target, _, ok = where
            cell.y, cell.x = y, x
            hidden = covered(owner, cell, y, x, len(placed))
            visible = [v - int(c) for v, c in zip(visible, hidden)]
            k = len(placed)
            placed.append(cell)
            visible.append(cell.area)
            if anchor is not None:
                controlled[(anchor, k)] = (float(target), ok)
            paste(canvas, owner, semantic, cell, k)
        instances = visible_instances(owner, placed)
        overlaps = pair_overlaps(placed, controlled)
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


