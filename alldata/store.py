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

#: Where ingest keeps a file's quick stamp (:meth:`alldata.sources.Source.quick_stamp`).
STAMP_FIELD = "file_stamp"

__all__ = [
    "STAMP_FIELD",
    "ensure_key_index",
    "ensure_schema",
    "insert_documents",
    "load_dataset",
    "open_dataset",
    "to_document",
    "to_fiftyone",
]


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
    out[STAMP_FIELD] = (s, {})
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


def ensure_schema(ds: fo.Dataset, example: dict[str, Any] | None = None) -> None:
    """Declare every common-schema field (so empty fields still exist) and the mask targets.

    ``example``: a :func:`to_document` document whose extra (source-specific) fields are
    declared in the same schema merge, with the types FiftyOne infers from their values, so a
    new dataset's schema is written and reloaded once.
    """
    have = ds.get_field_schema()
    missing: dict[str, Any] = {name: ftype(**kw) for name, (ftype, kw) in _fields().items() if name not in have}
    missing.update(_implied_fields([example] if example else [], {*have, *missing}))
    targets = {F.SEGMENTATION: dict(SEG_CLASSES), F.SEGMENTATION_ALT: dict(SEG_CLASSES)}
    stale = ds.mask_targets != targets
    in_merge = stale and bool(missing) and hasattr(ds, "_merge_sample_field_schema")
    if in_merge:  # written by the schema merge's save (one save of the dataset's document)
        ds._doc.mask_targets = targets
    _declare(ds, missing)
    if stale and not in_merge:
        ds.mask_targets = targets  # the setter saves


def _implied_fields(docs: list[dict[str, Any]], have: set[str] | dict[str, Any]) -> dict[str, Any]:
    """The fields of ``docs`` not in ``have``, each with the type FiftyOne infers from its value."""
    undeclared = {k: v for d in docs for k, v in d.items() if k not in have and k not in _PRIVATE and v is not None}
    if not undeclared:
        return {}
    from fiftyone.core.odm.utils import create_field, get_implied_field_kwargs

    return {name: create_field(name, **get_implied_field_kwargs(value)) for name, value in undeclared.items()}


def _declare(ds: fo.Dataset, missing: dict[str, Any]) -> None:
    """Declare the fields ``missing`` (name -> field instance) in one schema merge and one reload,
    where add_sample_field would reload per field (~30 ms each); the merge is private in
    fiftyone 1.22, hence the fallback."""
    if not missing:
        return
    merge = getattr(ds, "_merge_sample_field_schema", None)
    if merge is not None:
        merge(missing)
    else:  # pragma: no cover - other fiftyone versions
        for name, field in missing.items():
            ds.add_sample_field(name, type(field), embedded_doc_type=getattr(field, "document_type", None))


def open_dataset(name: str, example: dict[str, Any] | None = None) -> fo.Dataset:
    """Load the persistent dataset ``name``, creating it (with the schema) if needed.

    ``example``: a :func:`to_document` document of the source about to be stored, whose extra
    fields are declared along with the common schema (see :func:`ensure_schema`).

    Safe when several processes open the same new dataset at once (``alldata ingest``
    shards against one MongoDB): the one that loses the race to create it loads it.
    """
    import fiftyone as fo
    from pymongo.errors import DuplicateKeyError

    if fo.dataset_exists(name):
        ds = fo.load_dataset(name)
    else:
        try:
            ds = fo.Dataset(name, persistent=True, media_type="image")
            ds.save()  # the image metadata type FiftyOne set (the media_type setter would save and reload)
        # created meanwhile by another process: FiftyOne's own check ("already exists") or, when both
        # passed it, the database's unique index on the name (E11000)
        except (ValueError, DuplicateKeyError):
            if not fo.dataset_exists(name):
                raise
            ds = fo.load_dataset(name)
    if ds.media_type is None:  # before the schema: this save + reload is of the few default fields only
        ds.media_type = "image"
    ensure_schema(ds, example)
    return ds


def ensure_key_index(ds: fo.Dataset) -> bool:
    """A unique index on :data:`F.KEY <alldata.schema.F>` (samples that have one), so two
    writers can never store the same record twice; returns False (and leaves the dataset as
    it is) when the dataset already holds duplicate keys from before."""
    from pymongo.errors import OperationFailure

    try:
        ds.create_index(F.KEY, unique=True, partialFilterExpression={F.KEY: {"$type": "string"}})
    except (OperationFailure, ValueError):  # E11000: existing duplicates
        return False
    return True


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


def _plain_fields(s: Sample, fingerprint: str | None) -> dict[str, Any]:
    """The fields that are plain values (identity, licence, image facts, provenance): the same in a
    ``fo.Sample`` and in a raw document."""
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
        F.IS_SYNTHETIC: s.is_synthetic,
    }
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
    return fields


def to_fiftyone(sample: Sample, fingerprint: str | None = None) -> fo.Sample:
    """Convert a validated :class:`Sample` to a ``fo.Sample`` with every schema field set."""
    import fiftyone as fo

    s = sample
    fields: dict[str, Any] = {
        **_plain_fields(s, fingerprint),
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
    }
    for name, seg in ((F.SEGMENTATION, s.segmentation), (F.SEGMENTATION_ALT, s.segmentation_alt)):
        fields[name] = None if seg is None else fo.Segmentation(mask=seg.mask, annotator=seg.annotator)
    fields.update(s.extra)
    metadata = fo.ImageMetadata(
        size_bytes=s.size_bytes, mime_type=s.mime_type, width=s.width, height=s.height, num_channels=s.num_channels
    )
    tags = [F.TAG_SYNTHETIC] if s.is_synthetic else []
    # unset fields stay absent (they read as None; the schema declares them all)
    return fo.Sample(filepath=s.filepath, metadata=metadata, tags=tags, **{k: v for k, v in fields.items() if v is not None})


