"""Ingest into FiftyOne: schema on the stored samples, idempotence, updates, resume, duplicates."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo
import pytest

from alldata.ingest import ingest, ingest_all, report_path
from alldata.reports import IngestReport, load_ingest_report
from alldata.schema import F
from alldata.sources.bccd import BCCD
from alldata.sources.taleqani import Taleqani
from tests._fixtures import make_bccd, write_image, write_voc


def test_stored_fields_follow_the_schema(tmp_path, dataset_name):
    ingest(BCCD(make_bccd(tmp_path / "BCCD")), dataset_name, progress=False)
    ds = fo.load_dataset(dataset_name)
    s = ds.first()
    assert (s[F.SOURCE], s[F.KEY], s[F.IMAGE_KIND], s[F.SOURCE_SPLIT]) == ("bccd", "bccd/BloodImage_00000", "smear", "train")
    assert s.metadata.width == 64 and s[F.IS_SYNTHETIC] is False and s[F.GENERATOR] is None
    wbc = s[F.CELLS].detections[0]
    assert wbc.label == "wbc" and wbc.bounding_box == pytest.approx([9 / 64, 9 / 48, 21 / 64, 21 / 48])
    assert ds.mask_targets[F.SEGMENTATION] == {0: "background", 1: "cytoplasm", 2: "nucleus"}


def test_rerun_adds_nothing_and_changes_are_updated(tmp_path, dataset_name):
    root = make_bccd(tmp_path / "BCCD", n=4)
    first = ingest(BCCD(root), dataset_name, progress=False)
    assert (first.added, first.unchanged) == (4, 0)
    again = ingest(BCCD(root), dataset_name, progress=False)
    assert (again.added, again.updated, again.unchanged) == (0, 0, 4)
    # change one label file and one image: both samples are replaced, nothing duplicated
    voc = root / "BCCD"
    write_voc(voc / "Annotations" / "BloodImage_00001.xml", "x", (64, 48), [("Platelets", 2, 2, 6, 6)])
    write_image(voc / "JPEGImages" / "BloodImage_00002.jpg", (64, 48), seed=99)
    third = ingest(BCCD(root), dataset_name, progress=False)
    assert (third.added, third.updated, third.unchanged) == (0, 2, 2)
    ds = fo.load_dataset(dataset_name)
    assert len(ds) == 4 and len(set(ds.values(F.KEY))) == 4
    s1 = ds.match({F.KEY: "bccd/BloodImage_00001"}).first()
    assert [d.label for d in s1[F.CELLS].detections] == ["platelet"]


def test_interrupted_run_resumes_without_duplicates(tmp_path, dataset_name, monkeypatch):
    root = make_bccd(tmp_path / "BCCD", n=5)
    src = BCCD(root)
    real_load, calls = BCCD.load, []

    def flaky(self, path):
        calls.append(path)
        if len(set(calls)) == 4:  # (a new dataset's first file is also read once for its schema)
            raise KeyboardInterrupt
        return real_load(self, path)

    monkeypatch.setattr(BCCD, "load", flaky)
    with pytest.raises(KeyboardInterrupt):
        ingest(src, dataset_name, batch_size=1, workers=1, progress=False)
    assert len(fo.load_dataset(dataset_name)) == 3
    monkeypatch.setattr(BCCD, "load", real_load)
    report = ingest(BCCD(root), dataset_name, progress=False)
    assert (report.added, report.unchanged) == (2, 3)
    assert len(fo.load_dataset(dataset_name)) == 5


def test_exact_duplicates_tagged_within_and_across_sources(tmp_path, dataset_name):
    tq = tmp_path / "ALL_Taleqani_Kaggle" / "Original"
    a = write_image(tq / "Pro" / "WBC-Malignant-Pro-017.jpg", seed=1)
    (tq / "Pro" / "WBC-Malignant-Pro-018.jpg").write_bytes(a.read_bytes())
    write_image(tq / "Pro" / "WBC-Malignant-Pro-019.jpg", seed=2)
    folder = tmp_path / "mine" / "lymphoblast"
    folder.mkdir(parents=True)
    (folder / "copy.jpg").write_bytes(a.read_bytes())
    first = ingest(Taleqani(tmp_path / "ALL_Taleqani_Kaggle"), dataset_name, progress=False)
    assert first.duplicates_tagged == 2
    report = ingest("folder", dataset_name, root=tmp_path / "mine", progress=False)
    assert report.duplicates_tagged == 1  # this run's source, not the dataset's 3
    ds = fo.load_dataset(dataset_name)
    dup = ds.match_tags(F.TAG_DUPLICATE)
    assert len(ds) == 4 and len(dup) == 3
    assert sorted(v for v in dup.values(F.DUPLICATE_OF) if v) == ["folder/lymphoblast/copy.jpg"] * 2
    assert ds.match({F.KEY: "folder/lymphoblast/copy.jpg"}).first()[F.CELL_TYPE].label == "lymphoblast"


def test_the_report_file_is_the_typed_contract(tmp_path, dataset_name):
    import json

    report = ingest(BCCD(make_bccd(tmp_path / "BCCD", n=3)), dataset_name, progress=False)
    path = report_path(dataset_name, "bccd")
    saved = load_ingest_report(path)
    assert saved == report and saved.schema_version == 1 and saved.finished is not None
    assert (saved.found, saved.added, saved.skipped, saved.duplicates_tagged) == (3, 3, [], 0)
    info = fo.load_dataset(dataset_name).info["ingest"]["bccd"]
    assert (info["added"], info["skipped"], info["report"]) == (3, 0, str(path))
    # a report written before the contract (counts of problems, no schema_version) still loads
    legacy = {k: v for k, v in json.loads(path.read_text()).items() if k != "schema_version"}
    legacy.update(skipped=1, warnings=0, problems=[{"path": "x.jpg", "reason": "truncated", "severity": "skipped"}])
    old = IngestReport.model_validate(legacy)
    assert [p.path for p in old.skipped] == ["x.jpg"] and old.warnings == []


def test_ingest_all_skips_missing_sources(tmp_path, dataset_name, monkeypatch):
    make_bccd(tmp_path / "BCCD", n=2)
    monkeypatch.setenv("ALLDATA_DATA_ROOT", str(tmp_path))
    reports, missing = ingest_all(dataset_name, progress=False)
    assert [r.source for r in reports] == ["bccd"]
    assert "all_idb2" in missing and "folder" not in missing


def test_real_bccd_into_fiftyone(shared_data, dataset_name):
    report = ingest("bccd", dataset_name, root=shared_data / "BCCD", progress=False)
    assert (report.added, len(report.skipped), len(report.warnings)) == (364, 0, 2)
    ds = fo.load_dataset(dataset_name)
    assert ds.count_values("cells.detections.label") == {"rbc": 4155, "wbc": 372, "platelet": 361}
    assert ingest("bccd", dataset_name, root=shared_data / "BCCD", progress=False).unchanged == 364


# --- the fast path: documents, checks in worker processes, quick re-runs, shards ------------------


def _full_sample(tmp_path):
    """A Sample with every field the common schema has set (labels, masks, provenance, extra)."""
    import numpy as np

    from alldata.schema import Box, Point, Provenance, Sample, SegMask

    mask = np.zeros((12, 16), np.uint8)
    mask[2:5, 3:9] = 2
    return Sample(
        filepath=str(write_image(tmp_path / "a.png")), source="folder", source_id="x/a.png", sha256="0" * 64,
        license="MIT", citation="c", subject_id="p1", group_id="folder/x/a", source_split="train",
        image_kind="cell", width=16, height=12, size_bytes=10, mime_type="image/png", num_channels=3,
        magnification="100x", stain="MGG", device="cam", ground_truth="x", diagnosis="ALL", cell_type="lymphoblast",
        subtype="L1", cells=[Box(label="wbc", bbox=(0.1, 0.1, 0.5, 0.5), mask=np.ones((3, 4), bool),
                                 attributes={"difficult": True}), Box(label="rbc", bbox=(0, 0, 0.2, 0.2))],
        blasts=[Point(label="lymphoblast", x=0.5, y=0.25)], other_wbcs=[Point(label="neutrophil", x=0.1, y=0.9)],
        segmentation=SegMask(mask=mask, annotator="me"), segmentation_alt=SegMask(mask=mask, annotator="you"),
        wbc_labels=["lymphocyte", "monocyte"],
        provenance=Provenance(generator="ddpm", checkpoint_sha256="1" * 64, seed=3, condition={"cell_type": "x"},
                              sampler="ddim", num_inference_steps=20, recipe="r", alldata_version="0.1.0"),
        extra={"segmented_filepath": "/x/y.jpg", "prefix": "BA"},
    )


def _strip_ids(o):
    """A document without what differs between two writes of one record (ids, random key, times)."""
    import numpy as np
    from bson import Binary

    if isinstance(o, dict):
        return {k: _strip_ids(v) for k, v in o.items()
                if k not in ("_id", "id", "_rand", "created_at", "last_modified_at", "_dataset_id")}
    if isinstance(o, list):
        return [_strip_ids(v) for v in o]
    if isinstance(o, (bytes, Binary)):
        from fiftyone.core.utils import deserialize_numpy_array

        a = deserialize_numpy_array(bytes(o))
        return ("array", str(a.dtype), a.shape, a.tobytes())
    if isinstance(o, np.ndarray):
        return ("array", str(o.dtype), o.shape, o.tobytes())
    return o


def test_documents_are_what_fiftyone_would_store(tmp_path, dataset_name):
    """The bulk path writes, field for field, what to_fiftyone + add_samples writes, and reads back the same."""
    from alldata.store import insert_documents, open_dataset, to_document, to_fiftyone

    s = _full_sample(tmp_path)
    assert _strip_ids(to_document(s, "f" * 64)) == _strip_ids(dict(to_fiftyone(s, "f" * 64).to_mongo_dict()))
    ds = open_dataset(dataset_name)
    ds.add_samples([to_fiftyone(s, "f" * 64)], progress=False)
    assert insert_documents(ds, [to_document(s.model_copy(update={"source_id": "x/b.png"}), "f" * 64)]) == []
    a, b = (ds.match({F.KEY: k}).first().to_dict() for k in ("folder/x/a.png", "folder/x/b.png"))
    a.pop("source_id"), b.pop("source_id"), a.pop("key"), b.pop("key")
    assert _strip_ids(a) == _strip_ids(b)
    back = ds.match({F.KEY: "folder/x/b.png"}).first()
    assert back[F.CELLS].detections[0]["difficult"] is True and back[F.SEGMENTATION].mask.max() == 2
    assert back["segmented_filepath"] == "/x/y.jpg" and back.metadata.width == 16


def test_new_dataset_declares_the_extras_of_an_example_in_its_schema(tmp_path, dataset_name):
    """open_dataset(example=...) declares the common schema and the example's extra fields in one go,
    with the types add_samples would infer, so the first bulk write has nothing left to declare."""
    from alldata.store import open_dataset, to_document, to_fiftyone

    s = _full_sample(tmp_path)
    ds = open_dataset(dataset_name, example=to_document(s, "f" * 64))
    assert ds.media_type == "image" and "segmented_filepath" in ds.get_field_schema()
    ref = open_dataset(dataset_name + "-ref")
    try:
        ref.add_samples([to_fiftyone(s, "f" * 64)], progress=False)
        def kinds(d: fo.Dataset) -> dict:
            return {k: (type(v), getattr(v, "document_type", None)) for k, v in d.get_field_schema().items()}

        assert kinds(ds) == kinds(ref)
    finally:
        ref.delete()


def _jpeg_variants(tmp_path):
    """A good noise JPEG and broken copies: truncated (3 ways) and a marker in the middle of the scan."""
    good = write_image(tmp_path / "good.jpg", (96, 96), seed=0)
    data = good.read_bytes()
    n = len(data)
    return good, {
        "cut30": data[: n * 3 // 10], "cut90": data[: n * 9 // 10], "cut2": data[:-2],
        "marker": data[: n // 2] + b"\xff\xc4" + data[n // 2 + 2 :],
    }


def test_reduced_decode_catches_what_a_full_decode_catches(tmp_path):
    """JPEGs are checked at 1/8 scale (every byte still decoded): same verdict as a full decode."""
    import io

    from PIL import Image

    from alldata.errors import ImageError
    from alldata.imageio import inspect_image

    good, variants = _jpeg_variants(tmp_path)
    assert inspect_image(good).width == 96
    for name, data in variants.items():
        path = tmp_path / f"{name}.jpg"
        path.write_bytes(data)
        with pytest.raises(Exception):  # noqa: B017 - what Pillow raises differs by case
            Image.open(io.BytesIO(data)).load()
        with pytest.raises(ImageError, match=str(path)):
            inspect_image(path)


def test_worker_processes_report_broken_files_and_warnings(tmp_path, dataset_name):
    """Loaded in 2 processes: broken files are skipped with reasons, worker warnings come back, order kept."""
    _, variants = _jpeg_variants(tmp_path / "src")
    root = tmp_path / "cells"
    for i in range(12):
        write_image(root / "lymphoblast" / f"c{i:02d}.jpg", (20, 20), seed=i)
    for name, data in variants.items():
        (root / "lymphoblast" / f"bad_{name}.jpg").write_bytes(data)
    write_image(root / "neutrophil" / "png_named.jpg", fmt="PNG")  # a warning, recorded in a worker
    report = ingest("folder", dataset_name, root=root, workers=2, progress=False)
    assert (report.found, report.added) == (17, 13)
    assert sorted(Path(p.path).name for p in report.skipped) == sorted(f"bad_{n}.jpg" for n in variants)
    assert all("truncated" in p.reason or "decode" in p.reason or "broken" in p.reason for p in report.skipped)
    assert [Path(p.path).name for p in report.warnings] == ["png_named.jpg"]
    ds = fo.load_dataset(dataset_name)
    assert ds.values(F.KEY) == sorted(ds.values(F.KEY))  # written in input order


def test_no_decode_still_refuses_truncated_files_and_says_so(tmp_path, dataset_name):
    """``decode=False`` (``--no-decode``): JPEG/PNG checked by structure; every truncated file is still
    refused with a reason, a marker planted in the scan (caught only by decoding) passes, the report says so."""
    from alldata.errors import ImageError
    from alldata.imageio import inspect_image

    _, variants = _jpeg_variants(tmp_path / "src")
    root = tmp_path / "cells"
    for i in range(6):
        write_image(root / "lymphoblast" / f"c{i:02d}.jpg", (40, 40), seed=i)
        write_image(root / "neutrophil" / f"p{i:02d}.png", (40, 40), seed=10 + i, fmt="PNG")
    for name, data in variants.items():
        (root / "lymphoblast" / f"bad_{name}.jpg").write_bytes(data)
    png = (root / "neutrophil" / "p00.png").read_bytes()
    for cut in (len(png) // 2, len(png) - 6):  # in the pixel data; in the IEND chunk
        (root / "neutrophil" / f"bad_cut{cut}.png").write_bytes(png[:cut])
    report = ingest("folder", dataset_name, root=root, workers=2, decode=False, progress=False)
    skipped = {Path(p.path).name: p.reason for p in report.skipped}
    truncated = {f"bad_{n}.jpg" for n in ("cut30", "cut90", "cut2")} | {n for n in skipped if n.endswith(".png")}
    assert set(skipped) == truncated and len(truncated) == 5, skipped
    assert all("truncated" in r or "CRC" in r or "broken" in r for r in skipped.values()), skipped
    assert report.decoded is False and report.added == 13  # 12 good + the planted marker
    with pytest.raises(ImageError):  # what only a decode catches
        inspect_image(root / "lymphoblast" / "bad_marker.jpg")
    assert inspect_image(root / "lymphoblast" / "bad_marker.jpg", decode=False).width == 96


def test_rerun_skips_unchanged_files_unread_and_rechecks_on_demand(tmp_path, dataset_name, monkeypatch):
    import os

    from alldata.sources import base

    root = tmp_path / "cells"
    for i in range(4):
        write_image(root / "lymphoblast" / f"c{i}.png", seed=i)
    assert ingest("folder", dataset_name, root=root, workers=1, progress=False).added == 4
    reads = []
    real = base.inspect_image
    monkeypatch.setattr(base, "inspect_image", lambda p, **kw: reads.append(Path(p).name) or real(p, **kw))
    again = ingest("folder", dataset_name, root=root, workers=1, progress=False)
    assert (again.added, again.updated, again.unchanged, reads) == (0, 0, 4, [])
    write_image(root / "lymphoblast" / "c1.png", seed=99)  # new content
    st = (root / "lymphoblast" / "c2.png").stat()
    os.utime(root / "lymphoblast" / "c2.png", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched only
    third = ingest("folder", dataset_name, root=root, workers=1, progress=False)
    assert (third.updated, third.unchanged, sorted(reads)) == (1, 3, ["c1.png", "c2.png"])
    reads.clear()
    assert ingest("folder", dataset_name, root=root, workers=1, progress=False).unchanged == 4 and reads == []
    full = ingest("folder", dataset_name, root=root, workers=1, recheck=True, progress=False)
    assert full.unchanged == 4 and len(reads) == 4
    assert len(fo.load_dataset(dataset_name)) == 4


def test_shards_partition_the_files_stably():
    from alldata.ingest import parse_shard, shard_of

    names = [f"class{c}/img{i:04d}.png" for c in range(3) for i in range(300)]
    parts = [{n for n in names if shard_of(n, 3) == i} for i in range(3)]
    assert set().union(*parts) == set(names) and sum(map(len, parts)) == len(names)
    assert all(200 < len(p) < 400 for p in parts)  # roughly even
    assert shard_of("class0/img0001.png", 3) == shard_of("class0/img0001.png", 3)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
