"""Write a benchmark's results: ``metrics.json``, ``report.md`` and the plots.

``metrics.json`` is the machine-readable record (the dataset card reads its ``gains``
list); ``report.md`` is the same for people: the recipe, the command, the machine, the
time, tables with 95 % bootstrap CIs over test groups, paired gains over the baseline,
the share of the rare-class gap recovered, and links to the plots in ``plots/``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from alldata.benchmark.tasks import Cell, CellResult, Task
from alldata.recipes import Recipe

__all__ = ["arm_table", "gain_table", "write_report"]


def _ci(m: dict[str, float], key: str = "pooled") -> str:
    from alldata.evaluate import format_ci

    return format_ci(m[key], m["ci_low"], m["ci_high"])


def arm_table(summary: dict[str, Any], metrics: list[str]) -> list[dict[str, Any]]:
    """One row per arm and model: each metric as ``pooled [low, high]`` and the mean over cells."""
    rows = []
    for e in summary["arms"]:
        row: dict[str, Any] = {"arm": e["arm"], "kind": e["kind"], "model": e["model"], "cells": e["n_cells"],
                               "n_train": f"{e['n_train']:.0f}", "n_synthetic": f"{e['n_synthetic']:.0f}"}
        for m in metrics:
            row[m] = _ci(e["metrics"][m])
        rows.append(row)
    return rows


def gain_table(summary: dict[str, Any], metrics: list[str] | None = None) -> list[dict[str, Any]]:
    """Paired gains over the baseline: ``mean [low, high]`` per arm, model and metric."""
    from alldata.evaluate import format_ci

    return [
        {"arm": g["arm"], "model": g["model"], "metric": g["metric"],
         "gain": format_ci(g["mean"], g["ci_low"], g["ci_high"], signed=True), "pairs": g["n_pairs"]}
        for g in summary["gains"] if metrics is None or g["metric"] in metrics
    ]


def _plots(recipe: Recipe, task: Task, summary: dict[str, Any], results: dict[Cell, CellResult], out: Path) -> list[Path]:
    from alldata.evaluate import GainResult, plot_gains

    plots = out / "plots"
    paths = []
    for model in recipe.models:
        gains = {g["arm"]: GainResult(g["mean"], g["ci_low"], g["ci_high"], g["n_pairs"], {})
                 for g in summary["gains"] if g["model"] == model.name and g["metric"] == recipe.primary_metric}
        if gains:
            paths.append(plot_gains(gains, plots / f"gains_{model.name}_{recipe.primary_metric.replace(':', '-')}.png",
                                    recipe.primary_metric, title=f"Gain over {recipe.baseline} ({model.name})"))
        if recipe.rare is not None:
            rm = f"sensitivity:{recipe.rare.class_}"
            gains = {g["arm"]: GainResult(g["mean"], g["ci_low"], g["ci_high"], g["n_pairs"], {})
                     for g in summary["gains"] if g["model"] == model.name and g["metric"] == rm}
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


def write_report(recipe: Recipe, task: Task, summary: dict[str, Any], results: dict[Cell, CellResult], out_dir: str | Path) -> Path:
    """Write ``metrics.json``, ``plots/*.png`` and ``report.md`` into ``out_dir``; returns the report path."""
    import yaml

    from alldata.benchmark.engine import _json_default
    from alldata.evaluate import format_ci, markdown_table

    out = Path(out_dir)
    plots = _plots(recipe, task, summary, results, out)
    summary["plots"] = [str(p.relative_to(out)) for p in plots]
    (out / "metrics.json").write_text(json.dumps(_clean(summary), indent=1, default=_json_default))
    m = summary["machine"]
    lines = [
        f"# Benchmark: {recipe.name}{' (quick)' if summary['quick'] else ''}",
        "",
        recipe.description,
        "",
        f"- command: `{summary.get('command') or '(library call)'}`",
        (f"- dataset: `{summary['dataset']}`; pool: {summary['pool']['n']} real samples in "
        f"{summary['pool']['n_groups']} groups, per class {summary['pool']['per_class']}; "
        f"left out: {summary['pool']['left_out']}"),
        f"- {recipe.folds} grouped folds × seeds {recipe.seeds} (folds reshuffled per seed; no group or file hash "
        "in both train and test); baseline arm `" + recipe.baseline + "`"
        + (f", oracle arm `{recipe.oracle}`" if recipe.oracle else ""),
        (f"- machine: {m.get('processor')}, {m.get('cpus')} CPUs, {m.get('platform')}, Python {m.get('python')}, "
        f"torch {m.get('torch', '-')} ({m.get('torch_threads', '?')} threads, CUDA {m.get('cuda', False)})"),
        (f"- time: {_fmt_seconds(summary['seconds'])} ({summary['cells_run']} cells run, "
        f"{summary['cells_reused']} reused from an earlier run)"),
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
              ("Each metric: value on the test rows pooled across folds (mean over seeds) with its 95 % bootstrap "
              f"interval over test groups ({recipe.n_boot} replicates)."), "",
              markdown_table(arm_table(summary, recipe.metrics)), "",
              f"## Paired gain over `{recipe.baseline}`", "",
              ("Per (seed, fold) pair: arm − baseline; mean with a 95 % bootstrap interval over the pairs. "
              "An interval that contains 0 is a gain these data cannot tell from none."), "",
              markdown_table(gain_table(summary)), ""]
    if summary.get("gap_recovered"):
        rows = [{"arm": g["arm"], "model": g["model"], "metric": g["metric"],
                 "gap recovered": format_ci(g["mean"], g["ci_low"], g["ci_high"]), "pairs": g["n_pairs"]}
                for g in summary["gap_recovered"]]
        lines += [f"## Share of the `{recipe.baseline}` → `{recipe.oracle}` gap recovered", "",
                  ("Σ(arm − baseline) / Σ(oracle − baseline) over the (seed, fold) pairs: 0 = no help, "
                  "1 = as good as having all the real rare-class data."), "", markdown_table(rows), ""]
    if summary.get("prediction_fields"):
        lines += ["## Predictions in FiftyOne", "",
                  f"Test predictions of `{recipe.models[0].name}`, seed {recipe.seeds[0]}, all folds: "
                  + ", ".join(f"`{f}`" for f in summary["prediction_fields"].values())
                  + " (attribute `truth_field` names the label they predict).", ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    lines += ["## Recipe", "", "```yaml",
              yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True), sort_keys=False).strip(), "```", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def _clean(o: Any) -> Any:
    """NaN -> None so metrics.json is strict JSON."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    return o
