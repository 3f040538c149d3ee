"""Statistics of the benchmark: cluster-bootstrap intervals, paired gains, gap recovered.

Confidence intervals resample **groups** (patients, source images, (seed, fold) pairs), not
images: images of one patient are not independent (a *cluster bootstrap*). Percentile
intervals; NaN values are left out of means and replicates, with a warning saying how many.
Randomness only comes from ``np.random.default_rng(seed)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np

from alldata.metrics._common import MetricError, _div, _same_length, _sorted_keys, _vector

__all__ = [
    "CI",
    "GainResult",
    "bootstrap_ci",
    "bootstrap_indices",
    "bootstrap_metric",
    "format_ci",
    "gap_recovered",
    "paired_gain",
]

#: Units :func:`paired_gain` and :func:`gap_recovered` may resample.
RESAMPLE = ("pair", "seed", "fold")
#: Ways :func:`gap_recovered` may aggregate the per-pair shares.
GAP_AGGREGATE = ("mean_of_ratios", "ratio_of_means")


def _check_alpha(alpha: float, n_boot: int) -> None:
    if not 0 < alpha < 1:
        raise MetricError(f"alpha={alpha!r} must lie strictly between 0 and 1; use 0.05 for a 95 % interval")
    if int(n_boot) != n_boot or n_boot < 1:
        raise MetricError(
            f"n_boot={n_boot!r} must be a positive integer; 1000 is usual, 2000+ for the final report"
        )


class CI(NamedTuple):
    """A point estimate and its percentile-bootstrap interval ``[low, high]``."""

    point: float
    low: float
    high: float


def _group_index(groups: Sequence[Hashable] | np.ndarray) -> tuple[np.ndarray, int]:
    """Integer code per sample of its group (groups in sorted order) and the number of groups."""
    g = np.asarray([str(x) for x in groups])
    _, codes = np.unique(g, return_inverse=True)
    return codes.ravel(), int(codes.max()) + 1


def _draws(n_groups: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """``n_boot`` resamples of ``n_groups`` group codes, drawn with replacement, one at a time."""
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n_groups, size=n_groups)


def _interval(point: float, reps: np.ndarray, alpha: float, what: str) -> CI:
    ok = ~np.isnan(reps)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} of {len(reps)} bootstrap replicates of {what} were undefined (NaN) and were "
            "left out; the interval describes the resamples where it is defined",
            RuntimeWarning,
            stacklevel=3,
        )
    if not ok.any():
        return CI(float(point), math.nan, math.nan)
    low, high = np.quantile(reps[ok], [alpha / 2, 1 - alpha / 2])
    return CI(float(point), float(low), float(high))


def _too_few(n_groups: int, point: float, what: str) -> CI | None:
    if n_groups >= 2:
        return None
    warnings.warn(
        f"only {n_groups} group for {what}: no interval can be drawn (low/high are NaN); evaluate more groups",
        RuntimeWarning,
        stacklevel=3,
    )
    return CI(float(point), math.nan, math.nan)


def bootstrap_indices(
    groups: Sequence[Hashable],
    statistic: Callable[[np.ndarray], float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile bootstrap of ``statistic(sample_indices)``, resampling whole groups.

    Each replicate draws as many groups as there are, with replacement, and passes the
    indices of all their samples (a group drawn twice appears twice) to ``statistic``.
    The interval is the ``alpha/2`` and ``1 − alpha/2`` quantiles of the replicates
    (NaN replicates left out, with a warning); the point is ``statistic`` on all samples.
    Deterministic by ``seed``; with fewer than 2 groups low/high are NaN (warned).

    Args:
        groups: group id per sample (the independent unit: patient, source image, pair).
        statistic: maps an index array into the samples to a number.
        n_boot: replicates.
        alpha: 1 − confidence level (0.05 for 95 %).
        seed: seed of ``np.random.default_rng``.
    """
    _check_alpha(alpha, n_boot)
    codes, n_groups = _group_index(_vector("groups", groups))
    point = float(statistic(np.arange(len(codes))))
    if (few := _too_few(n_groups, point, "the statistic")) is not None:
        return few
    members = [np.nonzero(codes == g)[0] for g in range(n_groups)]
    reps = np.array(
        [float(statistic(np.concatenate([members[g] for g in row]))) for row in _draws(n_groups, n_boot, seed)]
    )
    return _interval(point, reps, alpha, "the statistic")


