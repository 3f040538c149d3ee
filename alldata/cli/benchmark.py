"""``alldata benchmark``: run a recipe and print its value and paired-gain tables."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors, metric_columns

app = typer.Typer()


@app.command()
@handle_errors
def benchmark(
    recipe: Annotated[Path, typer.Argument(help="a recipe YAML, e.g. recipes/rare-class-recovery.yaml")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    out: Annotated[Path | None, typer.Option(help="results folder (default runs/<recipe>[-quick]); resumes")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="apply the recipe's quick: block (minutes, not hours)")] = False,
    write_back: Annotated[bool, typer.Option(help="write test predictions to pred_<recipe>_<arm> fields")] = True,
) -> None:
    """Run a recipe's arms × models × folds × seeds (resumable); write metrics.json, report.md, plots."""
    from rich.table import Table

    from alldata.benchmark.engine import run_benchmark
    from alldata.benchmark.report import gain_table
    from alldata.metrics import format_ci
    from alldata.recipes import load_recipe
    from alldata.reports import load_benchmark_summary

    r = load_recipe(recipe)
    out = out or Path("runs") / f"{r.name}{'-quick' if quick else ''}"
    command = shlex.join(["alldata", *sys.argv[1:]]) if sys.argv[1:2] == ["benchmark"] else None
    if r.test is not None and r.test.leave_one_source_out:
        from alldata.benchmark.protocols import run_leave_one_source_out
        from alldata.benchmark.report import print_loso

        print_loso(run_leave_one_source_out(r, dataset, out, quick=quick, command=command, write_back=write_back), console)
        return
    run = run_benchmark(r, dataset, out, quick=quick, command=command, write_back=write_back)
    s = load_benchmark_summary(out)
    level = f"{s.confidence:.0%}".replace("%", " %")
    shown, left_out = metric_columns(s.metrics, s.primary_metric)
    table = Table(title=f"{s.recipe}: value [{level} CI over test groups]")
    for col in ("arm", "model", *shown):
        table.add_column(col)
    for e in s.arms:
        table.add_row(e.arm, e.model, *(format_ci(e.metrics[m].pooled, e.metrics[m].ci_low, e.metrics[m].ci_high)
                                        for m in shown))
    if s.arms:  # none when an external recipe skips the in-pool CV
        console.print(table)
    if left_out:
        console.print(f"(+{len(left_out)} more metrics not shown at this width: {', '.join(left_out)}; all are in "
                      f"{out / 'report.md'}, and in full when the output goes to a file)", highlight=False)
    gains = Table(title=f"paired gain over {s.baseline} [{level} CI over (seed, fold)]")
    for col in ("arm", "model", "metric", "gain", "pairs"):
        gains.add_column(col)
    focus = [s.primary_metric] + ([f"sensitivity:{run.recipe.rare.class_}"] if run.recipe.rare else [])
    for g in gain_table(s, focus):
        gains.add_row(g["arm"], g["model"], g["metric"], g["gain"], str(g["pairs"]))
    if s.gains:
        console.print(gains)
    for g in s.gap_recovered:
        console.print(f"gap recovered ({g.metric}) {g.arm}/{g.model}: {format_ci(g.mean, g.ci_low, g.ci_high)}")
    if s.external is not None:
        from alldata.benchmark.report import print_external

        print_external(s, console)
    console.print(f"{run.ran} cells run, {run.skipped} reused, {s.seconds:.0f} s; report: {out / 'report.md'}")
