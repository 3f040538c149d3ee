"""A re-run of an unchanged BCCD / ALL-IDB1 / ALL-IDB2 copy reads no image; a changed annotation,
mask or shared file makes exactly the records that depend on it be read again."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from alldata.ingest import ingest
from alldata.sources import base


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _bccd(shared: Path, tmp: Path) -> tuple[Path, dict[str, Path]]:
    voc = tmp / "BCCD" / "BCCD"
    stems = ("BloodImage_00000", "BloodImage_00001", "BloodImage_00002")
    for s in stems:
        _copy(shared / f"BCCD/BCCD/JPEGImages/{s}.jpg", voc / "JPEGImages" / f"{s}.jpg")
        _copy(shared / f"BCCD/BCCD/Annotations/{s}.xml", voc / "Annotations" / f"{s}.xml")
    split = voc / "ImageSets" / "Main" / "train.txt"
    split.parent.mkdir(parents=True)
    split.write_text("\n".join(stems) + "\n")
    xml = voc / "Annotations" / f"{stems[1]}.xml"
    return tmp / "BCCD", {"annotation": xml, "shared": split}


def _all_idb1(shared: Path, tmp: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp / "ALL-IDB1"
    for s in ("Im001_1", "Im064_0"):
        _copy(shared / f"ALL-IDB1/ALL_IDB1/im/{s}.jpg", root / "ALL_IDB1" / "im" / f"{s}.jpg")
    positions = "i2mtc_2026_tutorial/WSIs/positions/Im001_1.xyc"
    xyc = _copy(shared / "ALL-IDB1" / positions, root / positions)
    return root, {"annotation": xyc, "new annotation": root / "ALL_IDB1" / "xyc" / "Im064_0.xyc"}


def _all_idb2(shared: Path, tmp: Path) -> tuple[Path, dict[str, Path]]:
    root = tmp / "ALL-IDB2"
    for s in ("Im001_1", "Im131_0"):
        _copy(shared / f"ALL-IDB2/ALL_IDB2/img/{s}.tif", root / "ALL_IDB2" / "img" / f"{s}.tif")
    mask = _copy(shared / "ALL-IDB2_masks_Putzu_Loddo/gt/Im001_1.tif", tmp / "ALL-IDB2_masks_Putzu_Loddo/gt/Im001_1.tif")
    return root, {"annotation": mask, "new annotation": tmp / "ALL-IDB2_masks_Putzu_Loddo/gt/Im131_0.tif"}


LAYOUTS = {"bccd": _bccd, "all_idb1": _all_idb1, "all_idb2": _all_idb2}


def _touch(path: Path, content: bytes | None = None) -> None:
    """New content (or the same bytes written again: a new mtime)."""
    data = path.read_bytes() if content is None else content
    path.unlink()
    path.write_bytes(data)


@pytest.mark.parametrize("source", sorted(LAYOUTS))
def test_unchanged_rerun_reads_nothing_and_a_changed_input_is_read_again(source, shared_data, tmp_path, dataset_name,
                                                                         monkeypatch):
    root, inputs = LAYOUTS[source](shared_data, tmp_path)
    first = ingest(source, dataset_name, root=root, workers=1, progress=False)
    n = first.added
    assert n >= 2 and not first.skipped, first.skipped
    reads: list[str] = []
    real = base.inspect_image
    monkeypatch.setattr(base, "inspect_image", lambda p, **kw: reads.append(Path(p).stem) or real(p, **kw))

    again = ingest(source, dataset_name, root=root, workers=1, progress=False)
    assert (again.added, again.updated, again.unchanged, reads) == (0, 0, n, [])

    _touch(inputs["annotation"])  # same bytes, new stamp: read again, found unchanged
    third = ingest(source, dataset_name, root=root, workers=1, progress=False)
    assert (third.updated, third.unchanged) == (0, n) and len(reads) == 1, reads
    reads.clear()

    if "new annotation" in inputs:  # an annotation file that was not there: that record is read and updated
        _copy(inputs["annotation"], inputs["new annotation"])
        fourth = ingest(source, dataset_name, root=root, workers=1, progress=False)
        assert len(reads) == 1 and reads[0] == inputs["new annotation"].stem, reads
        assert (fourth.updated, fourth.unchanged) == (1, n - 1) and not fourth.skipped
    if "shared" in inputs:  # a file every record reads (the split list): all read again, the changed ones updated
        inputs["shared"].write_text("BloodImage_00000\n")
        fifth = ingest(source, dataset_name, root=root, workers=1, progress=False)
        assert len(reads) == n and (fifth.updated, fifth.unchanged) == (n - 1, 1)


@pytest.mark.parametrize("source", ["cnmc", "atlas"])
def test_unchanged_rerun_reads_nothing_on_the_fixture_layouts(source, tmp_path, dataset_name, monkeypatch):
    """C-NMC and the ATLAS (no public copy: their documented layouts, built by the source tests)."""
    from tests.sources.test_atlas import make_atlas
    from tests.sources.test_cnmc import make_cnmc

    root = (make_cnmc if source == "cnmc" else make_atlas)(tmp_path / source)
    first = ingest(source, dataset_name, root=root, workers=1, progress=False)
    reads: list[str] = []
    real = base.inspect_image
    monkeypatch.setattr(base, "inspect_image", lambda p, **kw: reads.append(Path(p).name) or real(p, **kw))
    again = ingest(source, dataset_name, root=root, workers=1, progress=False)
    assert first.added >= 2 and (again.added, again.updated, again.unchanged, reads) == (0, 0, first.added, [])
