"""Dataset cards: gather the facts of a dataset (or a selection of it) and render a Hugging Face card.

:func:`gather_facts` reads everything from the data and alldata's reports, never from
boilerplate: composition, the split policy and a leak check on ``group_id``, synthetic
provenance, quality scores (``alldata score`` reports), benchmark gains (the
:class:`~alldata.reports.BenchmarkSummary` of each ``--benchmark`` folder), ingest reports
(:class:`~alldata.reports.IngestReport`), licences, citations and known biases; samples
tagged ``reject`` are left out. :func:`render_card` fills ``cards/dataset_card.md`` through
``DatasetCard.from_template``. A fact alldata lacks is :data:`UNKNOWN`, never made up.

Examples:
    >>> size_category(2954), Selection(sources=("bccd", "pbc")).describe()
    ('1K<n<10K', 'sources=bccd,pbc')
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alldata.errors import AlldataError
from alldata.licences import ALLOWED, licence_for, most_restrictive, sample_status
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo
    from huggingface_hub import DatasetCard

__all__ = [
    "UNKNOWN",
    "CardError",
    "Selection",
    "default_template",
    "gather_facts",
    "licence_text",
    "read_benchmark",
    "render_card",
    "size_category",
    "write_card",
]

#: How an unknown fact is written (the Hugging Face card convention).
UNKNOWN = "[More Information Needed]"
LABEL_FIELDS = (F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE)
SPLITS = ("train", "val", "test")
_SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))


class CardError(AlldataError, ValueError):
    """Bad card/export arguments or an unreadable report (the message names the file)."""


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` samples."""
    for bound, name in _SIZES:
        if n < bound:
            return name
    return "n>1T"


@dataclass(frozen=True)
class Selection:
    """Which samples a card, export or publish covers (after curation).

    Args:
        sources: keep only these sources (registry names or ``synthetic/<family>``); empty = all.
        exclude_sources: drop these sources.
        splits: keep only these splits; empty = all.
        synthetic: keep synthetic samples.
    """

    sources: tuple[str, ...] = ()
    exclude_sources: tuple[str, ...] = ()
    splits: tuple[str, ...] = ()
    synthetic: bool = True

    def describe(self) -> str:
        parts = [f"sources={','.join(self.sources)}"] if self.sources else []
        parts += [f"exclude={','.join(self.exclude_sources)}"] if self.exclude_sources else []
        parts += [f"splits={','.join(self.splits)}"] if self.splits else []
        parts += [] if self.synthetic else ["real only"]
        return "; ".join(parts) or "all samples"

    def apply(self, ds: fo.Dataset | fo.DatasetView) -> fo.DatasetView:
        """The curated view of ``ds`` this selection keeps; unknown names raise :class:`CardError`."""
        from alldata.curation import curated

        have = set(ds.distinct(F.SOURCE))
        for what, names in (("--sources", self.sources), ("--exclude-sources", self.exclude_sources)):
            bad = sorted(set(names) - have)
            if bad:
                raise CardError(f"{what} {', '.join(bad)}: not in dataset {ds.name!r}; its sources: {', '.join(sorted(have))}")
        bad = sorted(set(self.splits) - set(SPLITS))
        if bad:
            raise CardError(f"--splits {', '.join(bad)}: a split is one of {', '.join(SPLITS)}")
        view = curated(ds)
        if self.sources:
            view = view.match({F.SOURCE: {"$in": list(self.sources)}})
        if self.exclude_sources:
            view = view.match({F.SOURCE: {"$nin": list(self.exclude_sources)}})
        if self.splits:
            view = view.match({F.SPLIT: {"$in": list(self.splits)}})
        if not self.synthetic:
            view = view.match({F.IS_SYNTHETIC: {"$ne": True}})
        if len(view) == 0:
            raise CardError(f"the selection ({self.describe()}) of dataset {ds.name!r} has no samples")
        return view


def default_template() -> Path:
    """``cards/dataset_card.md`` of the repository, else the copy installed as ``alldata.cards``."""
    here = Path(__file__).resolve().parents[1] / "cards" / "dataset_card.md"
    if here.is_file():
        return here
    try:
        from importlib.resources import files

        packaged = Path(str(files("alldata.cards") / "dataset_card.md"))
        if packaged.is_file():
            return packaged
    except ModuleNotFoundError:
        pass
    raise CardError(f"card template not found at {here} (nor as package data alldata.cards); pass template=PATH")


