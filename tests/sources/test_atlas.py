"""ATLAS loader: category folder -> diagnosis/subtype, unknown folders and stray images."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from alldata.errors import AnnotationError, SourceNotFoundError
from alldata.schema import Diagnosis, ImageKind, Subtype
from alldata.sources.atlas import Atlas, category_labels, normalise_category
from alldata.sources.base import SOURCES
from tests.sources._contract import check_contract, check_missing

TREE = {
    "ALL_L1": ["a.jpg", "b.png"],
    "ALL-L3": ["burkitt 1.jpg"],
    "aml m3": ["x.png"],
    "CLL": ["c.jpg"],
    "normal": ["n.png"],
}


def img(path: Path, colour: tuple[int, int, int] = (180, 60, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), colour).save(path)
    return path


def make_atlas(root: Path) -> Path:
    for i, (folder, names) in enumerate(TREE.items()):
        for j, name in enumerate(names):
            img(root / folder / name, (20 * i, 30 * j, 90))
    (root / "CLL" / "notes.txt").write_text("not an image")  # ignored: not an image
    return root


@pytest.fixture
def atlas(tmp_path: Path) -> Path:
    return make_atlas(tmp_path / "ATLAS")


MAPPING = [
    ("ALL_L1", Diagnosis.ALL, Subtype.L1),
    ("all-l2", Diagnosis.ALL, Subtype.L2),
    ("ALL L3", Diagnosis.ALL, Subtype.L3),
    ("ALL-L3", Diagnosis.ALL, Subtype.L3),
    ("L1", Diagnosis.ALL, Subtype.L1),
    ("L3", Diagnosis.ALL, Subtype.L3),
    ("FAB_L3", Diagnosis.ALL, Subtype.L3),
    ("Burkitt", Diagnosis.ALL, Subtype.L3),
    ("ALL_Burkitt", Diagnosis.ALL, Subtype.L3),
    ("ALL", Diagnosis.ALL, None),
    ("AML_M0", Diagnosis.AML, Subtype.M0),
    ("aml-m3", Diagnosis.AML, Subtype.M3),
    ("AML M7", Diagnosis.AML, Subtype.M7),
    ("AML", Diagnosis.AML, None),
    ("CLL", Diagnosis.CLL, None),
    ("cml", Diagnosis.CML, None),
    ("normal", Diagnosis.healthy, None),
    ("Healthy", Diagnosis.healthy, None),
    ("MDS", Diagnosis.other, None),
    ("Myeloma", Diagnosis.other, None),
    ("lymphoma", Diagnosis.other, None),
    ("hairy cell", Diagnosis.other, None),
]


@pytest.mark.parametrize("folder, diagnosis, subtype", MAPPING)
def test_category_mapping(tmp_path: Path, folder: str, diagnosis: Diagnosis, subtype: Subtype | None) -> None:
    assert category_labels(folder) == (diagnosis, subtype)
    root = tmp_path / "ATLAS"
    path = img(root / folder / "cell 1.png")
    s = check_contract(Atlas(root), 1)[0]
    assert (s.diagnosis, s.subtype, s.ground_truth) == (diagnosis, subtype, folder)
    assert (s.source_id, s.group_id) == (f"{folder}/cell 1.png", f"atlas/{folder}/cell 1")
    assert (s.image_kind, s.cell_type, s.subject_id) == (ImageKind.smear, None, None)
    assert s.filepath == str(path.resolve())


@pytest.mark.parametrize("folder", ["ALL_L4", "AML_M8", "blasts", "L 12", "misc"])
def test_unknown_names(folder: str) -> None:
    assert category_labels(folder) is None


def test_normalise_category() -> None:
    assert normalise_category(" All -- L3 ") == normalise_category("ALL_L3") == "all_l3"


def test_contract(atlas: Path) -> None:
    src = Atlas(atlas)
    samples = check_contract(src, 6)
    assert src.problems == []
    got = {s.source_id: (s.diagnosis, s.subtype) for s in samples}
    assert got == {
        "ALL-L3/burkitt 1.jpg": (Diagnosis.ALL, Subtype.L3),
        "ALL_L1/a.jpg": (Diagnosis.ALL, Subtype.L1),
        "ALL_L1/b.png": (Diagnosis.ALL, Subtype.L1),
        "CLL/c.jpg": (Diagnosis.CLL, None),
        "aml m3/x.png": (Diagnosis.AML, Subtype.M3),
        "normal/n.png": (Diagnosis.healthy, None),
    }
    assert [s.source_id for s in samples] == sorted(got)  # deterministic order


def test_unknown_category_recorded_once(atlas: Path) -> None:
    img(atlas / "Weird" / "w.jpg")
    img(atlas / "ALL_L4" / "v.jpg")
    src = Atlas(atlas)
    for _ in range(3):
        items = src.items()
    assert len(src) == 6 and len(list(src)) == 6
    assert not any(p.parent.name in ("Weird", "ALL_L4") for p in items)
    assert sorted((Path(p.path).name, p.severity) for p in src.problems) == [
        ("ALL_L4", "skipped"),
        ("Weird", "skipped"),
    ]
    reason = next(p.reason for p in src.problems if p.path.endswith("Weird"))
    assert "unknown atlas category 'Weird'" in reason and "known: " in reason and "all_l1" in reason
    assert "`folder` source" in reason


def test_unknown_load_raises(atlas: Path) -> None:
    path = img(atlas / "Weird" / "w.jpg")
    with pytest.raises(AnnotationError, match="unknown atlas category 'Weird'"):
        Atlas(atlas).load(path)


def test_root_images_skipped(atlas: Path) -> None:
    stray = img(atlas / "stray.jpg")
    src = Atlas(atlas)
    assert stray not in src.items()
    assert len(list(src)) == 6 and len(src) == 6
    assert [(p.path, p.severity) for p in src.problems] == [(str(stray), "skipped")]
    assert "no category" in src.problems[0].reason
    with pytest.raises(AnnotationError, match="no category"):
        src.load(stray)


def test_nested_folder_skipped(atlas: Path) -> None:
    img(atlas / "CLL" / "more" / "d.jpg")
    src = Atlas(atlas)
    assert len(list(src)) == 6
    assert [(Path(p.path).name, p.severity) for p in src.problems] == [("more", "skipped")]


def test_corrupt_image_skipped(atlas: Path) -> None:
    bad = atlas / "CLL" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    src = Atlas(atlas)
    assert len(list(src)) == 6
    assert [(p.path, p.severity) for p in src.problems] == [(str(bad), "skipped")]
    assert "broken.jpg" in src.problems[0].reason


def test_missing(tmp_path: Path) -> None:
    check_missing(Atlas, tmp_path)
    only_unknown = tmp_path / "u"
    img(only_unknown / "Weird" / "w.jpg")
    with pytest.raises(SourceNotFoundError, match="folders found: Weird"):
        Atlas(only_unknown).check()


def test_registry() -> None:
    assert SOURCES.get("atlas") is Atlas
    assert (Atlas.dirname, Atlas.image_kind) == ("ATLAS", ImageKind.smear)
    layout = Atlas.layout()
    assert layout.lstrip().startswith("ATLAS/")
    assert "ALL_L1" in layout and "Burkitt" in layout and "hairy_cell" in layout
