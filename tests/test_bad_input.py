"""The bad-input corpus: every kind of broken file is reported (file + reason) and skipped,
and everything else is ingested."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from alldata.errors import ImageError
from alldata.imageio import inspect_image
from alldata.ingest import ingest, report_path
from alldata.sources.all_idb1 import ALLIDB1
from alldata.sources.bccd import BCCD
from alldata.sources.folder import Folder
from alldata.sources.taleqani import Taleqani
from tests._fixtures import make_bccd, write_image, write_voc


def _bad_bccd(tmp_path: Path) -> Path:
    root = make_bccd(tmp_path / "BCCD", n=2)  # 00000, 00001 are good
    voc = root / "BCCD"
    jpg = voc / "JPEGImages"
    good = (jpg / "BloodImage_00000.jpg").read_bytes()
    (jpg / "BloodImage_00010.jpg").write_bytes(b"")  # zero bytes
    (jpg / "BloodImage_00011.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (jpg / "BloodImage_00012.jpg").write_bytes(b"this is not a jpeg at all" * 10)  # corrupt
    Image.new("LAB", (64, 48)).save(jpg / "BloodImage_00013.jpg", format="TIFF")  # odd mode
    Image.new("1", (12000, 12000)).save(jpg / "BloodImage_00014.jpg", format="PNG")  # 144 MP bomb
    write_image(jpg / "BloodImage_00015.jpg", (64, 48))
    (voc / "Annotations" / "BloodImage_00015.xml").write_text("<annotation><object><name>WBC</name")  # malformed
    write_image(jpg / "BloodImage_00016.jpg", (64, 48))
    write_voc(voc / "Annotations" / "BloodImage_00016.xml", "x.jpg", (64, 48),
              [("WBC", 50, 40, 90, 60), ("RBC", 100, 100, 120, 120), ("RBC", 5, 5, 5, 5), ("Alien", 1, 1, 4, 4)])
    for stem in ("BloodImage_00010", "BloodImage_00011", "BloodImage_00012", "BloodImage_00013", "BloodImage_00014"):
        write_voc(voc / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (64, 48), [("RBC", 1, 1, 8, 8)])
    return root


EXPECTED_SKIPS = {
    "BloodImage_00010": "empty",
    "BloodImage_00011": "truncated: the JPEG data ends at byte",
    "BloodImage_00012": "not an image: a text file",
    "BloodImage_00013": "unsupported image mode",
    "BloodImage_00014": "decompression bomb",
    "BloodImage_00015": "malformed annotation XML",
}


def test_bccd_bad_files_are_reported_and_the_rest_loaded(tmp_path):
    src = BCCD(_bad_bccd(tmp_path))
    samples = {s.source_id: s for s in src}
    assert sorted(samples) == ["BloodImage_00000", "BloodImage_00001", "BloodImage_00016"]
    skipped = {Path(p.path).stem: p.reason for p in src.problems if p.severity == "skipped"}
    assert set(skipped) == set(EXPECTED_SKIPS)
    for stem, words in EXPECTED_SKIPS.items():
        assert words in skipped[stem], (stem, skipped[stem])
        assert stem in skipped[stem]  # the message names the file
    # box partly outside: clipped; wholly outside: left out; degenerate: kept, flagged; unknown class: left out
    cells = samples["BloodImage_00016"].cells
    assert [c.label.value for c in cells] == ["wbc", "rbc"]
    x, y, w, h = cells[0].bbox
    assert x + w == pytest.approx(1.0) and y + h == pytest.approx(1.0)
    assert cells[1].attributes == {"degenerate": True} and cells[1].bbox[2] == pytest.approx(1 / 64)
    warnings = " | ".join(p.reason for p in src.problems if p.severity == "warning")
    for words in ("clipped", "outside the 64x48 image", "degenerate box", "unknown class 'Alien'"):
        assert words in warnings


def test_ingest_reports_bad_files_and_keeps_going(tmp_path, dataset_name):
    report = ingest(BCCD(_bad_bccd(tmp_path)), dataset_name, progress=False)
    assert (report.found, report.added, len(report.skipped)) == (9, 3, 6)
    assert report_path(dataset_name, "bccd").is_file()
    assert "BloodImage_00014" in report_path(dataset_name, "bccd").read_text()


def test_decompression_bomb_refused_before_decoding(tmp_path, monkeypatch):
    p = write_image(tmp_path / "a.png", (64, 64))
    monkeypatch.setenv("ALLDATA_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ImageError, match="exceeds the limit of 1,000"):
        inspect_image(p)


def test_garbage_position_line_costs_only_that_line(tmp_path):
    root = tmp_path / "ALL-IDB1"
    write_image(root / "ALL_IDB1" / "im" / "Im001_1.jpg", (100, 80))
    xyc = root / "ALL_IDB1" / "xyc" / "Im001_1.xyc"
    xyc.parent.mkdir(parents=True)
    xyc.write_text("10\t20\nthis is garbage\n30\t40\n500\t10\n")
    src = ALLIDB1(root)
    (s,) = list(src)
    assert [(round(p.x * 100 - 0.5), round(p.y * 80 - 0.5)) for p in s.blasts] == [(10, 20), (30, 40)]
    reasons = [p.reason for p in src.problems]
    assert any("line 2" in r and "garbage" in r for r in reasons)
    assert any("outside the 100x80 image" in r for r in reasons)


def test_unknown_class_folder_reported_once(tmp_path):
    root = tmp_path / "ALL_Taleqani_Kaggle"
    write_image(root / "Original" / "Early" / "WBC-Malignant-Early-001.jpg")
    write_image(root / "Original" / "Mystery" / "x.jpg")
    src = Taleqani(root)
    assert [s.source_id for s in src] == ["Early/WBC-Malignant-Early-001.jpg"]
    len(src)
    unknown = [p for p in src.problems if "Mystery" in p.reason]
    assert len(unknown) == 1 and "unknown class folder" in unknown[0].reason


# --- odd input, named (issue 12) ------------------------------------------------------------------------------
def test_pillow_limit_follows_alldata_limit(tmp_path, monkeypatch):
    """A 225 MP image: refused by default with advice that works, read once the limit is raised."""
    from tests._bad_corpus import huge_png

    for palette in (False, True):
        p = tmp_path / f"huge{int(palette)}.png"
        p.write_bytes(huge_png(15000, 15000, palette=palette))  # ~30 KB on disk
        monkeypatch.delenv("ALLDATA_MAX_IMAGE_PIXELS", raising=False)
        with pytest.raises(ImageError, match="ALLDATA_MAX_IMAGE_PIXELS") as ei:
            inspect_image(p)
        assert "225,000,000 pixels exceeds the limit of 100,000,000" in str(ei.value)
        monkeypatch.setenv("ALLDATA_MAX_IMAGE_PIXELS", "300000000")  # above Pillow's own ~179 MP refusal
        info = inspect_image(p)
        assert (info.width, info.height, info.mode) == (15000, 15000, "P" if palette else "1")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"this is not a jpeg at all" * 10, "not an image: a text file (it starts with 'this is not a jpeg"),
        (b"%PDF-1.7\n" + bytes(100), "not an image: the file is a PDF document"),
        (b"PK\x03\x04" + bytes(100), "not an image: the file is a ZIP archive"),
        (bytes(100), "not an image: the first 24 bytes are all zero"),
        (b"\x89PNG\r\n\x1a\n" + bytes(20), "corrupt PNG: the signature is there but the header cannot be read"),
        (b"II*\x00\x00\x10\x00\x00" + bytes(30), "truncated: the TIFF's image directory should start at byte 4,096"),
        (bytes([7, 1, 200, 3]) * 10, "not an image in a format alldata reads (JPEG, PNG, TIFF, BMP)"),
    ],
)
def test_reasons_say_what_is_wrong_with_the_file(tmp_path, data, words):
    p = tmp_path / "x.jpg"
    p.write_bytes(data)
    with pytest.raises(ImageError) as ei:
        inspect_image(p)
    msg = str(ei.value)
    assert words in msg and msg.startswith(str(p))
    assert "object at 0x" not in msg and "BytesIO" not in msg


def test_truncation_says_where_the_file_ends(tmp_path):
    good = write_image(tmp_path / "a.png", (64, 48))
    data = good.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=f"truncated: the PNG data ends at byte {len(data) // 2:,}"):
        inspect_image(cut)


def test_broken_symlink_and_wrong_extension_are_named(tmp_path):
    root = tmp_path / "cells"
    write_image(root / "lymphoblast" / "a.jpg", fmt="PNG")  # PNG bytes named .jpg
    (root / "lymphoblast" / "b.jpg").symlink_to("nowhere.jpg")
    src = Folder(root)
    assert [s.source_id for s in src] == ["lymphoblast/a.jpg"]
    reasons = {Path(p.path).name: (p.severity, p.reason) for p in src.problems}
    assert reasons["a.jpg"][0] == "warning" and "named .jpg but the content is PNG" in reasons["a.jpg"][1]
    assert reasons["b.jpg"] == ("skipped", f"{root / 'lymphoblast' / 'b.jpg'}: broken symbolic link (its target nowhere.jpg does not exist)")


def test_orphan_annotations_are_reported(tmp_path, dataset_name):
    root = make_bccd(tmp_path / "BCCD", n=2)
    write_voc(root / "BCCD" / "Annotations" / "BloodImage_00077.xml", "BloodImage_00077.jpg", (64, 48), [("RBC", 1, 1, 8, 8)])
    report = ingest(BCCD(root), dataset_name, progress=False)
    assert report.added == 2
    (orphan,) = report.skipped
    assert orphan.path.endswith("Annotations/BloodImage_00077.xml")
    assert "annotation file with no image" in orphan.reason and "boxes were not ingested" in orphan.reason
    # ALL-IDB1: an own positions file -> skipped; a supplementary set's -> one warning naming them
    a1 = tmp_path / "ALL-IDB1"
    write_image(a1 / "ALL_IDB1" / "im" / "Im001_1.jpg", (100, 80))
    for folder, stem in ((a1 / "ALL_IDB1" / "xyc", "Im002_1"), (tmp_path / "other", "Im003_0")):
        folder.mkdir(parents=True)
        (folder / f"{stem}.xyc").write_text("10\t20\n")
    src = ALLIDB1(a1, other=tmp_path / "other")
    assert len(list(src)) == 1
    got = {(Path(p.path).name, p.severity) for p in src.problems}
    assert got == {("Im002_1.xyc", "skipped"), ("other", "warning")}
    assert "Im003_0.xyc" in next(p.reason for p in src.problems if p.severity == "warning")


def test_bad_positions_file_reported_under_the_xyc_not_the_image(tmp_path):
    root = tmp_path / "ALL-IDB1"
    img = write_image(root / "ALL_IDB1" / "im" / "Im001_1.jpg", (100, 80))
    write_image(root / "ALL_IDB1" / "im" / "Im002_1.jpg", (100, 80), seed=1)
    xyc = root / "ALL_IDB1" / "xyc"
    xyc.mkdir(parents=True)
    (xyc / "Im001_1.xyc").write_text("10\t20\n500\t10\n")
    (xyc / "Im002_1.xyc").write_bytes(b"\xff\xfe\x00binary")
    src = ALLIDB1(root)
    samples = {s.source_id: s for s in src}
    assert set(samples) == {"Im001_1", "Im002_1"}  # an unreadable positions file costs its points, not the image
    assert len(samples["Im001_1"].blasts) == 1 and samples["Im002_1"].blasts == []
    by_path = {(Path(p.path).name, p.reason) for p in src.problems}
    assert ("Im001_1.xyc", "line 2: point (500, 10) is outside the 100x80 image; skipped") in by_path
    assert any(n == "Im002_1.xyc" and "not a text positions file" in r for n, r in by_path)
    assert not any(Path(p.path) == img for p in src.problems)


def test_label_conflict_flagged_reported_viewed_and_kept_in_one_split(tmp_path, dataset_name):
    import fiftyone as fo

    from alldata.curation import LABEL_CONFLICT_TAG
    from alldata.schema import F
    from alldata.split import split_dataset
    from alldata.views import build_views

    root = tmp_path / "cells"
    a = write_image(root / "lymphoblast" / "a.jpg", seed=1)
    (root / "lymphocyte").mkdir()
    (root / "lymphocyte" / "a_link.jpg").symlink_to(a)  # the same bytes under another class
    (root / "lymphoblast" / "b.jpg").write_bytes(a.read_bytes())  # and a real copy under the same class
    for i in range(6):
        write_image(root / "lymphocyte" / f"x{i}.jpg", seed=10 + i)
    report = ingest("folder", dataset_name, root=root, progress=False)
    assert report.added == 9 and report.duplicates_tagged == 3
    (conflict,) = report.label_conflicts
    assert conflict.fields == ["ground_truth", "cell_type"]
    labels = {c.key: c.labels["cell_type"] for c in conflict.copies}
    assert labels == {"folder/lymphoblast/a.jpg": "lymphoblast", "folder/lymphoblast/b.jpg": "lymphoblast",
                      "folder/lymphocyte/a_link.jpg": "lymphocyte"}
    link = next(c for c in conflict.copies if c.key.endswith("a_link.jpg"))
    assert link.filepath == str(root.resolve() / "lymphocyte" / "a_link.jpg")  # the link's own path, not its target's
    warned = {Path(p.path).name: p.reason for p in report.warnings}
    assert set(warned) == {"a.jpg", "b.jpg", "a_link.jpg"}
    assert "folder/lymphocyte/a_link.jpg: ground_truth=lymphocyte, cell_type=lymphocyte" in warned["a.jpg"]
    ds = fo.load_dataset(dataset_name)
    assert sorted(ds.match_tags(LABEL_CONFLICT_TAG).values(F.KEY)) == sorted(labels)
    views = build_views(ds)
    assert views.views["alldata-label-conflicts"] == 3
    for seed in range(3):  # the split keeps exact duplicates together, whatever their labels
        split_dataset(ds, ratios=(0.34, 0.33, 0.33), seed=seed, stratify=None)
        assert len(set(ds.match({F.SHA256: conflict.sha256}).values(F.SPLIT))) == 1
    # a curator fixes the wrong label in the App; the next ingest keeps the fix and drops the tag
    fixed = ds.match({F.KEY: "folder/lymphocyte/a_link.jpg"}).first()
    fixed[F.GROUND_TRUTH] = fo.Classification(label="lymphoblast")
    fixed[F.CELL_TYPE] = fo.Classification(label="lymphoblast")
    fixed.save()
    again = ingest("folder", dataset_name, root=root, progress=False)
    assert again.unchanged == 9 and again.label_conflicts == [] and again.warnings == []
    assert len(ds.match_tags(LABEL_CONFLICT_TAG)) == 0 and len(ds.match_tags(F.TAG_DUPLICATE)) == 3


def test_duplicates_tagged_counts_this_run(tmp_path, dataset_name):
    one, two = tmp_path / "one", tmp_path / "two"
    a = write_image(one / "lymphoblast" / "a.jpg", seed=1)
    (one / "lymphoblast" / "b.jpg").write_bytes(a.read_bytes())
    write_image(two / "lymphocyte" / "c.jpg", seed=2)
    assert ingest("folder", dataset_name, root=one, progress=False).duplicates_tagged == 2
    # same source name, another folder with no duplicate: not the dataset's 2
    assert ingest("folder", dataset_name, root=two, progress=False).duplicates_tagged == 0
