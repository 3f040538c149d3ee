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

__all__ = ["arm_table", "drop_rows", "external_section", "gain_table", "write_plots", "write_report"]


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
                if c.model == model.name and c.seed == seed and not c.external:
                    rows_by_arm[c.arm].extend(results[c].rows)
            focus = recipe.rare.class_ if recipe.rare is not None else None
            if rows_by_arm:
                paths += task.plots(dict(rows_by_arm), plots, model.name, focus)
    if summary.external is not None:
        paths += _external_plots(recipe, task, summary, results, plots)
    return paths


def _external_plots(recipe: Recipe, task: Task, summary: BenchmarkSummary, results: dict[Cell, CellResult],
                    plots: Path) -> list[Path]:
    """In-pool vs external of the primary metric, and the task's plots of the external rows."""
    from alldata.benchmark.external import rows_by_arm
    from alldata.benchmark.plots import plot_external
    from alldata.metrics import CI

    ext = summary.external
    assert ext is not None
    paths = []
    m = recipe.primary_metric
    pairs = {f"{d.arm} / {d.model}": (CI(d.in_pool, d.in_pool_ci_low, d.in_pool_ci_high),
                                      CI(d.external, d.external_ci_low, d.external_ci_high))
             for d in ext.drops if d.metric == m}
    if pairs:
        paths.append(plot_external(pairs, plots / f"external_vs_in_pool_{m.replace(':', '-')}.png", m,
                                   title=f"{summary.recipe}\nin-pool CV vs external ({ext.dataset}: "
                                         f"{', '.join(ext.sources)})"))
    if hasattr(task, "plots"):
        focus = recipe.rare.class_ if recipe.rare is not None else None
        for model in recipe.models:
            by_arm = {f"{arm}-external": rows for arm, rows in rows_by_arm(results, model.name, recipe.seeds[0]).items()}
            if by_arm:
                paths += task.plots(by_arm, plots / "external", model.name, focus)
    return paths


