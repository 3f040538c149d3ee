"""The overlap composer: exact instance masks, controlled overlap, determinism, provenance,
resume and the CLI, on tiny fixtures in the sources' native layouts (and once on real data)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import typer
from alldata.generators.base import Generator, GeneratorError, checkpoint_sha256
from alldata.generators.overlap import OverlapComposer
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from alldata.cli import compose as compose_cli
from alldata.compose import compose_to_dataset, composer_from_dataset, load_composer, run_compose
from alldata.ingest import ingest
from alldata.schema import F
from alldata.sources.all_idb2 import ALLIDB2
from alldata.sources.bccd import BCCD
from alldata.sources.cnmc import CNMC
from alldata.sources.taleqani import Taleqani
from tests._fixtures import write_voc

NUC, CYTO, PLASMA = (60, 30, 120), (150, 120, 210), (230, 222, 215)
WBC_BOX = (0, 0, 40, 40)  # pixel box (x0, y0, x1, y1) of the annotated WBC in every fixture smear
SOURCES = ["all_idb2", "taleqani", "cnmc"]
#: fixture pixel scales (red-cell diameter in pixels); 64 px output, red cell 12.8 px there
CFG = {"output_size": 64, "rbc_px": {"all_idb2": 12, "taleqani": 12, "cnmc": 12, "bccd": 20}}
BAD_DONORS = {"all_idb2/Im003_1", "taleqani/Benign/WBC-Benign-003.jpg"}


def _cell(size: int, cy: int, cx: int, r: int, rn: int, seed: int, bg=PLASMA) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with one round cell, and its 0/1/2 class mask."""
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx)
    cls = np.where(d <= rn, 2, np.where(d <= r, 1, 0)).astype(np.uint8)
    img = np.empty((size, size, 3), np.float32)
    img[:] = bg
    img[cls == 1], img[cls == 2] = CYTO, NUC
    img += np.random.default_rng(seed).normal(0, 2, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), cls


def make_fixtures(root: Path) -> dict[str, Path]:
    # ALL-IDB2 crops with Putzu & Loddo RGB masks (Im003_1's cell is cut by the border)
    idb2 = root / "ALL-IDB2"
    putzu = root / "ALL-IDB2_masks_Putzu_Loddo" / "gt"
    for d in (idb2 / "ALL_IDB2" / "img", putzu):
        d.mkdir(parents=True)
    for n, (stem, (cy, cx, r)) in enumerate(
        {"Im001_1": (24, 24, 11), "Im002_1": (22, 25, 12), "Im003_1": (24, 4, 11), "Im131_0": (24, 23, 9)}.items()
    ):
        img, cls = _cell(48, cy, cx, r, r - 5, seed=n)
        Image.fromarray(img).save(idb2 / "ALL_IDB2" / "img" / f"{stem}.tif")
        rgb = np.full((48, 48, 3), 255, np.uint8)
        rgb[cls == 1], rgb[cls == 2] = (0, 0, 255), (0, 255, 255)
        Image.fromarray(rgb).save(putzu / f"{stem}.tif")
    # Taleqani: original + black-background segmented copy with specks (003's copy is all black)
    tal = root / "Taleqani"
    for n in (1, 2, 3):
        name = f"WBC-Benign-{n:03d}.jpg"
        img, cls = _cell(64, 30 + n, 32, 9, 4, seed=10 + n)
        seg = np.zeros_like(img)
        if n != 3:
            seg[cls > 0] = (240, 120, 200)
            seg[5, 5] = seg[50:52, 10:12] = (250, 250, 250)  # specks the clean-up must drop
        for sub, arr in (("Original", img), ("Segmented", seg)):
            (tal / sub / "Benign").mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tal / sub / "Benign" / name, quality=95)
    # C-NMC: a cell on black
    cn = root / "C-NMC_Leukemia" / "training_data" / "fold_0" / "all"
    cn.mkdir(parents=True)
    img, _ = _cell(56, 28, 28, 10, 5, seed=20, bg=(0, 0, 0))
    Image.fromarray(img).save(cn / "UID_1_1_1_all.bmp")
    # BCCD smears 200x120 with one WBC box in the top-left corner and a few RBC boxes
    voc = root / "BCCD" / "BCCD"
    ids = [f"BloodImage_{i:05d}" for i in range(3)]
    for i, stem in enumerate(ids):
        rng = np.random.default_rng(30 + i)
        bg = np.clip(np.array(PLASMA) + rng.normal(0, 6, (120, 200, 3)), 0, 255).astype(np.uint8)
        (voc / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(bg).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
        x0, y0, x1, y1 = WBC_BOX
        write_voc(voc / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (200, 120),
                  [("WBC", x0 + 1, y0 + 1, x1, y1), ("RBC", 100, 50, 120, 70)])
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return {"all_idb2": idb2, "taleqani": tal, "cnmc": root / "C-NMC_Leukemia", "bccd": root / "BCCD"}


@pytest.fixture(scope="module")
def fixture_ds(tmp_path_factory):
    """A dataset holding the fixture donors and backgrounds (composites are added by some tests)."""
    roots = make_fixtures(tmp_path_factory.mktemp("overlap-src"))
    name = f"test-overlap-{uuid.uuid4().hex[:8]}"
    for src in (ALLIDB2(roots["all_idb2"]), Taleqani(roots["taleqani"]), CNMC(roots["cnmc"]), BCCD(roots["bccd"])):
        report = ingest(src, name, progress=False, workers=1)
        assert report.added == report.found > 0 and not report.skipped, report.problems
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="module")
def composer(fixture_ds) -> OverlapComposer:
    return composer_from_dataset(fixture_ds, donor_sources=SOURCES, background_sources=["bccd"], **CFG)


