"""Classical segmenters on synthetic stained cells with known masks."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import color

from alldata.errors import ImageError
from alldata.models import SEGMENTER_MODULES, SEGMENTERS, ModelError, get_segmenter
from alldata.models.segment_classic import KMeansColor, OtsuHSV, Watershed, _bstar, _saturation
from tests.models._synthetic import cell_image, dice

NAMES = [n for n in SEGMENTERS.names() if SEGMENTER_MODULES[n] == "alldata.models.segment_classic"]


@pytest.mark.parametrize("name", NAMES)
def test_segment_recovers_cell_nucleus_and_cytoplasm(name):
    # a lymphoid-like cell (thin rim of cytoplasm) and two red cells without nucleus
    img, truth = cell_image(size=(128, 200), rbcs=((64, 160, 25), (18, 110, 14)))
    mask = get_segmenter(name).segment(img)
    assert mask.dtype == np.uint8 and mask.shape == truth.shape
    assert set(np.unique(mask).tolist()) <= {0, 1, 2}
    assert dice(mask > 0, truth > 0) > 0.8
    assert dice(mask == 2, truth == 2) > 0.8
    assert dice(mask == 1, truth == 1) > 0.8
    assert not (mask[64, 150:170] > 0).any(), "a red cell (no nucleus) must be background"


@pytest.mark.parametrize("name", NAMES)
def test_blank_image_gives_an_empty_mask(name):
    seg = get_segmenter(name)
    for img in (np.full((64, 64, 3), 230, np.uint8), np.zeros((64, 64, 3), np.uint8)):
        assert not seg.segment(img).any()
        inst = seg.instances(img)
        assert inst.dtype == np.int32 and not inst.any()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((32, 32), np.uint8),
        np.zeros((32, 32, 4), np.uint8),
        np.zeros((32, 32, 3)),
        np.zeros((4, 4, 3), np.uint8),
    ],
)
def test_bad_images_are_refused(name, bad):
    with pytest.raises(ImageError, match="RGB uint8|too small"):
        get_segmenter(name).segment(bad)


def test_watershed_splits_two_touching_cells():
    centres = ((80, 52), (80, 108))  # 56 px apart, radius 32: they overlap by 8 px
    img, truth = cell_image(size=(160, 160), cells=centres, r_cell=32, r_nuc=22)
    inst = get_segmenter("watershed", min_distance=10).instances(img)
    assert inst.dtype == np.int32 and inst.shape == truth.shape
    assert sorted(np.unique(inst).tolist()) == [0, 1, 2]
    yy, xx = np.mgrid[:160, :160]
    for cy, cx in centres:
        disk = np.hypot(yy - cy, xx - cx) < 32
        label = np.bincount(inst[disk]).argmax()
        assert label > 0 and dice(inst == label, disk) > 0.8
    # without the watershed the two cells are one connected region
    assert get_segmenter("otsu_hsv").instances(img).max() == 1
    assert get_segmenter("kmeans_color").instances(img).max() == 1


def test_watershed_leaves_a_single_cell_whole():
    img, _ = cell_image()
    assert get_segmenter("watershed").instances(img).max() == 1


def test_watershed_split_accepts_any_foreground():
    fg = np.zeros((60, 120), bool)
    yy, xx = np.mgrid[:60, :120]
    fg |= np.hypot(yy - 30, xx - 35) < 22
    fg |= np.hypot(yy - 30, xx - 80) < 22
    assert Watershed(min_distance=8).split(fg).max() == 2
    assert Watershed().split(np.zeros((10, 10), bool)).max() == 0


def test_keep_center_keeps_only_the_central_cell():
    img, truth = cell_image(size=(128, 256), cells=((64, 128), (64, 35)), r_cell=25, r_nuc=18)
    yy, xx = np.mgrid[:128, :256]
    central = np.hypot(yy - 64, xx - 128) < 25
    for name in ("otsu_hsv", "kmeans_color"):
        both = get_segmenter(name).segment(img)
        one = get_segmenter(name, keep="center").segment(img)
        assert dice(both > 0, truth > 0) > 0.9
        assert dice(one > 0, central) > 0.9


def test_cytoplasm_ratio_limits_the_rim_and_none_lifts_it():
    img, truth = cell_image(r_cell=45, r_nuc=20)  # rim 25 px = 1.25 x the nucleus radius
    clipped = OtsuHSV().segment(img)  # default: rim at most 0.5 x nucleus radius
    free = OtsuHSV(cytoplasm_ratio=None).segment(img)
    assert dice(clipped == 2, truth == 2) > 0.9
    assert dice(clipped > 0, truth > 0) < 0.8
    assert dice(free > 0, truth > 0) > 0.9


def test_otsu_thresholds_are_ordered_and_none_on_flat_images():
    img, _ = cell_image()
    t_low, t_high = OtsuHSV().thresholds(img)
    assert 0 < t_low < t_high < 1
    assert OtsuHSV().thresholds(np.full((32, 32, 3), 100, np.uint8)) is None


def test_kmeans_is_deterministic_given_the_seed():
    img, _ = cell_image(noise=12, seed=5)
    a = KMeansColor(seed=1).segment(img)
    b = KMeansColor(seed=1).segment(img)
    assert np.array_equal(a, b)
    ranks = KMeansColor(seed=1).clusters(img)
    assert sorted(np.unique(ranks).tolist()) == [0, 1, 2]


def test_fast_colour_helpers_match_skimage():
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    img[0, 0] = 0
    np.testing.assert_allclose(_saturation(img), color.rgb2hsv(img)[..., 1], atol=1e-12)
    np.testing.assert_allclose(_bstar(img), color.rgb2lab(img)[..., 2], atol=1e-3)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("otsu_hsv", {"keep": "middle"}, "keep='middle'"),
        ("otsu_hsv", {"radius": -1}, "radius"),
        ("otsu_hsv", {"cytoplasm_ratio": 0}, "cytoplasm_ratio"),
        ("kmeans_color", {"max_pixels": 10}, "max_pixels"),
        ("watershed", {"min_distance": 0}, "min_distance"),
    ],
)
def test_bad_parameters_are_refused(name, params, match):
    with pytest.raises(ModelError, match=match):
        get_segmenter(name, **params)


def test_repr_shows_the_parameters():
    assert repr(OtsuHSV(keep="center")).startswith("OtsuHSV(sigma=1.0, radius=2")
    assert "min_distance=7" in repr(Watershed(min_distance=7))
