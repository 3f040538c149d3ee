"""Quality scores of synthetic batches: distribution metrics and memorisation checks.

The metric functions are pure: they take feature arrays ``(N, D)`` (e.g. from
:meth:`alldata.encoder.Encoder.encode`) and return numbers. :func:`score_dataset` ties
them to a FiftyOne dataset: it encodes a synthetic and a real view, computes everything,
writes per-sample memorisation fields on the synthetic samples, tags likely copies
``memorised`` and writes a JSON report.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alldata.config import home
from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

    from alldata.encoder import Encoder

__all__ = [
    "COPY_FLAG",
    "NN_DISTANCE",
    "NN_RATIO",
    "NN_REAL_KEY",
    "TAG_MEMORISED",
    "Memorisation",
    "ScoreError",
    "default_report_path",
    "density_coverage",
    "frechet_distance",
    "get_encoder",
    "kid",
    "memorisation",
    "parse_view",
    "precision_recall",
    "real_view",
    "score_dataset",
    "synthetic_view",
]

#: Per-sample fields written on scored synthetic samples, and the tag of likely copies.
NN_REAL_KEY = "nn_real_key"
NN_DISTANCE = "nn_distance"
NN_RATIO = "nn_ratio"
COPY_FLAG = "copy_flag"
TAG_MEMORISED = "memorised"

#: Keys a ``--synthetic-view`` / ``--real-view`` string may use.
SYNTHETIC_KEYS = ("generator", "tag")
REAL_KEYS = ("split", "source")


class ScoreError(AlldataError, ValueError):
    """Bad scoring arguments, or too few samples for a metric."""


# --- helpers -------------------------------------------------------------------------------


def _features(x: np.ndarray, name: str, min_n: int = 1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ScoreError(f"{name} features must be a 2-D (N, D) array, got shape {x.shape}")
    if len(x) < min_n:
        raise ScoreError(f"{name}: {len(x)} samples; this metric needs at least {min_n}")
    if not np.isfinite(x).all():
        raise ScoreError(f"{name} features contain NaN or inf")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ScoreError(f"feature dimensions differ: {a.shape[1]} (real) vs {b.shape[1]} (fake)")


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


def _nearest(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        raise ScoreError(f"KID needs at least 1 subset, got {subsets}")
    m = min(subset_size, len(r), len(f))
    if m < 2:
        raise ScoreError(f"KID subset size must be >= 2, got {m}")
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
        raise ScoreError(f"percentile must be in [0, 100], got {percentile}")
    real_nn = _kth_nn_radius(r, 1)
    idx, d = _nearest(f, r)
    ref = real_nn[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(ref > 0, d / np.where(ref > 0, ref, 1.0), np.where(d > 0, np.inf, 0.0))
    positive = real_nn[real_nn > 0]
    t = float(np.percentile(positive, percentile)) if len(positive) else 0.0
    flag = (d < t) | (d == 0)
    return Memorisation(idx, d, ratio, flag, t, float(flag.mean()))


# --- views of a dataset --------------------------------------------------------------------


def parse_view(text: str, kind: str) -> dict[str, str]:
    """``"generator=diffusion"`` / ``"split=train,source=bccd"`` / ``"all"`` -> a filter dict.

    ``kind`` is ``"synthetic"`` (keys ``generator``, ``tag``) or ``"real"`` (keys
    ``split``, ``source``). Each key at most once; ``all`` (or empty) means no filter.
    """
    allowed = SYNTHETIC_KEYS if kind == "synthetic" else REAL_KEYS
    example = "generator=diffusion" if kind == "synthetic" else "split=train,source=bccd"
    opt = f"--{kind}-view"
    out: dict[str, str] = {}
    text = text.strip()
    if text.lower() in ("", "all"):
        return out
    for part in (p.strip() for p in text.split(",")):
        k, sep, v = (x.strip() for x in part.partition("="))
        if not sep or not k or not v:
            raise ScoreError(
                f"{opt} {text!r}: {part!r} is not key=value; allowed keys: {', '.join(allowed)}, or 'all'. "
                f"Fix: e.g. {opt} {example}"
            )
        if k not in allowed:
            raise ScoreError(
                f"{opt} {text!r}: unknown key {k!r}; allowed keys: {', '.join(allowed)}, or 'all'. "
                f"Fix: e.g. {opt} {example}"
            )
        if k in out:
            raise ScoreError(f"{opt} {text!r}: key {k!r} given twice; give each key once. Fix: e.g. {opt} {example}")
        out[k] = v
    return out


def _view_text(flt: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in flt.items()) or "all"


def synthetic_view(ds: fo.Dataset, flt: dict[str, str]) -> fo.DatasetView:
    """``is_synthetic == True``, optionally of one ``generator`` and/or with one ``tag``."""
    view = ds.match({F.IS_SYNTHETIC: True})
    if "generator" in flt:
        view = view.match({F.GENERATOR: flt["generator"]})
    if "tag" in flt:
        view = view.match_tags(flt["tag"])
    return view


def real_view(ds: fo.Dataset, flt: dict[str, str]) -> fo.DatasetView:
    """``is_synthetic != True``, optionally of one ``split`` and/or one ``source``."""
    view = ds.match({F.IS_SYNTHETIC: {"$ne": True}})
    for key, field in (("split", F.SPLIT), ("source", F.SOURCE)):
        if key in flt:
            view = view.match({field: flt[key]})
    return view


def default_report_path(dataset: str) -> Path:
    """``<alldata home>/datasets/<dataset>/score-<UTC timestamp>.json``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return home() / "datasets" / dataset / f"score-{stamp}.json"


