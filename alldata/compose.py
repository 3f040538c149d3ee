"""The overlap job: compose composites from a dataset's cells and add them to it (``alldata compose-overlaps``).

:func:`run_compose` builds an :class:`~alldata.generators.overlap.OverlapComposer` over the
dataset's pools (:mod:`alldata.overlap_pools`), saves it as a checkpoint beside the PNGs,
and adds composite ``i`` of ``seed`` as sample ``synthetic/overlap/<seed>_<i>`` with exact
instance masks and provenance, in batches, so an interrupted run resumes where it stopped.
:func:`plan_compose` says what a run would do without writing anything.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from alldata.generators.base import CONFIG_NAME, GeneratorError, checkpoint_sha256
from alldata.generators.overlap import DEFAULT_BACKGROUND_SOURCES, DEFAULT_DONOR_SOURCES, FAMILY, saved_config
from alldata.generators.overlap_records import Composite, rejection_counts
from alldata.overlap_pools import DEFAULT_SYNTHETIC_SEGMENTER, composer_from_dataset, load_composer
from alldata.schema import F, ImageKind, Provenance, Sample, SegMask
from alldata.synthetic import add_synthetic, make_synthetic_sample, synthetic_source

__all__ = [
    "SYNTHETIC_CELLS_FIELD",
    "ComposePlan",
    "ComposeReport",
    "compose_to_dataset",
    "composer_from_dataset",
    "load_composer",
    "plan_compose",
    "run_compose",
]

SOURCE = synthetic_source(FAMILY)
#: Composites made with generated donors record how many of their cells are generated here.
SYNTHETIC_CELLS_FIELD = "synthetic_cells"


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


def plan_compose(dataset: str, num_samples: int, out_dir: str | Path, seed: int = 0, **kwargs: Any) -> ComposePlan:
    """What :func:`run_compose` with the same arguments would make, reading the store only.

    ``kwargs``: the pool selection and settings of :func:`run_compose` (``progress`` and
    ``batch_size`` aside). Writes nothing, not even the generated cells' mask cache.
    """
    gen = composer_from_dataset(dataset, cache_masks=False, **kwargs)
    donors, bgs = gen.pool()
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
        config={k: v for k, v in saved_config(gen.config).items() if k not in ("donor_keys", "background_keys", "synthetic_donor_keys")},
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
    """Compose ``num_samples`` overlap images from ``dataset``'s cells into ``dataset``.

    PNGs go to ``out_dir/overlap_<seed>_<index>.png``; the composer's checkpoint
    (``config.json`` + empty ``model.safetensors``) is saved to ``out_dir`` first and its
    :func:`~alldata.generators.base.checkpoint_sha256` is recorded in every sample's
    provenance. Samples have source ``synthetic/overlap``, ``source_id`` ``<seed>_<index>``,
    ``image_kind`` smear, ``cells`` (instance boxes with visible masks; attributes
    ``donor_key`` and ``synthetic``), ``segmentation`` (annotator ``overlap``). With
    ``synthetic_donors`` generated cells are donors too (see
    :func:`~alldata.overlap_pools.synthetic_donor_view`) and each composite records how many
    of its cells are generated in :data:`SYNTHETIC_CELLS_FIELD`. Resumable: composites
    already in the dataset are skipped and not re-rendered; composites of the same seed made
    with another configuration are an error.

    Args:
        dataset: the FiftyOne dataset the pools come from and the composites go into.
        num_samples: composites wanted: indices ``0 .. num_samples - 1`` of ``seed``.
        out_dir: folder for the PNGs and the composer checkpoint.
        seed: composite ``i`` is drawn from ``(seed, i)`` alone.
        donor_sources, background_sources, donors_view, synthetic_donors, synthetic_segmenter:
            the pools, as for :func:`~alldata.overlap_pools.composer_from_dataset`.
        progress: show a progress bar.
        batch_size: samples added to the dataset at a time (what an interruption can lose).
        **config: composer settings (:data:`alldata.generators.overlap.DEFAULT_CONFIG`).

    Raises:
        GeneratorError: no usable pool, bad settings, or ``out_dir`` / the dataset holding
            composites of another configuration.
    """
    from tqdm import tqdm

    if seed < 0:
        raise GeneratorError(f"seed must be non-negative, got {seed}")
    gen = composer_from_dataset(
        dataset, donor_sources=donor_sources, background_sources=background_sources, donors_view=donors_view,
        synthetic_donors=synthetic_donors, synthetic_segmenter=synthetic_segmenter, **config
    )
    out = Path(out_dir)
    new_cfg = json.dumps(dict(saved_config(gen.config), family=FAMILY), indent=2, sort_keys=True)
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


def compose_to_dataset(dataset: str, num_samples: int, out_dir: str | Path, seed: int = 0, **kwargs: Any) -> int:
    """:func:`run_compose` with the same arguments; returns how many samples were added."""
    return run_compose(dataset, num_samples, out_dir, seed, **kwargs).added
