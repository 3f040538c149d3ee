"""The U-Net segmenter on tiny synthetic cells: it learns, splits touching cells, saves, refuses bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alldata.errors import ImageError
from alldata.models import SEGMENTERS, ModelError, Segmenter, get_segmenter
from alldata.models.unet import UNet, UNetNet, boundary_target, instances_from_proba
from tests.models._synthetic import cell_image, dice

torch.set_num_threads(1)

TINY = {"image_size": 16, "base_channels": 4, "depth": 2, "epochs": 1, "batch_size": 2, "progress": False}


def one_cell(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A cell of random place and size (nucleus 50-70 % of its radius) and its 0/1/2 mask."""
    rng = np.random.default_rng(seed)
    margin = round(0.34 * size)
    centre = tuple(int(v) for v in rng.integers(margin, size - margin + 1, 2))
    r_cell = float(rng.uniform(0.22, 0.31) * size)
    return cell_image(size=size, cells=(centre,), r_cell=r_cell, r_nuc=r_cell * rng.uniform(0.5, 0.7), seed=seed)


def touching_pair(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """Two overlapping cells at a random angle: image, 0/1/2 mask, instance map, the two discs."""
    rng = np.random.default_rng(seed)
    r_cell = float(rng.uniform(0.17, 0.2) * size)
    angle, gap = rng.uniform(0, np.pi), r_cell * rng.uniform(1.3, 1.5) / 2  # centres < 2 radii apart
    cy, cx = size / 2 + rng.uniform(-2, 2, 2)
    centres = [(int(cy - s * gap * np.sin(angle)), int(cx - s * gap * np.cos(angle))) for s in (1, -1)]
    img, mask = cell_image(size=size, cells=tuple(centres), r_cell=r_cell, r_nuc=0.6 * r_cell, seed=seed)
    yy, xx = np.mgrid[:size, :size]
    dist = [np.hypot(yy - y, xx - x) for y, x in centres]
    inst = np.where(mask > 0, np.where(dist[0] <= dist[1], 1, 2), 0).astype(np.int32)
    return img, mask, inst, [d < r_cell for d in dist]


@pytest.fixture(scope="module")
def cells_model() -> UNet:
    """Fitted on 12 single cells at 32 px (masks only), 10 epochs of 3 steps."""
    data = [one_cell(i) for i in range(12)]
    seg = UNet(seed=0, image_size=32, base_channels=8, depth=2, epochs=10, batch_size=4, lr=1e-2, progress=False)
    return seg.fit([img for img, _ in data], np.stack([m for _, m in data]))


def test_registered_and_follows_the_protocol():
    assert "unet" in SEGMENTERS.names() and SEGMENTERS.get("unet") is UNet
    assert isinstance(get_segmenter("unet", image_size=32), Segmenter)


def test_boundary_target_rings_each_instance():
    inst = np.zeros((8, 12), np.int32)
    inst[1:7, 1:6], inst[1:7, 6:11] = 1, 2
    mask = (inst > 0).astype(np.uint8)
    mask[3:5, 3] = 2
    with_instances = boundary_target(mask, inst, width=1)
    assert (with_instances[2:6, 5:7] == 3).all(), "the line between touching cells is boundary"
    assert (with_instances[3:5, 3] == 2).all() and with_instances[0].max() == 0
    assert (boundary_target(mask, None, width=1)[2:6, 5:7] == 1).all(), "one region: no line between them"
    assert (boundary_target(mask, inst, width=2)[2:6, 4:8] == 3).all()
    # an all-zero instance map ("not known") falls back to the mask's regions
    assert np.array_equal(boundary_target(mask, np.zeros_like(inst), 1), boundary_target(mask, None, 1))


def test_instances_from_proba_floods_cells_from_interior_markers():
    probs = np.zeros((10, 16, 4), np.float32)
    probs[..., 0] = 1
    probs[1:9, 1:15] = (0, 0.2, 0.1, 0.7)  # one blob, all boundary ...
    probs[2:8, 2:6] = probs[2:8, 10:14] = (0, 0.1, 0.9, 0)  # ... with two interiors
    probs[5, 8] = (0, 0.9, 0.1, 0)  # and a one-pixel third one between them
    assert instances_from_proba(probs, min_area=1).max() == 3
    inst = instances_from_proba(probs, min_area=4)  # the one-pixel marker is dropped
    assert inst.dtype == np.int32 and inst.max() == 2
    assert inst[5, 4] != inst[5, 11] and (inst[1:9, 1:15] > 0).all() and inst[0].max() == 0
    assert not instances_from_proba(np.dstack([np.ones((5, 5, 1)), np.zeros((5, 5, 3))])).any()
    with pytest.raises(ModelError, match=r"shape \(H, W, 4\)"):
        instances_from_proba(np.zeros((5, 5, 3)))


def test_unet_learns_nucleus_and_cell(cells_model):
    test = [one_cell(100 + i) for i in range(5)]
    nucleus = [dice(cells_model.segment(img) == 2, m == 2) for img, m in test]
    cell = [dice(cells_model.segment(img) > 0, m > 0) for img, m in test]
    trivial = [dice(np.ones_like(m), m == 2) for _, m in test]  # everything called nucleus
    assert np.mean(nucleus) > 0.75 > np.mean(trivial) + 0.4, (nucleus, trivial)
    assert np.mean(cell) > 0.75, cell
    mask = cells_model.segment(test[0][0])
    assert mask.dtype == np.uint8 and mask.shape == (32, 32) and set(np.unique(mask).tolist()) <= {0, 1, 2}
    # another input size comes back at its own size
    big = np.kron(test[0][0], np.ones((2, 2, 1), np.uint8))[:60, :50]
    assert cells_model.segment(big).shape == (60, 50)
    assert cells_model.instances(big).shape == (60, 50)
    assert cells_model.history_[-1]["loss"] < cells_model.history_[0]["loss"]


def test_instances_split_two_touching_cells_when_trained_with_instance_maps():
    train = [touching_pair(i) for i in range(12)]
    test = [touching_pair(100 + i) for i in range(4)]
    kwargs = {"seed": 0, "image_size": 48, "base_channels": 8, "depth": 2, "epochs": 20, "batch_size": 4,
              "lr": 1e-2, "min_area": 10, "progress": False}
    images, masks = [t[0] for t in train], [t[1] for t in train]
    seg = UNet(**kwargs).fit(images, masks, [t[2] for t in train])
    for img, _, _, discs in test:
        inst = seg.instances(img)
        assert inst.dtype == np.int32 and inst.max() == 2, "two touching cells must be two instances"
        labels = [np.bincount(inst[d]).argmax() for d in discs]
        assert sorted(labels) == [1, 2]
        for disc, label in zip(discs, labels, strict=True):
            assert dice(inst == label, disc) > 0.7
    # the control: trained on the masks alone, the line between the cells is never taught
    merged = UNet(**kwargs).fit(images, masks)
    assert sum(merged.instances(img).max() == 1 for img, *_ in test) >= 3


def test_save_load_round_trip_is_identical(cells_model, tmp_path):
    out = cells_model.save_pretrained(tmp_path / "unet")
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["params"] == cells_model.params and config["classes"][3] == "boundary"
    img, _ = one_cell(7)
    for loaded in (UNet.from_pretrained(out, device="cpu"), UNet.load(out)):
        assert np.array_equal(loaded.predict_proba(img), cells_model.predict_proba(img))
        assert np.array_equal(loaded.instances(img), cells_model.instances(img))
    cells_model.save(out)  # re-saving overwrites
    (out / "config.json").write_text(json.dumps({**config, "format": "other"}))
    with pytest.raises(ModelError, match="format 'other'"):
        UNet.from_pretrained(out)


def test_same_seed_gives_the_same_model():
    data = [one_cell(i, size=16) for i in range(2)]
    images, masks = [d[0] for d in data], [d[1] for d in data]
    a, b, c = (UNet(seed=s, **TINY).fit(images, masks).predict_proba(images[0]) for s in (3, 3, 4))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_network_shapes():
    net = UNetNet(base_channels=4, depth=3)
    assert net(torch.zeros(2, 3, 24, 24)).shape == (2, 4, 24, 24)


def test_errors():
    img, mask = one_cell(0, size=16)
    with pytest.raises(ModelError, match="not fitted yet"):
        UNet(**TINY).segment(img)
    with pytest.raises(ModelError, match="multiple of 2\\*\\*depth = 8"):
        UNet(image_size=60, depth=3)
    with pytest.raises(ModelError, match="boundary_width=0"):
        UNet(boundary_width=0)
    with pytest.raises(ModelError, match=r"masks\[0\]: need integer values 0/1/2"):
        UNet(**TINY).fit([img], [mask * 2])
    with pytest.raises(ModelError, match=r"masks\[0\].*of shape \(16, 16\)"):
        UNet(**TINY).fit([img], [mask[:8]])
    with pytest.raises(ModelError, match="1 images but 2 instance maps"):
        UNet(**TINY).fit([img], [mask], [None, None])
    with pytest.raises(ModelError, match=r"instances\[0\]"):
        UNet(**TINY).fit([img], [mask], [mask.astype(np.float32)])
    fitted = UNet(**TINY).fit([img], [mask], [None])
    with pytest.raises(ImageError, match="RGB uint8"):
        fitted.segment(img[..., 0])
    with pytest.raises(ModelError, match="is not a saved model"):
        UNet.from_pretrained("/nonexistent/unet")
