"""Generative metrics: how close synthetic images are to real ones, and whether they copy.

On feature arrays ``(N, D)`` (from any :class:`alldata.features.FeatureExtractor`):
:func:`frechet_distance` (FD), :func:`kid`, :func:`precision_recall`,
:func:`density_coverage` and :func:`memorisation` (nearest-training-sample copies). On
images, no encoder needed: :func:`pixel_statistics` (per-channel mean and std,
high-frequency energy). On labelled features: :func:`cas`, the classification accuracy of a
reference classifier trained on one set and tested on another (CAS when trained on
synthetic cells and tested on real ones; TRS, its yardstick, when trained on real ones).
"""

from __future__ import annotations

import warnings
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from alldata.metrics._common import MetricError

__all__ = [
    "Memorisation",
    "PixelStats",
    "cas",
    "density_coverage",
    "frechet_distance",
    "kid",
    "memorisation",
    "nearest",
    "pixel_statistics",
    "precision_recall",
]


def _features(x: np.ndarray, name: str, min_n: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise MetricError(f"{name} features must be a 2-D (N, D) array, got shape {x.shape}")
    if len(x) < min_n:
        raise MetricError(f"{name}: {len(x)} samples; this metric needs at least {min_n}")
    if not np.isfinite(x).all():
        raise MetricError(f"{name} features contain NaN or inf")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise MetricError(f"feature dimensions differ: {a.shape[1]} (real) vs {b.shape[1]} (fake)")


def _dist_chunks(a: np.ndarray, b: np.ndarray, chunk: int = 1024) -> Iterator[tuple[int, np.ndarray]]:
    """Euclidean distances ``a[i:i+chunk]`` x ``b`` (bounded memory)."""
    from scipy.spatial.distance import cdist

    for i in range(0, len(a), chunk):
        yield i, cdist(a[i : i + chunk], b)


def _kth_nn_radius(x: np.ndarray, k: int) -> np.ndarray:
    """Distance of each row of ``x`` to its k-th nearest neighbour in ``x`` (itself excluded)."""
    out = np.empty(len(x))
    for i, d in _dist_chunks(x, x):
        out[i : i + len(d)] = np.partition(d, k, axis=1)[:, k]  # position 0 is the point itself
    return out


def nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``a``: index of and distance to its nearest row of ``b``."""
    idx, dist = np.empty(len(a), np.int64), np.empty(len(a))
    for i, d in _dist_chunks(a, b):
        j = d.argmin(1)
        idx[i : i + len(d)], dist[i : i + len(d)] = j, d[np.arange(len(d)), j]
    return idx, dist


# --- distribution metrics ------------------------------------------------------------------


def frechet_distance(real: np.ndarray, fake: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when on Inception pool features).

    ``FD = ||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))`` with sample means ``mu``
    and covariances ``S`` (ddof=1). Heusel et al. 2017, "GANs Trained by a Two Time-Scale
    Update Rule Converge to a Local Nash Equilibrium". The square root is
    ``scipy.linalg.sqrtm``; when it is not finite or has a non-negligible imaginary part
    (singular covariances, e.g. fewer samples than dimensions) ``eps * I`` is added to both
    covariances, and tiny imaginary parts from rounding are dropped. Not clamped: values
    a hair below 0 are rounding.
    """
    from scipy.linalg import LinAlgWarning, sqrtm

    r, f = _features(real, "real", 2), _features(fake, "fake", 2)
    _same_dim(r, f)
    mu_r, mu_f = r.mean(0), f.mean(0)
    s_r, s_f = np.atleast_2d(np.cov(r, rowvar=False)), np.atleast_2d(np.cov(f, rowvar=False))
    with warnings.catch_warnings():  # singular products are expected and handled below
        warnings.simplefilter("ignore", LinAlgWarning)
        covmean = sqrtm(s_r @ s_f)
        if not np.isfinite(covmean).all() or np.abs(np.imag(np.diagonal(covmean))).max() > 1e-3:
            off = np.eye(len(s_r)) * eps
            covmean = sqrtm((s_r + off) @ (s_f + off))
    covmean = np.real(covmean)
    diff = mu_r - mu_f
    return float(diff @ diff + np.trace(s_r) + np.trace(s_f) - 2.0 * np.trace(covmean))


def kid(
    real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel; (mean, std) over subsets.

    ``k(x, y) = (x.y / d + 1)^3``; on each of ``subsets`` random subsets of ``m`` real
    and ``m`` fake samples (``m = min(subset_size, N_real, N_fake)``, drawn without
    replacement) ``MMD^2_u = sum_{i!=j} k(x_i,x_j)/(m(m-1)) + sum_{i!=j} k(y_i,y_j)/(m(m-1))
    - 2 sum_{i,j} k(x_i,y_j)/m^2``. Bińkowski et al. 2018, "Demystifying MMD GANs".
    Unbiased, so it can be slightly negative for matching distributions.
    """
    r, f = _features(real, "real", 2), _features(fake, "fake", 2)
    _same_dim(r, f)
    if subsets < 1:
        raise MetricError(f"KID needs at least 1 subset, got {subsets}")
    m = min(subset_size, len(r), len(f))
    if m < 2:
        raise MetricError(f"KID subset size must be >= 2, got {m}")
    d = r.shape[1]
    rng = np.random.default_rng(seed)
    vals = np.empty(subsets)
    for s in range(subsets):
        x = r[rng.choice(len(r), m, replace=False)]
        y = f[rng.choice(len(f), m, replace=False)]
        kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        vals[s] = (
            (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
            + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
            - 2.0 * kxy.mean()
        )
    return float(vals.mean()), float(vals.std())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall from k-NN manifolds; (precision, recall) in [0, 1].

    Each sample spans a ball of radius = distance to its k-th nearest neighbour in its own
    set. ``precision`` = share of fakes inside at least one real ball (fidelity);
    ``recall`` = share of reals inside at least one fake ball (diversity).
    Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for Assessing
    Generative Models".
    """
    r, f = _features(real, "real", k + 1), _features(fake, "fake", k + 1)
    _same_dim(r, f)
    rad_r, rad_f = _kth_nn_radius(r, k), _kth_nn_radius(f, k)
    prec = sum(int((d <= rad_r[None, :]).any(1).sum()) for _, d in _dist_chunks(f, r))
    rec = sum(int((d <= rad_f[None, :]).any(1).sum()) for _, d in _dist_chunks(r, f))
    return prec / len(f), rec / len(r)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage; (density, coverage).

    With ``B_i`` the ball around real ``x_i`` of radius its k-th nearest-real distance:
    ``density = 1/(k M) sum_j sum_i 1[y_j in B_i]`` (can exceed 1; ~1 when fakes match the
    reals) and ``coverage = 1/N sum_i 1[exists j: y_j in B_i]`` in [0, 1].
    Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative Models".
    """
    r, f = _features(real, "real", k + 1), _features(fake, "fake", 1)
    _same_dim(r, f)
    rad = _kth_nn_radius(r, k)
    inside = 0
    covered = np.zeros(len(r), bool)
    for _, d in _dist_chunks(f, r):
        hit = d <= rad[None, :]
        inside += int(hit.sum())
        covered |= hit.any(0)
    return inside / (k * len(f)), float(covered.mean())


# --- memorisation --------------------------------------------------------------------------


@dataclass
class Memorisation:
    """Per-fake nearest training sample, distances and copy flags (arrays of length N_fake)."""

    nn_index: np.ndarray  # index into the training reals
    nn_distance: np.ndarray  # d: distance to that real sample
    ratio: np.ndarray  # d / that real sample's nearest-other-real distance (inf when that is 0 and d > 0)
    copy_flag: np.ndarray  # d below the threshold
    threshold: float  # the given percentile of the (positive) real-to-real nearest-neighbour distances
    copy_rate: float  # share of fakes flagged


def memorisation(train_real: np.ndarray, fake: np.ndarray, percentile: float = 5.0) -> Memorisation:
    """Nearest-training-sample test for copies of the training data.

    For each fake ``y``: its nearest real training sample ``x = NN(y)``, the distance
    ``d = ||y - x||``, and the ratio ``d / ||x - NN_real(x)||`` (the local spacing of the
    training data around ``x``; ``< 1`` means the fake is closer to ``x`` than any other
    real is). ``y`` is flagged a copy when ``d < t`` or ``d == 0``, with ``t`` the
    ``percentile``-th percentile of the real-to-real nearest-neighbour distances (exact
    duplicates, distance 0, left out of ``t``): closer to a training image than almost
    any two real images are to each other; so about ``percentile`` % of fakes that merely
    follow the real distribution are flagged too - read the flags as candidates to
    inspect (lowest ``nn_ratio`` first). The distance-to-closest-record test of
    synthetic-data privacy audits, with the local-spacing ratio in the spirit of
    Carlini et al. 2023, "Extracting Training Data from Diffusion Models".
    """
    r, f = _features(train_real, "train_real", 2), _features(fake, "fake", 1)
    _same_dim(r, f)
    if not 0 <= percentile <= 100:
        raise MetricError(f"percentile must be in [0, 100], got {percentile}")
    real_nn = _kth_nn_radius(r, 1)
    idx, d = nearest(f, r)
    ref = real_nn[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref > 0, d / np.where(ref > 0, ref, 1.0), np.where(d > 0, np.inf, 0.0))
    positive = real_nn[real_nn > 0]
    t = float(np.percentile(positive, percentile)) if len(positive) else 0.0
    flag = (d < t) | (d == 0)
    return Memorisation(idx, d, ratio, flag, t, float(flag.mean()))


# --- pixels and classifiers ------------------------------------------------------------------


@dataclass(frozen=True)
class PixelStats:
    """Simple statistics of a set of RGB images, in 0-255 levels.

    Attributes:
        mean: per-channel (R, G, B) mean over all pixels of all images.
        std: per-channel standard deviation over all pixels of all images.
        hf_energy: high-frequency energy, the mean absolute difference between
            horizontally and vertically neighbouring pixels (all channels): about 10 for
            real stained cells at 64 px, far more for noise.
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    hf_energy: float


def pixel_statistics(images: np.ndarray) -> PixelStats:
    """:class:`PixelStats` of uint8 ``(N, H, W, 3)`` images (no encoder needed).

    Examples:
        >>> s = pixel_statistics(np.full((2, 8, 8, 3), 200, np.uint8))
        >>> s.mean, s.hf_energy
        ((200.0, 200.0, 200.0), 0.0)
    """
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0:
        raise MetricError(f"images must be a non-empty (N, H, W, 3) array, got shape {x.shape}")
    x = x.astype(np.float64)
    dx, dy = np.abs(np.diff(x, axis=2)), np.abs(np.diff(x, axis=1))
    hf = (dx.sum() + dy.sum()) / max(dx.size + dy.size, 1)
    mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
    return PixelStats(tuple(float(v) for v in mean), tuple(float(v) for v in std), float(hf))  # type: ignore[arg-type]


def cas(
    train: np.ndarray,
    train_labels: Sequence[Hashable],
    test: np.ndarray,
    test_labels: Sequence[Hashable],
    *,
    seed: int = 0,
) -> float:
    """Balanced accuracy on ``test`` of a reference classifier fitted on ``train`` features.

    The reference classifier is a class-balanced logistic regression on standardised
    features (scikit-learn). Trained on synthetic cells and tested on real held-out cells
    this is the *classification accuracy score* (CAS, Ravuri & Vinyals 2019); trained on
    real cells it is TRS, the yardstick CAS is compared with. Balanced accuracy = mean
    recall over the classes present in ``test_labels`` (see
    :func:`alldata.metrics.classification_metrics`).

    Raises:
        MetricError: fewer than 2 classes to train on, or mismatched lengths.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from alldata.metrics.classification import classification_metrics

    x, xt = _features(train, "train", 2), _features(test, "test", 1)
    _same_dim(x, xt)
    y, yt = np.asarray([str(v) for v in train_labels]), np.asarray([str(v) for v in test_labels])
    if len(y) != len(x) or len(yt) != len(xt):
        raise MetricError(f"{len(x)}/{len(xt)} feature rows but {len(y)}/{len(yt)} labels; pass one label per row")
    if len(set(y.tolist())) < 2:
        raise MetricError(f"CAS needs at least 2 classes to train on; got {sorted(set(y.tolist()))}")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed))
    clf.fit(x, y)
    pred = clf.predict(xt)
    labels = sorted(set(y.tolist()) | set(yt.tolist()))
    return classification_metrics(yt, pred, labels=labels).balanced_accuracy
