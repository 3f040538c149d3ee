"""The FiftyOne store: the dataset schema, and :class:`~alldata.schema.Sample` -> ``fo.Sample``.

Datasets are persistent and live in FiftyOne's database: the bundled one by default, or
the MongoDB that ``FIFTYONE_DATABASE_URI`` points at (the path for teams and large data).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from alldata.errors import StoreError
from alldata.schema import SEG_CLASSES, Box, F, Point, Sample

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["ensure_schema", "load_dataset", "open_dataset", "to_fiftyone"]


def _fields() -> dict[str, tuple[Any, dict[str, Any]]]:
    import fiftyone as fo

    s, i, b, emb = fo.StringField, fo.IntField, fo.BooleanField, fo.EmbeddedDocumentField
    out: dict[str, tuple[Any, dict[str, Any]]] = {
        name: (s, {})
        for name in (
            F.SOURCE, F.SOURCE_ID, F.KEY, F.SHA256, F.RECORD_SHA256, F.LICENSE, F.CITATION, F.SUBJECT_ID,
            F.GROUP_ID, F.SPLIT, F.SOURCE_SPLIT, F.IMAGE_KIND, F.MAGNIFICATION, F.STAIN, F.DEVICE,
            F.DUPLICATE_OF, F.GENERATOR, F.CHECKPOINT_SHA256, F.RECIPE, F.CONDITION, F.SAMPLER, F.ALLDATA_VERSION,
        )
    }
    out.update({F.WIDTH: (i, {}), F.HEIGHT: (i, {}), F.SEED: (i, {}), F.NUM_INFERENCE_STEPS: (i, {}), F.IS_SYNTHETIC: (b, {})})
    for name in (F.GROUND_TRUTH, F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE):
        out[name] = (emb, {"document_type": fo.Classification})
    out[F.WBC_LABELS] = (emb, {"document_type": fo.Classifications})
    out[F.CELLS] = (emb, {"document_type": fo.Detections})
    for name in (F.BLASTS, F.OTHER_WBCS):
        out[name] = (emb, {"document_type": fo.Keypoints})
    for name in (F.SEGMENTATION, F.SEGMENTATION_ALT):
        out[name] = (emb, {"document_type": fo.Segmentation})
    return out


def ensure_schema(ds: fo.Dataset) -> None:
    """Declare every common-schema field (so empty fields still exist) and the mask targets."""
    have = ds.get_field_schema()
    missing = {name: ftype(**kw) for name, (ftype, kw) in _fields().items() if name not in have}
    if missing:
        # one schema merge and one reload, where add_sample_field would reload per field
        # (~30 ms each); private in fiftyone 1.22, hence the fallback
        merge = getattr(ds, "_merge_sample_field_schema", None)
        if merge is not None:
            merge(missing)
        else:  # pragma: no cover - other fiftyone versions
            for name, field in missing.items():
                ds.add_sample_field(name, type(field), embedded_doc_type=getattr(field, "document_type", None))
    targets = {F.SEGMENTATION: dict(SEG_CLASSES), F.SEGMENTATION_ALT: dict(SEG_CLASSES)}
    if ds.mask_targets != targets:
        ds.mask_targets = targets
        ds.save()


def open_dataset(name: str) -> fo.Dataset:
    """Load the persistent dataset ``name``, creating it (with the schema) if needed."""
    import fiftyone as fo

    ds = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name, persistent=True)
    ensure_schema(ds)
    return ds


def load_dataset(name: str) -> fo.Dataset:
    """Load an existing dataset or raise :class:`StoreError` listing the ones that exist."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        have = ", ".join(fo.list_datasets()) or "(none)"
        raise StoreError(f"No dataset {name!r} in the FiftyOne database. Existing: {have}. Create it with `alldata ingest`.")
    return fo.load_dataset(name)


def _classification(value: Any) -> fo.Classification | None:
    import fiftyone as fo

    if value is None:
        return None
    return fo.Classification(label=getattr(value, "value", value))


def _detection(box: Box) -> fo.Detection:
    import fiftyone as fo

    return fo.Detection(label=box.label.value, bounding_box=list(box.bbox), mask=box.mask, **box.attributes)


def _keypoints(points: list[Point] | None) -> fo.Keypoints | None:
    import fiftyone as fo

    if points is None:
        return None
    return fo.Keypoints(keypoints=[fo.Keypoint(label=p.label.value, points=[(p.x, p.y)]) for p in points])


def to_fiftyone(sample: Sample, fingerprint: str | None = None) -> fo.Sample:
    """Convert a validated :class:`Sample` to a ``fo.Sample`` with every schema field set."""
    import fiftyone as fo

    s = sample
    fields: dict[str, Any] = {
        F.SOURCE: s.source,
        F.SOURCE_ID: s.source_id,
        F.KEY: s.key,
        F.SHA256: s.sha256,
        F.RECORD_SHA256: fingerprint or s.fingerprint(),
        F.LICENSE: s.license,
        F.CITATION: s.citation,
        F.SUBJECT_ID: s.subject_id,
        F.GROUP_ID: s.group_id,
        F.SOURCE_SPLIT: s.source_split,
        F.IMAGE_KIND: s.image_kind.value,
        F.WIDTH: s.width,
        F.HEIGHT: s.height,
        F.MAGNIFICATION: s.magnification,
        F.STAIN: s.stain,
        F.DEVICE: s.device,
        F.GROUND_TRUTH: _classification(s.ground_truth),
        F.DIAGNOSIS: _classification(s.diagnosis),
        F.CELL_TYPE: _classification(s.cell_type),
        F.SUBTYPE: _classification(s.subtype),
        F.CELLS: None if s.cells is None else fo.Detections(detections=[_detection(b) for b in s.cells]),
        F.BLASTS: _keypoints(s.blasts),
        F.OTHER_WBCS: _keypoints(s.other_wbcs),
        F.WBC_LABELS: None
        if s.wbc_labels is None
        else fo.Classifications(classifications=[fo.Classification(label=c.value) for c in s.wbc_labels]),
        F.IS_SYNTHETIC: s.is_synthetic,
    }
    for name, seg in ((F.SEGMENTATION, s.segmentation), (F.SEGMENTATION_ALT, s.segmentation_alt)):
        fields[name] = None if seg is None else fo.Segmentation(mask=seg.mask, annotator=seg.annotator)
    if s.provenance is not None:
        import json

        p = s.provenance
        fields.update(
            {
                F.GENERATOR: p.generator,
                F.CHECKPOINT_SHA256: p.checkpoint_sha256,
                F.SEED: p.seed,
                F.CONDITION: json.dumps(p.condition, sort_keys=True),
                F.SAMPLER: p.sampler,
                F.NUM_INFERENCE_STEPS: p.num_inference_steps,
                F.RECIPE: p.recipe,
                F.ALLDATA_VERSION: p.alldata_version,
            }
        )
    fields.update(s.extra)
    metadata = fo.ImageMetadata(
        size_bytes=s.size_bytes, mime_type=s.mime_type, width=s.width, height=s.height, num_channels=s.num_channels
    )
    tags = [F.TAG_SYNTHETIC] if s.is_synthetic else []
    # unset fields stay absent (they read as None; the schema declares them all)
    return fo.Sample(filepath=s.filepath, metadata=metadata, tags=tags, **{k: v for k, v in fields.items() if v is not None})
