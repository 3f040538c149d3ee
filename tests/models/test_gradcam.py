"""Grad-CAM on a tiny timm CNN: the heat sits on the planted patch that decides the class."""

from __future__ import annotations

import numpy as np
import pytest

from alldata.models.base import ModelError
from alldata.models.cnn import TimmClassifier
from alldata.models.gradcam import gradcam, stage_names

PATCH = 12


def _patches(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, list[str], list[tuple[int, int]]]:
    """Grey noise with one bright patch at a random place: red patch = class "red", green = "green"."""
    rng = np.random.default_rng(seed)
    images = rng.integers(60, 140, (n, size, size, 3)).astype(np.uint8)
    labels, corners = [], []
    for i in range(n):
        y, x = (int(v) for v in rng.integers(0, size - PATCH, 2))
        red = i % 2 == 0
        images[i, y : y + PATCH, x : x + PATCH] = (230, 60, 60) if red else (60, 230, 60)
        labels.append("red" if red else "green")
        corners.append((y, x))
    return images, labels, corners


@pytest.fixture(scope="module")
def trained():
    images, labels, _ = _patches(64, seed=0)
    # timm's test_resnet (0.4 M parameters): 10 steps on the CPU
    return TimmClassifier("test_resnet", image_size=64, epochs=5, batch_size=32, augment=False,
                          progress=False, device="cpu").fit(images, labels)


def _inside_over_outside(heat: np.ndarray, y: int, x: int) -> float:
    inside = np.zeros(heat.shape, bool)
    inside[y : y + PATCH, x : x + PATCH] = True
    return float(heat[inside].mean() / max(heat[~inside].mean(), 1e-6))


def test_gradcam_highlights_the_planted_patch(trained):
    images, labels, corners = _patches(20, seed=1)
    assert np.mean(trained.predict(images) == np.array(labels)) >= 0.9  # the CNN learned the patch colour
    maps = gradcam(trained, images, stage=-2)  # 1/16: a 4 x 4 grid at 64 px
    assert all(m.shape == (64, 64) and m.dtype == np.float32 and m.min() >= 0 and m.max() == 1 for m in maps)
    ratios = [_inside_over_outside(m, y, x) for m, (y, x) in zip(maps, corners)]
    assert np.mean(np.array(ratios) > 2) >= 0.8, np.round(ratios, 1)
    # the last stage (1/32, 2 x 2 at 64 px) is coarser but still points at the patch
    last = [_inside_over_outside(m, y, x) for m, (y, x) in zip(gradcam(trained, images), corners)]
    assert np.median(last) > 1.5, np.round(last, 1)


def test_gradcam_maps_have_each_images_size_and_follow_the_label(trained):
    images, _, _ = _patches(4, seed=2)
    odd = [images[0][:, :40], np.ascontiguousarray(np.pad(images[1], ((0, 16), (0, 0), (0, 0)), mode="edge"))]
    maps = gradcam(trained, odd)
    assert [m.shape for m in maps] == [(64, 40), (80, 64)]
    default = gradcam(trained, images[:2], stage=-2)
    predicted = list(trained.predict(images[:2]))
    named = gradcam(trained, images[:2], predicted, stage="layer3")  # the same stage by name
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(default, named))
    other = gradcam(trained, images[:2], ["green" if p == "red" else "red" for p in predicted], stage=-2)
    assert not np.allclose(other[0], default[0], atol=0.05)
    assert stage_names(trained.model_)[-2:] == ["layer3", "layer4"]


def test_gradcam_errors_name_the_fix(trained):
    images, _, _ = _patches(2, seed=3)
    with pytest.raises(ModelError, match=r"labels \['blue'\] are not classes"):
        gradcam(trained, images, ["red", "blue"])
    with pytest.raises(ModelError, match="stage=7 is out of range"):
        gradcam(trained, images, stage=7)
    with pytest.raises(ModelError, match="not fitted"):
        gradcam(TimmClassifier("test_resnet", progress=False), images)