def _full(inst, s: int) -> np.ndarray:
    x, y, w, h = (round(v * s) for v in inst.bbox)
    assert inst.mask.shape == (h, w), "mask must cover exactly its box"
    out = np.zeros((s, s), bool)
    out[y : y + h, x : x + w] = inst.mask
    return out


def test_donor_pool_and_rejections(composer):
    donors, bgs = composer.pool()
    assert [d.source for d in donors].count("all_idb2") == 4 and len(bgs) == 3
    usable = {r.key: composer.donor(r) for r in donors}
    assert {k for k, d in usable.items() if d is None} == BAD_DONORS
    assert "border" in composer.rejected["all_idb2/Im003_1"]
    assert "empty" in composer.rejected["taleqani/Benign/WBC-Benign-003.jpg"]
    tal = usable["taleqani/Benign/WBC-Benign-001.jpg"]
    assert tal.classes is None and abs(tal.mask.sum() / (np.pi * 9.5**2) - 1) < 0.25  # the cell, not the specks
    assert usable["all_idb2/Im001_1"].classes.max() == 2 and usable["cnmc/UID_1_1_1_all"] is not None


def test_instance_masks_are_exact(composer):
    gen = OverlapComposer({**composer.config, "stain_jitter": 0.0, "feather": 0.0, "match_illumination": False})
    gen.set_pool(*composer.pool())
    seen_nucleus = 0
    for c in gen.compose(8, seed=3):
        s = c.image.shape[0]
        assert c.image.shape == (64, 64, 3) and c.image.dtype == np.uint8 and c.semantic.shape == (64, 64)
        assert 2 <= len(c.instances) <= 4
        full = [_full(inst, s) for inst in c.instances]
        for inst, m in zip(c.instances, full):  # every box is tight around its visible mask
            x, y, w, h = (round(v * s) for v in inst.bbox)
            assert m.any()
            assert m[y, x : x + w].any() and m[y + h - 1, x : x + w].any() and m[y : y + h, x].any() and m[y : y + h, x + w - 1].any()
            assert inst.visible_fraction == pytest.approx(m.sum() / inst.area) and 0 < inst.visible_fraction <= 1
        assert not (np.sum(full, axis=0) > 1).any(), "visible masks overlap"
        assert np.array_equal(np.any(full, axis=0), c.semantic > 0), "union of instances != semantic foreground"
        assert set(np.unique(c.semantic)) <= {0, 1, 2}
        assert c.instances[-1].visible_fraction == 1.0  # the last pasted cell is on top
        # the pixels agree with the labels: eroded nucleus regions show the donor's nucleus colour
        core = ndimage.binary_erosion(c.semantic == 2)
        if core.sum() >= 5:
            seen_nucleus += 1
            assert np.abs(c.image[core].astype(int) - NUC).max(axis=1).mean() < 12
    assert seen_nucleus >= 3


