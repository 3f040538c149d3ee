"""The folder source: class folders, and a tree with same-stem masks and a labels CSV (detected, then read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.errors import AnnotationError
from alldata.schema import CellType
from alldata.sources import get_source
from alldata.sources.folder import Folder
from alldata.sources.pairing import find_pairs, mask_to_classes
from tests._fixtures import write_image
from tests.sources._contract import check_contract, check_missing

runner = CliRunner()


def _mask(path: Path, values: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8)).save(path)
    return path


def make_paired(root: Path) -> Path:
    """``images/00N.bmp`` + ``images/00N.png`` (grey mask 0/128/255) and ``labels.csv``."""
    grey = np.zeros((12, 16), np.uint8)
    grey[2:10, 3:12] = 128
    grey[4:8, 5:9] = 255
    for i in (1, 2, 3):
        write_image(root / "images" / f"00{i}.bmp", (16, 12), seed=i)
        _mask(root / "images" / f"00{i}.png", grey)
    (root / "labels.csv").write_text("filename,label\n001.bmp,lymphoblast\n002.bmp,lymphocyte\n003.bmp,my own class\n")
    return root


def test_contract_class_folders(tmp_path):
    write_image(tmp_path / "cells" / "lymphoblast" / "a.jpg", seed=1)
    write_image(tmp_path / "cells" / "L3" / "b.png", seed=2)
    samples = {s.source_id: s for s in check_contract(Folder(tmp_path / "cells"), 2)}
    assert samples["lymphoblast/a.jpg"].cell_type is CellType.lymphoblast
    assert samples["L3/b.png"].subtype.value == "L3"
    check_missing(Folder, tmp_path)


def test_paired_masks_and_labels_csv_refused_with_the_fix(tmp_path):
    root = make_paired(tmp_path / "mine")
    with pytest.raises(AnnotationError) as ei:
        Folder(root).check()
    msg = str(ei.value)
    assert "3 pair(s) of files share a stem (e.g. images/001.bmp + images/001.png)" in msg
    assert f"alldata ingest folder {root} --masks png" in msg and "--masks none" in msg
    with pytest.raises(AnnotationError) as ei:
        Folder(root, masks="png").check()
    assert f"--labels-csv {root / 'labels.csv'}" in str(ei.value) and "--labels-csv none" in str(ei.value)


def test_masks_and_labels_csv_ingested_as_segmentation_and_labels(tmp_path):
    root = make_paired(tmp_path / "mine")
    src = Folder(root, masks="png", labels_csv=root / "labels.csv")
    again = Folder(root, masks="png", labels_csv=root / "labels.csv")
    samples = {s.source_id: s for s in check_contract(src, 3, again)}
    assert set(samples) == {"images/001.bmp", "images/002.bmp", "images/003.bmp"}
    one = samples["images/001.bmp"]
    assert (one.ground_truth, one.cell_type) == ("lymphoblast", CellType.lymphoblast)
    assert samples["images/003.bmp"].ground_truth == "my own class" and samples["images/003.bmp"].cell_type is None
    seg = one.segmentation.mask
    assert seg.shape == (12, 16) and (seg[0, 0], seg[3, 4], seg[5, 6]) == (0, 1, 2)
    assert src.problems == []


def test_none_means_both_images_and_folder_labels(tmp_path):
    root = make_paired(tmp_path / "mine")
    samples = list(Folder(root, masks="none", labels_csv="none"))
    assert sorted(s.source_id for s in samples) == [f"images/00{i}.{e}" for i in (1, 2, 3) for e in ("bmp", "png")]
    assert {s.ground_truth for s in samples} == {"images"}


def test_labels_csv_problems_are_named(tmp_path):
    root = make_paired(tmp_path / "mine")
    (root / "labels.csv").write_text("file,label\n001.bmp,lymphoblast\n002.bmp,\n404.bmp,lymphocyte\n001.bmp,L3\n")
    _mask(root / "images" / "003.png", np.full((5, 5), 255))  # wrong size
    _mask(root / "images" / "009.png", np.zeros((12, 16)))  # a mask with no image
    src = Folder(root, masks="png", labels_csv=root / "labels.csv")
    assert [s.source_id for s in src] == ["images/001.bmp"]
    got = sorted((Path(p.path).name, p.severity, p.reason.replace(str(root), "ROOT")) for p in src.problems)
    assert got == [
        ("002.bmp", "skipped", "ROOT/images/002.bmp: no row for 'images/002.bmp' in ROOT/labels.csv; add one to ingest it"),
        ("003.bmp", "skipped", "ROOT/images/003.bmp: no row for 'images/003.bmp' in ROOT/labels.csv; add one to ingest it"),
        ("009.png", "skipped", "mask file with no image: no other image file named 009.* beside it; not used"),
        ("labels.csv", "warning", "1 row(s) name no image under ROOT: line 4 ('404.bmp'); not used"),
        ("labels.csv", "warning", "line 3: no 'label' for '002.bmp'; row not used"),
        ("labels.csv", "warning", "line 5: '001.bmp' again, now 'L3'; the first label 'lymphoblast' is kept"),
    ]
    (root / "labels.csv").write_text("file,kind,notes\n001.bmp,lymphoblast,x\n")
    with pytest.raises(AnnotationError, match=r"cannot tell which column holds the label .*'notes'"):
        list(Folder(root, masks="png", labels_csv=root / "labels.csv"))


def test_bad_mask_costs_only_the_mask(tmp_path):
    root = make_paired(tmp_path / "mine")
    colour = np.zeros((12, 16, 3), np.uint8)
    colour[..., 0] = 200
    _mask(root / "images" / "002.png", colour)
    src = Folder(root, masks="png", labels_csv=root / "labels.csv")
    samples = {s.source_id: s for s in src}
    assert samples["images/002.bmp"].segmentation is None and samples["images/001.bmp"].segmentation is not None
    (p,) = src.problems
    assert p.path.endswith("002.png") and p.reason.startswith("mask not used: a colour mask")


def test_mask_grey_levels_ranked():
    assert mask_to_classes(np.array([[0, 255]]), Path("m")).tolist() == [[0, 2]]
    assert mask_to_classes(np.array([[0, 1, 2]]), Path("m")).tolist() == [[0, 1, 2]]
    assert mask_to_classes(np.array([[10, 90, 250]]), Path("m")).tolist() == [[0, 1, 2]]
    with pytest.raises(AnnotationError, match="4 grey levels"):
        mask_to_classes(np.array([[0, 1, 2, 3]]), Path("m"))


def test_options_checked():
    with pytest.raises(AnnotationError, match="not an image suffix"):
        Folder("x", masks="txt")
    with pytest.raises(AnnotationError, match="source 'pbc' takes no option \\['masks'\\]"):
        get_source("pbc", "x", masks="png")


def test_cli_masks_and_labels_csv(tmp_path, dataset_name):
    import fiftyone as fo

    from alldata.cli import app

    root = make_paired(tmp_path / "mine")
    refused = runner.invoke(app, ["ingest", "folder", str(root), "-d", dataset_name])
    assert refused.exit_code == 1 and "--masks png" in refused.output
    ok = runner.invoke(app, ["ingest", "folder", str(root), "-d", dataset_name, "--masks", "png",
                             "--labels-csv", str(root / "labels.csv")])
    assert ok.exit_code == 0, ok.output
    ds = fo.load_dataset(dataset_name)
    assert len(ds) == 3 and len(ds.exists("segmentation")) == 3
    assert sorted(ds.values("ground_truth.label")) == ["lymphoblast", "lymphocyte", "my own class"]
    wrong = runner.invoke(app, ["ingest", "pbc", str(root), "-d", dataset_name, "--masks", "png"])
    assert wrong.exit_code != 0 and "options of the folder source" in wrong.output


def test_find_pairs_folder_by_folder_and_when_a_folder_comes_in_two_runs():
    """Pairs are found per folder; a folder whose files are not listed together (a CSV tree sorted
    by path, where a sub-folder ``a.d/`` sorts between ``a.bmp`` and ``a.png``) still pairs."""
    together = [Path(p) for p in ("r/a/a.bmp", "r/a/a.png", "r/a/b.png", "r/b/a.png", "r/b/q.bmp", "r/b/q.png")]
    assert find_pairs(together) == {Path("r/a/a"): together[:2], Path("r/b/q"): together[4:]}
    split = [Path(p) for p in ("r/a/a.bmp", "r/a/a.d/y.png", "r/a/a.png", "r/b/q.png")]
    assert find_pairs(split) == {Path("r/a/a"): [Path("r/a/a.bmp"), Path("r/a/a.png")]}
    assert find_pairs([Path("r/a/a.bmp"), Path("r/b/a.png")]) == {}  # same stem, other folder: no pair
