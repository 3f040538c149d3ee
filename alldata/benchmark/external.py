"""External test pools: train on the whole training pool, test on another dataset or selection.

A recipe's ``test:`` block (:class:`alldata.recipes.TestSpec`) names the external pool. This
module builds it with the recipe's label map (an unmapped label is an error, never a silent
drop: :class:`~alldata.benchmark.engine.LabelMapError`), refuses a file that is in both pools
(same sha256), and summarises the external cells: paired gains over the baseline on the same
external rows (bootstrap over external groups), each external figure next to its in-pool
(cross-validated) value, and the model each arm would pick by in-pool CV.

Examples:
    >>> from alldata.benchmark.tasks import Cell
    >>> external_cells_of(["real"], ["knn"], [0])[0].key()
    'arm=real/model=knn/fold=external/seed=0'
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import defaultdict
from typing import Any

import numpy as np

from alldata.benchmark.pool import ALPHA, BenchmarkError, Pool, select_pool
from alldata.benchmark.tasks import EXTERNAL_FOLD, Cell, CellResult, Task
from alldata.recipes import Recipe
from alldata.reports import ArmResult, ExternalDrop, Gain

__all__ = [
    "DuplicateAcrossPoolsError",
    "build_external_pool",
    "check_disjoint",
    "describe",
    "drop_table",
    "external_cells_of",
    "external_dataset",
    "group_gains",
    "plan_external_cells",
    "rows_by_arm",
    "select_by_cv",
]


class DuplicateAcrossPoolsError(BenchmarkError):
    """The same file (sha256) is in the training pool and in the external test pool."""


def external_dataset(recipe: Recipe, dataset: str) -> str:
    """The dataset the external pool comes from: ``test.dataset``, else the run's ``dataset``."""
    return recipe.test.dataset or dataset if recipe.test is not None else dataset


def external_cells_of(arms: list[str], models: list[str], seeds: list[int]) -> list[Cell]:
    """One external cell per arm × model × seed (fold :data:`~alldata.benchmark.tasks.EXTERNAL_FOLD`)."""
    return [Cell(a, m, EXTERNAL_FOLD, s) for a in arms for m in models for s in seeds]


def plan_external_cells(recipe: Recipe) -> list[Cell]:
    """The external cells of ``recipe`` (none without a ``test:`` pool)."""
    if recipe.test is None or recipe.test.leave_one_source_out:
        return []
    return external_cells_of([a.name for a in recipe.arms], [m.name for m in recipe.models], list(recipe.seeds))


def build_external_pool(recipe: Recipe, dataset: str, train: Pool | None = None) -> Pool:
    """The external pool of ``recipe``: ``test.sources`` / ``test.where`` in :func:`test_dataset`.

    Raises:
        LabelMapError: a sample's label is outside the recipe's label map (names the labels per
            source and how to map them).
        BenchmarkError: the pool is empty, or holds a class the training pool lacks.
    """
    spec = recipe.test
    if spec is None or spec.sources is None:
        raise BenchmarkError(f"recipe {recipe.name!r} has no external pool (test: {{sources: [...]}})")
    name = external_dataset(recipe, dataset)
    pool, _ = select_pool(recipe, name, list(spec.sources), spec.where, strict=True, what="external test pool")
    if len(pool) == 0:
        raise BenchmarkError(
            f"recipe {recipe.name!r}: the external pool (dataset {name!r}, sources {spec.sources}, where "
            f"{spec.where}) is empty; ingest those sources into {name!r} or fix test.sources"
        )
    if train is not None:
        unseen = sorted(set(pool.labels) - set(train.labels))
        if unseen:
            raise BenchmarkError(
                f"recipe {recipe.name!r}: the external pool holds classes {unseen} that the training pool "
                f"(classes {sorted(set(train.labels))}) never shows; map them onto trained classes in data.classes / "
                "data.source_labels, or leave them out with test.where"
            )
    return pool


def check_disjoint(train: Pool, train_dataset: str, test: Pool, test_name: str) -> None:
    """Refuse a file that is in both pools (same sha256, or the very same sample).

    Raises:
        DuplicateAcrossPoolsError: naming up to five pairs as ``dataset:key``.
    """
    by_hash: dict[str, str] = {h: k for h, k in zip(train.hashes, train.keys) if h}
    pairs = [(by_hash[h], k) for h, k in zip(test.hashes, test.keys) if h and h in by_hash]
    if train_dataset == test_name:
        same = set(train.ids) & set(test.ids)
        key_of = dict(zip(test.ids, test.keys))
        pairs += [(key_of[i], key_of[i]) for i in sorted(same) if (key_of[i], key_of[i]) not in pairs]
    if pairs:
        shown = ", ".join(f"{train_dataset}:{a} = {test_name}:{b}" for a, b in pairs[:5])
        raise DuplicateAcrossPoolsError(
            f"{len(pairs)} file(s) are in both the training pool and the external test pool (same sha256): {shown}"
            f"{' ...' if len(pairs) > 5 else ''}. An external result must not test on training images: drop them "
            "from one side (a where: filter, or tag them 'reject' in one dataset)"
        )