# --- reading reports --------------------------------------------------------------------------
def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CardError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CardError(f"{what} {path} is not readable JSON: {e}") from None


def _defined(d: dict[str, Any]) -> dict[str, Any]:
    """NaN (an undefined number in a report) as None, which the card writes as UNKNOWN."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in d.items()}


def read_benchmark(path: str | Path) -> dict[str, Any]:
    """What the card shows of a benchmark: its :class:`~alldata.reports.BenchmarkSummary`
    (``DIR/metrics.json`` or the file itself) as ``{"path", "name", "task", "dataset",
    "confidence", "gains", "note"}``; ``note`` says why ``gains`` is empty.

    Raises:
        CardError: the file is missing or not a benchmark summary (the message names it).
    """
    from alldata.reports import ReportError, load_benchmark_summary

    p = Path(path)
    f = p / "metrics.json" if p.is_dir() else p
    try:
        s = load_benchmark_summary(f)
    except ReportError as e:
        raise CardError(str(e)) from None
    return {"path": str(f), "name": s.recipe, "task": s.task, "dataset": s.dataset, "confidence": s.confidence,
            "gains": [_defined(g.model_dump()) for g in s.gains],
            "note": None if s.gains else f"{f} compares no arm with the baseline `{s.baseline}`"}


def _score_reports(dataset: str, paths: list[Path] | None) -> list[dict[str, Any]]:
    """Given reports, or else the latest report of each (synthetic, real) view pair in alldata's home."""
    from alldata.config import home

    if paths:
        return [_read_json(Path(p), "score report") for p in paths]
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for p in sorted((home() / "datasets" / dataset).glob("score-*.json")):
        r = _read_json(p, "score report")
        k = (str(r.get("synthetic_view")), str(r.get("real_view")))
        if k not in latest or str(r.get("created", "")) >= str(latest[k].get("created", "")):
            latest[k] = r
    return list(latest.values())


def _ingest_reports(ds: fo.Dataset, sources: list[str]) -> dict[str, dict[str, Any]]:
    """Each source's :class:`~alldata.reports.IngestReport`; where the file is not on this
    machine (a shared database), the summary the ingest left in ``ds.info["ingest"]``."""
    from alldata.ingest import report_path
    from alldata.reports import ReportError, load_ingest_report

    info = (ds.info or {}).get("ingest", {})
    keys = ("found", "added", "skipped", "warnings", "duplicates_tagged", "finished")
    out = {}
    for s in sources:
        p = report_path(ds.name, s)
        if p.is_file():
            try:
                r = load_ingest_report(p)
            except ReportError as e:
                raise CardError(str(e)) from None
            out[s] = {**r.model_dump(mode="json", include=set(keys)), "skipped": len(r.skipped),
                      "warnings": len(r.warnings)}
        elif info.get(s):
            out[s] = {k: info[s].get(k) for k in keys}
    return out


# --- facts ------------------------------------------------------------------------------------
def _md(v: Any) -> str:
    """A table cell: escape pipes, show None as UNKNOWN."""
    if v is None or v == "":
        return UNKNOWN
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _pct(a: int, b: int) -> str:
    return f"{a} ({a / b:.1%})" if b else str(a)


def _values(view: fo.DatasetView, fields: list[str]) -> dict[str, list[Any]]:
    schema = view.get_field_schema()
    have = [f for f in fields if f.split(".")[0] in schema]
    vals = dict(zip(have, view.values(have))) if have else {}
    n = len(view)
    return {f: vals.get(f, [None] * n) for f in fields}


