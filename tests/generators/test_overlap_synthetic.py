"""Generated (diffusion / GAN) cells as overlap donors: segmenter masks, rejections with a
reason, the on-disk mask cache, per-instance flags, the pool fingerprint, and the CLI option."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import typer
from alldata.generators.base import GeneratorError
from alldata.generators.overlap import OverlapComposer
from alldata.generators.overlap_records import rejection_counts
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from alldata.cli import compose as compose_cli
from alldata.compose import SYNTHETIC_CELLS_FIELD, composer_from_dataset, load_composer
from alldata.config import home
from alldata.ingest import ingest
from alldata.overlap_pools import segmenter_spec
from alldata.schema import CellType, F, Provenance
from alldata.sources.all_idb2 import ALLIDB2
from alldata.sources.bccd import BCCD
from alldata.synthetic import add_synthetic, make_synthetic_sample
from tests.generators.test_overlap import CFG, make_fixtures

#: generated cells get colours of their own, so their pixels can be told from the real cells'
SYN_NUC, SYN_CYTO, PLASMA = (30, 60, 140), (140, 150, 225), (230, 222, 215)
CFG_SYN = {"output_size": 64, "rbc_px": {"all_idb2": CFG["rbc_px"]["all_idb2"], "bccd": CFG["rbc_px"]["bccd"]}}
EXACT = {"stain_jitter": 0.0, "feather": 0.0, "match_illumination": False}
KW = {"donor_sources": ["all_idb2"], "background_sources": ["bccd"]}


def _disc(path: Path, cy: int, cx: int, seed: int, size: int = 40) -> Path:
    """A generated-looking cell: a nucleus disc in a rim of cytoplasm on plasma (blank when cy < 0)."""
    yy, xx = np.mgrid[:size, :size]
    d = np.hypot(yy - cy, xx - cx)
    img = np.empty((size, size, 3), np.float32)
    img[:] = PLASMA
    img[d <= 12], img[d <= 8] = SYN_CYTO, SYN_NUC
    img += np.random.default_rng(seed).normal(0, 2, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def _add_generated(dataset: str, folder: Path) -> dict[str, str]:
    """Generated cells of two families; returns {name: key}. ``blank`` and ``cut`` are unusable."""
    folder.mkdir(parents=True, exist_ok=True)
    cells = {  # name: (family, cy, cx)
        "gan0": ("gan", 20, 20), "gan1": ("gan", 19, 21), "gan2": ("gan", 21, 19),
        "blank": ("gan", -99, -99), "cut": ("gan", 20, 2), "held_out": ("gan", 20, 20), "diff0": ("diffusion", 20, 20),
    }
    samples, keys = [], {}
    for n, (name, (family, cy, cx)) in enumerate(cells.items()):
        path = _disc(folder / f"{name}.png", cy, cx, seed=n)
        prov = Provenance(generator=family, checkpoint_sha256="0" * 64, seed=0, condition={"cell_type": "lymphoblast"})
        s = make_synthetic_sample(path, family=family, source_id=name, provenance=prov, cell_type=CellType.lymphoblast)
        samples.append(s)
        keys[name] = s.key
    assert add_synthetic(dataset, samples) == len(cells)
    ds = fo.load_dataset(dataset)
    held = ds.match({F.KEY: keys["held_out"]}).first()
    held[F.SPLIT] = "test"  # a test-split generated cell must never become a donor
    held.save()
    return keys


@pytest.fixture(scope="module")
def syn_ds(tmp_path_factory):
    """Real ALL-IDB2 donors and BCCD backgrounds (the fixtures of test_overlap) plus generated cells."""
    tmp = tmp_path_factory.mktemp("overlap-syn")
    roots = make_fixtures(tmp / "src")
    name = f"test-overlap-syn-{uuid.uuid4().hex[:8]}"
    for src in (ALLIDB2(roots["all_idb2"]), BCCD(roots["bccd"])):
        report = ingest(src, name, progress=False, workers=1)
        assert report.added == report.found > 0, report.problems
    keys = _add_generated(name, tmp / "generated")
    yield name, keys
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture(scope="module")
def gan_composer(syn_ds) -> OverlapComposer:
    name, _ = syn_ds
    return composer_from_dataset(name, synthetic_donors="gan", **KW, **CFG_SYN, **EXACT)


def _full(inst, s: int) -> np.ndarray:
    x, y, w, h = (round(v * s) for v in inst.bbox)
    assert inst.mask.shape == (h, w), "mask must cover exactly its box"
    out = np.zeros((s, s), bool)
    out[y : y + h, x : x + w] = inst.mask
    return out


def test_generated_donors_are_segmented_and_bad_ones_rejected(gan_composer, syn_ds):
    _, keys = syn_ds
    cfg = gan_composer.config
    assert cfg["synthetic_donors"] == "gan"
    assert cfg["synthetic_segmenter"] == segmenter_spec("otsu_hsv") and cfg["synthetic_segmenter"]["params"]["keep"] == "center"
    assert cfg["synthetic_donor_keys"] == sorted(keys[k] for k in ("gan0", "gan1", "gan2"))
    assert set(cfg["synthetic_donor_keys"]) <= set(cfg["donor_keys"])
    assert {k.split("/")[0] for k in set(cfg["donor_keys"]) - set(cfg["synthetic_donor_keys"])} == {"all_idb2"}
    # the blank image and the cell cut by the border are refused when the pool is loaded, with a reason
    rej = gan_composer.synthetic_rejected
    assert set(rej) == {keys["blank"], keys["cut"]}
    assert rej[keys["blank"]].startswith("empty mask") and rej[keys["cut"]].startswith("cut off")
    assert rejection_counts(rej) == {"empty mask": 1, "cut off": 1}
    assert keys["held_out"] not in cfg["donor_keys"] and keys["diff0"] not in cfg["donor_keys"]
    # the segmenter's mask covers the generated cell (a disc of radius 12)
    donors, _ = gan_composer.pool()
    d = gan_composer.donor(next(r for r in donors if r.key == keys["gan0"]))
    assert d.synthetic and d.classes is not None and d.classes.max() == 2
    assert abs(d.mask.sum() / (np.pi * 12.5**2) - 1) < 0.2


def test_composites_flag_generated_instances_with_exact_masks(gan_composer):
    syn_keys = set(gan_composer.config["synthetic_donor_keys"])
    n_syn = n_real = 0
    for c in gan_composer.compose(10, seed=5):
        s = c.image.shape[0]
        full = [_full(inst, s) for inst in c.instances]
        assert not (np.sum(full, axis=0) > 1).any(), "visible masks overlap"
        assert np.array_equal(np.any(full, axis=0), c.semantic > 0), "union of instances != semantic foreground"
        for inst, m, box, cell in zip(c.instances, full, c.boxes(), c.recipe["cells"]):
            assert inst.synthetic == (inst.donor_key in syn_keys) == bool(cell.get("synthetic"))
            assert box.attributes["synthetic"] is inst.synthetic and box.attributes["donor_key"] == inst.donor_key
            core = ndimage.binary_erosion(m, iterations=2)
            if core.sum() < 5:
                continue
            px = c.image[core].astype(float)
            # every visible pixel of an instance is its donor's: generated colours vs the real cells'
            d_syn = np.minimum(*(np.abs(px - col).max(axis=1) for col in (SYN_NUC, SYN_CYTO)))
            d_real = np.minimum(*(np.abs(px - col).max(axis=1) for col in ((60, 30, 120), (150, 120, 210))))
            if inst.synthetic:
                n_syn += 1
                assert (d_syn < d_real).mean() > 0.95
            else:
                n_real += 1
                assert (d_real < d_syn).mean() > 0.95
    assert n_syn >= 3 and n_real >= 3


def test_default_never_uses_generated_cells(syn_ds, tmp_path):
    name, _ = syn_ds
    gen = composer_from_dataset(name, **KW, **CFG_SYN)
    assert not any(k.startswith("synthetic/") for k in gen.config["donor_keys"])
    assert gen.config["synthetic_donor_keys"] == [] and gen.synthetic_rejected == {}
    for c in gen.compose(6, seed=5):
        assert not any(i.synthetic or i.donor_key.startswith("synthetic/") for i in c.instances)
    # a checkpoint without generated donors is saved as before (same keys, so the same sha256)
    saved = json.loads((gen.save_pretrained(tmp_path / "ckpt") / "config.json").read_text())
    assert not {"synthetic_donors", "synthetic_segmenter", "synthetic_donor_keys"} & set(saved)
    assert OverlapComposer.from_pretrained(tmp_path / "ckpt").config == gen.config


def test_pool_fingerprint_covers_generated_donors(syn_ds, gan_composer):
    name, _ = syn_ds
    real = composer_from_dataset(name, **KW, **CFG_SYN, **EXACT)
    every = composer_from_dataset(name, synthetic_donors="all", **KW, **CFG_SYN, **EXACT)
    shas = {real.config["pool_sha256"], gan_composer.config["pool_sha256"], every.config["pool_sha256"]}
    assert len(shas) == 3
    other_seg = composer_from_dataset(name, synthetic_donors="gan", synthetic_segmenter="kmeans_color", **KW, **CFG_SYN)
    assert other_seg.config["synthetic_segmenter"]["name"] == "kmeans_color"
    assert other_seg.config["pool_sha256"] != gan_composer.config["pool_sha256"]


def test_selectors(syn_ds):
    name, keys = syn_ds
    ds = fo.load_dataset(name)
    syn = lambda sel: set(composer_from_dataset(name, synthetic_donors=sel, **KW, **CFG_SYN).config["synthetic_donor_keys"])
    assert syn("all") == {keys[k] for k in ("gan0", "gan1", "gan2", "diff0")}
    assert syn("diffusion") == syn("generator=diffusion") == {keys["diff0"]}
    ds.save_view("two-gans", ds.match({F.KEY: {"$in": [keys["gan1"], keys["gan2"], keys["held_out"]]}}))
    assert syn("view=two-gans") == syn("two-gans") == {keys["gan1"], keys["gan2"]}  # never the test-split cell
    with pytest.raises(GeneratorError, match=r"'nope'.*generators with cells here: diffusion, gan; saved views: two-gans"):
        syn("nope")
    with pytest.raises(GeneratorError, match="no generated cell images"):
        syn("generator=ddpm")
    ds.save_view("blank-only", ds.match({F.KEY: keys["blank"]}))
    with pytest.raises(GeneratorError, match=r"none of the 1 generated cells .*empty mask 1"):
        syn("view=blank-only")


def test_masks_are_cached_and_reused(syn_ds, gan_composer, monkeypatch, tmp_path):
    name, _ = syn_ds
    spec = gan_composer.config["synthetic_segmenter"]
    cached = list((home() / "cache" / "overlap-masks").glob(f"{spec['name']}-*/*.png"))
    assert len(cached) >= 5  # the three usable cells, the blank and the cut one
    from alldata.models.segment_classic import OtsuHSV

    def no_segmenting(self, image):
        raise AssertionError("a cached mask was segmented again")

    monkeypatch.setattr(OtsuHSV, "segment", no_segmenting)
    again = composer_from_dataset(name, synthetic_donors="gan", **KW, **CFG_SYN, **EXACT)
    assert again.config == gan_composer.config and again.synthetic_rejected == gan_composer.synthetic_rejected
    # a saved composer reloads its generated donors (from the cache) and makes the same images
    loaded = load_composer(gan_composer.save_pretrained(tmp_path / "ckpt"))
    assert np.array_equal(loaded.compose_one(5, 3).image, gan_composer.compose_one(5, 3).image)


# --- CLI ------------------------------------------------------------------------------------
cli = typer.Typer()
cli.registered_commands += compose_cli.app.registered_commands


@cli.callback()
def _root() -> None:
    """(keeps compose-overlaps a sub-command, as in the real app)"""


def test_cli_synthetic_donors(syn_ds, tmp_path, monkeypatch):
    from alldata.generators import overlap

    monkeypatch.setattr(overlap, "DEFAULT_CONFIG", {**overlap.DEFAULT_CONFIG, "rbc_px": CFG_SYN["rbc_px"]})
    name, keys = syn_ds
    args = ["compose-overlaps", "--dataset", name, "--out", str(tmp_path / "out"), "--output-size", "64",
            "--donor-source", "all_idb2", "--background-source", "bccd", "--num-samples", "4", "--seed", "9",
            "--synthetic-donors", "gan"]
    r = CliRunner().invoke(cli, [*args, "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "generated donors (gan, segmenter otsu_hsv): 3 usable, 2 rejected (empty mask 1, cut off 1)" in " ".join(r.output.split())
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "4 added, 0 skipped" in text and "generated donors (gan, segmenter otsu_hsv): 3 usable, 2 rejected" in text
    view = fo.load_dataset(name).match({F.SOURCE: "synthetic/overlap", F.SEED: 9})
    assert len(view) == 4
    dets = [d for dets in view.values(f"{F.CELLS}.detections") for d in dets]
    flagged = [d for d in dets if d["synthetic"]]
    assert flagged and all(d["donor_key"] in {keys["gan0"], keys["gan1"], keys["gan2"]} for d in flagged)
    assert all(d["synthetic"] is False and d["donor_key"].startswith("all_idb2/") for d in dets if not d["synthetic"])
    assert sum(view.values(SYNTHETIC_CELLS_FIELD)) == len(flagged)
    assert f"{len(flagged)} of {len(dets)} pasted cells generated" in text
    cond = json.loads(view.first()[F.CONDITION])
    assert cond["synthetic_donors"] == "gan" and cond["synthetic_segmenter"] == "otsu_hsv"
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["synthetic_donor_keys"] == sorted(keys[k] for k in ("gan0", "gan1", "gan2"))
    r = CliRunner().invoke(cli, args)  # idempotent
    assert r.exit_code == 0 and "0 added, 4 skipped" in " ".join(r.output.split())
    r = CliRunner().invoke(cli, [*args[:-1], "nope"])
    assert r.exit_code == 1 and "synthetic donors 'nope'" in " ".join(r.output.split())