def _rows_by_seed(results: dict[Cell, CellResult], arm: str, model: str) -> dict[int, dict[str, dict]]:
    return {c.seed: {r["id"]: r for r in res.rows} for c, res in results.items()
            if c.external and c.arm == arm and c.model == model}


def group_gains(recipe: Recipe, task: Task, results: dict[Cell, CellResult]) -> list[Gain]:
    """Each non-baseline arm − the baseline on the same external rows, per model and metric.

    The point is the difference of the metrics (mean over seeds); the interval resamples
    external groups (the same draw for both arms and every seed). ``n_pairs`` is the number
    of external groups.
    """
    from alldata.metrics import bootstrap_indices

    metrics = list(recipe.metrics)
    out: list[Gain] = []
    for model in (m.name for m in recipe.models):
        base = _rows_by_seed(results, recipe.baseline, model)
        if not base:
            continue
        seeds = sorted(base)
        ids = list(base[seeds[0]])
        groups = [str(base[seeds[0]][i]["group"]) for i in ids]
        for arm in (a.name for a in recipe.arms if a.name != recipe.baseline):
            other = _rows_by_seed(results, arm, model)
            if sorted(other) != seeds:
                continue
            diff = _differ(task, base, other, seeds, ids, metrics)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                for m in metrics:
                    ci = bootstrap_indices(groups, lambda idx, m=m, diff=diff: diff(idx)[m], n_boot=recipe.n_boot, alpha=ALPHA,
                                           seed=0)
                    out.append(Gain(arm=arm, model=model, metric=m, baseline=recipe.baseline, mean=ci.point,
                                    ci_low=ci.low, ci_high=ci.high, n_pairs=len(set(groups)),
                                    confidence=round(1 - ALPHA, 6)))
    return out


def _differ(task: Task, base: dict[int, dict[str, dict]], other: dict[int, dict[str, dict]], seeds: list[int],
            ids: list[str], metrics: list[str]) -> Any:
    """``idx -> {metric: arm − baseline}`` on the rows ``ids[idx]`` (mean over seeds), cached per draw."""
    cache: dict[bytes, dict[str, float]] = {}

    def diff(idx: np.ndarray) -> dict[str, float]:
        k = hashlib.sha1(np.asarray(idx, dtype=np.int64).tobytes()).digest()
        if k not in cache:
            per_seed = []
            for s in seeds:
                a = task.score([other[s][ids[i]] for i in idx])
                b = task.score([base[s][ids[i]] for i in idx])
                per_seed.append({m: a.get(m, math.nan) - b.get(m, math.nan) for m in metrics})
            cache[k] = {m: float(np.nanmean([p[m] for p in per_seed])) for m in metrics}
        return cache[k]

    return diff


def drop_table(in_pool: list[ArmResult], external: list[ArmResult], metrics: list[str]) -> list[ExternalDrop]:
    """Each external arm × model × metric next to its in-pool value; ``drop`` = external − in-pool."""
    cv = {(e.arm, e.model): e for e in in_pool}
    out = []
    for e in external:
        ref = cv.get((e.arm, e.model))
        if ref is None:
            continue
        for m in metrics:
            a, b = ref.metrics[m], e.metrics[m]
            out.append(ExternalDrop(arm=e.arm, model=e.model, metric=m, in_pool=a.pooled, in_pool_ci_low=a.ci_low,
                                    in_pool_ci_high=a.ci_high, external=b.pooled, external_ci_low=b.ci_low,
                                    external_ci_high=b.ci_high, drop=b.pooled - a.pooled))
    return out


def select_by_cv(in_pool: list[ArmResult], metric: str) -> dict[str, str]:
    """For each arm, the model with the best in-pool (pooled) ``metric`` (NaN never wins)."""
    best: dict[str, tuple[float, str]] = {}
    for e in in_pool:
        v = e.metrics[metric].pooled
        v = -math.inf if v is None or math.isnan(v) else v
        if e.arm not in best or v > best[e.arm][0]:
            best[e.arm] = (v, e.model)
    return {arm: model for arm, (_, model) in best.items()}


def rows_by_arm(results: dict[Cell, CellResult], model: str, seed: int) -> dict[str, list[dict]]:
    """The external rows of ``model`` and ``seed`` per arm (for plots and write-back)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for c, res in results.items():
        if c.external and c.model == model and c.seed == seed:
            out[c.arm].extend(res.rows)
    return dict(out)


def describe(recipe: Recipe, dataset: str) -> dict[str, Any]:
    """``{dataset, sources, where}`` of the external pool."""
    spec = recipe.test
    assert spec is not None and spec.sources is not None
    return {"dataset": external_dataset(recipe, dataset), "sources": list(spec.sources), "where": spec.where}