def drop_rows(summary: BenchmarkSummary, metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """In-pool vs external per arm, model and metric: both with CIs and the drop (external − in-pool)."""
    from alldata.metrics import format_ci

    ext = summary.external
    return [
        {"arm": d.arm, "model": d.model, "metric": d.metric,
         "in-pool (CV)": format_ci(d.in_pool, d.in_pool_ci_low, d.in_pool_ci_high),
         "external": format_ci(d.external, d.external_ci_low, d.external_ci_high),
         "external − in-pool": format_ci(d.drop, signed=True)}
        for d in (ext.drops if ext is not None else []) if metrics is None or d.metric in metrics
    ]


def external_section(recipe: Recipe, summary: BenchmarkSummary, level: str) -> list[str]:
    """The report's external-pool part: pool, values with CIs, in-pool comparison, gains, selection."""
    from alldata.benchmark.plots import markdown_table

    ext = summary.external
    assert ext is not None
    where = f", where {ext.where}" if ext.where else ""
    lines = [
        "## External test pool", "",
        (f"Trained on the whole training pool (dataset `{summary.dataset}`, sources {sorted(summary.pool.sources)}, "
         f"{summary.pool.n} samples), tested on dataset `{ext.dataset}`, sources {ext.sources}{where}: "
         f"{ext.pool.n} samples in {ext.pool.n_groups} groups, per class {ext.pool.per_class}. No file is in both "
         "pools (sha256 checked). Each metric: value on the external rows (mean over seeds) with its "
         f"{level} bootstrap interval over external groups ({recipe.n_boot} replicates)."), "",
        markdown_table(arm_table(summary.model_copy(update={"arms": ext.arms}), recipe.metrics)), "",
    ]
    if ext.drops:
        worst = min((d for d in ext.drops if d.metric == recipe.primary_metric and d.drop == d.drop),
                    key=lambda d: d.drop, default=None)
        lines += ["### External vs in-pool", "",
                  ("The same models cross-validated inside the training pool (in-pool) and trained on all of it and "
                   "tested on the external pool. The difference is what a new site, stain or scanner costs; "
                   "in-pool figures alone overstate it."), ""]
        if worst is not None:
            lines += [(f"Largest fall in `{recipe.primary_metric}`: `{worst.arm}` / `{worst.model}`, "
                       f"{worst.in_pool:.3f} in-pool → {worst.external:.3f} external ({worst.drop:+.3f})."), ""]
        lines += [markdown_table(drop_rows(summary)), ""]
    if ext.selected:
        lines += [("Model chosen per arm by in-pool CV on `" + recipe.primary_metric + "` (the external pool never "
                   "chooses): " + ", ".join(f"`{a}` → `{m}`" for a, m in ext.selected.items())), ""]
    if ext.gains:
        lines += [f"### Paired gain over `{recipe.baseline}` on the external pool", "",
                  (f"Arm − baseline on the same external rows; {level} bootstrap interval over external groups."), "",
                  markdown_table(gain_table(summary.model_copy(update={"gains": ext.gains}))), ""]
    if ext.prediction_fields:
        lines += [(f"External predictions of `{recipe.models[0].name}`, seed {recipe.seeds[0]}, in dataset "
                   f"`{ext.dataset}`: " + ", ".join(f"`{f}`" for f in ext.prediction_fields.values())
                   + ". Saved models (for `alldata evaluate`): `models/`."), ""]
    if ext.heatmap_fields:
        lines += [("Grad-CAM heatmaps of those predictions: " + ", ".join(f"`{f}`" for f in ext.heatmap_fields.values())
                   + f" in `{ext.dataset}`; the saved view \"mistakes with heatmaps\" shows the `{recipe.baseline}` "
                   "arm's wrong calls with them (`alldata app`)."), ""]
    return lines


def _rich_table(rows: list[dict[str, Any]], title: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for col in dict.fromkeys(k for r in rows for k in r):
        table.add_column(str(col))
    for r in rows:
        table.add_row(*(str(v) for v in r.values()))
    return table


def print_external(summary: BenchmarkSummary, console: Any) -> None:
    """Print the external pool's in-pool vs external table (primary metric first) to a rich console."""
    ext = summary.external
    assert ext is not None
    shown = list(dict.fromkeys([summary.primary_metric, *summary.metrics]))[:2]
    level = f"{summary.confidence:.0%}".replace("%", " %")
    if ext.drops:
        console.print(_rich_table(drop_rows(summary, shown), f"external pool {ext.dataset}: {', '.join(ext.sources)} "
                                  f"(n={ext.pool.n}) vs in-pool CV [{level} CI over test groups]"))
    else:
        console.print(_rich_table(arm_table(summary.model_copy(update={"arms": ext.arms}), shown),
                                  f"external pool {ext.dataset}: {', '.join(ext.sources)} (n={ext.pool.n})"))
    if ext.selected:
        console.print("chosen by in-pool CV: " + ", ".join(f"{a} -> {m}" for a, m in ext.selected.items()))


def print_loso(loso: Any, console: Any) -> None:
    """Print a leave-one-source-out run's table (:class:`~alldata.benchmark.protocols.LosoRun`)."""
    from alldata.benchmark.protocols import loso_rows

    r = loso.recipe
    metrics = list(dict.fromkeys([r.primary_metric, *r.metrics]))[:2]
    rows = [{k: v for k, v in row.items() if k != "classes"} for row in loso_rows(loso.runs, metrics)]
    console.print(_rich_table(rows, f"{r.name}: leave one source out (external vs in-pool)"))
    console.print(f"report: {loso.out_dir / 'loso.md'}")


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
    if summary.external is not None:
        lines += external_section(recipe, summary, level)
    if summary.arms:
        lines += [f"## {'In-pool results (cross-validation on the training pool)' if summary.external else 'Results'}",
                  "",
                  (f"Each metric: value on the test rows pooled across folds (mean over seeds) with its {level} "
                   f"bootstrap interval over test groups ({recipe.n_boot} replicates)."), "",
                  markdown_table(arm_table(summary, recipe.metrics)), ""]
    if summary.gains:
        lines += [f"## Paired gain over `{recipe.baseline}`", "",
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
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.as_posix()})" for p in plots] + [""]
    lines += ["## Recipe", "", "```yaml",
              yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False).strip(), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
