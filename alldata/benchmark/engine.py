"""The benchmark engine: recipe -> real pool -> leak-free folds -> cells -> aggregated results.

One *cell* is (arm, model, fold, seed); each step in detail: docs/benchmark.md#engine. The engine

1. builds the real pool (:func:`~alldata.benchmark.pool.build_pool`): the recipe's sources and filters, curated, no
   kept-copy duplicates, no synthetic samples, labels mapped;
2. makes ``recipe.folds`` grouped folds per seed (:func:`fold_plan`, checked for leaks), cuts
   the rare class from every arm but the oracle and keeps ``eval_sources`` test rows;
3. runs every cell through the task, skipping cells whose result JSON already exists;
4. aggregates (:func:`~alldata.benchmark.aggregate.aggregate`): means, group-bootstrap CIs, paired gains over the
   baseline per (seed, fold), the share of the baseline→oracle gap recovered;
5. writes ``metrics.json`` (a :class:`~alldata.reports.BenchmarkSummary`), the report from
   it, and each arm's test predictions back onto the samples.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alldata.benchmark.aggregate import _json_default, aggregate
from alldata.benchmark.pool import ALPHA, BenchmarkError, LabelMapError, Pool, _rare_cut, build_pool
from alldata.benchmark.tasks import EXTERNAL_FOLD, Cell, CellContext, CellResult, Task, get_task
from alldata.errors import SplitError
from alldata.recipes import Recipe, recipe_slug
from alldata.reports import (
    BenchmarkSummary,
    ExternalResult,
    FoldSummary,
    PoolSummary,
    load_benchmark_summary,
    save_report,
)

__all__ = [
    "BenchmarkError",
    "BenchmarkRun",
    "FoldPlan",
    "LabelMapError",
    "Pool",
    "aggregate",
    "build_pool",
    "fold_plan",
    "plan_cells",
    "prediction_field",
    "run_benchmark",
]


@dataclass
class FoldPlan:
    """One fold of one seed: the pool indices to train on (per arm kind) and to test on."""

    seed: int
    fold: int
    train: np.ndarray  # full train side (the oracle's)
    train_cut: np.ndarray  # after the rare-class cut (every other arm's)
    rare_kept: np.ndarray  # the rare-class train indices that survived the cut
    test: np.ndarray  # test rows (restricted to eval_sources)



def fold_plan(pool: Pool, recipe: Recipe) -> list[FoldPlan]:
    """Grouped, stratified folds for every seed, leak-checked, with the rare cut applied.

    Raises:
        SplitError: a group or file hash would be on both sides of a fold.
    """
    from alldata.split import grouped_kfold

    eval_ok = np.array([recipe.eval_sources is None or s in recipe.eval_sources for s in pool.sources])
    plans = []
    for seed in recipe.seeds:
        strata = pool.labels if pool.strata is None else pool.strata
        folds = grouped_kfold(pool.groups, strata, k=recipe.folds, seed=seed, hashes=pool.hashes)
        for f, (train, test) in enumerate(folds):
            shared = {pool.groups[i] for i in train} & {pool.groups[i] for i in test}
            if shared:
                raise SplitError(f"seed {seed} fold {f}: groups {sorted(shared)[:5]} are in train and test")
            cut, kept = _rare_cut(pool, recipe, train, f, seed)
            test = test[eval_ok[test]]
            if len(test) == 0:
                raise BenchmarkError(f"seed {seed} fold {f}: no test samples of eval_sources {recipe.eval_sources}")
            plans.append(FoldPlan(seed, f, train, cut, kept, test))
    return plans


def plan_cells(recipe: Recipe) -> list[Cell]:
    """Every cross-validation cell of ``recipe``: arm × model × seed × fold, in that nesting order
    (none when an external ``test:`` pool has ``in_pool: false``; its external cells:
    :func:`alldata.benchmark.external.plan_external_cells`)."""
    if recipe.test is not None and not recipe.test.in_pool:
        return []
    return [
        Cell(a.name, m.name, f, s)
        for a in recipe.arms
        for m in recipe.models
        for s in recipe.seeds
        for f in range(recipe.folds)
    ]


def prediction_field(recipe: Recipe, arm: str) -> str:
    """The FiftyOne field an arm's test predictions are written to: ``pred_<recipe-slug>_<arm>``."""
    return f"pred_{recipe_slug(recipe.name)}_{recipe_slug(arm)}"


