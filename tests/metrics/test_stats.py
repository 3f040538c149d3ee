"""Cluster bootstrap, paired gains and gap recovered: groups resampled, pairs matched, NaN left out."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from alldata.metrics import (
    CI,
    GainResult,
    MetricError,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_metric,
    gap_recovered,
    paired_gain,
    roc_auc,
)

approx = pytest.approx


# --- bootstrap --------------------------------------------------------------------------------


def _accuracy(t, p):
    return float(np.mean(t == p))


def _grouped_predictions(n_groups, per_group=5, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = rng.integers(0, 2, len(groups))
    correct = rng.random(len(groups)) < 0.8
    return y, np.where(correct, y, 1 - y), groups


def test_bootstrap_contains_point_narrows_and_is_deterministic():
    y, p, g = _grouped_predictions(20)
    ci = bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=0)
    assert isinstance(ci, CI) and ci.low <= ci.point <= ci.high and ci.low < ci.high
    assert ci.point == approx(_accuracy(y, p))
    assert bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=0) == ci
    assert bootstrap_metric(y, p, g, _accuracy, n_boot=500, seed=1) != ci
    y2, p2, g2 = _grouped_predictions(400)
    wide = ci.high - ci.low
    point, low, high = bootstrap_metric(y2, p2, g2, _accuracy, n_boot=500, seed=0)
    assert low <= point <= high and high - low < wide / 2  # 20x the groups: about 1/sqrt(20) the width


def test_bootstrap_resamples_groups_not_images():
    # 10 patients of 20 images; a patient's images are all right or all wrong
    groups = np.repeat(np.arange(10), 20)
    right = np.repeat(np.arange(10) % 2 == 0, 20)
    y = np.zeros(200, dtype=int)
    p = np.where(right, 0, 1)
    by_group = bootstrap_metric(y, p, groups, _accuracy, n_boot=400, seed=0)
    by_image = bootstrap_metric(y, p, np.arange(200), _accuracy, n_boot=400, seed=0)
    assert by_group.point == by_image.point == 0.5
    assert (by_group.high - by_group.low) > 3 * (by_image.high - by_image.low)


def test_bootstrap_ci_matches_index_form_and_scores_are_passed():
    rng = np.random.default_rng(4)
    values = rng.random(30)
    groups = np.repeat(np.arange(10), 3)
    a = bootstrap_ci(values, groups, n_boot=300, seed=5)
    b = bootstrap_indices(groups, lambda idx: values[idx].mean(), n_boot=300, seed=5)
    assert a.point == approx(b.point) and a.low == approx(b.low) and a.high == approx(b.high)
    y, p, g = _grouped_predictions(30)
    s = np.where(y == 1, 0.9, 0.1)
    ci = bootstrap_metric(y, p, g, lambda t, _p, sc: roc_auc(t, sc), scores=s, n_boot=100, seed=0)
    assert ci == (1.0, 1.0, 1.0)


def test_bootstrap_single_group_and_bad_alpha():
    with pytest.warns(RuntimeWarning, match="only 1 group"):
        ci = bootstrap_ci([0.5, 0.7], ["a", "a"])
    assert ci.point == approx(0.6) and math.isnan(ci.low) and math.isnan(ci.high)
    with pytest.raises(MetricError, match="alpha"):
        bootstrap_ci([0.1, 0.2], alpha=5)


# --- paired gains -----------------------------------------------------------------------------

PAIRS = [(s, f) for s in range(3) for f in range(5)]


def _base(offset=0.0):
    return {k: 0.6 + 0.02 * k[1] - 0.01 * k[0] + offset for k in PAIRS}


def test_paired_gain_constant_shift_is_degenerate():
    g = paired_gain(_base(), _base(0.05), n_boot=200, seed=0)
    assert isinstance(g, GainResult) and g.n_pairs == 15
    assert g.mean == approx(0.05) and g.low == approx(0.05) and g.high == approx(0.05)
    assert set(g.per_pair) == set(PAIRS) and all(v == approx(0.05) for v in g.per_pair.values())
    assert str(g) == "+0.050 [+0.050, +0.050] (n=15)"


def test_paired_gain_mixed_differences():
    base = {(0, 0): 0.5, (0, 1): 0.5, (0, 2): 0.5, (1, 0): 0.5}
    arm = {(0, 0): 0.6, (0, 1): 0.5, (0, 2): 0.7, (1, 0): 0.6}
    g = paired_gain(base, arm, n_boot=500, seed=0)
    assert g.mean == approx(0.1)  # (0.1 + 0 + 0.2 + 0.1) / 4
    assert 0.0 <= g.low < 0.1 < g.high <= 0.2
    f = paired_gain(base, arm, n_boot=500, seed=0, resample="fold")
    assert f.mean == approx(0.1) and 0.0 <= f.low <= f.high <= 0.2


def test_paired_gain_mismatched_pairs_named():
    base, arm = _base(), _base(0.05)
    del arm[(1, 4)]
    arm[(9, 0)] = 0.7
    with pytest.raises(MetricError, match=r"missing from baseline: \[\(9, 0\)\].*missing from arm: \[\(1, 4\)\]"):
        paired_gain(base, arm)


def test_paired_gain_leaves_out_nan_pairs():
    base, arm = _base(), _base(0.05)
    arm[(2, 2)] = math.nan
    with pytest.warns(RuntimeWarning, match=r"\(2, 2\)"):
        g = paired_gain(base, arm, n_boot=100)
    assert g.n_pairs == 14 and g.mean == approx(0.05) and math.isnan(g.per_pair[(2, 2)])


def test_gap_recovered_halfway():
    base, oracle, arm = _base(), _base(0.2), _base(0.1)
    g = gap_recovered(base, oracle, arm, n_boot=200, seed=0)
    assert g.mean == approx(0.5) and g.low == approx(0.5) and g.high == approx(0.5) and g.n_pairs == 15
    r = gap_recovered(base, oracle, arm, n_boot=200, seed=0, aggregate="ratio_of_means")
    assert r.mean == approx(0.5)
    # no gap on one pair: that pair is undefined and left out, not a crash
    oracle[(0, 0)] = base[(0, 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        g = gap_recovered(base, oracle, arm, n_boot=200, seed=0)
    assert g.n_pairs == 14 and g.mean == approx(0.5) and math.isnan(g.per_pair[(0, 0)])
    del oracle[(0, 1)]
    with pytest.raises(MetricError, match=r"missing from oracle: \[\(0, 1\)\]"):
        gap_recovered(base, oracle, arm)