def _as_filter(flt: dict[str, str] | str, kind: str) -> dict[str, str]:
    if isinstance(flt, str):
        return parse_view(flt, kind)
    allowed = SYNTHETIC_KEYS if kind == "synthetic" else REAL_KEYS
    bad = sorted(set(flt) - set(allowed))
    if bad:
        raise ScoreError(f"{kind} view filter has unknown keys {bad}; allowed keys: {', '.join(allowed)}")
    return dict(flt)


def _load(view: fo.DatasetView, what: str, flt: dict[str, str], image_size: int, progress: bool) -> Any:
    from alldata.generators.data import load_cells

    try:
        return load_cells(view, image_size, label_fields=(), progress=progress)
    except AlldataError:
        raise _no_cells(what, flt) from None


def _no_cells(what: str, flt: dict[str, str]) -> ScoreError:
    hint = " or run `alldata split` first" if what == "real" and "split" in flt else ""
    return ScoreError(
        f"the {what} view {_view_text(flt)!r} holds no cell images (image_kind == 'cell'); check --{what}-view{hint}"
    )


def get_encoder(
    dataset: str,
    real_filter: dict[str, str] | str,
    *,
    encoder_dir: str | Path | None = None,
    inception_weights: str | Path | None = None,
    train: bool = False,
    encoder_out: str | Path | None = None,
    epochs: int = 10,
    image_size: int = 64,
    label_field: str | None = None,
    seed: int = 0,
    device: str | None = None,
) -> Encoder:
    """The encoder to score with: a trained one, Inception, or (``train``) a new CNN trained on the real view.

    A newly trained encoder is saved to ``encoder_out`` (default
    ``<alldata home>/datasets/<dataset>/encoder``).
    """
    from alldata.encoder import load_encoder, train_encoder_on_view
    from alldata.store import load_dataset

    given = [n for n, v in (("--encoder", encoder_dir), ("--inception-weights", inception_weights),
                            ("--train-encoder", train or None)) if v is not None]
    if len(given) != 1:
        raise ScoreError(
            f"choose exactly one encoder (got {', '.join(given) or 'none'}): --encoder DIR (train one with "
            "`alldata train-encoder`), --train-encoder (trains on the real view), or --inception-weights FILE"
        )
    if not train:
        return load_encoder(encoder_dir, inception_weights, device)
    flt = _as_filter(real_filter, "real")
    view = real_view(load_dataset(dataset), flt)
    if not len(view.match({F.IMAGE_KIND: "cell"})):
        raise _no_cells("real", flt)
    out = Path(encoder_out) if encoder_out else home() / "datasets" / dataset / "encoder"
    return train_encoder_on_view(view, out, label_field=label_field, image_size=image_size, epochs=epochs,
                                 seed=seed, device=device)