def recipe_hash(recipe: Recipe, dataset: str) -> str:
    """A short hash of the recipe and the dataset: a cell result is reused only when both match."""
    text = json.dumps({"recipe": recipe.model_dump(mode="json", by_alias=True), "dataset": dataset}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: Recipe keys that do not change what a cell computes (editing them reuses finished cells).
_PRESENTATION_KEYS = ("name", "description", "arms", "models", "seeds", "baseline", "oracle", "metrics",
                      "primary_metric", "n_boot", "quick")


def cell_hash(recipe: Recipe, cell: Cell, dataset: str) -> str:
    """A short hash of what one cell's result depends on: the dataset, the pool, folds and rare
    cut (data, eval_sources, folds, rare, mix, max_per_class, task), the cell's own arm and
    model specs, and its fold and seed. Adding an arm, a metric or a seed, or rewording the
    description, leaves every finished cell valid."""
    shared = recipe.model_dump(mode="json", by_alias=True,
                               exclude=set(_PRESENTATION_KEYS) | (set() if cell.external else {"test"}))
    arm = recipe.arm(cell.arm).model_dump(mode="json")
    model = next(m for m in recipe.models if m.name == cell.model).model_dump(mode="json")
    text = json.dumps({"recipe": shared, "arm": arm, "model": model, "fold": cell.fold, "seed": cell.seed,
                       "dataset": dataset}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, default=_json_default))
    os.replace(tmp, path)




