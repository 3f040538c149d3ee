"""Write a benchmark's report for people: ``report.md`` and the plots in ``plots/``.

The engine writes ``metrics.json`` (a :class:`~alldata.reports.BenchmarkSummary`) and
hands :func:`write_report` the summary read back from it: the recipe, the command, the
machine, the time, tables with bootstrap CIs over test groups, paired gains over the
baseline, the share of the rare-class gap recovered, and links to the plots.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from alldata.benchmark.tasks import Cell, CellResult, Task
from alldata.recipes import Recipe
from alldata.reports import BenchmarkSummary, MetricSummary

__all__ = ["arm_table", "gain_table", "write_plots", "write_report"]


def _ci(m: MetricSummary) -> str:
    from alldata.metrics import format_ci

    return format_ci(m.pooled, m.ci_low, m.ci_high)


def arm_table(summary: BenchmarkSummary, metrics: list[str]) -> list[dict[str, Any]]:
    """One row per arm and model: each metric as ``pooled [low, high]`` and the mean over cells."""
    rows = []
    for e in summary.arms:
        row: dict[str, Any] = {"arm": e.arm, "kind": e.kind, "model": e.model, "cells": e.n_cells,
                               "n_train": f"{e.n_train:.0f}", "n_synthetic": f"{e.n_synthetic:.0f}"}
        for m in metrics:
            row[m] = _ci(e.metrics[m])
        rows.append(row)
    return rows


def gain_table(summary: BenchmarkSummary, metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """Paired gains over the baseline: ``mean [low, high]`` per arm, model and metric."""
    from alldata.metrics import format_ci

    return [
        {"arm": g.arm, "model": g.model, "metric": g.metric,
         "gain": format_ci(g.mean, g.ci_low, g.ci_high, signed=True), "pairs": g.n_pairs}
        for g in summary.gains if metrics is None or g.metric in metrics
    ]


def write_plots(recipe: Recipe, task: Task, summary: BenchmarkSummary, results: dict[Cell, CellResult],
                out: Path) -> list[Path]:
    """The gain plots of the primary metric (and the rare class's sensitivity) and the task's own plots."""
    from alldata.benchmark.plots import plot_gains
    from alldata.metrics import GainResult

    plots = out / "plots"
    paths = []
    for model in recipe.models:
        gains = {g.arm: GainResult(g.mean, g.ci_low, g.ci_high, g.n_pairs, {})
                 for g in summary.gains if g.model == model.name and g.metric == recipe.primary_metric}
        if gains:
            paths.append(plot_gains(gains, plots / f"gains_{model.name}_{recipe.primary_metric.replace(':', '-')}.png",
                                    recipe.primary_metric, title=f"Gain over {recipe.baseline} ({model.name})"))
        if recipe.rare is not None:
            rm = f"sensitivity:{recipe.rare.class_}"
            gains = {g.arm: GainResult(g.mean, g.ci_low, g.ci_high, g.n_pairs, {})
                     for g in summary.gains if g.model == model.name and g.metric == rm}
            if gains and rm != recipe.primary_metric:
                paths.append(plot_gains(gains, plots / f"gains_{model.name}_{rm.replace(':', '-')}.png", rm,
                                        title=f"Gain over {recipe.baseline} ({model.name})"))
        if hasattr(task, "plots"):
            seed = recipe.seeds[0]
            rows_by_arm: dict[str, list[dict]] = defaultdict(list)
            for c in sorted(results, key=lambda c: c.fold):
                if c.model == model.name and c.seed == seed:
                    rows_by_arm[c.arm].extend(results[c].rows)
            focus = recipe.rare.class_ if recipe.rare is not None else None
            paths += task.plots(dict(rows_by_arm), plots, model.name, focus)
    return paths


def _fmt_seconds(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def write_report(recipe: Recipe, summary: BenchmarkSummary, out_dir: str | Path) -> Path:
    """Write ``report.md`` of ``summary`` (and the ``recipe`` it ran) into ``out_dir``; returns its path."""
    import yaml

    from alldata.benchmark.plots import format_ci, markdown_table

    out = Path(out_dir)
    plots = [Path(p) for p in summary.plots]
    m = summary.machine
    pool = summary.pool
    level = f"{summary.confidence:.0%}".replace("%", " %")
    lines = [
        f"# Benchmark: {summary.recipe}{' (quick)' if summary.quick else ''}",
        "",
        summary.description,
        "",
        f"- command: `{summary.command or '(library call)'}`",
        (f"- dataset: `{summary.dataset}`; pool: {pool.n} real samples in {pool.n_groups} groups, "
         f"per class {pool.per_class}; left out: {pool.left_out}"),
        f"- {recipe.folds} grouped folds × seeds {recipe.seeds} (folds reshuffled per seed; no group or file hash "
        "in both train and test); baseline arm `" + recipe.baseline + "`"
        + (f", oracle arm `{recipe.oracle}`" if recipe.oracle else ""),
        (f"- machine: {m.get('processor')}, {m.get('cpus')} CPUs, {m.get('platform')}, Python {m.get('python')}, "
        f"torch {m.get('torch', '-')} ({m.get('torch_threads', '?')} threads, CUDA {m.get('cuda', False)})"),
        (f"- time: {_fmt_seconds(summary.seconds)} ({summary.cells_run} cells run, "
         f"{summary.cells_reused} reused from an earlier run); alldata {summary.alldata_version}, "
         f"{summary.created:%Y-%m-%d %H:%M} UTC"),
        "- pretrained weights: none, trained from scratch (classifiers and generators)",
        "",
    ]
    if recipe.rare is not None:
        lines += [(f"Rare-class protocol: every arm except `{recipe.oracle}` keeps "
                  f"{recipe.rare.keep_fraction:.0%} (at least {recipe.rare.min_keep}) of the `{recipe.rare.class_}` "
                  "training groups of each fold."), ""]
    if len(recipe.seeds) < 3:
        lines += [(f"Only {len(recipe.seeds)} seed(s): the intervals below describe these folds, not the variation "
                  "between fold draws; use 3 or more seeds for conclusions."), ""]
    lines += ["## Results", "",
              (f"Each metric: value on the test rows pooled across folds (mean over seeds) with its {level} bootstrap "
              f"interval over test groups ({recipe.n_boot} replicates)."), "",
              markdown_table(arm_table(summary, recipe.metrics)), "",
              f"## Paired gain over `{recipe.baseline}`", "",
              (f"Per (seed, fold) pair: arm − baseline; mean with a {level} bootstrap interval over the pairs. "
              "An interval that contains 0 is a gain these data cannot tell from none."), "",
              markdown_table(gain_table(summary)), ""]
    if summary.gap_recovered:
        rows = [{"arm": g.arm, "model": g.model, "metric": g.metric,
                 "gap recovered": format_ci(g.mean, g.ci_low, g.ci_high), "pairs": g.n_pairs}
                for g in summary.gap_recovered]
        lines += [f"## Share of the `{recipe.baseline}` → `{recipe.oracle}` gap recovered", "",
                  ("Σ(arm − baseline) / Σ(oracle − baseline) over the (seed, fold) pairs: 0 = no help, "
                  "1 = as good as having all the real rare-class data."), "", markdown_table(rows), ""]
    if summary.prediction_fields:
        lines += ["## Predictions in FiftyOne", "",
                  f"Test predictions of `{recipe.models[0].name}`, seed {recipe.seeds[0]}, all folds: "
                  + ", ".join(f"`{f}`" for f in summary.prediction_fields.values())
                  + " (attribute `truth_field` names the label they predict).", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    lines += ["## Recipe", "", "```yaml",
              yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False).strip(), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
