"""timm CNN classifiers on tiny synthetic images: learning, determinism, saving, weights, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alldata.errors import ImageError
from alldata.models import CLASSIFIERS, ModelError, get_classifier
from alldata.models.cnn import EfficientNetB0, MobileNetV3, ResNet18, TimmClassifier, load_cnn

torch.set_num_threads(1)

CNNS = {"resnet18": ResNet18, "mobilenetv3": MobileNetV3, "efficientnet_b0": EfficientNetB0}
RED, BLUE = (200, 40, 40), (40, 40, 200)
TINY = {"image_size": 16, "epochs": 1, "batch_size": 4, "progress": False}


def discs(colour: tuple[int, int, int], n: int, seed: int, size: int = 24) -> list[np.ndarray]:
    """``n`` pale images with one noisy disc of ``colour`` at a random place and radius."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        img = np.full((size, size, 3), 235.0)
        cy, cx = rng.uniform(8, size - 8, 2)
        img[np.hypot(yy - cy, xx - cx) < rng.uniform(4, 7)] = colour
        img += rng.normal(0, 4, img.shape)
        out.append(np.clip(np.round(img), 0, 255).astype(np.uint8))
    return out


def red_blue(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    images = discs(RED, n, seed) + discs(BLUE, n, seed + 1)
    return images, np.array(["red"] * n + ["blue"] * n)


@pytest.fixture(scope="module")
def trained():
    """resnet18 fitted on 12 red and 12 blue discs (24 px images at 24 px), 3 epochs of 3 steps."""
    images, labels = red_blue(12, seed=0)
    clf = ResNet18(seed=0, image_size=24, epochs=3, batch_size=8, lr=3e-3, progress=False)
    return clf.fit(images, labels)


def test_registry_has_the_three_cnns():
    names = CLASSIFIERS.names()
    for name, cls in CNNS.items():
        assert name in names and CLASSIFIERS.get(name) is cls
        assert cls.input_kind == "image" and cls.name == name
    assert CLASSIFIERS.get("svm").input_kind == "features"
    assert MobileNetV3.arch == "mobilenetv3_large_100"


def test_cnn_learns_red_versus_blue(trained):
    images, labels = red_blue(10, seed=100)  # held-out images
    assert trained.classes_.tolist() == ["blue", "red"]
    accuracy = (trained.predict(images) == labels).mean()
    assert accuracy >= 0.85, f"accuracy {accuracy} on a trivially separable problem"
    proba = trained.predict_proba(images)
    assert proba.shape == (20, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert trained.history_[-1]["loss"] < trained.history_[0]["loss"]
    emb = trained.embed(images)
    assert emb.shape == (20, 512) and emb.dtype == np.float32
    # images of other sizes (and an (N, H, W, 3) array) are resized to image_size
    big = np.stack([np.kron(img, np.ones((3, 3, 1), np.uint8)) for img in images[:4]])
    assert (trained.predict(big) == labels[:4]).all()


def test_same_seed_gives_the_same_model():
    images, labels = red_blue(2, seed=3)
    p = [ResNet18(seed=1, **TINY).fit(images, labels).predict_proba(images) for _ in range(2)]
    assert np.array_equal(p[0], p[1])
    other = ResNet18(seed=2, **TINY).fit(images, labels).predict_proba(images)
    assert not np.array_equal(p[0], other)


def test_save_load_round_trip_is_identical(trained, tmp_path):
    images, _ = red_blue(5, seed=200)
    out = trained.save(tmp_path / "m")
    assert sorted(f.name for f in out.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "resnet18" and config["classes"] == ["blue", "red"] and config["alldata_version"]
    for loaded in (load_cnn(out, device="cpu"), ResNet18.load(out)):
        assert type(loaded) is ResNet18 and loaded.params == trained.params
        assert np.array_equal(loaded.predict_proba(images), trained.predict_proba(images))
        assert np.array_equal(loaded.embed(images), trained.embed(images))
    trained.save(out)  # re-saving overwrites
    with pytest.raises(ModelError, match="holds a 'resnet18' classifier, not 'mobilenetv3'"):
        MobileNetV3.load(out)


def test_weights_from_a_saved_model_load_all_but_the_head(trained, tmp_path):
    saved = trained.save(tmp_path / "m")
    images, _ = red_blue(3, seed=5)
    labels = ["a", "b", "c"] * 2  # three classes: the head has another shape and is left out
    clf = ResNet18(weights=str(saved / "model.safetensors"), **{**TINY, "epochs": 1})
    clf.fit(images, labels)
    info = clf.weights_info_
    assert info["missing"] == 0 and info["unexpected"] == 0 and info["skipped_head"] == 2
    assert info["loaded"] == len(trained.model_.state_dict()) - 2
    assert ResNet18(weights=str(saved), **TINY).fit(images, labels).weights_info_["loaded"] == info["loaded"]
    # efficientnet cannot take resnet weights
    with pytest.raises(ModelError, match="other shapes than efficientnet_b0's.*another architecture"):
        EfficientNetB0(weights=str(saved), **TINY).fit(images, labels)
    with pytest.raises(ModelError, match="not found"):
        ResNet18(weights=str(tmp_path / "nope.safetensors"), **TINY).fit(images, labels)


@pytest.mark.parametrize("name", ["mobilenetv3", "efficientnet_b0"])
def test_other_architectures_fit_and_predict(name):
    images, labels = red_blue(3, seed=7)
    clf = get_classifier(name, seed=0, **TINY).fit(images, labels)
    assert clf.predict_proba(images).shape == (6, 2)
    assert set(clf.predict(images).tolist()) <= {"red", "blue"}
    assert clf.embed(images).shape == (6, 1280)


def test_errors():
    images, labels = red_blue(2, seed=9)
    with pytest.raises(ModelError, match="at least two classes"):
        ResNet18(**TINY).fit(images, ["red"] * 4)
    with pytest.raises(ModelError, match="4 images but 3 labels"):
        ResNet18(**TINY).fit(images, labels[:3])
    with pytest.raises(ModelError, match="not fitted yet"):
        ResNet18(**TINY).predict(images)
    with pytest.raises(ModelError, match="unknown timm architecture 'resnet_18'.*Did you mean"):
        TimmClassifier("resnet_18")
    with pytest.raises(ModelError, match="class_weight='auto'"):
        ResNet18(class_weight="auto")
    with pytest.raises(ModelError, match="pretrained"):
        ResNet18(pretrained=True)
    bad = [*images[:3], images[3].astype(np.float32)]
    with pytest.raises(ModelError, match=r"images\[3\].*float32") as e:
        ResNet18(**TINY).fit(bad, labels)
    assert isinstance(e.value, ImageError)
    with pytest.raises(ModelError, match=r"images\[0\].*\(24, 24, 4\)"):
        ResNet18(**TINY).fit([np.zeros((24, 24, 4), np.uint8)] * 4, labels)
    with pytest.raises(ModelError, match="is not a saved model"):
        load_cnn("/nonexistent/folder")
