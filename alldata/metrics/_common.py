"""Helpers shared by the metric modules: the error, input checks and the zero-division rule."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from alldata.errors import AlldataError

__all__ = ["MetricError"]


class MetricError(AlldataError, ValueError):
    """Bad metric input: mismatched lengths or shapes, unknown labels, too few samples."""


def _div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den == 0`` (the package's zero-division rule)."""
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _vector(name: str, x: Any) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise MetricError(f"{name} must be one-dimensional (one entry per sample); got shape {arr.shape}")
    if arr.size == 0:
        raise MetricError(f"{name} is empty; pass at least one sample")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise MetricError(f"lengths differ: {lengths}; pass one entry per sample in each")
    return next(iter(lengths.values()))


def _sorted_keys(keys: Any) -> list:
    try:
        return sorted(keys)
    except TypeError:  # mixed key types: any fixed order will do
        return sorted(keys, key=repr)


def _average(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean of the defined (non-NaN) values, weighted when ``weights`` is given; NaN if none."""
    values = np.asarray(values, dtype=float)
    ok = ~np.isnan(values)
    if weights is None:
        return float(values[ok].mean()) if ok.any() else math.nan
    w = np.asarray(weights, dtype=float)[ok]
    return float(np.dot(values[ok], w) / w.sum()) if w.sum() > 0 else math.nan
