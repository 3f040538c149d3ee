"""Curation decisions made in the FiftyOne App, respected by every consumer.

A curator tags a sample ``reject`` in the App to take it out of everything alldata builds
from the dataset (``mix``, ``benchmark``, ``card``, ``export``, ``publish``); a label
corrected in the App is simply the field's new value, so consumers that read the field see
the correction. :func:`curated` is the one place that applies the tag. The round trip in
the App, step by step: docs/curation.md#curation-in-the-app.

Examples:
    >>> REJECT_TAG
    'reject'
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from alldata.reports import IngestReport, LabelConflict, LabelCopy
from alldata.schema import F
from alldata.sources.base import Problem

__all__ = [
    "LABEL_CONFLICT_TAG",
    "REJECT_TAG",
    "audit_duplicates",
    "curated",
    "find_label_conflicts",
    "rejected_count",
    "repeated_files",
    "tag_label_conflicts",
]

#: The sample tag that excludes a sample from mixes, benchmarks, cards and exports.
REJECT_TAG = "reject"
#: The tag on every copy of byte-identical files whose labels disagree (view alldata-label-conflicts).
LABEL_CONFLICT_TAG = "label_conflict"
#: Label fields compared across sources (one vocabulary); ``ground_truth`` is compared within a source.
_SHARED_LABELS = (F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE)


def curated(view: Any) -> Any:
    """``view`` without the samples a curator tagged :data:`REJECT_TAG`."""
    from fiftyone import ViewField as FF

    return view.match(~FF("tags").contains(REJECT_TAG))


def rejected_count(view: Any) -> int:
    """How many samples of ``view`` carry :data:`REJECT_TAG`."""
    return len(view.match_tags(REJECT_TAG))


def repeated_files(ds: Any) -> dict[str, list[tuple[str, str]]]:
    """``sha256 -> [(key, sample id), ...]`` for every file stored more than once in ``ds``.

    Grouped by the database (one aggregation), so only the duplicates reach Python: memory
    grows with the number of duplicates, not with the dataset (100k samples, a handful of
    copies). Keys are ``""`` for samples that have none. Uses FiftyOne's
    ``SampleCollection._aggregate`` (a private method; the view's own stages come first).
    """
    pipeline = [
        {"$match": {F.SHA256: {"$type": "string", "$ne": ""}}},
        {"$group": {"_id": "$" + F.SHA256, "n": {"$sum": 1}, "members": {"$push": {"k": "$" + F.KEY, "i": "$_id"}}}},
        {"$match": {"n": {"$gt": 1}}},
    ]
    return {d["_id"]: [(m.get("k") or "", str(m["i"])) for m in d["members"]] for d in ds._aggregate(pipeline=pipeline)}


def find_label_conflicts(ds: Any, groups: dict[str, list[tuple[str, str]]] | None = None) -> list[LabelConflict]:
    """Groups of byte-identical samples (same ``sha256``) whose labels disagree.

    Copies conflict when a common-vocabulary field (``diagnosis``, ``cell_type``, ``subtype``)
    has two different values among them (a missing value agrees with anything), or when two
    copies from the same source have different ``ground_truth`` (each source has its own
    label words, so ``ground_truth`` is not compared across sources).
    """
    repeated = sorted(repeated_files(ds) if groups is None else groups)
    if not repeated:
        return []
    view = ds.match({F.SHA256: {"$in": repeated}})
    fields = [F.GROUND_TRUTH, *_SHARED_LABELS]
    rows = view.values([F.KEY, F.SHA256, F.SOURCE, "filepath", *(f"{f}.label" for f in fields)])
    by_sha: dict[str, list[tuple[str, str, str, dict[str, str]]]] = defaultdict(list)
    for key, sha, source, path, *labels in zip(*rows):
        by_sha[sha].append((key, source, path, {f: v for f, v in zip(fields, labels) if v is not None}))
    out = []
    for sha in sorted(by_sha):
        copies = sorted(by_sha[sha])
        bad = [f for f in _SHARED_LABELS if len({c[3][f] for c in copies if f in c[3]}) > 1]
        by_source: dict[str, set[str]] = defaultdict(set)
        for _, source, _, labels in copies:
            if F.GROUND_TRUTH in labels:
                by_source[source].add(labels[F.GROUND_TRUTH])
        if any(len(v) > 1 for v in by_source.values()):
            bad.insert(0, F.GROUND_TRUTH)
        if bad:
            out.append(LabelConflict(
                sha256=sha, fields=bad,
                copies=[LabelCopy(key=k, filepath=p, labels=labels) for k, _, p, labels in copies],
            ))
    return out


def tag_label_conflicts(ds: Any, groups: dict[str, list[tuple[str, str]]] | None = None) -> list[LabelConflict]:
    """Tag every copy in a label conflict :data:`LABEL_CONFLICT_TAG` (and untag resolved ones).

    Nothing is dropped or relabelled: a curator fixes the label in the App (the saved view
    ``alldata-label-conflicts`` holds the copies side by side) and the next ingest or
    ``tag_label_conflicts`` call drops the tag. Returns the conflicts found.
    """
    conflicts = find_label_conflicts(ds, groups)
    keys = sorted({c.key for g in conflicts for c in g.copies})
    stale = ds.match_tags(LABEL_CONFLICT_TAG)
    if keys:
        from fiftyone import ViewField as FF

        stale = stale.match(~FF(F.KEY).is_in(keys))
        ds.match(FF(F.KEY).is_in(keys)).tag_samples(LABEL_CONFLICT_TAG)
    if len(stale):
        stale.untag_samples(LABEL_CONFLICT_TAG)
    return conflicts


def _describe(labels: dict[str, str], fields: list[str]) -> str:
    return ", ".join(f"{f}={labels[f]}" for f in fields if f in labels) or "no label"


def audit_duplicates(ds: Any, report: IngestReport, keys: Iterable[str],
                     groups: dict[str, list[tuple[str, str]]] | None = None) -> list[Problem]:
    """After an ingest's duplicate tagging: fill ``report``'s counts of this run and flag label conflicts.

    Sets ``report.duplicates_tagged`` (samples of this run, ``keys``, tagged ``duplicate``) and
    ``report.label_conflicts`` (the conflicts involving this run's samples), tags conflicts
    (:func:`tag_label_conflicts`), and returns one warning per conflicting copy of this run
    saying which label each copy has.
    """
    run = keys if isinstance(keys, (set, frozenset)) else set(keys)  # ingest passes its own set: no copy at 100k
    dup_keys = ds.match_tags(F.TAG_DUPLICATE).values(F.KEY)
    report.duplicates_tagged = sum(1 for k in dup_keys if k in run)
    conflicts = [c for c in tag_label_conflicts(ds, groups) if any(x.key in run for x in c.copies)]
    report.label_conflicts = conflicts
    problems = []
    for c in conflicts:
        for copy in c.copies:
            if copy.key not in run:
                continue
            others = "; ".join(f"{o.key}: {_describe(o.labels, c.fields)}" for o in c.copies if o is not copy)
            problems.append(Problem(copy.filepath, (
                f"label conflict: {len(c.copies)} byte-identical copies disagree on {', '.join(c.fields)}: this file "
                f"({copy.key}): {_describe(copy.labels, c.fields)}; {others}. Tagged {LABEL_CONFLICT_TAG!r} and kept "
                "in one split; fix the label in the App (view alldata-label-conflicts) or remove the wrong copy"
            ), "warning"))
    return problems
