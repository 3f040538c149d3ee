"""Licence facts per source and the redistribution gate of ``export`` and ``publish``.

Each source gets a :class:`Licence` (a Hugging Face licence id, a ``redistribution`` status
``allowed`` / ``forbidden`` / ``unknown``, the terms, the citation) restating the loaders and
``../shared/data/SOURCES.md``; what they do not settle is ``unknown``, never a guess.
Synthetic samples inherit the most restrictive status of what they were made from, where
that is recorded (docs/curation.md#licences). :func:`check_redistribution` refuses every
source that is not ``allowed`` unless the user overrides it by name, and says which and why.

Examples:
    >>> licence_for("bccd").spdx, licence_for("bccd").redistribution, licence_for("all_idb2").redistribution
    ('mit', 'allowed', 'forbidden')
    >>> most_restrictive(["allowed", "unknown", "allowed"])
    'unknown'
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from alldata.errors import AlldataError

__all__ = [
    "ALLOWED",
    "FORBIDDEN",
    "LICENCES",
    "STATUSES",
    "UNKNOWN",
    "Licence",
    "LicenceError",
    "SampleTerms",
    "check_redistribution",
    "licence_for",
    "most_restrictive",
    "parse_trained_on",
    "sample_status",
    "source_of_key",
]

ALLOWED, UNKNOWN, FORBIDDEN = "allowed", "unknown", "forbidden"
#: Redistribution statuses, least to most restrictive.
STATUSES = (ALLOWED, UNKNOWN, FORBIDDEN)


class LicenceError(AlldataError, PermissionError):
    """Data whose terms do not allow redistribution, or a bad licence override."""


@dataclass(frozen=True)
class Licence:
    """What a source's terms say about copying it (``spdx`` is the Hub's ``license`` id)."""

    source: str
    spdx: str  # "mit", "cc-by-4.0", ... or "other"
    redistribution: str  # allowed / forbidden / unknown
    terms: str  # the terms in words, as the source states them
    citation: str
    homepage: str = ""
    license_name: str | None = None  # with spdx == "other": a slug for the terms
    notes: str = ""
    annotations: tuple[str, ...] = field(default_factory=tuple)  # extra label sets and their terms


_ALL_IDB_CITATION = (
    "R. Donida Labati, V. Piuri, F. Scotti, ALL-IDB: the acute lymphoblastic leukemia image database "
    "for image processing, IEEE ICIP 2011"
)

_BANIK = (
    "Nucleus/cytoplasm masks: P. P. Banik et al. (MIT); cite Banik, Saha, Kim, Expert Systems with Applications, 2020"
)
_IDB_POINTS = (
    "Blast/other-cell centroids: AngeloUNIMI/ALL-IDB-Patches (GPL-3.0) and "
    "AngeloUNIMI/i2mtc_2026_tutorial (no licence; 'research, teaching, and tutorial use')"
)

#: Licence facts of every registered source (keys are registry names).
LICENCES: dict[str, Licence] = {
    "all_idb1": Licence(
        "all_idb1", "other", FORBIDDEN,
        "ALL-IDB terms: research use on request from the University of Milan; cite the paper",
        _ALL_IDB_CITATION, "https://scotti.di.unimi.it/all/", "all-idb-research-use",
        "The copies here come from a third-party repository without a licence; ALL-IDB terms apply.",
        (
            _IDB_POINTS,
            "WBC/RBC instance masks: A. Loddo, L. Putzu (MIT); cite Loddo & Putzu, Applied Sciences 12(7):3269, 2022",
        ),
    ),
    "all_idb2": Licence(
        "all_idb2", "other", FORBIDDEN,
        "ALL-IDB terms: research use on request from the University of Milan; cite the paper",
        _ALL_IDB_CITATION, "https://scotti.di.unimi.it/all/", "all-idb-research-use",
        "ALL-IDB2 crops were cut from ALL-IDB1 smears.",
        (
            "Masks: L. Putzu, A. Loddo (MIT); cite Di Ruberto, Loddo, Putzu, Mach. Vis. Appl. 27(8), 2016",
            _BANIK,
        ),
    ),
    "bccd": Licence(
        "bccd", "mit", ALLOWED, "MIT (Copyright (c) 2017 shenggan)",
        "BCCD Dataset, Shenggan (2017), https://github.com/Shenggan/BCCD_Dataset",
        "https://github.com/Shenggan/BCCD_Dataset",
        notes="The repository credits the original data to cosmicad/dataset and akshaylamba/all_CELL_data.",
        annotations=(
            _BANIK,
        ),
    ),
    "bccd_wbc": Licence(
        "bccd_wbc", "other", UNKNOWN,
        "BCCD images are MIT; the crop repository (apple2373/BCCD) states no licence and its labels.csv "
        "comes from the Kaggle 'blood-cells' dataset, whose terms are not restated",
        "BCCD Dataset, Shenggan (2017); WBC crops from apple2373/BCCD", "https://github.com/apple2373/BCCD",
        "bccd-wbc-crops-unstated",
    ),
    "cnmc": Licence(
        "cnmc", "cc-by-3.0", ALLOWED, "CC BY 3.0 (as distributed by TCIA)",
        "A. Gupta, R. Gupta (eds.), ISBI 2019 C-NMC Challenge: Classification in Cancer Cell Imaging, "
        "data by SBILab, IIIT Delhi and AIIMS New Delhi",
        "https://www.cancerimagingarchive.net/collection/c-nmc-2019/",
        notes="Licence as quoted by a third-party description of the TCIA collection; confirm on TCIA.",
    ),
    "pbc": Licence(
        "pbc", "cc-by-4.0", ALLOWED, "CC BY 4.0 (Mendeley Data record snkd93bnjr/1)",
        "A. Acevedo et al., A dataset of microscopic peripheral blood cell images for development of "
        "automatic recognition systems, Data in Brief 30 (2020) 105474",
        "https://data.mendeley.com/datasets/snkd93bnjr/1",
        notes="The hosting repository of this copy restates no data licence; the Mendeley Data record's applies.",
    ),
    "taleqani": Licence(
        "taleqani", "other", UNKNOWN, "the Kaggle dataset's terms (not restated where this copy came from)",
        "M. Ghaderzadeh, M. Aria et al., A fast and efficient CNN model for B-ALL diagnosis and its "
        "subtypes classification using peripheral blood smear images, Int J Intell Syst 2022",
        "https://www.kaggle.com/datasets/mehradaria/leukemia", "kaggle-dataset-terms",
    ),
    "atlas": Licence(
        "atlas", "other", UNKNOWN, "the atlas' terms (usually research/teaching use; check the atlas' site)",
        "hematologyatlas.com / the atlas the images were taken from", "https://www.hematologyatlas.com/",
        "atlas-terms",
    ),
    "folder": Licence(
        "folder", "other", UNKNOWN, "as set by the data owner (not recorded)", "as set by the data owner",
        license_name="owner-terms",
    ),
}


def licence_for(source: str) -> Licence:
    """The :class:`Licence` of a real source; an unregistered name gets an ``unknown`` record.

    Synthetic sources (``synthetic/<family>``) have no licence of their own; see
    :func:`sample_status`.
    """
    if source in LICENCES:
        return LICENCES[source]
    return Licence(source, "other", UNKNOWN, "not recorded by alldata", "not recorded", license_name="unknown-terms")


def most_restrictive(statuses: Iterable[str]) -> str:
    """The most restrictive of ``statuses`` (``allowed`` for none)."""
    worst = 0
    for s in statuses:
        if s not in STATUSES:
            raise LicenceError(f"redistribution status {s!r} is not one of {', '.join(STATUSES)}")
        worst = max(worst, STATUSES.index(s))
    return STATUSES[worst]


def source_of_key(key: str) -> str:
    """The source of a sample key ``"<source>/<source_id>"`` (synthetic keys keep ``synthetic/<family>``)."""
    parts = key.split("/")
    return "/".join(parts[:2]) if parts[0] == "synthetic" and len(parts) > 2 else parts[0]


@dataclass(frozen=True)
class SampleTerms:
    """The redistribution status of one sample and what it rests on."""

    status: str
    inputs: tuple[str, ...]  # the sources it was made from ("" for a real sample: itself)
    basis: str  # "source", "recipe", "declared" or "not recorded"


def _recipe_sources(recipe: str | None) -> tuple[str, ...] | None:
    if not recipe:
        return None
    try:
        r = json.loads(recipe)
    except (TypeError, ValueError):
        return None
    keys = [c.get("donor") for c in r.get("cells", []) if isinstance(c, dict)]
    bg = r.get("background") or {}
    if isinstance(bg, dict):
        keys.append(bg.get("key"))
    if not keys or any(not isinstance(k, str) for k in keys):
        return None
    return tuple(sorted({source_of_key(k) for k in keys}))


def sample_status(
    source: str,
    *,
    generator: str | None = None,
    recipe: str | None = None,
    trained_on: Mapping[str, Iterable[str]] | None = None,
) -> SampleTerms:
    """Redistribution status of a sample of ``source``.

    A real sample has its source's status. A synthetic one inherits the most restrictive
    status of its inputs: the donor and background keys of its ``recipe`` (overlap
    composites), else the sources declared for its generator in ``trained_on``; with
    neither it is ``unknown``.

    Examples:
        >>> sample_status("bccd").status
        'allowed'
        >>> rec = '{"background": {"key": "bccd/B1"}, "cells": [{"donor": "all_idb2/Im001_1"}]}'
        >>> sample_status("synthetic/overlap", generator="overlap", recipe=rec).status
        'forbidden'
        >>> sample_status("synthetic/gan", generator="gan").status
        'unknown'
        >>> sample_status("synthetic/gan", generator="gan", trained_on={"gan": ["pbc"]}).status
        'allowed'
    """
    if not source.startswith("synthetic/"):
        return SampleTerms(licence_for(source).redistribution, (source,), "source")
    inputs = _recipe_sources(recipe)
    basis = "recipe"
    if inputs is None and trained_on and generator in trained_on:
        inputs, basis = tuple(sorted(set(trained_on[generator]))), "declared"
    if not inputs:
        return SampleTerms(UNKNOWN, (), "not recorded")
    status = most_restrictive(sample_status(s).status for s in inputs if not s.startswith("synthetic/"))
    if any(s.startswith("synthetic/") for s in inputs):  # composed from synthetic cells: their inputs are unknown here
        status = most_restrictive([status, UNKNOWN])
    return SampleTerms(status, inputs, basis)


def parse_trained_on(items: Iterable[str]) -> dict[str, list[str]]:
    """``["gan=pbc,bccd_wbc", ...]`` -> ``{"gan": ["pbc", "bccd_wbc"]}`` (a user's declaration).

    Examples:
        >>> parse_trained_on(["gan=pbc,bccd_wbc"])
        {'gan': ['pbc', 'bccd_wbc']}
    """
    out: dict[str, list[str]] = {}
    for item in items:
        gen, sep, srcs = item.partition("=")
        names = [s.strip() for s in srcs.split(",") if s.strip()]
        if not sep or not gen.strip() or not names:
            raise LicenceError(
                f"--trained-on {item!r} is not GENERATOR=SOURCE[,SOURCE...]; e.g. --trained-on gan=taleqani,pbc"
            )
        out.setdefault(gen.strip(), []).extend(names)
    return out


def check_redistribution(by_source: Mapping[str, tuple[str, int]], override: Iterable[str] = ()) -> dict[str, str]:
    """Refuse the sources that may not be redistributed, unless each is named in ``override``.

    Args:
        by_source: ``{source: (status, sample count)}`` of what would be copied.
        override: sources the user explicitly takes responsibility for (``--override-licence``).

    Returns:
        ``{source: status}`` of the sources passed only because of the override.

    Raises:
        LicenceError: some source is ``forbidden`` or ``unknown`` and not overridden, or an
            override names a source that is not in the selection.
    """
    override = set(override)
    stray = sorted(override - set(by_source))
    if stray:
        raise LicenceError(
            f"--override-licence names {', '.join(stray)}, which is not in the selection; "
            f"sources selected: {', '.join(sorted(by_source)) or '(none)'}"
        )
    blocked = {s: v for s, v in sorted(by_source.items()) if v[0] != ALLOWED and s not in override}
    if blocked:
        lines = []
        for s, (status, n) in blocked.items():
            terms = licence_for(s).terms if not s.startswith("synthetic/") else "inherits the terms of its inputs"
            lines.append(f"  {s} ({n} samples): redistribution {status}: {terms}")
        raise LicenceError(
            "refusing to redistribute sources whose terms forbid it or are unknown:\n"
            + "\n".join(lines)
            + "\nFix: leave them out (--sources / --exclude-sources), or, if you hold the right to redistribute "
            "them, pass --override-licence SOURCE for each (the card records the override)."
        )
    return {s: v[0] for s, v in sorted(by_source.items()) if v[0] != ALLOWED}