def gather_facts(
    dataset: str | fo.Dataset,
    selection: Selection | None = None,
    *,
    benchmarks: list[str | Path] | None = None,
    score_reports: list[str | Path] | None = None,
    trained_on: dict[str, list[str]] | None = None,
    overrides: Iterable[str] = (),
    data_files: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the card says, computed from the selected samples and alldata's reports.

    Args:
        dataset: a dataset name or object.
        selection: which samples (default: all curated samples).
        benchmarks: benchmark output folders (or ``metrics.json`` files).
        score_reports: ``alldata score`` reports (default: the latest per view in alldata's home).
        trained_on: user-declared training sources per generator family.
        overrides: sources the user passed ``--override-licence`` for (recorded on the card).
        data_files: ``{split: glob}`` of an export's parquet files (becomes the card's ``configs``).
    """
    from alldata.curation import rejected_count
    from alldata.store import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    selection = selection or Selection()
    view = selection.apply(ds)
    fields = [F.KEY, F.SOURCE, F.SPLIT, F.GROUP_ID, F.SUBJECT_ID, F.SHA256, F.IS_SYNTHETIC, F.IMAGE_KIND, F.DEVICE,
              F.STAIN, F.MAGNIFICATION, F.GENERATOR, F.CHECKPOINT_SHA256, F.SEED, F.CONDITION, F.SAMPLER,
              F.NUM_INFERENCE_STEPS, F.ALLDATA_VERSION, F.RECIPE, "copy_flag", "tags"]
    fields += [f"{f}.label" for f in LABEL_FIELDS]
    v = _values(view, fields)
    n = len(v[F.KEY])
    syn = [bool(x) for x in v[F.IS_SYNTHETIC]]
    n_syn = sum(syn)
    split_of = [s or "unsplit" for s in v[F.SPLIT]]
    split_names = [s for s in (*SPLITS, "unsplit") if s in set(split_of)]

    # licence status per sample, then per source (most restrictive)
    status = [sample_status(src, generator=g, recipe=r, trained_on=trained_on)
              for src, g, r in zip(v[F.SOURCE], v[F.GENERATOR], v[F.RECIPE])]
    by_src: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(v[F.SOURCE]):
        by_src[s].append(i)
    overrides = set(overrides)
    sources = []
    for s in sorted(by_src):
        idx = by_src[s]
        lic = licence_for(s)
        synthetic = s.startswith("synthetic/")
        st = most_restrictive(status[i].status for i in idx)
        inputs = sorted({x for i in idx for x in status[i].inputs}) if synthetic else []
        kinds = Counter(v[F.IMAGE_KIND][i] for i in idx)
        sources.append({
            "source": s, "n": len(idx), "synthetic": synthetic,
            "splits": {sp: sum(split_of[i] == sp for i in idx) for sp in split_names},
            "kinds": ", ".join(f"{k} {c}" for k, c in sorted(kinds.items(), key=lambda kv: str(kv[0]))),
            "spdx": "derived" if synthetic else lic.spdx,
            "terms": ("inherits the terms of its inputs: " + (", ".join(inputs) or "not recorded")) if synthetic else lic.terms,
            "status": st, "citation": None if synthetic else lic.citation, "homepage": lic.homepage,
            "notes": lic.notes, "annotations": list(lic.annotations), "override": s in overrides and st != ALLOWED,
        })

    # composition: labels x split, real/synthetic x split
    labels = {}
    for f in LABEL_FIELDS:
        c: dict[str, Counter] = defaultdict(Counter)
        for lab, sp, sy in zip(v[f"{f}.label"], split_of, syn):
            if lab is not None:
                c[lab][sp] += 1
                c[lab]["synthetic"] += sy
        if c:
            labels[f] = [{"label": lab, "splits": {sp: c[lab][sp] for sp in split_names}, "total": sum(c[lab][sp] for sp in split_names),
                          "synthetic": c[lab]["synthetic"]} for lab in sorted(c)]
    kind_rows = [{"kind": "real" if not k else "synthetic", "splits": {sp: sum(1 for s2, y in zip(split_of, syn) if s2 == sp and y == k) for sp in split_names},
                  "total": sum(1 for y in syn if y == k)} for k in (False, True) if any(y == k for y in syn)]

    # split policy and leak check
    g_splits: dict[str, set[str]] = defaultdict(set)
    h_splits: dict[str, set[str]] = defaultdict(set)
    for g, h, sp in zip(v[F.GROUP_ID], v[F.SHA256], split_of):
        g_splits[g].add(sp)
        h_splits[h].add(sp)
    split_facts = {
        "n_groups": len(g_splits),
        "leaking_groups": sum(len(s - {"unsplit"}) > 1 for s in g_splits.values()),
        "leaking_hashes": sum(len(s - {"unsplit"}) > 1 for s in h_splits.values()),
        "unsplit": split_of.count("unsplit"),
        "shares": {sp: _pct(split_of.count(sp), n) for sp in split_names},
        "with_subject": sum(x is not None for x in v[F.SUBJECT_ID]),
    }

    # synthetic provenance, per (generator, checkpoint)
    gens: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, y in enumerate(syn):
        if y:
            gens[(v[F.GENERATOR][i] or UNKNOWN, v[F.CHECKPOINT_SHA256][i] or UNKNOWN)].append(i)
    provenance = []
    for (g, ck), idx in sorted(gens.items()):
        seeds = sorted({v[F.SEED][i] for i in idx if v[F.SEED][i] is not None})
        conds: Counter = Counter()
        for i in idx:
            try:
                c = json.loads(v[F.CONDITION][i] or "{}")
            except ValueError:
                c = {"condition": v[F.CONDITION][i]}
            c.pop("batch_index", None)
            conds[json.dumps(c, sort_keys=True)] += 1
        st = [status[i] for i in idx]
        basis = sorted({t.basis for t in st})
        provenance.append({
            "generator": g, "checkpoint_sha256": ck, "n": len(idx),
            "seeds": (f"{seeds[0]}..{seeds[-1]} ({len(seeds)} seeds)" if len(seeds) > 1 else str(seeds[0])) if seeds else None,
            "conditions": "; ".join(f"{c} x{k}" for c, k in sorted(conds.items())),
            "sampler": ", ".join(sorted({str(v[F.SAMPLER][i]) for i in idx if v[F.SAMPLER][i]})) or None,
            "steps": ", ".join(sorted({str(v[F.NUM_INFERENCE_STEPS][i]) for i in idx if v[F.NUM_INFERENCE_STEPS][i]})) or None,
            "version": ", ".join(sorted({str(v[F.ALLDATA_VERSION][i]) for i in idx if v[F.ALLDATA_VERSION][i]})) or None,
            "inputs": ", ".join(sorted({x for t in st for x in t.inputs})) or None,
            "basis": ", ".join(basis),
            "copies": sum(bool(v["copy_flag"][i]) for i in idx),
            "scored": sum(v["copy_flag"][i] is not None for i in idx),
        })
    quality = []
    if n_syn:
        for r in _score_reports(ds.name, [Path(p) for p in score_reports] if score_reports else None):
            m = r.get("metrics", {})
            quality.append({"synthetic_view": r.get("synthetic_view"), "real_view": r.get("real_view"),
                            "n_fake": r.get("n_fake"), "n_real": r.get("n_real"),
                            "encoder": (r.get("encoder") or {}).get("kind"), "created": r.get("created"),
                            **{k: m.get(k) for k in ("fd", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "copy_rate")}})
    bench = [read_benchmark(p) for p in (benchmarks or [])]

    # biases and limitations, from the data
    real_idx = [i for i, y in enumerate(syn) if not y]
    devices = Counter((v[F.SOURCE][i], v[F.DEVICE][i]) for i in real_idx if v[F.DEVICE][i])
    stains = Counter(v[F.STAIN][i] for i in real_idx if v[F.STAIN][i])
    no_subject = sorted({v[F.SOURCE][i] for i in real_idx if v[F.SUBJECT_ID][i] is None})
    imbalance = {}
    for f, rows in labels.items():
        counts = [r["total"] for r in rows]
        if len(counts) > 1:
            imbalance[f] = {"max": max(rows, key=lambda r: r["total"])["label"], "min": min(rows, key=lambda r: r["total"])["label"],
                            "ratio": f"{max(counts) / max(min(counts), 1):.1f}"}
    links = (ds.info or {}).get("links", {})
    present = set(by_src)
    limits = {
        "devices": [f"{s}: {d} ({k})" for (s, d), k in sorted(devices.items())],
        "stains": [f"{s} ({k})" for s, k in sorted(stains.items())],
        "no_subject": no_subject,
        "imbalance": imbalance,
        "idb_link": links.get("all_idb2->all_idb1") if "all_idb2" in present else None,
        "idb_both": {"all_idb1", "all_idb2"} <= present,
        "idb2": "all_idb2" in present,
        "duplicates": sum(F.TAG_DUPLICATE in (t or []) for t in v["tags"]),
        "memorised": sum("memorised" in (t or []) for t in v["tags"]),
    }

    has_cells = bool(view.exists(F.CELLS).count()) if F.CELLS in view.get_field_schema() else False
    has_seg = bool(view.exists(F.SEGMENTATION).count()) if F.SEGMENTATION in view.get_field_schema() else False
    return {
        "dataset": ds.name, "selection": selection.describe(), "n": n, "n_synthetic": n_syn, "n_real": n - n_syn,
        "rejected": rejected_count(ds), "splits": split_names, "sources": sources, "labels": labels,
        "kind_rows": kind_rows, "split": split_facts, "provenance": provenance, "quality": quality,
        "benchmarks": bench, "limits": limits, "ingest": _ingest_reports(ds, [s for s in sorted(by_src) if "/" not in s]),
        "overrides": {s["source"]: s["status"] for s in sources if s["override"]}, "trained_on": dict(trained_on or {}), "has_cells": has_cells,
        "has_segmentation": has_seg, "data_files": data_files, "all_allowed": all(s["status"] == ALLOWED for s in sources),
    }


# --- rendering --------------------------------------------------------------------------------
def _card_data(facts: dict[str, Any]):
    from huggingface_hub import DatasetCardData

    real = [s for s in facts["sources"] if not s["synthetic"]]
    ids = sorted({s["spdx"] for s in real}) or ["other"]
    others = sorted({licence_for(s["source"]).license_name for s in real if s["spdx"] == "other"} - {None})
    if facts["n_synthetic"] and "other" not in ids and not all(
        s["status"] == ALLOWED for s in facts["sources"] if s["synthetic"]
    ):
        ids.append("other")
        others.append("synthetic-inherits-unknown-terms")
    extra: dict[str, Any] = {}
    if "other" in ids:
        extra["license_name"] = others[0] if len(others) == 1 else "mixed-source-terms"
        extra["license_link"] = "LICENSE.md"  # written beside the card: the terms of every source
    tasks = ["image-classification"] + (["object-detection"] if facts["has_cells"] else []) + (
        ["image-segmentation"] if facts["has_segmentation"] and not facts["data_files"] else [])  # no masks in parquet
    annotators = ["found"] + (["machine-generated"] if facts["n_synthetic"] else [])
    tags = ["biology", "medical", "microscopy", "hematology", "leukemia", "acute-lymphoblastic-leukemia", "alldata"]
    tags += ["synthetic"] if facts["n_synthetic"] else []
    if facts["data_files"]:
        extra["configs"] = [{"config_name": "default",
                             "data_files": [{"split": k, "path": p} for k, p in facts["data_files"].items()]}]
    return DatasetCardData(
        license=ids[0] if len(ids) == 1 else ids,
        annotations_creators=annotators,
        task_categories=tasks,
        size_categories=[size_category(facts["n"])],
        source_datasets=[f"extended|{s['source']}" for s in real] + (["original"] if facts["n_synthetic"] else []),
        pretty_name=f"alldata: {facts['dataset']}",
        tags=tags,
        **extra,
    )


def render_card(facts: dict[str, Any], template: str | Path | None = None) -> DatasetCard:
    """The :class:`huggingface_hub.DatasetCard` of ``facts`` (from :func:`gather_facts`)."""
    from huggingface_hub import DatasetCard

    import alldata

    path = Path(template) if template else default_template()
    if not path.is_file():
        raise CardError(f"card template {path} does not exist")
    return DatasetCard.from_template(
        _card_data(facts), template_path=str(path), facts=facts, md=_md, unknown=UNKNOWN,
        version=alldata.__version__,
    )


def write_card(
    dataset: str | fo.Dataset,
    out_dir: str | Path,
    selection: Selection | None = None,
    *,
    template: str | Path | None = None,
    **facts_kwargs: Any,
) -> Path:
    """Gather, render and write ``out_dir/README.md``; returns its path (re-running overwrites it)."""
    facts = gather_facts(dataset, selection, **facts_kwargs)
    card = render_card(facts, template)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "README.md"
    path.write_text(str(card), encoding="utf-8")
    (out / "LICENSE.md").write_text(licence_text(facts), encoding="utf-8")
    return path


def licence_text(facts: dict[str, Any]) -> str:
    """``LICENSE.md``: the terms, redistribution status and citation of every source in ``facts``."""
    lines = [f"# Terms of the data in {facts['dataset']} ({facts['selection']})", "",
             "Each sample keeps the terms of its source; there is no single licence.", ""]
    for s in facts["sources"]:
        lines += [f"## {s['source']}", "", f"- licence: {s['spdx']}", f"- terms: {s['terms']}",
                  f"- redistribution: {s['status']}" + (" (published under an explicit override by the user)" if s["override"] else "")]
        lines += [f"- homepage: {s['homepage']}"] if s["homepage"] else []
        lines += [f"- cite: {s['citation']}"] if s["citation"] else []
        lines += [f"- annotations: {a}" for a in s["annotations"]] + [""]
    return "\n".join(lines)
