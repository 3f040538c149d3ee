"""Cell results -> the benchmark's numbers: per arm/model metrics with CIs, paired gains, gap recovered."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from alldata.benchmark.pool import ALPHA, BenchmarkError
from alldata.benchmark.tasks import Cell, CellResult, Task
from alldata.recipes import Recipe
from alldata.reports import ArmResult, CellSummary, Gain, GapRecovered, MetricSummary

__all__ = ["aggregate"]

def _nanmean(values: list[float]) -> float:
    v = np.array([x for x in values if x is not None], dtype=float)
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else math.nan


def _pooled_cis(task: Task, rows_by_seed: dict[int, list[dict]], metrics: list[str], n_boot: int) -> dict[str, Any]:
    """Bootstrap CI per metric over test groups: each replicate resamples groups (the same
    draw across seeds), scores each seed's pooled rows and averages over seeds."""
    from alldata.metrics import bootstrap_indices

    seeds = sorted(rows_by_seed)
    rows = [r for s in seeds for r in rows_by_seed[s]]
    seed_of = np.array([s for s in seeds for _ in rows_by_seed[s]])
    groups = [str(r["group"]) for r in rows]
    cache: dict[bytes, dict[str, float]] = {}

    def scores(idx: np.ndarray) -> dict[str, float]:
        k = hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).digest()
        if k not in cache:
            per_seed = []
            idx = np.asarray(idx, dtype=np.int64)
            for s in seeds:
                sub = [rows[i] for i in idx[seed_of[idx] == s].tolist()]
                per_seed.append(task.score(sub) if sub else {})
            cache[k] = {m: _nanmean([p.get(m, math.nan) for p in per_seed]) for m in metrics}
        return cache[k]

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for m in metrics:
            out[m] = bootstrap_indices(groups, lambda idx, m=m: scores(idx)[m], n_boot=n_boot, alpha=ALPHA, seed=0)
    return out


def aggregate(recipe: Recipe, task: Task, results: dict[Cell, CellResult],
              cells: list[Cell] | None = None) -> dict[str, list[Any]]:
    """Per arm/model metrics with CIs, paired gains over the baseline, gap recovered.

    Returns the results part of a :class:`~alldata.reports.BenchmarkSummary`: ``arms``
    (:class:`~alldata.reports.ArmResult`), ``gains`` (:class:`~alldata.reports.Gain`),
    ``gap_recovered`` (:class:`~alldata.reports.GapRecovered`) and ``cells``.

    Raises:
        BenchmarkError: a cell of the recipe has no result.
    """
    from alldata.benchmark.engine import plan_cells
    from alldata.metrics import gap_recovered, paired_gain

    cells_all = plan_cells(recipe) if cells is None else cells
    missing = [c.key() for c in cells_all if c not in results]
    results = {c: results[c] for c in cells_all if c in results}
    external = bool(cells_all) and cells_all[0].external  # one pair per seed: gains pair on groups instead
    if missing:
        raise BenchmarkError(f"{len(missing)} cells have no result (e.g. {missing[0]}); run the benchmark to finish them")
    metrics = list(recipe.metrics)
    arms_out, gains_out, gap_out = [], [], []
    per_pair: dict[tuple[str, str], dict[str, dict[tuple[int, int], float]]] = {}
    for arm in recipe.arms:
        for model in recipe.models:
            cells = [c for c in results if c.arm == arm.name and c.model == model.name]
            rows_by_seed: dict[int, list[dict]] = defaultdict(list)
            for c in sorted(cells, key=lambda c: (c.seed, c.fold)):
                rows_by_seed[c.seed].extend(results[c].rows)
            cis = _pooled_cis(task, rows_by_seed, metrics, recipe.n_boot)
            summaries = {}
            for m in metrics:
                vals = [results[c].metrics.get(m, math.nan) for c in cells]
                arr = np.array(vals, dtype=float)
                ok = arr[~np.isnan(arr)]
                summaries[m] = MetricSummary(
                    mean=float(ok.mean()) if len(ok) else math.nan, sd=float(ok.std(ddof=1)) if len(ok) > 1 else math.nan,
                    pooled=cis[m].point, ci_low=cis[m].low, ci_high=cis[m].high,
                )
            arms_out.append(ArmResult(
                arm=arm.name, kind=arm.kind, model=model.name, n_cells=len(cells), metrics=summaries,
                n_train=_nanmean([results[c].info.get("n_train", math.nan) for c in cells]),
                n_synthetic=_nanmean([results[c].info.get("n_synthetic", 0) for c in cells]),
            ))
            per_pair[(arm.name, model.name)] = {
                m: {(c.seed, c.fold): float(results[c].metrics.get(m, math.nan)) for c in cells} for m in metrics
            }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for model in [] if external else recipe.models:
            base = per_pair[(recipe.baseline, model.name)]
            for arm in recipe.arms:
                if arm.name == recipe.baseline:
                    continue
                for m in metrics:
                    g = paired_gain(base[m], per_pair[(arm.name, model.name)][m], n_boot=recipe.n_boot, alpha=ALPHA,
                                    seed=0)
                    gains_out.append(Gain(arm=arm.name, model=model.name, metric=m, baseline=recipe.baseline,
                                          mean=g.mean, ci_low=g.low, ci_high=g.high, n_pairs=g.n_pairs,
                                          confidence=round(1 - ALPHA, 6)))
            if recipe.oracle and recipe.rare:
                rm = f"sensitivity:{recipe.rare.class_}"
                pairs = {a: {(c.seed, c.fold): float(results[c].metrics.get(rm, math.nan))
                             for c in results if c.arm == a and c.model == model.name} for a in (r.name for r in recipe.arms)}
                for arm in recipe.arms:
                    if arm.name in (recipe.baseline, recipe.oracle):
                        continue
                    g = gap_recovered(pairs[recipe.baseline], pairs[recipe.oracle], pairs[arm.name],
                                      n_boot=recipe.n_boot, alpha=ALPHA, seed=0, aggregate="ratio_of_means")
                    gap_out.append(GapRecovered(arm=arm.name, model=model.name, metric=rm, baseline=recipe.baseline,
                                                oracle=recipe.oracle, mean=g.mean, ci_low=g.low, ci_high=g.high,
                                                n_pairs=g.n_pairs, confidence=round(1 - ALPHA, 6),
                                                aggregate="ratio_of_means"))
    cells_out = [CellSummary(key=c.key(), arm=c.arm, model=c.model, fold=c.fold, seed=c.seed,
                             metrics=_plain(results[c].metrics), info=_plain(results[c].info))
                 for c in cells_all]
    return {"arms": arms_out, "gains": gains_out, "gap_recovered": gap_out, "cells": cells_out}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with numpy scalars and arrays as plain JSON values (NaN stays NaN)."""
    return json.loads(json.dumps(d, default=_json_default))
