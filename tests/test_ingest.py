"""Ingest into FiftyOne: schema on the stored samples, idempotence, updates, resume, duplicates."""

from __future__ import annotations

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
        if len(calls) == 4:
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
