"""Generative metrics on known distributions: FD, KID, precision/recall, density/coverage,
memorisation, pixel statistics and CAS."""

from __future__ import annotations

import numpy as np
import pytest

from alldata.metrics import (
    MetricError,
    cas,
    density_coverage,
    frechet_distance,
    kid,
    memorisation,
    pixel_statistics,
    precision_recall,
)

rng = np.random.default_rng


def test_fd_is_zero_on_itself_and_matches_the_closed_form():
    x = rng(0).normal(size=(300, 4))
    assert abs(frechet_distance(x, x)) < 1e-8
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with the sample statistics
    a, b = rng(1).normal(0, 1, 500), rng(2).normal(2, 2, 700)
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(4 + 1, abs=0.5)  # the population value
    # 3-D, correlated: tr((S1 S2)^1/2) = sum of sqrt of the eigenvalues of S1 S2
    c = rng(3).normal(size=(400, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]])
    d = rng(4).normal(size=(300, 3)) * [0.5, 1.5, 1] + [1, -1, 0]
    s1, s2 = np.cov(c, rowvar=False), np.cov(d, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((c.mean(0) - d.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(c, d) == pytest.approx(expected, rel=1e-8)


def test_fd_survives_singular_covariances_and_rejects_bad_input():
    a, b = rng(0).normal(size=(5, 64)), rng(1).normal(size=(6, 64))  # fewer samples than dimensions
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    with pytest.raises(MetricError, match="dimensions differ"):
        frechet_distance(a, b[:, :10])
    with pytest.raises(MetricError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_kid_near_zero_for_one_distribution_and_positive_when_shifted():
    x, y = rng(0).normal(size=(400, 8)), rng(1).normal(size=(400, 8))
    mean, std = kid(x, y, subsets=20, subset_size=100, seed=0)
    assert abs(mean) < 0.1 and std > 0
    shifted, _ = kid(x, y + 1.0, subsets=20, subset_size=100, seed=0)
    assert shifted > 2.0 and shifted > 20 * abs(mean)
    assert kid(x, y, 20, 100, seed=0) == (mean, std)  # seeded


def test_precision_recall_density_coverage():
    x = rng(0).normal(size=(200, 6))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert density_coverage(x, x, k=5)[1] == 1.0
    far = rng(1).normal(size=(150, 6)) + 50
    assert precision_recall(x, far, k=3) == (0.0, 0.0)
    assert density_coverage(x, far, k=5) == (0.0, 0.0)
    # half the fakes far away: precision halves, recall stays high
    half = np.vstack([rng(2).normal(size=(100, 6)), far[:100]])
    p, r = precision_recall(x, half, k=3)
    assert 0.35 < p < 0.6 and r > 0.8
    with pytest.raises(MetricError, match="at least 4"):
        precision_recall(x, far[:3], k=3)


def test_memorisation_flags_copies_not_far_samples():
    real = rng(0).normal(size=(100, 8))
    copies = real[[3, 7]] + 1e-6 * rng(1).normal(size=(2, 8))
    far = rng(2).normal(size=(4, 8)) + 10
    m = memorisation(real, np.vstack([copies, far]), percentile=5)
    assert m.nn_index[:2].tolist() == [3, 7]
    assert m.copy_flag.tolist() == [True, True, False, False, False, False]
    assert m.copy_rate == pytest.approx(2 / 6)
    assert (m.nn_distance[:2] < 1e-5).all() and (m.ratio[:2] < 1e-4).all() and (m.ratio[2:] > 1).all()
    assert 0 < m.threshold < np.median(m.nn_distance[2:])


def test_pixel_statistics_by_hand():
    img = np.zeros((1, 2, 3, 3), np.uint8)
    img[0, :, :, 0] = [[0, 10, 30], [0, 10, 30]]  # red: horizontal steps 10 and 20, no vertical step
    img[0, :, :, 2] = 200
    s = pixel_statistics(img)
    assert s.mean == pytest.approx((40 / 3, 0.0, 200.0))
    assert s.std == pytest.approx((np.std([0, 10, 30]), 0.0, 0.0))
    # differences: horizontal 2 rows x 2 steps x 3 channels = 12 (red: 10, 20, 10, 20), vertical 1 x 3 x 3 = 9 (all 0)
    assert s.hf_energy == pytest.approx(60 / 21)
    noise = rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    assert pixel_statistics(noise).hf_energy > 60  # E|U - U'| = 256/3 for independent uniform levels
    with pytest.raises(MetricError, match=r"\(N, H, W, 3\)"):
        pixel_statistics(noise[0])


def test_cas_is_high_when_train_and_test_agree_and_chance_when_labels_are_swapped():
    x = np.vstack([rng(0).normal(0, 1, (40, 4)), rng(1).normal(3, 1, (40, 4))])
    y = ["a"] * 40 + ["b"] * 40
    xt = np.vstack([rng(2).normal(0, 1, (20, 4)), rng(3).normal(3, 1, (20, 4))])
    yt = ["a"] * 20 + ["b"] * 20
    assert cas(x, y, xt, yt) > 0.95
    assert cas(x, y[::-1], xt, yt) < 0.05  # trained on swapped labels: always wrong
    assert cas(x, y, xt, yt, seed=1) == cas(x, y, xt, yt, seed=1)
    with pytest.raises(MetricError, match="at least 2 classes"):
        cas(x, ["a"] * 80, xt, yt)
