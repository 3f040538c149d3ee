"""Exports: hf-parquet loads back with `datasets` offline; the licence gate; imagefolder, coco, fiftyone."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.card import Selection
from alldata.cli import app
from alldata.export import MANIFEST, ExportError, export_dataset
from alldata.licences import LicenceError
from tests.test_card import GAN_SHA, make_card_dataset

runner = CliRunner()


@pytest.fixture
def card_ds(dataset_name, tmp_path):
    make_card_dataset(dataset_name, tmp_path / "img")
    return dataset_name


def test_hf_parquet_loads_back_offline_with_images_labels_and_provenance(card_ds, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets

    out = tmp_path / "hf"
    sel = Selection(sources=("bccd", "pbc", "synthetic/gan"))
    rep = export_dataset(card_ds, out, "hf-parquet", sel, trained_on={"gan": ["pbc"]}, max_shard_bytes=1)
    assert rep.n_samples == 8 and rep.overrides == {}  # 3 bccd + 3 pbc (1 rejected) + 2 gan, declared trained on pbc
    assert len([f for f in rep.files if f.endswith(".parquet")]) == 8 and "README.md" in rep.files  # 1-byte shards: a row each
    loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == {"train", "val", "test"}
    rows = [r for split in loaded.values() for r in split]
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    assert "pbc/monocyte/PB_3.jpg" not in {r["key"] for r in rows}  # tagged reject
    by_key = {r["key"]: r for r in rows}
    smear = by_key["bccd/BloodImage_00000"]
    assert isinstance(smear["image"], Image.Image) and smear["image"].size == (24, 24)
    assert smear["license"] == "MIT" and smear["objects"]["label"] == ["wbc", "rbc"]
    assert smear["objects"]["bbox"][0] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert by_key["pbc/lymphocyte/PB_0.jpg"]["cell_type"] == "lymphocyte"
    gan = by_key["synthetic/gan/g1"]
    assert gan["is_synthetic"] and gan["checkpoint_sha256"] == GAN_SHA and gan["seed"] == 1 and gan["generator"] == "gan"
    assert json.loads(gan["condition"])["cell_type"] == "lymphoblast"
    for split, ds in loaded.items():
        assert {r["split"] for r in ds} == {split}
    # re-running replaces the previous export: same files, nothing left over
    rep2 = export_dataset(card_ds, out, "hf-parquet", Selection(sources=("bccd",)))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted([*rep2.files, MANIFEST])
    assert all("pbc" not in f for f in rep2.files)


def test_gate_refuses_forbidden_and_unknown_sources_unless_overridden(card_ds, tmp_path):
    with pytest.raises(LicenceError) as e:
        export_dataset(card_ds, tmp_path / "x", "hf-parquet")
    msg = str(e.value)
    assert "all_idb2 (2 samples): redistribution forbidden" in msg
    assert "synthetic/overlap (1 samples): redistribution forbidden" in msg  # composed from an ALL-IDB2 donor
    assert "synthetic/gan (2 samples): redistribution unknown" in msg  # training data not recorded
    assert "--override-licence" in msg and not (tmp_path / "x").exists()
    with pytest.raises(LicenceError, match="pbc"):  # pbc is allowed: nothing to override
        export_dataset(card_ds, tmp_path / "x", "hf-parquet", Selection(sources=("bccd",)), overrides=["pbc"])
    rep = export_dataset(card_ds, tmp_path / "x", "imagefolder", Selection(sources=("all_idb2", "pbc")), overrides=["all_idb2"])
    assert rep.overrides == {"all_idb2": "forbidden"}
    readme = (tmp_path / "x" / "README.md").read_text()
    assert "published under an explicit `--override-licence`" in readme and "**Licence overrides:**" in readme


def test_imagefolder_by_label_with_metadata(card_ds, tmp_path):
    out = tmp_path / "if"
    rep = export_dataset(card_ds, out, "imagefolder", Selection(sources=("bccd", "pbc")))
    assert rep.skipped == {"no cell_type label": 3}  # the smears
    with open(out / "metadata.csv") as fh:
        meta = list(csv.DictReader(fh))
    assert len(meta) == 3 and {m["label"] for m in meta} == {"lymphocyte", "neutrophil"}
    for m in meta:
        assert (out / m["file_name"]).is_file() and m["file_name"].split("/")[1] == m["label"]
    with pytest.raises(ExportError, match="bogus"):
        export_dataset(card_ds, tmp_path / "if2", "imagefolder", Selection(sources=("pbc",)), label_field="bogus")


def test_coco_and_fiftyone_formats(card_ds, tmp_path):
    import fiftyone as fo

    rep = export_dataset(card_ds, tmp_path / "coco", "coco", Selection(sources=("bccd", "pbc")))
    labels = json.loads((tmp_path / "coco" / "labels.json").read_text())
    assert len(labels["images"]) == 3 and len(labels["annotations"]) == 6 and rep.skipped == {"no cells boxes": 3}
    assert {c["name"] for c in labels["categories"]} == {"wbc", "rbc"}
    with pytest.raises(ExportError, match="no sample of the selection has `cells`"):
        export_dataset(card_ds, tmp_path / "coco2", "coco", Selection(sources=("pbc",)))
    export_dataset(card_ds, tmp_path / "fo", "fiftyone", Selection(sources=("pbc",)))
    back = fo.Dataset.from_dir(dataset_dir=str(tmp_path / "fo"), dataset_type=fo.types.FiftyOneDataset)
    try:
        assert sorted(back.values("key")) == ["pbc/lymphocyte/PB_0.jpg", "pbc/neutrophil/PB_1.jpg", "pbc/neutrophil/PB_2.jpg"]
    finally:
        back.delete()


def test_out_dir_that_is_not_an_export_is_refused(card_ds, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    r = runner.invoke(app, ["export", card_ds, "--format", "hf-parquet", "--out", str(out), "--sources", "bccd"])
    assert r.exit_code == 1 and "not empty" in r.output
    assert (out / "precious.txt").read_text() == "keep me"
    r = runner.invoke(app, ["export", card_ds, "--format", "tfrecord", "--out", str(tmp_path / "y")])
    assert r.exit_code == 1 and "hf-parquet" in r.output