# --- the fast write path: documents built directly, no per-sample FiftyOne objects ------------------
# ``to_document`` writes the same BSON document that ``to_fiftyone(s)`` followed by
# ``Dataset.add_samples`` stores (tests/test_ingest.py compares them field by field), without
# building MongoEngine objects for the sample and its labels and without the per-sample
# read-back that ``add_samples`` does; FiftyOne's own FiftyOneDataset importer writes raw
# documents the same way (``fiftyone.core.odm.database.insert_documents``).


def _label(cls: str, **fields: Any) -> dict[str, Any]:
    from bson import ObjectId

    return {"_id": ObjectId(), "_cls": cls, "tags": [], **fields}


def _classification_doc(value: Any) -> dict[str, Any] | None:
    return None if value is None else _label("Classification", label=getattr(value, "value", value))


def _array(a: Any) -> Any:
    from bson import Binary
    from fiftyone.core.utils import serialize_numpy_array

    return Binary(serialize_numpy_array(a))


def _detection_doc(box: Box) -> dict[str, Any]:
    from bson import ObjectId
    from fiftyone.core.odm.utils import serialize_value

    d = {"_id": ObjectId(), "_cls": "Detection", "attributes": {}, "tags": [], "label": box.label.value,
         "bounding_box": [float(c) for c in box.bbox]}
    if box.mask is not None:
        d["mask"] = _array(box.mask)
    d.update({k: serialize_value(v) for k, v in box.attributes.items() if v is not None})
    return d


def _keypoints_doc(points: list[Point] | None) -> dict[str, Any] | None:
    from bson import ObjectId

    if points is None:
        return None
    return {
        "_cls": "Keypoints",
        "keypoints": [
            {"_id": ObjectId(), "_cls": "Keypoint", "attributes": {}, "tags": [], "label": p.label.value,
             "points": [[float(p.x), float(p.y)]], "confidence": None}
            for p in points
        ],
    }


def to_document(sample: Sample, fingerprint: str | None = None) -> dict[str, Any]:
    """The sample's database document, as ``to_fiftyone(sample)`` would be stored.

    Runs without a database (safe in worker processes); :func:`insert_documents` adds the
    dataset id and timestamps. Unset fields are left out, as FiftyOne does.
    """
    import random

    from fiftyone.core.odm.utils import serialize_value

    s = sample
    fields: dict[str, Any] = {
        **_plain_fields(s, fingerprint),
        F.GROUND_TRUTH: _classification_doc(s.ground_truth),
        F.DIAGNOSIS: _classification_doc(s.diagnosis),
        F.CELL_TYPE: _classification_doc(s.cell_type),
        F.SUBTYPE: _classification_doc(s.subtype),
        F.CELLS: None if s.cells is None else {"_cls": "Detections", "detections": [_detection_doc(b) for b in s.cells]},
        F.BLASTS: _keypoints_doc(s.blasts),
        F.OTHER_WBCS: _keypoints_doc(s.other_wbcs),
        F.WBC_LABELS: None
        if s.wbc_labels is None
        else {"_cls": "Classifications", "classifications": [_classification_doc(c) for c in s.wbc_labels]},
    }
    for name, seg in ((F.SEGMENTATION, s.segmentation), (F.SEGMENTATION_ALT, s.segmentation_alt)):
        fields[name] = None if seg is None else _label("Segmentation", mask=_array(seg.mask), annotator=seg.annotator)
    fields.update({k: serialize_value(v) for k, v in s.extra.items()})
    doc: dict[str, Any] = {
        "filepath": s.filepath,
        "tags": [F.TAG_SYNTHETIC] if s.is_synthetic else [],
        "metadata": {"_cls": "ImageMetadata", "size_bytes": s.size_bytes, "mime_type": s.mime_type,
                     "width": s.width, "height": s.height, "num_channels": s.num_channels},
        "_media_type": "image",
        "_rand": random.random() * 0.001 + 0.999,  # as fiftyone.core.odm.sample._generate_rand
    }
    doc.update((k, v) for k, v in fields.items() if v is not None)
    return doc


def insert_documents(ds: fo.Dataset, docs: list[dict[str, Any]]) -> list[str]:
    """Insert :func:`to_document` documents into ``ds`` in one bulk write; returns the keys
    refused because a sample with that key is already there (written meanwhile by another
    process, see :func:`ensure_key_index`). Fields the dataset has not declared yet (a
    source's ``extra``) are declared first, as ``add_samples`` would.
    """
    import datetime

    from pymongo.errors import BulkWriteError

    if not docs:
        return []
    # a source's ``extra`` fields not declared by open_dataset: declared with the type FiftyOne infers
    _declare(ds, _implied_fields(docs, ds.get_field_schema()))
    if ds.media_type is None:
        ds.media_type = "image"
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    dataset_id = ds._doc.id
    for d in docs:
        d.update(_dataset_id=dataset_id, created_at=now, last_modified_at=now)
    try:
        ds._sample_collection.insert_many(docs, ordered=False)
    except BulkWriteError as e:
        errors = e.details.get("writeErrors", [])
        if any(err.get("code") != 11000 for err in errors):
            raise
        return [docs[err["index"]][F.KEY] for err in errors]
    return []


_PRIVATE = {"_media_type", "_rand", "_dataset_id", "created_at", "last_modified_at", "_id"}
