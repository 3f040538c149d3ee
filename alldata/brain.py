"""The FiftyOne Brain on alldata's own embeddings and predictions, each result a field and a saved view.

:func:`run_brain` needs the ``embedding`` field of ``alldata embed``
(:data:`alldata.embeddings.EMBEDDING_FIELD`) and downloads nothing: every Brain call gets
``embeddings=`` that field. It writes

- ``uniqueness`` and ``representativeness`` (every embedded sample);
- ``hardness_<pred>`` (predictions with ``logits``) and ``mistakenness_<pred>`` (predictions
  with ``confidence``, against the truth field the benchmark recorded on them, see
  :func:`alldata.views.truth_of`) for each ``pred_*`` Classification field;
- ``leak_near`` (the Brain's ``compute_leaky_splits``: a sample within ``leak_threshold``
  cosine distance of a sample in another split) next to ``leak_exact`` (alldata's exact
  rule, :func:`alldata.split.check_no_leak`: a group or a file hash in two splits);

and one saved view per field, named :data:`PREFIX` + what it shows (``brain-unique``,
``brain-hard-pred_x``, ``brain-leaks-near`` ...). The prefix is not ``alldata-``, whose
views ``alldata views`` rebuilds (and would delete). The run is recorded in
``dataset.info["brain"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from alldata.embeddings import EMBEDDING_FIELD
from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "LEAK_EXACT",
    "LEAK_NEAR",
    "PREFIX",
    "REPRESENTATIVENESS",
    "UNIQUENESS",
    "BrainError",
    "BrainReport",
    "exact_leaks",
    "prediction_fields",
    "run_brain",
]

#: Saved views written by :func:`run_brain` start with this.
PREFIX = "brain-"
UNIQUENESS = "uniqueness"
REPRESENTATIVENESS = "representativeness"
LEAK_NEAR = "leak_near"
LEAK_EXACT = "leak_exact"
#: How many samples the "most" views (unique, hard, mistaken) keep.
TOP = 50
#: The Brain's representativeness clusters the embeddings into 20 (k-means): it needs as many samples.
MIN_REPRESENTATIVENESS = 20


class BrainError(AlldataError, ValueError):
    """The dataset has no embeddings, or a prediction field cannot be used."""


@dataclass
class BrainReport:
    """What :func:`run_brain` wrote: fields -> samples that got a value, saved views -> sizes, notes."""

    dataset: str
    n_embedded: int
    fields: dict[str, int] = field(default_factory=dict)
    views: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    exact_leak: str | None = None  # alldata's exact check: None when the split does not leak


def prediction_fields(ds: fo.Dataset) -> list[str]:
    """The ``pred_*`` Classification fields of ``ds`` (what ``alldata benchmark`` writes back)."""
    import fiftyone as fo

    from alldata.views import PREDICTION_PREFIX

    return sorted(n for n in ds.get_field_schema(embedded_doc_type=fo.Classification) if n.startswith(PREDICTION_PREFIX))


def exact_leaks(ds: fo.Dataset | fo.DatasetView, *, by: str = "group") -> tuple[list[str], str | None]:
    """Ids of samples whose group (or file sha256) sits in two splits, and the first leak's message.

    The message is :func:`alldata.split.check_no_leak`'s (None when the split does not leak);
    the ids are every sample of a leaking group or hash, so the view shows both sides.
    """
    from collections import defaultdict

    from alldata.errors import SplitError
    from alldata.split import BY, check_no_leak

    try:
        check_no_leak(ds, by=by)
        message = None
    except SplitError as e:
        message = str(e)
    if by not in BY:  # check_no_leak raised on the argument, not on a leak
        raise BrainError(message or f"by={by!r} is not one of {BY}")
    ids, groups, subjects, hashes, splits = ds.values(["id", F.GROUP_ID, F.SUBJECT_ID, F.SHA256, F.SPLIT])
    if by == "subject":
        groups = [f"subject/{s}" if s else g for s, g in zip(subjects, groups)]
    leaked: set[str] = set()
    for keys in (groups, hashes):
        where: dict[str, set[str]] = defaultdict(set)
        for k, s in zip(keys, splits):
            if k is not None and s is not None:
                where[k].add(s)
        bad = {k for k, v in where.items() if len(v) > 1}
        leaked |= {i for i, k, s in zip(ids, keys, splits) if k in bad and s is not None}
    return sorted(leaked), message


def _save(ds: Any, report: BrainReport, name: str, view: Any, description: str) -> None:
    ds.save_view(PREFIX + name, view, description=description, overwrite=True)
    report.views[PREFIX + name] = len(view)


def _set_flag(ds: Any, name: str, ids: list[str]) -> None:
    import fiftyone as fo

    if not ds.has_field(name):
        ds.add_sample_field(name, fo.BooleanField)
    ds.set_field(name, False).save()
    if ids:
        ds.select(ids).set_field(name, True).save()


def _predictions(ds: Any, report: BrainReport, view: Any, preds: list[str], progress: bool) -> None:
    import fiftyone.brain as fob

    from alldata.views import truth_of

    for pred in preds:
        have = view.exists(pred)
        if not len(have):
            report.skipped[pred] = "no embedded sample has a prediction"
            continue
        truths = truth_of(ds, pred)
        if len(truths) == 1 and ds.has_field(truths[0]):
            field_ = f"mistakenness_{pred}"
            scored = have.exists(truths[0]).exists(f"{pred}.confidence")
            if len(scored):
                fob.compute_mistakenness(scored, pred, truths[0], mistakenness_field=field_, progress=progress)
                report.fields[field_] = len(scored)
                _save(ds, report, f"mistaken-{pred}", scored.sort_by(field_, reverse=True).limit(TOP),
                      f"the {TOP} samples whose {truths[0]} label {pred} most likely finds wrong (Brain mistakenness)")
            else:
                report.skipped[field_] = f"{pred} has no confidence or its samples no {truths[0]}"
        else:
            report.skipped[f"mistakenness_{pred}"] = (
                f"the truth field of {pred} is unknown or ambiguous ({truths}); `alldata benchmark` records it")
        with_logits = have.exists(f"{pred}.logits")
        field_ = f"hardness_{pred}"
        if len(with_logits):
            fob.compute_hardness(with_logits, pred, hardness_field=field_, progress=progress)
            report.fields[field_] = len(with_logits)
            _save(ds, report, f"hard-{pred}", with_logits.sort_by(field_, reverse=True).limit(TOP),
                  f"the {TOP} samples {pred} was least sure about (Brain hardness, from logits)")
        else:
            report.skipped[field_] = f"{pred} has no logits (hardness needs them; mistakenness uses the confidence)"


def run_brain(
    dataset: str | fo.Dataset,
    *,
    predictions: list[str] | None = None,
    leak_threshold: float = 0.05,
    by: str = "group",
    progress: bool = False,
) -> BrainReport:
    """Uniqueness, representativeness, hardness, mistakenness and leaks on ``dataset``, from its embeddings.

    Args:
        dataset: a dataset or its name; it needs the ``embedding`` field (``alldata embed``).
        predictions: prediction fields to score (default: every ``pred_*`` Classification).
        leak_threshold: cosine distance under which two samples in different splits count as a
            Brain leak (alldata's embeddings are unit-length and centred, so distances are
            larger than the Brain's default model's; see ``alldata embed``'s near duplicates).
        by: ``group`` or ``subject``: the unit of alldata's exact leak check.
        progress: show the Brain's progress bars.

    Raises:
        BrainError: no sample has an embedding, or an unknown prediction field.

    Examples:
        >>> r = run_brain("alldata")  # doctest: +SKIP
        >>> r.views["brain-unique"]  # doctest: +SKIP
        50
    """
    import fiftyone.brain as fob

    from alldata.store import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if not ds.has_field(EMBEDDING_FIELD) or not len(view := ds.exists(EMBEDDING_FIELD)):
        raise BrainError(f"dataset {ds.name!r} has no {EMBEDDING_FIELD!r} field values; run `alldata embed {ds.name}` first")
    if not 0 < leak_threshold <= 2:
        raise BrainError(f"leak_threshold {leak_threshold} is not a cosine distance in (0, 2]; e.g. 0.05")
    known = prediction_fields(ds)
    preds = known if predictions is None else list(predictions)
    if unknown := sorted(set(preds) - set(known)):
        raise BrainError(f"prediction field(s) {unknown} are not pred_* Classification fields of {ds.name!r}; "
                         f"choose from {known} (written by `alldata benchmark`)")
    report = BrainReport(dataset=ds.name, n_embedded=len(view))
    if len(view) < 3:
        raise BrainError(f"only {len(view)} samples of {ds.name!r} have embeddings; the Brain needs at least 3")

    fob.compute_uniqueness(view, uniqueness_field=UNIQUENESS, embeddings=EMBEDDING_FIELD, progress=progress)
    report.fields[UNIQUENESS] = len(view)
    _save(ds, report, "unique", view.sort_by(UNIQUENESS, reverse=True).limit(TOP),
          f"the {TOP} most unique samples (Brain uniqueness on alldata's embeddings)")
    if len(view) >= MIN_REPRESENTATIVENESS:
        fob.compute_representativeness(view, representativeness_field=REPRESENTATIVENESS, embeddings=EMBEDDING_FIELD,
                                       progress=progress)
        report.fields[REPRESENTATIVENESS] = len(view)
        _save(ds, report, "representative", view.sort_by(REPRESENTATIVENESS, reverse=True).limit(TOP),
              f"the {TOP} most representative samples (Brain representativeness)")
    else:
        report.skipped[REPRESENTATIVENESS] = (f"{len(view)} embedded samples; the Brain clusters them into "
                                              f"{MIN_REPRESENTATIVENESS} and needs at least as many")

    _predictions(ds, report, view, preds, progress)

    split_view = view.exists(F.SPLIT)
    if len(split_view.distinct(F.SPLIT)) >= 2:
        index = fob.compute_leaky_splits(split_view, splits=F.SPLIT, threshold=leak_threshold,
                                         embeddings=EMBEDDING_FIELD, progress=progress)
        near = index.leaks_view().values("id")
        _set_flag(ds, LEAK_NEAR, near)
        report.fields[LEAK_NEAR] = len(near)
        _save(ds, report, "leaks-near", ds.match({LEAK_NEAR: True}),
              f"samples within cosine distance {leak_threshold} of one in another split (Brain compute_leaky_splits)")
    else:
        report.skipped[LEAK_NEAR] = "fewer than two splits among the embedded samples; run `alldata split` first"
    exact, report.exact_leak = exact_leaks(ds, by=by)
    _set_flag(ds, LEAK_EXACT, exact)
    report.fields[LEAK_EXACT] = len(exact)
    _save(ds, report, "leaks-exact", ds.match({LEAK_EXACT: True}),
          f"samples whose {by} or file sha256 is in two splits (alldata's exact check, alldata.split.check_no_leak)")

    info = dict(ds.info)
    info["brain"] = {k: v for k, v in report.__dict__.items() if k != "dataset"}
    info["brain"]["leak_threshold"] = leak_threshold
    ds.info = info
    ds.save()
    return report
