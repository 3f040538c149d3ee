"""The loaders on the real files in ../shared/data, with the counts SOURCES.md gives."""

from __future__ import annotations

from collections import Counter

import pytest

from alldata.schema import CellType, Diagnosis
from alldata.sources import get_source
from tests.sources._contract import check_contract


def _load(shared_data, name, dirname, expected):
    return check_contract(get_source(name, shared_data / dirname), expected)


def test_bccd_counts(shared_data):
    src = get_source("bccd", shared_data / "BCCD")
    samples = check_contract(src, 364)
    boxes = Counter(b.label for s in samples for b in s.cells)
    assert boxes == {CellType.rbc: 4155, CellType.wbc: 372, CellType.platelet: 361}
    assert Counter(s.source_split for s in samples) == {"train": 205, "val": 87, "test": 72}
    wbc_per_image = Counter(sum(b.label is CellType.wbc for b in s.cells) for s in samples)
    assert wbc_per_image == {1: 344, 2: 14, 0: 6}
    degenerate = sorted(s.source_id for s in samples for b in s.cells if b.attributes.get("degenerate"))
    assert degenerate == ["BloodImage_00338", "BloodImage_00343"]
    assert sorted(p.path.rsplit("/", 1)[1] for p in src.problems) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert all(s.width == 640 and s.height == 480 for s in samples)
    # labels.csv join: empty rows give no label, multi-label rows several
    assert Counter(len(s.wbc_labels) for s in samples if s.wbc_labels is not None)[0] > 0
    assert any(len(s.wbc_labels) > 1 for s in samples if s.wbc_labels)
    assert sum(1 for s in samples if s.segmentation is not None) == 364


def test_bccd_wbc_crops(shared_data):
    samples = _load(shared_data, "bccd_wbc", "BCCD_WBC_subtypes", 351)
    assert Counter(s.ground_truth for s in samples) == {
        "Neutrophil": 207, "Eosinophil": 88, "Lymphocyte": 33, "Monocyte": 20, "Basophil": 3}
    assert all(s.group_id.startswith("bccd/BloodImage_") for s in samples)


def test_all_idb2(shared_data):
    samples = _load(shared_data, "all_idb2", "ALL-IDB2", 260)
    assert Counter(s.diagnosis for s in samples) == {Diagnosis.ALL: 130, Diagnosis.healthy: 130}
    assert sum(s.width == s.height == 257 for s in samples) == 250
    assert all(s.segmentation is not None and s.segmentation_alt is not None for s in samples)
    by_id = {s.source_id: s for s in samples}
    assert by_id["Im223_0"].sha256 == by_id["Im257_0"].sha256  # the known identical pair
    nucleus = (by_id["Im001_1"].segmentation.mask == 2).mean()
    assert 0.1 < nucleus < 0.3 and set(map(int, set(by_id["Im001_1"].segmentation.mask.ravel()))) == {0, 1, 2}


def test_all_idb1(shared_data):
    samples = _load(shared_data, "all_idb1", "ALL-IDB1", 30)
    assert Counter(s.diagnosis for s in samples) == {Diagnosis.ALL: 13, Diagnosis.healthy: 17}
    assert sum(len(s.blasts or []) for s in samples) == 116
    per_image = [len(s.blasts) for s in sorted(samples, key=lambda s: s.source_id) if s.blasts is not None]
    assert per_image == [8, 11, 6, 6, 11, 13, 11, 10, 3, 15, 15, 2, 5]
    with_masks = {s.source_id: s for s in samples if s.cells}
    assert sorted(with_masks) == ["Im001_1", "Im003_1", "Im004_1", "Im009_1", "Im010_1"]
    for s in with_masks.values():
        wbcs = [b for b in s.cells if b.label is CellType.wbc]
        assert 8 <= len(wbcs) <= 32
        # every blast centroid falls inside a WBC instance mask (as SOURCES.md checked)
        for p in s.blasts:
            assert any(
                b.bbox[0] <= p.x <= b.bbox[0] + b.bbox[2] and b.bbox[1] <= p.y <= b.bbox[1] + b.bbox[3] for b in wbcs
            )
    assert {s.device for s in samples} == {"C2500L", "Canon PowerShot G5"}


def test_taleqani(shared_data):
    samples = _load(shared_data, "taleqani", "ALL_Taleqani_Kaggle", 1085)
    assert Counter(s.ground_truth for s in samples) == {"Benign": 168, "Early": 328, "Pre": 321, "Pro": 268}
    pro = Counter(s.sha256 for s in samples if s.ground_truth == "Pro")
    assert sum(1 for c in pro.values() if c == 2) == 40  # the 40 byte-identical pairs
    assert all("segmented_filepath" in s.extra for s in samples)


def test_pbc(shared_data):
    samples = _load(shared_data, "pbc", "PBC", 800)
    assert set(Counter(s.cell_type for s in samples).values()) == {100}
    assert {s.diagnosis for s in samples} == {Diagnosis.healthy}


@pytest.mark.parametrize("name", ["cnmc", "atlas"])
def test_absent_sources_say_how_to_get_them(shared_data, name):
    from alldata.errors import SourceNotFoundError

    with pytest.raises(SourceNotFoundError, match="How to obtain it"):
        get_source(name, shared_data / "nope").check()
