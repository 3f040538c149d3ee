"""The pure overlap compositor on records and arrays: no dataset, no FiftyOne.

Also checks the seam itself: the compositor modules import nothing from the store layer,
neither at module level nor inside a function.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from alldata.generators.base import GeneratorError
from alldata.generators.image_ops import feather_alpha, hed_jitter, solidity
from alldata.generators.overlap import BackgroundRecord, DonorRecord, OverlapComposer
from alldata.generators.overlap_records import generated_mask_problem, prepare_donor
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
COMPOSITOR = ["generators/overlap.py", "generators/overlap_records.py", "generators/overlap_placement.py",
              "generators/image_ops.py"]
#: the store layer and everything above it that the compositor must never reach
FORBIDDEN = ("fiftyone", "alldata.store", "alldata.synthetic", "alldata.curation", "alldata.models",
             "alldata.compose", "alldata.overlap_pools", "torch")
SCALE = {"toy": 12.0, "smear": 20.0}


def _disc_cell(path: Path, cy: int, cx: int, seed: int) -> np.ndarray:
    """A 48 px image of one round cell (nucleus in cytoplasm on plasma); returns its 0/1/2 mask."""
    yy, xx = np.mgrid[:48, :48]
    d = np.hypot(yy - cy, xx - cx)
    cls = np.where(d <= 5, 2, np.where(d <= 10, 1, 0)).astype(np.uint8)
    img = np.empty((48, 48, 3), np.float32)
    img[:] = (230, 222, 215)
    img[cls == 1], img[cls == 2] = (150, 120, 210), (60, 30, 120)
    img += np.random.default_rng(seed).normal(0, 2, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return cls


@pytest.fixture
def records(tmp_path) -> tuple[list[DonorRecord], list[BackgroundRecord]]:
    donors = []
    for n, (cy, cx) in enumerate([(24, 24), (22, 25), (24, 3)]):  # the third is cut by the border
        path = tmp_path / f"cell{n}.png"
        seg = _disc_cell(path, cy, cx, seed=n)
        donors.append(DonorRecord(f"toy/{n}", "toy", str(path), None, seg, "lymphoblast", "ALL", None))
    bg = np.clip(np.array((230, 222, 215)) + np.random.default_rng(9).normal(0, 6, (120, 200, 3)), 0, 255)
    Image.fromarray(bg.astype(np.uint8)).save(tmp_path / "smear.png")
    backgrounds = [BackgroundRecord("smear/0", "smear", str(tmp_path / "smear.png"), 200, 120, ((0, 0, 40, 40),), True)]
    return donors, backgrounds


def test_compose_from_records(records):
    gen = OverlapComposer.from_records(*records, output_size=64, rbc_px=SCALE, cells_per_image=[2, 3])
    assert gen.config["donor_keys"] == ["toy/0", "toy/1", "toy/2"] and gen.config["dataset"] is None
    made = gen.compose(4, seed=1)
    for c in made:
        assert c.image.shape == (64, 64, 3) and c.background_clean is True
        full = np.zeros((len(c.instances), 64, 64), bool)
        for k, inst in enumerate(c.instances):
            x, y, w, h = (round(v * 64) for v in inst.bbox)
            full[k, y : y + h, x : x + w] = inst.mask
            assert inst.label.value == "lymphoblast" and inst.donor_key in {"toy/0", "toy/1"}
        assert not (full.sum(axis=0) > 1).any() and np.array_equal(full.any(axis=0), c.semantic > 0)
        assert c.controlled_overlaps and all(p.in_range for p in c.controlled_overlaps)
    assert "border" in gen.rejected["toy/2"]
    again = OverlapComposer.from_records(*records, output_size=64, rbc_px=SCALE, cells_per_image=[2, 3])
    assert all(np.array_equal(a.image, b.image) for a, b in zip(made, again.compose(4, seed=1)))


def test_pool_errors(records):
    donors, backgrounds = records
    with pytest.raises(GeneratorError, match=r"no pixel scale .*\['toy'\]"):
        OverlapComposer.from_records(donors, backgrounds, rbc_px={"smear": 20.0})
    with pytest.raises(GeneratorError, match="at least one donor"):
        OverlapComposer.from_records([], backgrounds, rbc_px=SCALE)
    gen = OverlapComposer.from_records(donors, backgrounds, output_size=64, rbc_px=SCALE)
    bare = OverlapComposer(gen.config)
    with pytest.raises(GeneratorError, match="no donor/background pool loaded"):
        bare.compose_one(0, 0)
    with pytest.raises(GeneratorError, match="not this composer's pool"):
        bare.set_pool(donors[:2], backgrounds)
    bare.set_pool(donors, backgrounds)
    assert np.array_equal(bare.compose_one(0, 0).image, gen.compose_one(0, 0).image)


def test_donor_and_mask_checks(records):
    donors, _ = records
    d = prepare_donor(donors[0], SCALE["toy"])
    assert d.classes.max() == 2 and abs(d.mask.sum() / (np.pi * 10.5**2) - 1) < 0.1
    assert prepare_donor(donors[0], 2.0).startswith("cell diameter")  # 10 red cells across: implausible
    assert generated_mask_problem(donors[0].seg, None) is None
    assert generated_mask_problem(donors[2].seg, None).startswith("cut off")
    assert generated_mask_problem(np.zeros((8, 8), np.uint8), None).startswith("empty mask")


def test_image_ops():
    square = np.zeros((20, 20), bool)
    square[5:15, 5:15] = True
    assert solidity(square) == pytest.approx(1.0)
    alpha = feather_alpha(square, 4.0)
    assert alpha[10, 10] == 1.0 and alpha[0, 0] == 0.0 and 0 < alpha[5, 10] < 1
    img = np.full((4, 4, 3), (200.0, 150.0, 180.0), np.float32)
    rng = np.random.default_rng(0)
    assert hed_jitter(img, rng, 0.0) is img and rng.random() == np.random.default_rng(0).random()
    out = hed_jitter(img, np.random.default_rng(0), 0.1)
    assert out.dtype == np.float32 and 0 < np.abs(out - img).max() < 60


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", COMPOSITOR)
def test_compositor_names_no_store_module(module):
    bad = sorted(n for n in _imports(ROOT / module) if n.startswith(FORBIDDEN))
    assert not bad, f"{module} imports {bad}: the compositor must not reach the store (move it to alldata/compose.py)"


def test_importing_the_compositor_loads_no_store_module():
    code = ("import sys, alldata.generators.overlap; "
            f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