def test_two_cell_overlap_is_within_the_range(composer):
    gen = OverlapComposer({**composer.config, "cells_per_image": [2, 2], "overlap_range": [0.2, 0.35]})
    gen.set_pool(*composer.pool())
    for c in gen.compose(8, seed=11):
        assert len(c.instances) == 2
        (p,) = c.controlled_overlaps
        assert (p.i, p.j) == (0, 1) and p.in_range and 0.2 <= p.fraction <= 0.35
        # recomputed from the labels alone: what cell 0 lost is what cell 1 covers
        a, b = c.instances
        assert b.visible_fraction == 1.0
        covered = a.area - round(a.visible_fraction * a.area)
        assert covered / min(a.area, b.area) == pytest.approx(p.fraction, abs=1e-9)


def test_deterministic_by_seed(composer, fixture_ds):
    other = composer_from_dataset(fixture_ds, donor_sources=SOURCES, background_sources=["bccd"], **CFG)
    a, b, c = composer.compose(3, seed=7), other.compose(3, seed=7), composer.compose(3, seed=8)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.semantic, y.semantic)
        assert [i.bbox for i in x.instances] == [i.bbox for i in y.instances] and x.recipe == y.recipe
    assert any(not np.array_equal(x.image, z.image) for x, z in zip(a, c))
    assert np.array_equal(composer.compose_one(7, 2).image, a[2].image)  # any composite on its own
    assert np.array_equal(composer.compose(1, 7, start=1)[0].image, a[1].image)


def test_backgrounds_avoid_the_annotated_wbc(composer):
    for c in composer.compose(6, seed=5):
        bg = c.recipe["background"]
        x, y, side = bg["crop"]
        assert bg["clean"] is True and side == 100  # 64 px * 20 px per red cell / 12.8 px per red cell
        assert x >= WBC_BOX[2] or y >= WBC_BOX[3]


def test_compose_to_dataset_provenance_and_rerun(fixture_ds, tmp_path):
    out = tmp_path / "run"
    assert compose_to_dataset(fixture_ds, 3, out, seed=21, donor_sources=SOURCES, background_sources=["bccd"], progress=False, **CFG) == 3
    sha = checkpoint_sha256(out)
    view = fo.load_dataset(fixture_ds).match({F.SOURCE: "synthetic/overlap", F.SEED: 21})
    assert sorted(view.values(F.SOURCE_ID)) == ["21_0", "21_1", "21_2"]
    s = view.match({F.SOURCE_ID: "21_1"}).first()
    assert s[F.IS_SYNTHETIC] is True and "synthetic" in s.tags and s[F.IMAGE_KIND] == "smear"
    assert (s[F.GENERATOR], s[F.CHECKPOINT_SHA256], s[F.SEED]) == ("overlap", sha, 21)
    cond = json.loads(s[F.CONDITION])
    assert cond["overlap_range"] == [0.1, 0.5] and cond["cells_per_image"] == [2, 4] and cond["output_size"] == 64
    assert Path(s.filepath) == (out / "overlap_21_1.png").resolve() and s.metadata.width == 64
    recipe = json.loads(s[F.RECIPE])
    assert recipe["index"] == 1 and recipe["background"]["key"].startswith("bccd/")
    dets = s[F.CELLS].detections
    assert len(dets) == len(recipe["cells"]) and all(d.mask is not None and d.mask.dtype == bool for d in dets)
    assert {d["donor_key"] for d in dets} <= {r["donor"] for r in recipe["cells"]}
    assert s[F.SEGMENTATION].annotator == "overlap" and s[F.SEGMENTATION].mask.shape == (64, 64)
    # the stored image is the composite of (seed, index)
    gen = load_composer(out)
    assert np.array_equal(np.asarray(Image.open(s.filepath)), gen.compose_one(21, 1).image)
    # re-running adds nothing and re-renders nothing
    stamp = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert compose_to_dataset(fixture_ds, 3, out, seed=21, donor_sources=SOURCES, background_sources=["bccd"], progress=False, **CFG) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")} == stamp
    # the same seed with other settings is refused, in the same folder or a new one
    with pytest.raises(GeneratorError, match="another overlap configuration"):
        compose_to_dataset(fixture_ds, 3, out, seed=21, donor_sources=SOURCES, background_sources=["bccd"],
                           progress=False, **{**CFG, "overlap_range": [0.3, 0.4]})
    with pytest.raises(GeneratorError, match="another overlap configuration"):
        compose_to_dataset(fixture_ds, 3, tmp_path / "other", seed=21, donor_sources=SOURCES, background_sources=["bccd"],
                           progress=False, **{**CFG, "overlap_range": [0.3, 0.4]})


