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
    "BloodImage_00011": "cannot decode",
    "BloodImage_00012": "cannot decode",
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
