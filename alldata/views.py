"""alldata's saved views: the review queues and slices the FiftyOne App opens on.

:func:`build_views` (re)creates every view whose name starts with :data:`PREFIX`
(``alldata-``) and leaves views a user saved under other names alone; re-running replaces
alldata's views (stale ones are deleted), so it is idempotent. ``alldata app`` runs it
before serving; ``alldata views NAME`` runs it on its own. The views: real, synthetic, per
source, per generator and condition, duplicates, label conflicts between duplicates
(:mod:`alldata.curation`) and cross-source duplicates, split leaks,
likely copies next to their nearest real sample, near duplicates, model mistakes per
``pred_*`` field (:func:`truth_of`) and rejected samples (:mod:`alldata.curation`).

Views built from values (leaks, cross-source duplicates, likely-copy partners) hold the keys
they were built from: rebuild after re-splitting or re-scoring; tag- and label-based ones
follow App edits at once. Every view by name: docs/curation.md#saved-views.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alldata.curation import LABEL_CONFLICT_TAG, REJECT_TAG
from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "PREDICTION_PREFIX",
    "PREFIX",
    "TRUTH_ATTRIBUTE",
    "ViewError",
    "ViewsReport",
    "alldata_view_names",
    "build_views",
    "parse_truth",
    "truth_of",
    "view_slug",
]

#: Name prefix of every saved view alldata owns (and replaces on each build).
PREFIX = "alldata-"
#: Prediction fields the mistakes views look at: Classification fields named ``pred_*``.
PREDICTION_PREFIX = "pred_"
#: Attribute of a prediction ``fo.Classification`` naming the truth field it predicts.
TRUTH_ATTRIBUTE = "truth_field"

# fields written by other commands (alldata.score, alldata.embeddings), read here
_TAG_MEMORISED = "memorised"
_NN_REAL_KEY = "nn_real_key"
_TAG_NEAR_DUPLICATE = "near_duplicate"
_NEAR_DUPLICATE_OF = "near_duplicate_of"
#: provenance keys that vary per batch, not per condition
_BATCH_KEYS = ("batch_index",)

_RED, _ORANGE, _BLUE, _GREEN, _GREY = "#D32F2F", "#F57C00", "#1976D2", "#388E3C", "#757575"


class ViewError(AlldataError, ValueError):
    """A bad ``--truth`` mapping or a view name alldata cannot save."""


@dataclass
class ViewsReport:
    """What :func:`build_views` did: ``views`` maps each saved name to its sample count."""

    views: dict[str, int] = field(default_factory=dict)
    slugs: dict[str, str] = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def view_slug(name: str) -> str:
    """The URL slug FiftyOne gives a saved view (``/datasets/DS?view=SLUG``).

    Examples:
        >>> view_slug("alldata-source-bccd_wbc")
        'alldata-source-bccd-wbc'
    """
    import fiftyone.core.utils as fou

    return fou.to_slug(name)


def _name(*parts: str) -> str:
    """``alldata-`` + parts joined by ``-``, with anything but letters, digits, ``_ = . -`` as ``-``."""
    return PREFIX + "-".join(re.sub(r"[^A-Za-z0-9_=.-]+", "-", p).strip("-") for p in parts)


def alldata_view_names(ds: fo.Dataset) -> list[str]:
    """Names of the saved views of ``ds`` that alldata owns (prefix :data:`PREFIX`)."""
    return [n for n in ds.list_saved_views() if n.startswith(PREFIX)]


def parse_truth(items: list[str] | None) -> dict[str, str]:
    """``["pred_svm=cell_type", ...]`` -> ``{"pred_svm": "cell_type"}`` (the CLI's ``--truth``).

    Examples:
        >>> parse_truth(["pred_svm=cell_type"])
        {'pred_svm': 'cell_type'}
    """
    out: dict[str, str] = {}
    for item in items or []:
        pred, sep, truth = (s.strip() for s in item.partition("="))
        if not sep or not pred or not truth:
            raise ViewError(f"--truth {item!r} is not PRED_FIELD=TRUTH_FIELD; fix: e.g. --truth pred_svm=cell_type")
        out[pred] = truth
    return out


def truth_of(ds: fo.Dataset, pred_field: str, truth: Mapping[str, str] | None = None) -> list[str]:
    """The truth field(s) a prediction field is compared with, first rule that applies:

    1. ``truth[pred_field]`` (``alldata views --truth pred_x=cell_type``);
    2. the distinct values of the predictions' ``truth_field`` attribute (what
       ``alldata benchmark`` writes: ``fo.Classification(label=..., truth_field="cell_type")``);
    3. the longest Classification field ``T`` with ``pred_field`` starting ``pred_T``
       (``pred_cell_type_svm`` -> ``cell_type``).

    Returns an empty list when none applies.
    """
    import fiftyone as fo

    if truth and pred_field in truth:
        return [truth[pred_field]]
    attr = ds.distinct(f"{pred_field}.{TRUTH_ATTRIBUTE}") if ds.has_field(f"{pred_field}.{TRUTH_ATTRIBUTE}") else []
    if not attr:  # dynamic attributes are only in the schema once declared; ask the data
        attr = [v for v in ds.exists(pred_field).values(f"{pred_field}.{TRUTH_ATTRIBUTE}") if v]
    if attr:
        return sorted(set(attr))
    classif = [n for n in ds.get_field_schema(embedded_doc_type=fo.Classification) if not n.startswith(PREDICTION_PREFIX)]
    named = [n for n in classif if pred_field == f"{PREDICTION_PREFIX}{n}" or pred_field.startswith(f"{PREDICTION_PREFIX}{n}_")]
    return [max(named, key=len)] if named else []


def _mistakes(ds: fo.Dataset, pred: str, truths: list[str]) -> Any:
    from fiftyone import ViewField as FF

    label = FF(f"{pred}.label")
    if len(truths) == 1:
        t = truths[0]
        return ds.exists(pred).exists(t).match(label != FF(f"{t}.label"))
    # per-sample truth field: compare with the field each prediction names
    cond = None
    for t in truths:
        one = (FF(f"{pred}.{TRUTH_ATTRIBUTE}") == t) & (FF(f"{t}.label") != None) & (label != FF(f"{t}.label"))
        cond = one if cond is None else cond | one
    return ds.exists(pred).match(cond)


def _pairs_sort(partner_field: str, tag: str) -> Any:
    """Sort key putting each tagged sample right after the sample its ``partner_field`` names."""
    from fiftyone import ViewField as FF

    return FF("tags").contains(tag).if_else(
        FF(partner_field).concat("|1|", FF(F.KEY)), FF(F.KEY).concat("|0")
    )


def _pairs_view(ds: fo.Dataset, tag: str, partner_field: str) -> Any:
    from fiftyone import ViewField as FF

    tagged = ds.match_tags(tag)
    partners = sorted({k for k in tagged.values(partner_field) if k}) if ds.has_field(partner_field) else []
    view = ds.match(FF("tags").contains(tag) | FF(F.KEY).is_in(partners))
    return view.sort_by(_pairs_sort(partner_field, tag)) if partners else view


def _leaks(ds: fo.Dataset) -> Any:
    from fiftyone import ViewField as FF

    groups, subjects, hashes, splits = ds.values([F.GROUP_ID, F.SUBJECT_ID, F.SHA256, F.SPLIT])
    leaking: dict[str, set[str]] = {}
    for name, keys in ((F.GROUP_ID, groups), (F.SUBJECT_ID, subjects), (F.SHA256, hashes)):
        seen: dict[str, set[str]] = defaultdict(set)
        for k, s in zip(keys, splits):
            if k and s:
                seen[k].add(s)
        leaking[name] = {k for k, v in seen.items() if len(v) > 1}
    cond = FF(F.GROUP_ID).is_in(sorted(leaking[F.GROUP_ID]))
    cond = cond | FF(F.SUBJECT_ID).is_in(sorted(leaking[F.SUBJECT_ID])) | FF(F.SHA256).is_in(sorted(leaking[F.SHA256]))
    return ds.match(cond).sort_by(F.GROUP_ID)


def _cross_source(ds: fo.Dataset) -> Any:
    from fiftyone import ViewField as FF

    dups = ds.match_tags(F.TAG_DUPLICATE)
    sources: dict[str, set[str]] = defaultdict(set)
    for h, s in zip(*dups.values([F.SHA256, F.SOURCE])):
        sources[h].add(s)
    hashes = sorted(h for h, v in sources.items() if len(v) > 1)
    return dups.match(FF(F.SHA256).is_in(hashes)).sort_by(F.SHA256)


def _condition_key(text: str | None) -> str | None:
    """``'{"batch_index": 3, "cell_type": "lymphoblast"}'`` -> ``'cell_type=lymphoblast'``."""
    if not text:
        return None
    try:
        cond = json.loads(text)
    except ValueError:
        return text
    if not isinstance(cond, dict):
        return text
    return ",".join(f"{k}={cond[k]}" for k in sorted(cond) if k not in _BATCH_KEYS) or "unconditional"


def _generator_views(ds: fo.Dataset) -> list[tuple[str, Any, str]]:
    from fiftyone import ViewField as FF

    syn = ds.match({F.IS_SYNTHETIC: True})
    out = []
    by_cond: dict[tuple[str, str], list[str]] = defaultdict(list)
    for gen, cond in set(zip(*syn.values([F.GENERATOR, F.CONDITION]))):
        if gen and cond:
            by_cond[(gen, _condition_key(cond) or "")].append(cond)
    for gen in sorted({g for g in syn.distinct(F.GENERATOR) if g}):
        out.append((_name("generator", gen), syn.match({F.GENERATOR: gen}), f"synthetic samples of the {gen} generator"))
        conds = sorted(c for g, c in by_cond if g == gen)
        if len(conds) > 1 or (conds and conds[0] != "unconditional"):
            for c in conds:
                view = syn.match({F.GENERATOR: gen}).match(FF(F.CONDITION).is_in(sorted(by_cond[(gen, c)])))
                out.append((_name("generator", gen, c), view, f"{gen} samples generated with condition {c}"))
    return out


def _definitions(ds: fo.Dataset, truth: Mapping[str, str] | None, skipped: dict[str, str]) -> list[tuple[str, Any, str, str]]:
    """(name, view, description, colour) of every view alldata saves on ``ds``."""
    import fiftyone as fo

    is_syn = {F.IS_SYNTHETIC: True}
    defs: list[tuple[str, Any, str, str]] = [
        (_name("real"), ds.match({F.IS_SYNTHETIC: {"$ne": True}}), "real (ingested) samples", _BLUE),
        (_name("synthetic"), ds.match(is_syn), "synthetic samples (tag synthetic), any generator", _GREEN),
    ]
    for src in sorted(s for s in ds.distinct(F.SOURCE) if s):
        defs.append((_name("source", src), ds.match({F.SOURCE: src}), f"samples of source {src}", _GREY))
    defs += [(n, v, d, _GREEN) for n, v, d in _generator_views(ds)]
    defs += [
        (_name("duplicates"), ds.match_tags(F.TAG_DUPLICATE).sort_by(F.SHA256),
         "byte-identical files (tag duplicate); copies adjacent, duplicate_of names the kept one", _ORANGE),
        (_name("label-conflicts"), ds.match_tags(LABEL_CONFLICT_TAG).sort_by(F.SHA256),
         f"byte-identical files whose labels disagree (tag {LABEL_CONFLICT_TAG}); copies adjacent; fix one label",
         _RED),
        (_name("cross-source-duplicates"), _cross_source(ds),
         "byte-identical files found in two or more sources; copies adjacent", _ORANGE),
        (_name("split-leaks"), _leaks(ds),
         "samples whose group_id, subject_id or sha256 is in more than one split (should be empty)", _RED),
        (_name("likely-copies"), _pairs_view(ds, _TAG_MEMORISED, _NN_REAL_KEY),
         "synthetic samples tagged memorised by `alldata score`, each after its nearest real sample", _RED),
        (_name("near-duplicates"), _pairs_view(ds, _TAG_NEAR_DUPLICATE, _NEAR_DUPLICATE_OF),
         "tagged near_duplicate by `alldata embed`, each after the sample it nearly duplicates", _ORANGE),
        (_name("rejected"), ds.match_tags(REJECT_TAG),
         f"tagged {REJECT_TAG!r} in the App: left out of mix, benchmark, card, export and publish", _RED),
    ]
    preds = sorted(n for n in ds.get_field_schema(embedded_doc_type=fo.Classification) if n.startswith(PREDICTION_PREFIX))
    for extra in sorted(set(truth or {}) - set(preds)):
        skipped[_name("mistakes", extra)] = f"--truth names {extra!r}, which is not a Classification field of {ds.name!r}"
    for pred in preds:
        truths = truth_of(ds, pred, truth)
        bad = [t for t in truths if not ds.has_field(t)]
        name = _name("mistakes", pred)
        if not truths or bad:
            why = f"truth field(s) {bad} not in the dataset" if bad else "no truth field known"
            skipped[name] = (
                f"{pred}: {why}; give the predictions a {TRUTH_ATTRIBUTE!r} attribute or pass --truth {pred}=FIELD"
            )
            continue
        defs.append((name, _mistakes(ds, pred, truths), f"{pred} disagrees with {' / '.join(truths)}", _RED))
    return defs


def build_views(dataset: str | fo.Dataset, truth: Mapping[str, str] | None = None) -> ViewsReport:
    """(Re)create alldata's saved views on ``dataset``; others' views are left alone.

    Args:
        dataset: a dataset or its name.
        truth: ``{pred_field: truth_field}`` for prediction fields whose truth field is not
            recorded on the predictions (see :func:`truth_of`).

    Returns:
        a :class:`ViewsReport`: counts per view, slugs, deleted stale views, skipped ones.

    Raises:
        ViewError: a view name whose URL slug is taken by a user's saved view.

    Examples:
        >>> r = build_views("alldata")  # doctest: +SKIP
        >>> r.views["alldata-real"]  # doctest: +SKIP
        2890
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    report = ViewsReport()
    defs = _definitions(ds, truth, report.skipped)
    names = {n for n, *_ in defs}
    if len(names) != len(defs):
        raise ViewError(f"two alldata views got the same name on {ds.name!r}; names: {sorted(n for n, *_ in defs)}")
    for old in alldata_view_names(ds):
        if old not in names:
            ds.delete_saved_view(old)
            report.deleted.append(old)
    mine = set(alldata_view_names(ds))
    theirs = {view_slug(n): n for n in ds.list_saved_views() if n not in mine}
    for name, view, description, color in defs:
        slug = view_slug(name)
        if slug in theirs:
            raise ViewError(
                f"alldata's view {name!r} has URL slug {slug!r}, already used by the saved view {theirs[slug]!r} "
                f"of {ds.name!r}; rename that view (names starting {PREFIX!r} are reserved for alldata)"
            )
        ds.save_view(name, view, description=description, color=color, overwrite=True)
        report.views[name] = len(view)
        report.slugs[name] = slug
    return report