def test_interrupted_run_resumes_without_duplicates(fixture_ds, tmp_path, monkeypatch):
    out, calls = tmp_path / "run", []
    real = OverlapComposer.compose_one

    def flaky(self, seed, index):
        calls.append(index)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, seed, index)

    kw = {"donor_sources": SOURCES, "background_sources": ["bccd"], "progress": False, **CFG}
    monkeypatch.setattr(OverlapComposer, "compose_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_compose(fixture_ds, 5, out, seed=33, batch_size=1, **kw)
    monkeypatch.setattr(OverlapComposer, "compose_one", real)
    view = lambda: fo.load_dataset(fixture_ds).match({F.SOURCE: "synthetic/overlap", F.SEED: 33})
    assert sorted(view().values(F.SOURCE_ID)) == ["33_0", "33_1"]
    r = run_compose(fixture_ds, 5, out, seed=33, **kw)
    assert (r.added, r.skipped_existing) == (3, 2)
    assert sorted(view().values(F.SOURCE_ID)) == [f"33_{i}" for i in range(5)]
    assert all(0.1 <= f <= 0.5 for f in r.controlled_overlaps) and r.mean_overlap is not None


def test_checkpoint_round_trip(composer, tmp_path):
    d = composer.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    sha = checkpoint_sha256(d)
    assert len(sha) == 64 and checkpoint_sha256(composer.save_pretrained(tmp_path / "again")) == sha
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["family"] == "overlap" and cfg["donor_keys"] == composer.config["donor_keys"]
    bare = OverlapComposer.from_pretrained(d)  # the pure compositor: no dataset read, so no pool yet
    assert bare.config == composer.config
    with pytest.raises(GeneratorError, match=r"no donor/background pool loaded.*load_composer"):
        bare.sample(1, {}, seed=4)
    loaded = load_composer(d)
    assert loaded.config == composer.config
    images = loaded.sample(2, {}, seed=4)
    assert images.shape == (2, 64, 64, 3) and images.dtype == np.uint8
    assert np.array_equal(images, composer.sample(2, {}, seed=4))
    assert composer.sample(1, {"overlap_range": [0.2, 0.3]}, seed=4).shape == (1, 64, 64, 3)
    with pytest.raises(GeneratorError, match="unknown condition"):
        composer.sample(1, {"subtype": "L3"}, seed=4)
    pytest.importorskip("safetensors.torch")  # the shared loader reads the weights with torch
    assert Generator.from_pretrained(d).config == composer.config


def test_bad_settings_are_refused(fixture_ds):
    with pytest.raises(GeneratorError, match="overlap_range"):
        OverlapComposer({**CFG, "overlap_range": [0.6, 0.2]})
    with pytest.raises(GeneratorError, match="unknown overlap config"):
        OverlapComposer({"overlap": [0.1, 0.2]})
    with pytest.raises(GeneratorError, match="no donor cells"):
        composer_from_dataset(fixture_ds, donor_sources=["pbc"], background_sources=["bccd"], **CFG)
    with pytest.raises(GeneratorError, match="no smear backgrounds"):
        composer_from_dataset(fixture_ds, donor_sources=SOURCES, background_sources=["all_idb1"], **CFG)


# --- CLI ------------------------------------------------------------------------------------
cli = typer.Typer()
cli.registered_commands += compose_cli.app.registered_commands


@cli.callback()
def _root() -> None:
    """(keeps compose-overlaps a sub-command, as in the real app)"""


runner = CliRunner()


def _args(dataset: str, out: Path, *more: str) -> list[str]:
    return ["compose-overlaps", "--dataset", dataset, "--out", str(out), "--output-size", "64",
            "--donor-source", "all_idb2", "--donor-source", "taleqani", "--background-source", "bccd", *more]


@pytest.fixture
def scaled(monkeypatch):
    """The CLI takes no pixel scales: give the fixture sources theirs."""
    from alldata.generators import overlap

    monkeypatch.setattr(overlap, "DEFAULT_CONFIG", {**overlap.DEFAULT_CONFIG, "rbc_px": CFG["rbc_px"]})


def test_cli_dry_run_writes_nothing(fixture_ds, tmp_path, scaled):
    before = len(fo.load_dataset(fixture_ds))
    r = runner.invoke(cli, _args(fixture_ds, tmp_path / "out", "--num-samples", "4", "--seed", "41", "--dry-run"))
    assert r.exit_code == 0, r.output
    assert "dry run" in r.output and "4 new composites" in r.output and "all_idb2 4" in r.output
    assert not (tmp_path / "out").exists() and len(fo.load_dataset(fixture_ds)) == before


def test_cli_run_prints_a_summary(fixture_ds, tmp_path, scaled):
    args = _args(fixture_ds, tmp_path / "out", "--num-samples", "2", "--seed", "42", "--overlap", "0.2-0.4")
    r = runner.invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "2 added, 0 skipped" in r.output and "mean achieved overlap" in r.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["overlap_42_0.png", "overlap_42_1.png"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 0 and "0 added, 2 skipped" in r.output


@pytest.mark.parametrize(
    ("value", "why"),
    [("0.5-0.1", "LO (0.5) is greater than HI (0.1); expected LO-HI, two numbers with 0 <= LO <= HI <= 1 (or one value for a fixed setting). Fix: swap them, --overlap 0.1-0.5."), ("abc", "is not a range"), ("0.1-1.5", "out of bounds"),
     ("0.1-0.2-0.3", "is not a range"), ("-0.2", "is not a range")],
)
def test_cli_bad_overlap_is_one_clear_error(fixture_ds, tmp_path, value, why):
    r = runner.invoke(cli, _args(fixture_ds, tmp_path / "out", "--overlap", value))
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert f"--overlap {value!r}" in text and why in text and "LO-HI" in text and "Fix: " in text
    assert not (tmp_path / "out").exists()


def test_cli_bad_cells_per_image(fixture_ds, tmp_path):
    r = runner.invoke(cli, _args(fixture_ds, tmp_path / "out", "--cells-per-image", "0-2"))
    assert r.exit_code == 1 and "--cells-per-image '0-2'" in " ".join(r.output.split())


# --- real data ------------------------------------------------------------------------------
def test_real_data(shared_data, dataset_name):
    ingest("all_idb2", dataset_name, root=shared_data / "ALL-IDB2", progress=False, max_samples=40)
    ingest("bccd", dataset_name, root=shared_data / "BCCD", progress=False, max_samples=60)
    gen = composer_from_dataset(dataset_name, donor_sources=["all_idb2"], background_sources=["bccd"])
    for c in gen.compose(3, seed=0):
        assert c.image.shape == (256, 256, 3) and c.semantic.shape == (256, 256) and 2 <= len(c.instances) <= 4
        full = [_full(inst, 256) for inst in c.instances]
        assert not (np.sum(full, axis=0) > 1).any()
        assert np.array_equal(np.any(full, axis=0), c.semantic > 0)
        assert (c.semantic == 2).any() and all(i.donor_key.startswith("all_idb2/") for i in c.instances)
        assert all(0.1 <= p.fraction <= 0.5 for p in c.controlled_overlaps if p.in_range)
        assert sum(p.in_range for p in c.controlled_overlaps) >= 1


def test_donors_from_a_saved_view(fixture_ds):
    ds = fo.load_dataset(fixture_ds)
    ds.save_view("idb2-only", ds.match({F.SOURCE: "all_idb2"}))
    gen = composer_from_dataset(fixture_ds, donor_sources=None, donors_view="idb2-only", background_sources=["bccd"], **CFG)
    assert {k.split("/")[0] for k in gen.config["donor_keys"]} == {"all_idb2"}
    with pytest.raises(GeneratorError, match="no saved view 'nope'"):
        composer_from_dataset(fixture_ds, donors_view="nope", **CFG)
