"""The segmentation benchmark task on a tiny drawn dataset: leak-free composites, rows for
every test sample, pooled metrics against a hand computation, exact tiled inference."""

from __future__ import annotations

import json

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from alldata.benchmark import segmentation as seg
from alldata.benchmark.engine import run_benchmark
from alldata.metrics.segmentation import touching_ids
from alldata.recipes import Recipe
from alldata.schema import F
from tests.models._synthetic import cell_image

SOURCES = ("all_idb2", "all_idb1", "bccd")


def _sample(path, source: str, i: int, kind: str, **fields) -> fo.Sample:
    s = fo.Sample(filepath=str(path))
    key = f"{source}/{i}"
    s.update_fields({F.SOURCE: source, F.SOURCE_ID: str(i), F.KEY: key, F.GROUP_ID: key, F.IMAGE_KIND: kind,
                     F.SPLIT: "train", F.IS_SYNTHETIC: False, F.DUPLICATE_OF: None, **fields})
    return s


def _detections(inst: np.ndarray, with_masks: bool) -> fo.Detections:
    h, w = inst.shape
    dets = []
    for k, sl in enumerate(ndimage.find_objects(inst), start=1):
        y, x = sl
        box = [x.start / w, y.start / h, (x.stop - x.start) / w, (y.stop - y.start) / h]
        mask = (inst[sl] == k) if with_masks else None
        dets.append(fo.Detection(label="wbc", bounding_box=box, mask=mask))
    return fo.Detections(detections=dets)


@pytest.fixture
def seg_ds(tmp_path, dataset_name, monkeypatch):
    """6 single-cell crops with masks, 3 smears with touching-cell instance masks, 3 with boxes."""
    from alldata.generators import overlap

    for src in SOURCES:  # a red cell is 16 px in every fixture: no resampling
        monkeypatch.setitem(overlap.RBC_PX, src, seg.RBC_PX)
    from alldata.store import ensure_schema

    ds = fo.Dataset(dataset_name)
    ensure_schema(ds)
    samples = []
    for i in range(6):
        img, mask = cell_image(32, ((16, 16),), r_cell=11, r_nuc=6, seed=i)
        p = tmp_path / f"crop{i}.png"
        Image.fromarray(img).save(p)
        samples.append(_sample(p, "all_idb2", i, "cell", **{F.SEGMENTATION: fo.Segmentation(mask=mask),
                                                           F.WIDTH: 32, F.HEIGHT: 32}))
    for i in range(6):
        smear, source = i < 3, ("all_idb1" if i < 3 else "bccd")
        img, mask = cell_image(64, ((20, 20), (20, 40)) if smear else ((32, 32),), r_cell=11, r_nuc=6, seed=10 + i)
        inst = np.zeros(mask.shape, np.int32)
        yy, xx = np.mgrid[:64, :64]
        for k, (cy, cx) in enumerate(((20, 20), (20, 40)) if smear else ((32, 32),), start=1):
            inst[(np.hypot(yy - cy, xx - cx) < 11) & (inst == 0)] = k
        p = tmp_path / f"smear{i}.png"
        Image.fromarray(img).save(p)
        samples.append(_sample(p, source, i, "smear", **{F.CELLS: _detections(inst, with_masks=smear),
                                                        F.WIDTH: 64, F.HEIGHT: 64}))
    ds.add_samples(samples)
    return dataset_name


def _recipe(**extra) -> Recipe:
    return Recipe.model_validate({
        "name": "tiny-seg", "task": "segmentation",
        "data": {"sources": list(SOURCES), "label_field": "diagnosis", "image_size": 32},
        "eval_sources": ["all_idb1", "bccd"], "folds": 2, "seeds": [0], "baseline": "real", "n_boot": 50,
        "arms": [{"name": "real", "kind": "real"},
                 {"name": "overlap", "kind": "overlap",
                  "params": {"num_composites": 3, "output_size": 80, "cells_per_image": [2, 2]}}],
        "models": [{"name": "unet", "params": {"epochs": 2, "batch_size": 4, "base_channels": 4, "depth": 2}}],
        "metrics": ["instance_f1", "aji", "dice", "box_f1"], "primary_metric": "instance_f1", **extra,
    })


