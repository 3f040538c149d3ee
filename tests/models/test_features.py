"""Hand-crafted features: documented names, finite values, shape sanity, NaN fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from alldata.models import ModelError, extract_features, feature_names
from alldata.models import features as features_module
from tests.models._synthetic import cell_image

#: The names the module docstring documents, written out independently.
DOCUMENTED = (
    [f"color_{c}_{s}" for c in "rgbhsv" for s in ("mean", "std")]
    + [
        f"{r}_{p}"
        for r in ("cell", "nucleus")
        for p in ("area", "perimeter", "circularity", "eccentricity", "solidity")
    ]
    + ["nc_ratio", "cell_found", "nucleus_found"]
    + [f"glcm_{p}_d{d}" for p in ("contrast", "homogeneity", "energy", "correlation") for d in (1, 2, 4)]
)


def _row(X: np.ndarray, names: list[str], i: int = 0) -> dict[str, float]:
    return dict(zip(names, X[i].tolist()))


def test_names_are_the_documented_ones():
    names = feature_names()
    assert names == DOCUMENTED
    assert len(set(names)) == len(names) == 37
    doc = features_module.__doc__
    for token in (
        "color_{r,g,b,h,s,v}_{mean,std}",
        "nc_ratio",
        "cell_found",
        "glcm_{contrast,homogeneity,energy,correlation}_d{1,2,4}",
    ):
        assert token in doc


def test_features_are_finite_with_and_without_a_mask():
    img, mask = cell_image()
    X, names = extract_features([img, img], [mask, None])
    assert names == DOCUMENTED
    assert X.shape == (2, 37) and X.dtype == np.float64
    assert np.isfinite(X).all()
    np.testing.assert_allclose(X[0], X[1], rtol=0.05, atol=0.05)  # own segmentation ~ the true mask


def test_shape_of_a_disk():
    img, mask = cell_image(r_cell=38, r_nuc=28)
    f = _row(*extract_features([img], [mask]))
    for region, r in (("cell", 38), ("nucleus", 28)):
        assert f[f"{region}_circularity"] == pytest.approx(1.0, abs=0.05)
        assert f[f"{region}_area"] == pytest.approx(np.pi * r**2, rel=0.03)
        assert f[f"{region}_perimeter"] == pytest.approx(2 * np.pi * r, rel=0.05)
        assert f[f"{region}_eccentricity"] < 0.1
        assert f[f"{region}_solidity"] > 0.95
    assert f["nc_ratio"] == pytest.approx((28 / 38) ** 2, rel=0.05)
    assert f["cell_found"] == f["nucleus_found"] == 1.0
    assert f["color_h_mean"] == pytest.approx(0.74, abs=0.05)  # violet


def test_shape_of_irregular_and_elongated_cells():
    img = np.full((100, 100, 3), 200, np.uint8)
    yy, xx = np.mgrid[:100, :100]
    star = np.zeros((100, 100), np.uint8)
    star[(np.abs(yy - 50) < 6) & (np.abs(xx - 50) < 40)] = 2
    star[(np.abs(xx - 50) < 6) & (np.abs(yy - 50) < 40)] = 2
    ellipse = np.where(((yy - 50) / 15) ** 2 + ((xx - 50) / 40) ** 2 < 1, 2, 0).astype(np.uint8)
    X, names = extract_features([img, img], [star, ellipse])
    cross, ell = _row(X, names, 0), _row(X, names, 1)
    assert cross["cell_circularity"] < 0.5 and cross["cell_solidity"] < 0.6
    assert ell["cell_eccentricity"] == pytest.approx(np.sqrt(1 - (15 / 40) ** 2), abs=0.02)


def test_texture_sees_texture():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    mask = np.where(np.hypot(yy - 48, xx - 48) < 35, 2, 0).astype(np.uint8)
    flat = np.full((96, 96, 3), 230, np.uint8)
    flat[mask > 0] = (120, 80, 160)  # a uniform cell
    speckle = rng.integers(-60, 60, flat.shape[:2])
    rough = np.clip(flat.astype(int) + speckle[..., None], 0, 255).astype(np.uint8)
    X, names = extract_features([flat, rough], [mask, mask])
    a, b = _row(X, names, 0), _row(X, names, 1)
    assert b["glcm_contrast_d1"] > 10 * max(a["glcm_contrast_d1"], 1e-3)
    assert b["glcm_homogeneity_d1"] < a["glcm_homogeneity_d1"]
    assert b["glcm_energy_d1"] < a["glcm_energy_d1"]


def test_fallback_when_segmentation_finds_nothing():
    blank = np.full((64, 64, 3), 210, np.uint8)
    X, names = extract_features([blank])  # otsu_hsv finds no cell
    f = _row(X, names)
    shape = [n for n in names if n.startswith(("cell_", "nucleus_")) and not n.endswith("_found")]
    assert all(np.isnan(f[n]) for n in shape) and np.isnan(f["nc_ratio"])
    assert f["cell_found"] == 0.0 and f["nucleus_found"] == 0.0
    colour_texture = [n for n in names if n.startswith(("color_", "glcm_"))]
    assert all(np.isfinite(f[n]) for n in colour_texture)  # over the whole image
    assert f["color_r_mean"] == pytest.approx(210 / 255)


def test_fallback_when_there_is_no_nucleus():
    img, mask = cell_image()
    X, names = extract_features([img], [np.where(mask > 0, 1, 0).astype(np.uint8)])
    f = _row(X, names)
    assert np.isnan(f["nucleus_area"]) and np.isnan(f["nc_ratio"]) and f["nucleus_found"] == 0.0
    assert np.isfinite(f["cell_area"]) and f["cell_found"] == 1.0


def test_a_sliver_has_nan_texture_at_long_distances():
    img = np.full((20, 20, 3), 120, np.uint8)
    mask = np.zeros((20, 20), np.uint8)
    mask[5:8, 5:8] = 2  # 3x3: pairs at distance 1 and 2, none at 4
    f = _row(*extract_features([img], [mask]))
    assert np.isfinite(f["glcm_contrast_d1"]) and np.isfinite(f["glcm_energy_d2"])
    assert np.isnan(f["glcm_contrast_d4"]) and np.isnan(f["glcm_correlation_d4"])


def test_custom_segmenter_is_used():
    class Everything:
        def segment(self, image):
            return np.full(image.shape[:2], 2, np.uint8)

    img, _ = cell_image(size=50)
    f = _row(*extract_features([img], segmenter=Everything()))
    assert f["cell_area"] == 2500 and f["nc_ratio"] == 1.0


@pytest.mark.parametrize(
    ("images", "masks", "match"),
    [
        ([np.zeros((8, 8), np.uint8)], None, "RGB uint8"),
        ([np.zeros((8, 8, 3), np.uint8)], [np.zeros((9, 8), np.uint8)], "mask shape"),
        ([np.zeros((8, 8, 3), np.uint8)], [np.full((8, 8), 3, np.uint8)], "0/1/2"),
        ([np.zeros((8, 8, 3), np.uint8)] * 2, [None], "2 images but 1 masks"),
    ],
)
def test_bad_inputs_are_refused(images, masks, match):
    with pytest.raises(ModelError, match=match):
        extract_features(images, masks)


def test_empty_input_gives_an_empty_matrix():
    X, names = extract_features([])
    assert X.shape == (0, 37) and len(names) == 37
