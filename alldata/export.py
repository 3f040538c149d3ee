"""Export a (curated, licence-checked) selection of a dataset in four formats, with its card.

Formats (:data:`FORMATS`): ``hf-parquet`` (``datasets`` shards with an ``Image()`` column,
loadable with ``datasets.load_dataset(folder)``), ``fiftyone``, ``coco`` (the ``cells`` boxes
and instance masks) and ``imagefolder`` (``<split>/<label>/<file>`` plus ``metadata.csv``).
Every export also writes ``README.md`` (the card), ``LICENSE.md`` and the manifest
``alldata-export.json``. The licence gate runs first; re-running replaces the previous
export's files, and a non-empty folder that is not an alldata export is refused. Each
format's layout: docs/curation.md#export.

Examples:
    >>> FORMATS
    ('hf-parquet', 'fiftyone', 'coco', 'imagefolder')
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alldata.card import LABEL_FIELDS, CardError, Selection, gather_facts, licence_text, render_card
from alldata.licences import check_redistribution
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["FORMATS", "MANIFEST", "ExportError", "ExportReport", "export_dataset", "hf_features", "prepare_out_dir"]

FORMATS = ("hf-parquet", "fiftyone", "coco", "imagefolder")
MANIFEST = "alldata-export.json"
#: Scalar columns of the hf-parquet export, in order, and their ``datasets`` dtypes.
COLUMNS: dict[str, str] = {
    F.KEY: "string", F.SOURCE: "string", F.SOURCE_ID: "string", F.SPLIT: "string", F.GROUP_ID: "string",
    F.SUBJECT_ID: "string", F.IMAGE_KIND: "string", F.WIDTH: "int32", F.HEIGHT: "int32", F.SHA256: "string",
    F.GROUND_TRUTH: "string", F.DIAGNOSIS: "string", F.CELL_TYPE: "string", F.SUBTYPE: "string",
    F.LICENSE: "string", F.CITATION: "string", F.IS_SYNTHETIC: "bool", F.GENERATOR: "string",
    F.CHECKPOINT_SHA256: "string", F.SEED: "int64", F.CONDITION: "string", F.SAMPLER: "string",
    F.NUM_INFERENCE_STEPS: "int64", F.ALLDATA_VERSION: "string", F.RECIPE: "string",
}
_CLASSIFICATIONS = (F.GROUND_TRUTH, *LABEL_FIELDS)


class ExportError(CardError):
    """An export that cannot be made as asked (the message says which value and how to fix it)."""


@dataclass
class ExportReport:
    """What :func:`export_dataset` wrote."""

    format: str
    out_dir: str
    dataset: str
    selection: str
    n_samples: int
    by_split: dict[str, int]
    by_source: dict[str, dict[str, Any]]
    overrides: dict[str, str]
    files: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count (e.g. no label for imagefolder)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hf_features(with_objects: bool):
    """The ``datasets.Features`` of the hf-parquet export."""
    from datasets import Features, Image, List, Value

    feats: dict[str, Any] = {"image": Image()}
    feats.update({k: Value(t) for k, t in COLUMNS.items()})
    if with_objects:
        feats["objects"] = {"bbox": List(List(Value("float32"), length=4)), "label": List(Value("string"))}
    return Features(feats)


def prepare_out_dir(out_dir: str | Path) -> Path:
    """Make ``out_dir`` ready: create it, or remove the files of a previous alldata export in it.

    Raises:
        ExportError: the folder holds files and no ``alldata-export.json`` (not ours to clear).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder")
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST
    if manifest.is_file():
        try:
            old = json.loads(manifest.read_text())
        except ValueError:
            raise ExportError(f"{manifest} is not valid JSON; remove the folder {out} or choose another --out") from None
        root = out.resolve()
        for rel in [*old.get("files", []), MANIFEST]:
            p = (out / rel).resolve()
            if p.is_relative_to(root) and p.is_file():
                p.unlink()
        for d in sorted((p for p in out.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(d.iterdir()):
                d.rmdir()
    elif any(out.iterdir()):
        raise ExportError(f"--out {out} is not empty and holds no {MANIFEST} (not an alldata export); choose an empty folder")
    return out


def _label(v: Any) -> str | None:
    return getattr(v, "label", None) if v is not None else None


def _file_name(key: str, filepath: str) -> str:
    name = key.replace("/", "__")
    suffix = Path(filepath).suffix
    return name if name.lower().endswith(suffix.lower()) else name + suffix


def _rows(view: fo.DatasetView, split: str, with_objects: bool) -> list[dict[str, Any]]:
    """Rows of the hf-parquet export for the samples of ``view`` (in its order)."""
    have = set(view.get_field_schema())
    rows = []
    for s in view.iter_samples():
        row: dict[str, Any] = {}
        for k in COLUMNS:
            val = s[k] if k in have else None
            row[k] = _label(val) if k in _CLASSIFICATIONS else val
        row[F.IS_SYNTHETIC] = bool(row[F.IS_SYNTHETIC])
        row[F.SPLIT] = split
        row["image"] = {"bytes": Path(s.filepath).read_bytes(), "path": _file_name(s[F.KEY], s.filepath)}
        if with_objects:
            dets = s[F.CELLS].detections if F.CELLS in have and s[F.CELLS] is not None else []
            row["objects"] = {"bbox": [list(d.bounding_box) for d in dets], "label": [d.label for d in dets]}
        rows.append(row)
    return rows


def _write_parquet(view: fo.DatasetView, out: Path, splits: list[str], with_objects: bool, max_shard_bytes: int) -> list[str]:
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    feats = hf_features(with_objects)
    files = []
    quiet = are_progress_bars_disabled()
    disable_progress_bars()  # one bar per shard is noise; restored below
    try:
        for split in splits:
            files += _write_split(view, out, split, with_objects, max_shard_bytes, feats)
    finally:
        if not quiet:
            enable_progress_bars()
    return files


def _write_split(view: fo.DatasetView, out: Path, split: str, with_objects: bool, max_shard_bytes: int, feats: Any) -> list[str]:
    """Shards ``data/<split>-NNNNN-of-NNNNN.parquet`` of at most ``max_shard_bytes`` image bytes (a row at least),
    sorted by key; one shard is in memory at a time."""
    from datasets import Dataset

    sv = view.match({F.SPLIT: split if split != "unsplit" else None}).sort_by(F.KEY)
    ids, paths = sv.values(["id", "filepath"])
    shards: list[list[str]] = [[]]
    size = 0
    for sid, path in zip(ids, paths):
        nbytes = os.path.getsize(path)
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(sid)
        size += nbytes
    (out / "data").mkdir(exist_ok=True)
    files = []
    for i, shard in enumerate(shards):
        rel = f"data/{split}-{i:05d}-of-{len(shards):05d}.parquet"
        rows = _rows(sv.select(shard, ordered=True), split, with_objects)
        Dataset.from_dict({k: [r[k] for r in rows] for k in feats}, features=feats).to_parquet(str(out / rel))
        files.append(rel)
    return files


def _write_imagefolder(view: fo.DatasetView, out: Path, label_field: str, report: ExportReport) -> None:
    if label_field not in LABEL_FIELDS + (F.GROUND_TRUTH,):
        raise ExportError(f"--label-field {label_field!r}: choose one of {', '.join(LABEL_FIELDS + (F.GROUND_TRUTH,))}")
    keys, paths, splits, labels, sources, lic, syn, gen, ck, seeds = view.values(
        [F.KEY, "filepath", F.SPLIT, f"{label_field}.label", F.SOURCE, F.LICENSE, F.IS_SYNTHETIC, F.GENERATOR,
         F.CHECKPOINT_SHA256, F.SEED])
    meta = []
    for i in sorted(range(len(keys)), key=lambda j: keys[j]):
        if labels[i] is None:
            report.skipped[f"no {label_field} label"] = report.skipped.get(f"no {label_field} label", 0) + 1
            continue
        rel = f"{splits[i] or 'unsplit'}/{labels[i]}/{_file_name(keys[i], paths[i])}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[i], out / rel)
        meta.append({"file_name": rel, "label": labels[i], F.KEY: keys[i], F.SOURCE: sources[i], F.LICENSE: lic[i],
                     F.IS_SYNTHETIC: bool(syn[i]), F.GENERATOR: gen[i] or "", F.CHECKPOINT_SHA256: ck[i] or "",
                     F.SEED: "" if seeds[i] is None else seeds[i]})
    if not meta:
        raise ExportError(f"no sample of the selection has a {label_field!r} label; choose another --label-field")
    with open(out / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(meta[0]))
        w.writeheader()
        w.writerows(meta)


def _write_fiftyone(view: fo.DatasetView, out: Path, fmt: str, report: ExportReport) -> None:
    import fiftyone as fo

    if fmt == "fiftyone":
        view.export(export_dir=str(out), dataset_type=fo.types.FiftyOneDataset, export_media=True, progress=False)
        return
    with_cells = view.exists(F.CELLS) if F.CELLS in view.get_field_schema() else view.limit(0)
    if len(with_cells) == 0:
        raise ExportError("coco export: no sample of the selection has `cells` boxes; select a smear source (e.g. bccd)")
    if len(with_cells) < len(view):
        report.skipped["no cells boxes"] = len(view) - len(with_cells)
    with_cells.export(export_dir=str(out), dataset_type=fo.types.COCODetectionDataset, label_field=F.CELLS,
                      export_media=True, progress=False)


def export_dataset(
    dataset: str | fo.Dataset,
    out_dir: str | Path,
    fmt: str = "hf-parquet",
    selection: Selection | None = None,
    *,
    overrides: Iterable[str] = (),
    trained_on: dict[str, list[str]] | None = None,
    label_field: str = F.CELL_TYPE,
    benchmarks: list[str | Path] | None = None,
    score_reports: list[str | Path] | None = None,
    max_shard_bytes: int = 256 * 2**20,
    template: str | Path | None = None,
) -> ExportReport:
    """Export the curated ``selection`` of ``dataset`` to ``out_dir`` as ``fmt``, with its card.

    Args:
        dataset: dataset name or object.
        out_dir: the folder (created; a previous alldata export in it is replaced).
        fmt: one of :data:`FORMATS`.
        selection: which samples (default: all curated samples).
        overrides: sources exported although their terms forbid it or are unknown (recorded on the card).
        trained_on: user-declared training sources per generator family (for the licence of synthetic samples).
        label_field: the class folders of ``imagefolder``.
        benchmarks, score_reports, template: passed to the card.
        max_shard_bytes: image bytes per parquet shard.

    Raises:
        LicenceError: a selected source may not be redistributed and is not overridden.
        ExportError: bad format, folder or label field.
    """
    from alldata.store import load_dataset

    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    selection = selection or Selection()
    overrides = list(overrides)
    facts = gather_facts(ds, selection, overrides=overrides, trained_on=trained_on, benchmarks=benchmarks,
                         score_reports=score_reports)
    check_redistribution({s["source"]: (s["status"], s["n"]) for s in facts["sources"]}, overrides)
    view = selection.apply(ds)
    out = prepare_out_dir(out_dir)
    report = ExportReport(fmt, str(out), ds.name, selection.describe(), facts["n"],
                          {k: int(v.split()[0]) for k, v in facts["split"]["shares"].items()},
                          {s["source"]: {"n": s["n"], "redistribution": s["status"], "license": s["spdx"]}
                           for s in facts["sources"]}, facts["overrides"])
    if fmt == "hf-parquet":
        _write_parquet(view, out, facts["splits"], facts["has_cells"], max_shard_bytes)
        facts["data_files"] = {sp: f"data/{sp}-*.parquet" for sp in facts["splits"]}
    elif fmt == "imagefolder":
        _write_imagefolder(view, out, label_field, report)
    else:
        _write_fiftyone(view, out, fmt, report)
    (out / "README.md").write_text(str(render_card(facts, template)), encoding="utf-8")
    (out / "LICENSE.md").write_text(licence_text(facts), encoding="utf-8")
    report.files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    (out / MANIFEST).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    return report