def bootstrap_metric(
    y_true: Sequence[Hashable],
    y_pred: Sequence[Hashable],
    groups: Sequence[Hashable],
    metric_fn: Callable[..., float],
    *,
    scores: np.ndarray | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile-bootstrap CI of ``metric_fn(y_true, y_pred)``, resampling groups, not images.

    Images of one patient or source image are correlated, so the honest unit to resample
    is the group (a *cluster bootstrap*): see :func:`bootstrap_indices`. With ``scores``
    the metric is called ``metric_fn(y_true, y_pred, scores)``.

    Returns:
        ``CI(point, low, high)``; unpacks as ``point, low, high``.

    Examples:
        >>> yt = [0, 0, 1, 1, 1, 0]; yp = [0, 1, 1, 1, 0, 0]; g = ["a", "a", "b", "b", "c", "c"]
        >>> acc = lambda t, p: float((t == p).mean())
        >>> bootstrap_metric(yt, yp, g, acc, n_boot=200, seed=0).point
        0.6666666666666666
    """
    yt, yp, gr = _vector("y_true", y_true), _vector("y_pred", y_pred), _vector("groups", groups)
    _same_length(y_true=yt, y_pred=yp, groups=gr)
    sc = None if scores is None else np.asarray(scores)
    if sc is not None and len(sc) != len(yt):
        raise MetricError(f"scores have {len(sc)} rows for {len(yt)} samples; pass one row per sample")

    def statistic(idx: np.ndarray) -> float:
        return metric_fn(yt[idx], yp[idx]) if sc is None else metric_fn(yt[idx], yp[idx], sc[idx])

    return bootstrap_indices(gr, statistic, n_boot=n_boot, alpha=alpha, seed=seed)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    groups: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> CI:
    """Percentile-bootstrap CI of the mean of per-sample ``values``, resampling groups.

    For per-image (or per-pair) numbers such as Dice or a gain: the point is the mean of
    the values; each replicate draws the groups with replacement and takes the mean of all
    their values, Σ_drawn sum_g / Σ_drawn n_g. ``groups=None`` treats every value as its
    own group. NaN values (undefined) are left out first, with a warning.
    """
    v = _vector("values", np.asarray(values, dtype=float))
    g = np.arange(len(v)) if groups is None else _vector("groups", groups)
    _same_length(values=v, groups=g)
    _check_alpha(alpha, n_boot)
    ok = ~np.isnan(v)
    if not ok.all():
        warnings.warn(
            f"{int((~ok).sum())} of {len(v)} values are NaN (undefined) and were left out", RuntimeWarning, stacklevel=2
        )
        v, g = v[ok], g[ok]
    if len(v) == 0:
        return CI(math.nan, math.nan, math.nan)
    codes, n_groups = _group_index(g)
    point = float(v.mean())
    if (few := _too_few(n_groups, point, "the mean")) is not None:
        return few
    sums = np.bincount(codes, weights=v, minlength=n_groups)
    counts = np.bincount(codes, minlength=n_groups).astype(float)
    reps = np.array([sums[row].sum() / counts[row].sum() for row in _draws(n_groups, n_boot, seed)])
    return _interval(point, reps, alpha, "the mean")


# --- paired comparisons over (seed, fold) -----------------------------------------------------


@dataclass(frozen=True)
class GainResult:
    """A paired comparison over (seed, fold) pairs (see :func:`paired_gain`).

    Attributes:
        mean: the aggregate over defined pairs (mean difference, or share of gap recovered).
        low, high: its percentile-bootstrap interval.
        n_pairs: pairs with a defined value (NaN pairs are left out).
        per_pair: the value for every pair, NaN where undefined.
    """

    mean: float
    low: float
    high: float
    n_pairs: int
    per_pair: dict[Any, float]

    def __str__(self) -> str:
        return f"{format_ci(self.mean, self.low, self.high, signed=True)} (n={self.n_pairs})"


def _aligned(**named: Mapping[Any, float]) -> list:
    """Common keys of the dicts, sorted; raise naming the pairs missing from any of them."""
    names = list(named)
    if any(len(d) == 0 for d in named.values()):
        raise MetricError(
            f"{[n for n in names if not named[n]]} hold no (seed, fold) pairs; pass one value per pair"
        )
    every = set().union(*(set(d) for d in named.values()))
    missing = {n: _sorted_keys(every - set(d)) for n, d in named.items() if every - set(d)}
    if missing:
        where = "; ".join(f"missing from {n}: {m}" for n, m in missing.items())
        raise MetricError(
            f"(seed, fold) pairs do not match ({where}). Compare only runs on the same pairs: "
            "run the missing pairs or drop them from every side"
        )
    return _sorted_keys(every)


def _resample_groups(keys: list, resample: str) -> list:
    if resample not in RESAMPLE:
        raise MetricError(f"resample={resample!r} is not one of {RESAMPLE}; use 'pair' (default)")
    if resample == "pair":
        return [repr(k) for k in keys]
    pos = RESAMPLE.index(resample) - 1  # seed -> key[0], fold -> key[1]
    if not all(isinstance(k, tuple) and len(k) == 2 for k in keys):
        raise MetricError(f"resample={resample!r} needs (seed, fold) tuple keys; got e.g. {keys[0]!r}")
    return [repr(k[pos]) for k in keys]


def paired_gain(
    baseline: Mapping[Any, float],
    arm: Mapping[Any, float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resample: Literal["pair", "seed", "fold"] = "pair",
) -> GainResult:
    """Gain of an arm over the baseline, paired on (seed, fold): d = arm − baseline per pair.

    Pairing removes the fold-to-fold and seed-to-seed variation both arms share, so the
    interval describes the *gain*, not the spread of either score. ``mean`` = mean of the
    defined d; the interval is a percentile bootstrap of that mean over pairs
    (``resample="pair"``). Pairs that share a fold's test set are correlated;
    ``resample="fold"`` (or ``"seed"``) resamples whole folds (seeds) instead, a wider,
    more conservative interval when there are enough of them.

    Args:
        baseline: ``{(seed, fold): metric}`` of the real-only run.
        arm: ``{(seed, fold): metric}`` of the arm (e.g. real+synthetic), same pairs.
        n_boot, alpha, seed: bootstrap replicates, 1 − confidence level, and RNG seed.
        resample: the unit resampled: ``"pair"``, ``"seed"`` or ``"fold"``.

    Raises:
        MetricError: the pairs do not match (the message names the missing pairs).
    """
    keys = _aligned(baseline=baseline, arm=arm)
    d = np.array([float(arm[k]) - float(baseline[k]) for k in keys])
    return _summarise(keys, d, _resample_groups(keys, resample), n_boot, alpha, seed)


def _summarise(keys: list, per_pair: np.ndarray, groups: list, n_boot: int, alpha: float, seed: int) -> GainResult:
    ok = ~np.isnan(per_pair)
    if not ok.all():
        warnings.warn(
            f"pairs {[k for k, o in zip(keys, ok) if not o]} are undefined (NaN) and were left out of the mean",
            RuntimeWarning,
            stacklevel=3,
        )
    n = int(ok.sum())
    if n == 0:
        ci = CI(math.nan, math.nan, math.nan)
    else:
        ci = bootstrap_ci(per_pair[ok], np.asarray(groups)[ok], n_boot=n_boot, alpha=alpha, seed=seed)
    return GainResult(ci.point, ci.low, ci.high, n, dict(zip(keys, per_pair.tolist())))


def gap_recovered(
    baseline: Mapping[Any, float],
    oracle: Mapping[Any, float],
    arm: Mapping[Any, float],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    resample: Literal["pair", "seed", "fold"] = "pair",
    aggregate: Literal["mean_of_ratios", "ratio_of_means"] = "mean_of_ratios",
) -> GainResult:
    """Share of the baseline→oracle gap an arm recovers, per (seed, fold) pair, with a CI.

    The rare-class recovery protocol: the baseline keeps only a few training groups of a
    class, the oracle has all of them, and the arm adds synthetic samples to the baseline.
    Per pair, r = (arm − baseline) / (oracle − baseline): 0 = no help, 1 = as good as the
    full real data, < 0 = harmful, > 1 = better than the oracle. r is NaN (undefined, left
    out) where oracle == baseline. If the oracle falls below the baseline the sign of r
    flips meaning; check ``per_pair`` when the gap is small.

    ``aggregate="mean_of_ratios"`` reports the mean of r over defined pairs;
    ``"ratio_of_means"`` reports Σ(arm − baseline) / Σ(oracle − baseline), which small
    gaps cannot blow up (its interval resamples the pairs the same way).

    Raises:
        MetricError: the three dicts do not hold the same pairs (missing ones named).
    """
    if aggregate not in GAP_AGGREGATE:
        raise MetricError(f"aggregate={aggregate!r} is not one of {GAP_AGGREGATE}; use 'mean_of_ratios'")
    keys = _aligned(baseline=baseline, oracle=oracle, arm=arm)
    b = np.array([float(baseline[k]) for k in keys])
    o = np.array([float(oracle[k]) for k in keys])
    a = np.array([float(arm[k]) for k in keys])
    r = _div(a - b, o - b)
    r[np.isnan(a) | np.isnan(b) | np.isnan(o)] = np.nan
    groups = _resample_groups(keys, resample)
    if aggregate == "mean_of_ratios":
        return _summarise(keys, r, groups, n_boot, alpha, seed)
    ok = ~(np.isnan(a) | np.isnan(b) | np.isnan(o))
    gain, gap = (a - b)[ok], (o - b)[ok]

    def statistic(idx: np.ndarray) -> float:
        return float(_div(gain[idx].sum(), gap[idx].sum()))

    if not ok.any():
        return GainResult(math.nan, math.nan, math.nan, 0, dict(zip(keys, r.tolist())))
    ci = bootstrap_indices(np.asarray(groups)[ok], statistic, n_boot=n_boot, alpha=alpha, seed=seed)
    return GainResult(ci.point, ci.low, ci.high, int(ok.sum()), dict(zip(keys, r.tolist())))


# --- text ------------------------------------------------------------------------------------


def _num(x: float, digits: int, signed: bool) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_ci(
    point: float, low: float | None = None, high: float | None = None, *, digits: int = 3, signed: bool = False
) -> str:
    """``"0.812 [0.774, 0.845]"``; just the point when no bounds are given, ``n/a`` for NaN.

    ``signed=True`` prints a sign on every number (for gains: ``"+0.050 [+0.020, +0.080]"``).

    Examples:
        >>> format_ci(0.8123, 0.7741, 0.8449)
        '0.812 [0.774, 0.845]'
    """
    text = _num(point, digits, signed)
    if low is None and high is None:
        return text
    return f"{text} [{_num(low, digits, signed)}, {_num(high, digits, signed)}]"