@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` returns: the summary (as read back from metrics.json) and where it went."""

    recipe: Recipe
    out_dir: Path
    summary: BenchmarkSummary
    results: dict[Cell, CellResult]
    ran: int
    skipped: int


def run_benchmark(
    recipe: Recipe,
    dataset: str,
    out_dir: str | Path,
    *,
    quick: bool = False,
    progress: bool = True,
    write_back: bool = True,
    command: str | None = None,
    task: Task | None = None,
) -> BenchmarkRun:
    """Run (or resume) every cell of ``recipe`` on ``dataset`` and write the results to ``out_dir``.

    Args:
        recipe: the validated recipe (its ``quick:`` overrides are applied when ``quick``).
        dataset: the FiftyOne dataset holding the real pool.
        out_dir: results: ``cells/<cell key>.json``, ``metrics.json``, ``report.md``, ``plots/``.
        quick: shrink folds / seeds / steps with the recipe's ``quick:`` block.
        progress: show a progress bar over cells.
        write_back: write each arm's test predictions to ``pred_<recipe>_<arm>`` fields.
        command: the command line, recorded in the report.
        task: the task object (default: the one registered as ``recipe.task``).

    Examples:
        >>> run = run_benchmark(load_recipe("recipes/rare-class-recovery.yaml"), "alldata",
        ...                     "runs/rare", quick=True)  # doctest: +SKIP
    """
    from tqdm import tqdm

    import alldata
    from alldata.benchmark.report import write_plots, write_report

    t0 = time.time()
    if quick:
        recipe = recipe.with_quick()
    task = task if task is not None else get_task(recipe.task)
    unknown = {a.kind for a in recipe.arms} - set(task.arm_kinds)
    if unknown:
        raise BenchmarkError(f"task {recipe.task!r} does not implement arm kinds {sorted(unknown)}; it has {sorted(task.arm_kinds)}")
    if recipe.test is not None and recipe.test.leave_one_source_out:
        raise BenchmarkError(f"recipe {recipe.name!r} is a leave-one-source-out protocol; run it with "
                             "alldata.benchmark.protocols.run_leave_one_source_out (alldata benchmark does)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pool = build_pool(recipe, dataset)
    ext, ext_name = None, None
    if recipe.test is not None:
        from alldata.benchmark.external import build_external_pool, check_disjoint, external_dataset

        ext_name = external_dataset(recipe, dataset)
        ext = build_external_pool(recipe, dataset, pool)
        check_disjoint(pool, dataset, ext, ext_name)
    cv_cells = plan_cells(recipe)
    ext_cells = _external_cells(recipe)
    plans = {(p.seed, p.fold): p for p in fold_plan(pool, recipe)} if cv_cells else {}
    fingerprint = recipe_hash(recipe, dataset)
    kinds = {a.name: a.kind for a in recipe.arms}
    label_of = dict(zip(pool.ids, pool.labels))
    group_of = dict(zip(pool.ids, pool.groups))
    if ext is not None:
        label_of.update(zip(ext.ids, ext.labels))
        group_of.update(zip(ext.ids, ext.groups))
    results: dict[Cell, CellResult] = {}
    ran = skipped = 0
    cells = cv_cells + ext_cells
    bar = tqdm(cells, desc=f"benchmark {recipe.name}", unit="cell", disable=not progress)
    for cell in bar:
        bar.set_postfix_str(cell.key())
        path = out / "cells" / f"{cell.key()}.json"
        model_dir = out / "models" / cell.key() if cell.external else None
        if path.is_file() and (model_dir is None or (model_dir / MODEL_INFO).is_file()):
            saved = json.loads(path.read_text())
            if saved.get("cell_hash") == cell_hash(recipe, cell, dataset) or saved.get("recipe_hash") == fingerprint:
                results[cell] = CellResult.from_json(saved)
                skipped += 1
                continue
        if cell.external:
            assert ext is not None
            everything = np.arange(len(pool))
            cut, kept = _rare_cut(pool, recipe, everything, _EXTERNAL_RARE_FOLD, cell.seed)
            train, rare_kept, test_ids = (everything if kinds[cell.arm] == "oracle" else cut), kept, ext.ids
            fold_dir = "fold=external"
        else:
            plan = plans[(cell.seed, cell.fold)]
            train = plan.train if kinds[cell.arm] == "oracle" else plan.train_cut
            rare_kept, test_ids = plan.rare_kept, [pool.ids[i] for i in plan.test]
            fold_dir = f"fold={cell.fold}"
        work = out / "work" / cell.key()
        work.mkdir(parents=True, exist_ok=True)
        shared = out / "work" / "shared" / f"arm={cell.arm}" / fold_dir / f"seed={cell.seed}"
        shared.mkdir(parents=True, exist_ok=True)
        ctx = CellContext(
            recipe=recipe, cell=cell, dataset=dataset,
            train_ids=[pool.ids[i] for i in train], test_ids=list(test_ids),
            work_dir=work, quick=quick, shared_dir=shared, labels=label_of, groups=group_of,
            rare_kept=[pool.ids[i] for i in rare_kept], progress=progress,
            test_dataset=ext_name if cell.external else None, model_dir=model_dir,
        )
        started = time.time()
        result = task.run(ctx)
        result.info.setdefault("seconds", round(time.time() - started, 2))
        result.info.setdefault("n_test", len(ctx.test_ids))
        _check_rows(cell, result, set(ctx.test_ids))
        if model_dir is not None:
            _write_model_info(model_dir, recipe, cell, dataset, pool, train, result.info.get("stain"),
                              result.info.get("scale"))
        _write_json(path, {"recipe_hash": fingerprint, "cell_hash": cell_hash(recipe, cell, dataset), "cell": cell.key(),
                           **result.to_json()})
        results[cell] = result
        ran += 1
    bar.close()
    cv_results = {c: results[c] for c in cv_cells}
    in_pool = aggregate(recipe, task, cv_results) if cv_cells else {"arms": [], "gains": [], "gap_recovered": [],
                                                                     "cells": []}
    summary = BenchmarkSummary(
        recipe=recipe.name, description=recipe.description, task=recipe.task, dataset=dataset,
        arm_names=[a.name for a in recipe.arms], models=[m.name for m in recipe.models], metrics=list(recipe.metrics),
        primary_metric=recipe.primary_metric, baseline=recipe.baseline, oracle=recipe.oracle,
        rare=recipe.rare.model_dump(by_alias=True) if recipe.rare else None, n_folds=recipe.folds,
        seeds=list(recipe.seeds), n_boot=recipe.n_boot, confidence=round(1 - ALPHA, 6),
        **in_pool,
        pool=_pool_summary(pool),
        folds=[FoldSummary(seed=p.seed, fold=p.fold, n_train=len(p.train), n_train_cut=len(p.train_cut),
                           n_rare_kept=len(p.rare_kept), n_test=len(p.test)) for p in plans.values()],
        quick=quick, command=command, recipe_hash=fingerprint, alldata_version=alldata.__version__,
        created=datetime.now(timezone.utc).replace(microsecond=0), seconds=round(time.time() - t0, 1),
        cells_run=ran, cells_reused=skipped, machine=_machine(),
    )
    if ext is not None:
        summary.external = _external_summary(recipe, task, dataset, ext, {c: results[c] for c in ext_cells},
                                             summary, out, write_back)
    if write_back and cv_cells:
        summary.prediction_fields = _write_back(recipe, task, dataset, cv_results)
    summary.plots = [str(p.relative_to(out)) for p in write_plots(recipe, task, summary, results, out)]
    save_report(summary, out / "metrics.json")
    summary = load_benchmark_summary(out / "metrics.json")  # every reader sees what the file says
    write_report(recipe, summary, out)
    return BenchmarkRun(recipe, out, summary, results, ran, skipped)


#: The fold number the rare-class cut is drawn with for external cells (one past any CV fold).
_EXTERNAL_RARE_FOLD = 1_000
#: The file beside a saved model that says what it was trained on (read by ``alldata evaluate``).
MODEL_INFO = "alldata_model.json"


def _write_gradcam(recipe: Recipe, dataset: str, fields: dict[str, str], out: Path) -> dict[str, str]:
    """Grad-CAM heatmaps of the first model's external predictions, per arm (baseline last, so the
    saved view "mistakes with heatmaps" shows the baseline's mistakes), when ``test.gradcam`` asks and
    the first model is a CNN; ``{arm: heatmap field}``."""
    from alldata.models import CLASSIFIERS

    model = recipe.models[0].name
    if recipe.test is None or not recipe.test.gradcam:
        return {}
    if getattr(CLASSIFIERS.get(model), "input_kind", "features") != "image":
        warnings.warn(f"test.gradcam: the first model {model!r} is not a CNN; no heatmaps written", stacklevel=2)
        return {}
    from alldata.explain import write_gradcam
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    done = {}
    for arm in sorted(fields, key=lambda a: a == recipe.baseline):
        cell = Cell(arm, model, EXTERNAL_FOLD, recipe.seeds[0])
        rep = write_gradcam(ds, out / "models" / cell.key(), pred_field=fields[arm], progress=False,
                            output_dir=out / "heatmaps" / arm)
        done[arm] = rep.field
    return done


def _external_cells(recipe: Recipe) -> list[Cell]:
    from alldata.benchmark.external import plan_external_cells

    return plan_external_cells(recipe)


def _pool_summary(pool: Pool) -> PoolSummary:
    return PoolSummary(n=len(pool), n_groups=len(set(pool.groups)), per_class=pool.composition(),
                       sources=dict(Counter(pool.sources)), left_out=pool.dropped)


def _write_model_info(model_dir: Path, recipe: Recipe, cell: Cell, dataset: str, pool: Pool, train: np.ndarray,
                      stain: dict[str, Any] | None = None, scale: dict[str, Any] | None = None) -> None:
    """``alldata_model.json`` beside a saved model: the recipe, the cell, the training dataset, the
    sha256 of every training file (so ``alldata evaluate`` can refuse a test file it was trained on),
    the arm's stain normaliser (its config and target images) and its scale harmonisation (the
    common red-cell diameter and the per-source table), to prepare new images alike."""
    _write_json(model_dir / MODEL_INFO, {
        "stain": stain, "scale": scale,
        "format": "alldata.benchmark/model-v1", "recipe": recipe.model_dump(mode="json", by_alias=True),
        "arm": cell.arm, "model": cell.model, "seed": cell.seed, "dataset": dataset, "n_train": len(train),
        "train_sha256": sorted({pool.hashes[i] for i in train if pool.hashes[i]}),
    })


def _external_summary(recipe: Recipe, task: Task, dataset: str, ext: Pool, results: dict[Cell, CellResult],
                      summary: BenchmarkSummary, out: Path, write_back: bool) -> ExternalResult:
    """The external pool's arms (CIs over its groups), paired gains, in-pool drops, selection, write-back."""
    from alldata.benchmark.external import (
        describe,
        drop_table,
        group_gains,
        plan_external_cells,
        rows_by_arm,
        select_by_cv,
    )

    ext_aggr = aggregate(recipe, task, results, cells=plan_external_cells(recipe))
    fields: dict[str, str] = {}
    if write_back:
        name = describe(recipe, dataset)["dataset"]
        by_arm = rows_by_arm(results, recipe.models[0].name, recipe.seeds[0])
        for arm in recipe.arms:
            field_ = f"{prediction_field(recipe, arm.name)}_external"
            task.write_predictions(name, field_, by_arm.get(arm.name, []))
            fields[arm.name] = field_
    heatmaps = _write_gradcam(recipe, describe(recipe, dataset)["dataset"], fields, out) if fields else {}
    return ExternalResult(
        **describe(recipe, dataset), pool=_pool_summary(ext), arms=ext_aggr["arms"], heatmap_fields=heatmaps,
        gains=group_gains(recipe, task, results), cells=ext_aggr["cells"],
        drops=drop_table(summary.arms, ext_aggr["arms"], list(recipe.metrics)),
        selected=select_by_cv(summary.arms, recipe.primary_metric) if summary.arms else {},
        prediction_fields=fields, model_dirs={c.key(): str(Path("models") / c.key()) for c in results},
    )


def _check_rows(cell: Cell, result: CellResult, test_ids: set[str]) -> None:
    got = {r["id"] for r in result.rows}
    if got != test_ids:
        raise BenchmarkError(
            f"cell {cell.key()}: the task returned rows for {len(got)} samples, not the {len(test_ids)} test samples "
            f"({len(got - test_ids)} unexpected, {len(test_ids - got)} missing)"
        )


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        pass
    return info


def _write_back(recipe: Recipe, task: Task, dataset: str, results: dict[Cell, CellResult]) -> dict[str, str]:
    """Each arm's test rows of the first model and first seed, all folds, onto the samples."""
    model, seed = recipe.models[0].name, recipe.seeds[0]
    fields = {}
    for arm in recipe.arms:
        rows = [r for c, res in sorted(results.items(), key=lambda kv: kv[0].fold)
                if c.arm == arm.name and c.model == model and c.seed == seed for r in res.rows]
        name = prediction_field(recipe, arm.name)
        task.write_predictions(dataset, name, rows)
        fields[arm.name] = name
    return fields


# --- aggregation ------------------------------------------------------------------------------------------------
