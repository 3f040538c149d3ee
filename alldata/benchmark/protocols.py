"""Cross-source protocols built from external runs: leave one source out.

A recipe with ``test: {leave_one_source_out: true}`` runs once per source of
``data.sources``: train on the others (with the recipe's label map), test on the held-out
source as an external pool (from ``test.dataset`` or the run's dataset), each run in
``<out>/heldout=<source>/`` with its own ``metrics.json`` and ``report.md``. The protocol's
``loso.md`` sets every held-out source's external value (CI over its groups) next to the
in-pool CV value of the same arm and model on the training sources, and ``loso.json`` lists
the runs.

Examples:
    >>> from alldata.recipes import load_recipe
    >>> r = held_out_recipe(load_recipe("recipes/xsource-loso.yaml"), "all_idb2")  # doctest: +SKIP
    >>> r.data.sources, r.test.sources  # doctest: +SKIP
    (['taleqani', 'pbc', 'bccd_wbc'], ['all_idb2'])
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alldata.benchmark.engine import BenchmarkError, BenchmarkRun, run_benchmark
from alldata.recipes import Recipe, recipe_slug

__all__ = ["LosoRun", "held_out_recipe", "loso_rows", "run_leave_one_source_out"]


def held_out_recipe(recipe: Recipe, source: str) -> Recipe:
    """``recipe`` trained on every source but ``source`` and tested on ``source`` (an external run)."""
    if recipe.test is None or not recipe.test.leave_one_source_out:
        raise BenchmarkError(f"recipe {recipe.name!r} is not a leave-one-source-out protocol "
                             "(test: {leave_one_source_out: true})")
    if source not in recipe.data.sources:
        raise BenchmarkError(f"{source!r} is not one of the recipe's sources {recipe.data.sources}")
    rest = [s for s in recipe.data.sources if s != source]
    return recipe.model_copy(update={
        "name": f"{recipe.name}-{recipe_slug(source)}",
        "data": recipe.data.model_copy(update={"sources": rest}),
        "test": recipe.test.model_copy(update={"sources": [source], "leave_one_source_out": False}),
    })


@dataclass
class LosoRun:
    """What :func:`run_leave_one_source_out` returns: one external run per held-out source."""

    recipe: Recipe
    out_dir: Path
    runs: dict[str, BenchmarkRun]


def loso_rows(runs: dict[str, BenchmarkRun], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per held-out source × arm × model: pool size, and per metric in-pool, external, drop."""
    from alldata.metrics import format_ci

    rows = []
    for source, run in runs.items():
        ext = run.summary.external
        assert ext is not None
        drops = {(d.arm, d.model, d.metric): d for d in ext.drops}
        for e in ext.arms:
            row: dict[str, Any] = {"held out": source, "n": ext.pool.n, "classes": ext.pool.per_class,
                                   "arm": e.arm, "model": e.model}
            for m in metrics:
                s = e.metrics[m]
                row[f"{m} external"] = format_ci(s.pooled, s.ci_low, s.ci_high)
                d = drops.get((e.arm, e.model, m))
                if d is not None:
                    row[f"{m} in-pool"] = format_ci(d.in_pool, d.in_pool_ci_low, d.in_pool_ci_high)
                    row[f"{m} drop"] = format_ci(d.drop, signed=True)
            rows.append(row)
    return rows


def run_leave_one_source_out(
    recipe: Recipe,
    dataset: str,
    out_dir: str | Path,
    *,
    quick: bool = False,
    progress: bool = True,
    write_back: bool = True,
    command: str | None = None,
) -> LosoRun:
    """Run ``recipe`` once per held-out source (resumable, like :func:`run_benchmark`) and write
    ``loso.md`` / ``loso.json`` into ``out_dir``."""
    from alldata.benchmark.plots import markdown_table
    from alldata.benchmark.tasks import get_task

    out = Path(out_dir)
    task = get_task(recipe.task)  # one task for every run: its image and feature caches are shared
    runs = {}
    for source in recipe.data.sources:
        runs[source] = run_benchmark(held_out_recipe(recipe, source), dataset, out / f"heldout={source}",
                                     quick=quick, progress=progress, write_back=write_back, command=command,
                                     task=task)
    metrics = list(dict.fromkeys([recipe.primary_metric, *recipe.metrics]))[:3]
    first = next(iter(runs.values())).summary
    level = f"{first.confidence:.0%}".replace("%", " %")
    lines = [f"# Leave one source out: {recipe.name}{' (quick)' if quick else ''}", "", recipe.description, "",
             f"- command: `{command or '(library call)'}`", f"- dataset: `{dataset}`",
             ("- each row: trained on every other source, tested on the held-out one (external), next to the "
              "same arm and model cross-validated inside the training sources (in-pool); drop = external − in-pool"),
             (f"- values pooled over the test rows (mean over seeds {first.seeds}) with {level} bootstrap intervals "
              "over test groups"), "",
             markdown_table(loso_rows(runs, metrics)), "",
             "Runs: " + ", ".join(f"[{s}](heldout={s}/report.md)" for s in runs), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "loso.md").write_text("\n".join(lines))
    (out / "loso.json").write_text(json.dumps({"recipe": recipe.name, "dataset": dataset,
                                               "runs": {s: f"heldout={s}" for s in runs}}, indent=1))
    return LosoRun(recipe, out, runs)