def score_dataset(
    dataset: str | fo.Dataset,
    synthetic_filter: dict[str, str] | str,
    real_filter: dict[str, str] | str,
    encoder: Encoder,
    image_size: int | None = None,
    *,
    report_path: str | Path | None = None,
    k_pr: int = 3,
    k_dc: int = 5,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    percentile: float = 5.0,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, Any]:
    """Score the synthetic cells of ``dataset`` against its real cells; returns (and writes) the report.

    The real view is also the memorisation reference (default in the CLI: ``split=train``).
    Images are read at ``image_size`` (default: the encoder's input size). On the scored
    synthetic samples it writes ``nn_real_key``, ``nn_distance``, ``nn_ratio`` (None when
    infinite) and ``copy_flag``, and re-tags ``memorised`` (stale tags in the view removed
    first). A metric the sample counts do not allow is ``None``, its reason in ``skipped``.
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    syn_f, real_f = _as_filter(synthetic_filter, "synthetic"), _as_filter(real_filter, "real")
    size = image_size or encoder.image_size
    syn = _load(synthetic_view(ds, syn_f), "synthetic", syn_f, size, progress)
    real = _load(real_view(ds, real_f), "real", real_f, size, progress)
    fr, ff = encoder.encode(real.images, batch_size), encoder.encode(syn.images, batch_size)

    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}

    def attempt(names: tuple[str, ...], fn: Any) -> None:
        try:
            vals = fn()
        except ScoreError as e:
            metrics.update(dict.fromkeys(names))
            skipped[",".join(names)] = str(e)
            return
        metrics.update(zip(names, vals if isinstance(vals, tuple) else (vals,)))

    attempt(("fd",), lambda: frechet_distance(fr, ff))
    attempt(("kid_mean", "kid_std"), lambda: kid(fr, ff, kid_subsets, kid_subset_size, seed))
    attempt(("precision", "recall"), lambda: precision_recall(fr, ff, k_pr))
    attempt(("density", "coverage"), lambda: density_coverage(fr, ff, k_dc))
    mem = memorisation(fr, ff, percentile)
    finite = mem.ratio[np.isfinite(mem.ratio)]
    metrics.update(
        copy_rate=mem.copy_rate,
        copy_threshold=mem.threshold,
        nn_distance_median=float(np.median(mem.nn_distance)),
        nn_ratio_median=float(np.median(finite)) if len(finite) else None,
    )

    # per-sample fields and tags, matched by key (unique within a dataset)
    nn_keys = [real.keys[i] for i in mem.nn_index]
    scored = ds.match({F.KEY: {"$in": list(syn.keys)}})
    scored.untag_samples(TAG_MEMORISED)
    for field, vals in (
        (NN_REAL_KEY, nn_keys),
        (NN_DISTANCE, [float(v) for v in mem.nn_distance]),
        (NN_RATIO, [float(v) if np.isfinite(v) else None for v in mem.ratio]),
        (COPY_FLAG, [bool(v) for v in mem.copy_flag]),
    ):
        scored.set_values(field, dict(zip(syn.keys, vals)), key_field=F.KEY)
    flagged = [k for k, c in zip(syn.keys, mem.copy_flag) if c]
    if flagged:
        ds.match({F.KEY: {"$in": flagged}}).tag_samples(TAG_MEMORISED)

    path = Path(report_path) if report_path else default_report_path(ds.name)
    report: dict[str, Any] = {
        "dataset": ds.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "synthetic_view": _view_text(syn_f),
        "real_view": _view_text(real_f),
        "n_real": len(real),
        "n_fake": len(syn),
        "image_size": size,
        "encoder": encoder.describe(),
        "params": {
            "k_pr": k_pr, "k_dc": k_dc, "kid_subsets": kid_subsets, "kid_subset_size": kid_subset_size,
            "percentile": percentile, "seed": seed,
        },
        "metrics": metrics,
        "skipped": skipped,
        "memorised": [{"key": k, "nn_real_key": n, "nn_distance": float(d)}
                      for k, n, d, c in zip(syn.keys, nn_keys, mem.nn_distance, mem.copy_flag) if c],
        "report_path": str(path),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    return report