def test_run_is_leak_free_and_scores_every_test_sample(seg_ds, tmp_path, monkeypatch):
    from alldata.generators.overlap import OverlapComposer

    pools = []
    compose = OverlapComposer.compose

    def spy(self, *a, **k):
        pools.append((set(self.config["donor_keys"]), set(self.config["background_keys"])))
        return compose(self, *a, **k)

    monkeypatch.setattr(OverlapComposer, "compose", spy)
    run = run_benchmark(_recipe(), seg_ds, tmp_path / "run", progress=False, write_back=True)
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    cells = sorted((tmp_path / "run" / "cells").rglob("*.json"))
    assert len(cells) == 4 and len(pools) == 2  # 2 arms x 2 folds; composites once per overlap fold
    ds = fo.load_dataset(seg_ds)
    key_of = dict(zip(ds.values("id"), ds.values(F.KEY)))
    for path in cells:
        result = json.loads(path.read_text())
        test_keys = {key_of[r["id"]] for r in result["rows"]}
        assert {k.split("/")[0] for k in test_keys} <= {"all_idb1", "bccd"}
        assert any("tp" in r for r in result["rows"]) and any("box_tp" in r for r in result["rows"])
        if "arm=overlap" in str(path):
            donors, backgrounds = next(p for p in pools if not (p[0] | p[1]) & test_keys)
            assert donors and backgrounds and not (donors | backgrounds) & test_keys
            assert result["info"]["n_synthetic"] == 3
    assert {a["arm"] for a in summary["arms"]} == {"real", "overlap"}
    assert any(g["metric"] == "instance_f1" for g in summary["gains"])
    field = next(f for f in ds.get_field_schema() if f.startswith("pred_tiny_seg_"))
    smear = ds.match({F.SOURCE: "all_idb1"}).first()
    assert smear[field] is None or all(d.truth_field == F.CELLS for d in smear[field].detections)
    # resuming runs nothing
    monkeypatch.setattr(seg.SegmentationTask, "run", lambda *a: pytest.fail("a finished cell was re-run"))
    run_benchmark(_recipe(), seg_ds, tmp_path / "run", progress=False, write_back=False)
    assert run is not None


def test_score_pools_counts():
    rows = [
        {"id": "a", "group": "a", "inter": 30, "true_px": 40, "pred_px": 50, "tp": 2, "fp": 1, "fn": 0,
         "aji_c": 30, "aji_u": 60, "touching": 2, "touching_tp": 1},
        {"id": "b", "group": "b", "inter": 10, "true_px": 20, "pred_px": 10, "tp": 1, "fp": 0, "fn": 3,
         "aji_c": 10, "aji_u": 20, "touching": 0, "touching_tp": 0},
        {"id": "c", "group": "c", "box_tp": 1, "box_fp": 2, "box_fn": 1},
        {"id": "d", "group": "d", "n_pred": 3},  # unannotated: predictions only
    ]
    s = seg.SegmentationTask().score(rows)
    assert s["dice"] == pytest.approx(2 * 40 / (60 + 60))
    assert s["iou"] == pytest.approx(40 / (120 - 40))
    assert s["instance_f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 3))
    assert s["aji"] == pytest.approx(40 / 80)
    assert s["touching_recall"] == pytest.approx(0.5)
    assert s["box_f1"] == pytest.approx(2 / (2 + 2 + 1))
    assert seg.SegmentationTask().score(rows[3:]) == {}


class _PixelModel:
    """predict_proba depends on each pixel only, so tiling must reproduce it exactly."""

    def predict_proba(self, image):
        assert image.shape[:2] == (16, 16)
        p = image[..., :2].astype(np.float32) + 1
        return p / p.sum(-1, keepdims=True)


def test_tiled_inference_blends_exactly():
    img = np.random.default_rng(0).integers(0, 255, (37, 50, 3), dtype=np.uint8)
    full = img[..., :2].astype(np.float32) + 1
    out = seg.predict_proba_tiled(_PixelModel(), img, 16)
    assert out.shape == (37, 50, 2)
    np.testing.assert_allclose(out, full / full.sum(-1, keepdims=True), rtol=1e-5)
    small = img[:10, :12]
    part = small[..., :2].astype(np.float32) + 1
    np.testing.assert_allclose(seg.predict_proba_tiled(_PixelModel(), small, 16), part / part.sum(-1, keepdims=True),
                               rtol=1e-5)


def test_instance_map_from_detections():
    inst = np.zeros((40, 60), np.int32)
    inst[5:15, 10:30] = 1
    inst[20:35, 25:40] = 2
    got = seg._instance_map(_detections(inst, with_masks=True).detections, 60, 40)
    np.testing.assert_array_equal(got, inst)
    assert touching_ids(inst) == set()
    inst[15:20, 25:30] = 2  # now they touch
    assert touching_ids(inst) == {1, 2}
