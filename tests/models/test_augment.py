"""The albumentations pipelines of the deep models: shapes, joint geometry, seeding, errors."""

from __future__ import annotations

import numpy as np
import pytest

from alldata.errors import ImageError
from alldata.models import ModelError
from alldata.models.augment import STRENGTHS, augment_images, eval_transform, seg_transform, train_transform
from tests.models._synthetic import cell_image


def _images(n: int = 3, size: int = 40) -> list[np.ndarray]:
    return [cell_image(size=size, cells=((size // 2, size // 2 + i),), r_cell=12, r_nuc=7, seed=i)[0]
            for i in range(n)]


@pytest.mark.parametrize("strength", sorted(STRENGTHS))
def test_train_transform_resizes_and_varies(strength):
    img = _images(1, size=50)[0][:, :45]  # not square
    t = train_transform(24, strength, seed=0)
    outs = [t(image=img)["image"] for _ in range(6)]
    assert all(o.shape == (24, 24, 3) and o.dtype == np.uint8 for o in outs)
    assert len({o.tobytes() for o in outs}) > 1, "six draws should not all be the same"


def test_same_seed_same_draws_other_seed_other_draws():
    img = _images(1)[0]
    ta, tb, tc = train_transform(32, seed=5), train_transform(32, seed=5), train_transform(32, seed=6)
    a = [ta(image=img)["image"] for _ in range(5)]
    b = [tb(image=img)["image"] for _ in range(5)]
    c = [tc(image=img)["image"] for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_seg_transform_moves_masks_with_the_image():
    img, mask = cell_image(size=48, cells=((18, 30),), r_cell=12, r_nuc=7, noise=0)
    inst = (mask > 0).astype(np.int32) * 7
    t = seg_transform(32, seed=1)
    for _ in range(8):
        out = t(image=img, masks=[mask, inst])
        m, k = out["masks"]
        assert out["image"].shape == (32, 32, 3) and m.shape == k.shape == (32, 32)
        assert set(np.unique(m).tolist()) <= {0, 1, 2}, "nearest-neighbour keeps class values"
        assert set(np.unique(k).tolist()) <= {0, 7} and k.dtype == np.int32
        assert np.array_equal(m > 0, k > 0)
        # the nucleus in the mask is where the image is dark violet (geometry matched)
        nucleus = out["image"][m == 2].astype(int)
        background = out["image"][m == 0].astype(int)
        assert nucleus.sum(axis=1).mean() < background.sum(axis=1).mean() - 150


def test_eval_transform_is_a_plain_resize():
    img = _images(1, size=40)[0]
    a, b = eval_transform(16)(image=img)["image"], eval_transform(16)(image=img)["image"]
    assert a.shape == (16, 16, 3) and np.array_equal(a, b)


def test_augment_images_cycles_through_the_inputs():
    imgs = _images(3)
    imgs[1] = np.full_like(imgs[1], 255)  # a white image stays white whatever the geometry
    out = augment_images(imgs, n=7, seed=0, image_size=20)
    assert out.shape == (7, 20, 20, 3) and out.dtype == np.uint8
    for i in (1, 4):  # copies 1 and 4 come from image 1
        assert out[i].min() > 200
    for i in (0, 2, 3, 5, 6):
        assert out[i].min() < 150
    assert np.array_equal(out, augment_images(np.stack(imgs), n=7, seed=0, image_size=20))
    assert not np.array_equal(out, augment_images(imgs, n=7, seed=1, image_size=20))
    assert augment_images(imgs, n=0, seed=0, image_size=20).shape == (0, 20, 20, 3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: train_transform(4), "image_size=4"),
        (lambda: train_transform(32, "extreme"), "strength='extreme'"),
        (lambda: augment_images(_images(1), n=-1, seed=0, image_size=16), "n=-1"),
        (lambda: augment_images([], n=2, seed=0, image_size=16), "empty"),
    ],
)
def test_bad_arguments_are_refused(call, match):
    with pytest.raises(ModelError, match=match):
        call()


def test_bad_images_name_the_image():
    imgs = _images(2) + [np.zeros((20, 20), np.uint8)]
    with pytest.raises(ImageError, match=r"images\[2\].*uint8 \(20, 20\)"):
        augment_images(imgs, n=3, seed=0, image_size=16)
