"""The benchmark engine: recipe -> real pool -> leak-free folds -> cells -> aggregated results.

One *cell* is (arm, model, fold, seed); each step in detail: docs/benchmark.md#engine. The engine

1. builds the real pool (:func:`build_pool`): the recipe's sources and filters, curated, no
   kept-copy duplicates, no synthetic samples, labels mapped;
2. makes ``recipe.folds`` grouped folds per seed (:func:`fold_plan`, checked for leaks), cuts
   the rare class from every arm but the oracle and keeps ``eval_sources`` test rows;
3. runs every cell through the task, skipping cells whose result JSON already exists;
4. aggregates (:func:`aggregate`): means, group-bootstrap CIs, paired gains over the
   baseline per (seed, fold), the share of the baseline→oracle gap recovered;
5. writes ``metrics.json`` (a :class:`~alldata.reports.BenchmarkSummary`), the report from
   it, and each arm's test predictions back onto the samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alldata.benchmark.tasks import EXTERNAL_FOLD, Cell, CellContext, CellResult, Task, get_task
from alldata.errors import AlldataError, SplitError
from alldata.recipes import Recipe, recipe_slug
from alldata.reports import (
    ArmResult,
    BenchmarkSummary,
    CellSummary,
    ExternalResult,
    FoldSummary,
    Gain,
    GapRecovered,
    MetricSummary,
    PoolSummary,
    load_benchmark_summary,
    save_report,
)
from alldata.schema import F

__all__ = [
    "BenchmarkError",
    "BenchmarkRun",
    "FoldPlan",
    "Pool",
    "aggregate",
    "build_pool",
    "fold_plan",
    "plan_cells",
    "prediction_field",
    "run_benchmark",
]

_LABEL_LIKE = {F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE, F.GROUND_TRUTH}
#: 1 − the confidence level of every interval the benchmark reports.
ALPHA = 0.05


class BenchmarkError(AlldataError, ValueError):
    """A benchmark that cannot run as asked: empty pool, too few groups, missing results."""


class LabelMapError(BenchmarkError):
    """An external pool holds labels the recipe's label map does not cover (names them and the fix)."""


@dataclass
class Pool:
    """The real samples a recipe benchmarks on, one entry per sample (parallel lists)."""

    ids: list[str]
    keys: list[str]
    groups: list[str]
    labels: list[str]
    sources: list[str]
    hashes: list[str | None]
    dropped: dict[str, int] = field(default_factory=dict)
    #: what the folds balance, one entry per sample (None: the labels). Segmentation pools
    #: stratify on the annotated evaluation images so every fold gets some.
    strata: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def composition(self) -> dict[str, int]:
        """Samples per class."""
        return dict(sorted(Counter(self.labels).items()))


@dataclass
class FoldPlan:
    """One fold of one seed: the pool indices to train on (per arm kind) and to test on."""

    seed: int
    fold: int
    train: np.ndarray  # full train side (the oracle's)
    train_cut: np.ndarray  # after the rare-class cut (every other arm's)
    rare_kept: np.ndarray  # the rare-class train indices that survived the cut
    test: np.ndarray  # test rows (restricted to eval_sources)


def _label_key(field_: str) -> str:
    return f"{field_}.label" if field_ in _LABEL_LIKE else field_


def select_pool(
    recipe: Recipe,
    dataset: str,
    sources: list[str],
    where: dict[str, Any] | None,
    *,
    strict: bool = False,
    what: str = "pool",
) -> tuple[Pool, list[Any]]:
    """The real samples of ``sources`` in ``dataset`` matching ``where``, curated, no kept-copy
    duplicates, no synthetic samples, labels mapped through the recipe's label map
    (``data.classes`` and per-source ``data.source_labels``).

    Returns:
        (the pool, the number of cell detections per sample: segmentation strata).

    Raises:
        LabelMapError: ``strict`` (an external pool) and some samples carry a label the map
            does not cover; the message names the labels per source and how to map them.
    """
    from alldata.curation import curated
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    d = recipe.data
    view = ds.match({F.SOURCE: {"$in": list(sources)}, F.IS_SYNTHETIC: {"$ne": True}, F.DUPLICATE_OF: None})
    for k, v in (where or {}).items():
        view = view.match({_label_key(k): {"$in": v if isinstance(v, list) else [v]}})
    n_matched = len(view)
    view = curated(view)
    n_curated = len(view)
    fields = d.label_fields()
    got = view.values(["id", F.KEY, F.GROUP_ID, F.SOURCE, F.SHA256, *[f"{f}.label" for f in fields]])
    ids, keys, groups, srcs, hashes = got[:5]
    raw_by_field = dict(zip(fields, got[5:]))
    n_cells = view.values(f"{F.CELLS}.detections.label") if view.has_field(F.CELLS) else [None] * len(ids)
    keep: list[int] = []
    labels: list[str] = []
    unmapped: Counter[tuple[str, str, Any]] = Counter()
    for i, src in enumerate(srcs):
        field_ = d.field_for(src)
        r = raw_by_field[field_][i]
        cmap = d.map_for(src)
        if cmap is None:
            if r is None and (recipe.task == "classification" or strict):
                unmapped[(src, field_, r)] += 1
                continue
            labels.append("" if r is None else str(r))
        elif r in cmap:
            labels.append(cmap[r])
        else:
            unmapped[(src, field_, r)] += 1
            continue
        keep.append(i)
    unmapped = Counter({k: n for k, n in unmapped.items() if not d.leaves_out(k[0])})
    if strict and unmapped:
        raise LabelMapError(_unmapped_message(recipe, dataset, what, unmapped))
    pool = Pool(
        ids=[ids[i] for i in keep],
        keys=[keys[i] for i in keep],
        groups=[groups[i] or keys[i] for i in keep],
        labels=labels,
        sources=[srcs[i] for i in keep],
        hashes=[hashes[i] for i in keep],
        dropped={"rejected": n_matched - n_curated, "label_not_in_classes": n_curated - len(keep)},
    )
    return pool, [n_cells[i] for i in keep]


