"""C-NMC 2019 loader: both packagings, subject ids, prelim CSV join, problems."""

from __future__ import annotations

import itertools
import shutil
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from alldata.errors import AnnotationError, SourceNotFoundError
from alldata.schema import CellType, Diagnosis, ImageKind
from alldata.sources.base import SOURCES
from alldata.sources.cnmc import CNMC, parse_cell_name
from tests.sources._contract import check_contract, check_missing

TRAIN = {
    "fold_0": {"all": ["UID_11_1_1_all", "UID_11_2_1_all"], "hem": ["UID_h3_1_1_hem"]},
    "fold_1": {"all": ["UID_12_1_1_all"], "hem": ["UID_H10_1_1_hem", "UID_H10_2_3_hem"]},
    "fold_2": {"all": ["UID_13_5_2_all"], "hem": ["UID_H22_1_1_hem"]},
}
PRELIM_ROWS = [
    ("UID_57_29_1_all.bmp", "1.bmp", "1"),
    ("UID_H49_35_1_hem.bmp", "2.bmp", "0"),
    ("UID_57_30_2_all.bmp", "10.bmp", "1"),
]
FINAL = ["1", "2"]
TOTAL = 8 + 3 + 2
_colour = itertools.count(1)


def bmp(path: Path, size: int = 8) -> Path:
    """A 24-bit BMP: black background with a coloured blob (a different colour each call)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    c = next(_colour)
    img = Image.new("RGB", (size, size), (0, 0, 0))
    img.paste(((c * 40) % 256, (c * 90) % 256, 200), (2, 2, 6, 6))
    img.save(path, format="BMP")
    return path


def make_cnmc(root: Path, packaging: str = "kaggle") -> Path:
    """Write the documented tree (Kaggle mirror or TCIA packaging) under ``root``."""
    if packaging == "kaggle":
        train, prelim_parent, final = root / "training_data", root / "validation_data", root / "testing_data"
    else:
        train, prelim_parent, final = root / "C-NMC_training_data", root, root
    for fold, classes in TRAIN.items():
        for cls, stems in classes.items():
            for stem in stems:
                bmp(train / fold / cls / f"{stem}.bmp")
    prelim = prelim_parent / "C-NMC_test_prelim_phase_data"
    lines = ["Patient_ID,new_names,labels"]
    for original, new, label in PRELIM_ROWS:
        bmp(prelim / new)
        lines.append(f"{original},{new},{label}")
    (prelim_parent / "C-NMC_test_prelim_phase_data_labels.csv").write_text("\n".join(lines) + "\n")
    for stem in FINAL:
        bmp(final / "C-NMC_test_final_phase_data" / f"{stem}.bmp")
    return root


@pytest.fixture(params=["kaggle", "tcia"])
def cnmc_root(request, tmp_path: Path) -> Path:
    return make_cnmc(tmp_path / "C-NMC_Leukemia", request.param)


@pytest.fixture
def kaggle(tmp_path: Path) -> Path:
    return make_cnmc(tmp_path / "C-NMC_Leukemia")


def by_id(source: CNMC) -> dict:
    return {s.source_id: s for s in source}


def test_contract_both_packagings(cnmc_root: Path) -> None:
    src = CNMC(cnmc_root)
    samples = check_contract(src, TOTAL)
    assert src.problems == []
    assert Counter(s.source_split for s in samples) == {
        "fold_0": 3,
        "fold_1": 3,
        "fold_2": 2,
        "prelim_test": 3,
        "final_test": 2,
    }
    s = {x.source_id: x for x in samples}["UID_11_1_1_all"]
    assert (s.diagnosis, s.cell_type, s.ground_truth) == (Diagnosis.ALL, CellType.lymphoblast, "all")
    assert (s.subject_id, s.group_id, s.source_split) == ("11", "cnmc/11", "fold_0")
    assert (s.width, s.height, s.mime_type, s.num_channels, s.image_kind) == (8, 8, "image/bmp", 3, ImageKind.cell)


def test_packagings_give_same_records(tmp_path: Path) -> None:
    def summary(root: Path) -> list[tuple]:
        return [(s.source_id, s.subject_id, s.group_id, s.diagnosis, s.source_split) for s in CNMC(root)]

    a = summary(make_cnmc(tmp_path / "k", "kaggle"))
    b = summary(make_cnmc(tmp_path / "t", "tcia"))
    assert a == b and len(a) == TOTAL


def test_subject_ids_and_h3(kaggle: Path) -> None:
    s = by_id(CNMC(kaggle))
    h3 = s["UID_h3_1_1_hem"]  # raw name kept in source_id, subject upper-cased
    assert (h3.subject_id, h3.group_id, h3.diagnosis, h3.cell_type, h3.ground_truth) == (
        "H3",
        "cnmc/H3",
        Diagnosis.healthy,
        None,
        "hem",
    )
    assert s["UID_H10_2_3_hem"].subject_id == "H10" and s["UID_H10_2_3_hem"].source_split == "fold_1"
    assert {x.subject_id for x in s.values() if x.source_split.startswith("fold")} == {
        "11",
        "H3",
        "12",
        "H10",
        "13",
        "H22",
    }


@pytest.mark.parametrize(
    "stem, expected",
    [("UID_11_10_1_all", ("11", "all")), ("UID_H10_43_1_hem", ("H10", "hem")), ("UID_h3_2_1_hem", ("H3", "hem"))],
)
def test_parse_cell_name(stem: str, expected: tuple[str, str]) -> None:
    assert parse_cell_name(stem) == expected


@pytest.mark.parametrize("stem", ["UID_11_10_all", "cell_1", "UID_H3_1_1_all", "UID_11_1_1_hem", "UID_11_1_1_aml"])
def test_parse_cell_name_rejects(stem: str) -> None:
    with pytest.raises(ValueError, match=stem):
        parse_cell_name(stem)


def test_prelim_csv_join(kaggle: Path) -> None:
    s = by_id(CNMC(kaggle))
    one, two, ten = s["prelim/1"], s["prelim/2"], s["prelim/10"]
    assert (one.subject_id, one.group_id, one.diagnosis, one.cell_type) == (
        "57",
        "cnmc/57",
        Diagnosis.ALL,
        CellType.lymphoblast,
    )
    assert one.extra == {"original_name": "UID_57_29_1_all.bmp"} and one.source_split == "prelim_test"
    assert (two.subject_id, two.group_id, two.diagnosis, two.ground_truth) == (
        "H49",
        "cnmc/H49",
        Diagnosis.healthy,
        "hem",
    )
    assert ten.group_id == one.group_id == "cnmc/57"  # same subject -> same group


def test_final_images_unlabelled(kaggle: Path) -> None:
    s = by_id(CNMC(kaggle))["final/2"]
    assert (s.diagnosis, s.cell_type, s.ground_truth, s.subject_id) == (None, None, None, None)
    assert (s.group_id, s.source_split) == ("cnmc/final/2", "final_test")


def test_items_sorted(kaggle: Path) -> None:
    rel = [p.relative_to(kaggle).as_posix() for p in CNMC(kaggle).items()]
    assert rel[0] == "training_data/fold_0/all/UID_11_1_1_all.bmp"
    assert rel[8:] == [
        "validation_data/C-NMC_test_prelim_phase_data/1.bmp",
        "validation_data/C-NMC_test_prelim_phase_data/2.bmp",
        "validation_data/C-NMC_test_prelim_phase_data/10.bmp",
        "testing_data/C-NMC_test_final_phase_data/1.bmp",
        "testing_data/C-NMC_test_final_phase_data/2.bmp",
    ]


def test_missing_csv_one_warning(kaggle: Path) -> None:
    csv_path = kaggle / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv"
    csv_path.unlink()
    src = CNMC(kaggle)
    s = by_id(src)
    assert len(s) == TOTAL
    assert [(p.path, p.severity) for p in src.problems] == [(str(csv_path), "warning")]
    assert "not found" in src.problems[0].reason
    assert (s["prelim/1"].diagnosis, s["prelim/1"].subject_id, s["prelim/1"].group_id) == (None, None, "cnmc/prelim/1")


def test_missing_csv_warns_once_under_threads(kaggle: Path) -> None:
    (kaggle / "validation_data" / "C-NMC_test_prelim_phase_data_labels.csv").unlink()
    src = CNMC(kaggle)
    prelim = [p for p in src.items() if p.parent.name == "C-NMC_test_prelim_phase_data"] * 4
    with ThreadPoolExecutor(8) as pool:
        samples = list(pool.map(src.load, prelim))
    assert len(samples) == 12 and len(src.problems) == 1


def test_unmatched_and_malformed_rows_warn(kaggle: Path) -> None:
    v = kaggle / "validation_data"
    bmp(v / "C-NMC_test_prelim_phase_data" / "4.bmp")  # no row
    with (v / "C-NMC_test_prelim_phase_data_labels.csv").open("a") as f:
        f.write("UID_60_1_1_all.bmp,9.bmp,1\n")  # line 5: image missing
        f.write("garbage\n")  # line 6: one field
        f.write("UID_61_1_1_all.bmp,2.bmp,x\n")  # line 7: bad label
        f.write("UID_62_1_1_all.bmp,3.bmp,0\n")  # line 8: label contradicts the name
        f.write("nonsense.bmp,5.bmp,1\n")  # line 9: Patient_ID does not parse
    src = CNMC(kaggle)
    s = by_id(src)
    assert len(s) == TOTAL + 1
    assert all(p.severity == "warning" for p in src.problems)
    reasons = {p.reason.split(":")[0]: p for p in src.problems if "labels.csv line" in p.reason}
    assert sorted(reasons) == [f"C-NMC_test_prelim_phase_data_labels.csv line {n}" for n in (5, 6, 7, 8, 9)]
    assert "9.bmp" in reasons["C-NMC_test_prelim_phase_data_labels.csv line 5"].reason
    img_warn = [p for p in src.problems if p.path.endswith("4.bmp")]
    assert len(img_warn) == 1 and "no usable row" in img_warn[0].reason
    assert (s["prelim/4"].diagnosis, s["prelim/4"].group_id) == (None, "cnmc/prelim/4")
    assert s["prelim/2"].diagnosis == Diagnosis.healthy  # the good row still used


def test_corrupt_and_empty_files_skipped(kaggle: Path) -> None:
    bad = kaggle / "training_data" / "fold_0" / "all" / "UID_11_9_1_all.bmp"
    bad.write_bytes(b"BM" + b"\x13garbage" * 20)
    empty = kaggle / "training_data" / "fold_1" / "hem" / "UID_H10_9_1_hem.bmp"
    empty.write_bytes(b"")
    src = CNMC(kaggle)
    assert len(src) == TOTAL + 2
    assert len(list(src)) == TOTAL
    skipped = {Path(p.path).name: p.reason for p in src.problems if p.severity == "skipped"}
    assert set(skipped) == {bad.name, empty.name}
    assert bad.name in skipped[bad.name] and "truncated: the BMP data ends at byte 162" in skipped[bad.name]
    assert "empty" in skipped[empty.name]


def test_folder_name_mismatch(kaggle: Path) -> None:
    wrong = bmp(kaggle / "training_data" / "fold_2" / "hem" / "UID_13_7_1_all.bmp")
    src = CNMC(kaggle)
    with pytest.raises(AnnotationError, match=r"UID_13_7_1_all\.bmp.*'all'.*hem/"):
        src.load(wrong)
    assert len(list(src)) == TOTAL
    assert [Path(p.path).name for p in src.problems] == [wrong.name]


@pytest.mark.parametrize(
    "rel",
    [
        "fold_0/all/cell_7.bmp",
        "fold_0/all/UID_H3_1_1_all.bmp",
        "fold_0/UID_11_8_1_all.bmp",
        "extra/all/UID_11_8_1_all.bmp",
    ],
)
def test_unusable_training_names_raise(kaggle: Path, rel: str) -> None:
    path = bmp(kaggle / "training_data" / rel)
    src = CNMC(kaggle)
    assert path in src.items()  # listed, so never dropped silently
    with pytest.raises(AnnotationError, match=path.name):
        src.load(path)


def test_both_packagings_present(kaggle: Path) -> None:
    bmp(kaggle / "C-NMC_training_data" / "fold_0" / "all" / "UID_11_1_1_all.bmp")
    src = CNMC(kaggle)
    assert len(src) == TOTAL and len(src) == TOTAL
    assert [(Path(p.path).name, p.severity) for p in src.problems] == [("C-NMC_training_data", "skipped")]


def test_full_size_bmp(tmp_path: Path) -> None:
    root = tmp_path / "C-NMC_Leukemia"
    path = bmp(root / "C-NMC_training_data" / "fold_0" / "all" / "UID_5_1_1_all.bmp", size=450)
    assert path.stat().st_size == 608_454  # 54-byte header + 450 rows x 1352 padded bytes
    s = check_contract(CNMC(root), 1)[0]
    assert (s.width, s.height, s.size_bytes, s.num_channels) == (450, 450, 608_454, 3)


def test_missing(tmp_path: Path) -> None:
    check_missing(CNMC, tmp_path)
    (tmp_path / "other").mkdir()
    with pytest.raises(SourceNotFoundError, match=r"training_data.*Kaggle.*C-NMC_training_data.*TCIA"):
        CNMC(tmp_path / "other").check()
    (tmp_path / "other" / "training_data" / "fold_0").mkdir(parents=True)
    with pytest.raises(SourceNotFoundError, match="no images"):
        CNMC(tmp_path / "other").check()


def test_registry() -> None:
    assert SOURCES.get("cnmc") is CNMC
    assert CNMC.name == "cnmc" and CNMC.dirname == "C-NMC_Leukemia" and CNMC.image_kind is ImageKind.cell
    layout = CNMC.layout()  # shown in the "not found" message
    assert "training_data/fold_0" in layout and "C-NMC_training_data" in layout
    assert "C-NMC_test_prelim_phase_data_labels.csv" in layout and "C-NMC_test_final_phase_data" in layout


def test_copy_elsewhere_is_deterministic(kaggle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(kaggle, copy)
    a = [(s.source_id, s.sha256, s.group_id) for s in CNMC(kaggle)]
    b = [(s.source_id, s.sha256, s.group_id) for s in CNMC(copy)]
    assert a == b