def _unmapped_message(recipe: Recipe, dataset: str, what: str, unmapped: Counter) -> str:
    d = recipe.data
    found = "; ".join(f"{src} {f}={r!r} ({n} samples)" for (src, f, r), n in sorted(unmapped.items(), key=str))
    src, f, r = min(unmapped, key=str)
    classes = d.class_names() or "the labels as they are"
    example = (f"data.source_labels: {{{src}: {{label_field: {f}, classes: {{{r if r is not None else 'null'}: "
               f"<one of {classes}>}}}}}}")
    return (f"recipe {recipe.name!r}: the {what} in dataset {dataset!r} holds labels outside the recipe's label map "
            f"(classes {classes}): {found}. Map them in data.classes (label field {d.label_field!r}) or per source "
            f"with {example} (add unmapped: leave_out there to leave the source's other labels out), or leave "
            "those samples out with a where: filter")


def build_pool(recipe: Recipe, dataset: str) -> Pool:
    """The real pool of ``recipe`` in ``dataset`` (see the module docstring and :func:`select_pool`).

    Raises:
        BenchmarkError: the pool is empty or holds fewer than two classes.
    """
    d = recipe.data
    pool, n_cells = select_pool(recipe, dataset, list(d.sources), d.where)
    if recipe.task == "segmentation":
        pool.strata = [
            f"eval:{src}:{'annotated' if n else 'unannotated'}"
            if recipe.eval_sources is None or src in recipe.eval_sources
            else None
            for src, n in zip(pool.sources, n_cells)
        ]
    if recipe.max_per_class:
        pool = _limit_per_class(pool, recipe.max_per_class)
    if len(pool) == 0:
        raise BenchmarkError(
            f"recipe {recipe.name!r}: no real samples of sources {d.sources} with {d.label_field} in "
            f"{d.class_names()} in dataset {dataset!r}; ingest them first (alldata ingest ...)"
        )
    if recipe.task == "classification" and len(set(pool.labels)) < 2:
        raise BenchmarkError(f"recipe {recipe.name!r}: the pool holds one class only ({pool.composition()})")
    return pool


def _limit_per_class(pool: Pool, n: int) -> Pool:
    """At most ``n`` samples per class, the same ones every time (ordered by a hash of the key)."""
    order = sorted(range(len(pool)), key=lambda i: hashlib.sha1(pool.keys[i].encode()).hexdigest())
    taken: Counter[str] = Counter()
    keep = []
    for i in order:
        if taken[pool.labels[i]] < n:
            taken[pool.labels[i]] += 1
            keep.append(i)
    keep.sort()
    pick = lambda xs: [xs[i] for i in keep]
    dropped = dict(pool.dropped, max_per_class=len(pool) - len(keep))
    return Pool(pick(pool.ids), pick(pool.keys), pick(pool.groups), pick(pool.labels), pick(pool.sources),
                pick(pool.hashes), dropped, None if pool.strata is None else pick(pool.strata))


def _rare_cut(pool: Pool, recipe: Recipe, train: np.ndarray, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices after the cut, kept rare indices): keep ``keep_fraction`` of the rare groups."""
    rare = recipe.rare
    if rare is None:
        return train, np.array([], dtype=np.int64)
    is_rare = np.array([pool.labels[i] == rare.class_ for i in train], dtype=bool)
    rare_groups = sorted({pool.groups[i] for i in train[is_rare]})
    if not rare_groups:
        return train, np.array([], dtype=np.int64)
    n_keep = min(len(rare_groups), max(rare.min_keep, round(rare.keep_fraction * len(rare_groups))))
    rng = np.random.default_rng([seed, fold, 20240])
    kept = {rare_groups[j] for j in rng.permutation(len(rare_groups))[:n_keep]}
    mask = ~is_rare | np.array([pool.groups[i] in kept for i in train])
    cut = train[mask]
    return cut, cut[np.array([pool.labels[i] == rare.class_ for i in cut], dtype=bool)]


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


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


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


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` with numpy scalars and arrays as plain JSON values (NaN stays NaN)."""
    return json.loads(json.dumps(d, default=_json_default))
