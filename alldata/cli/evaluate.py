"""``alldata evaluate``: score a saved model, or a benchmark run's saved models, on any dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()


def _where(items: list[str] | None) -> dict[str, list[str]] | None:
    if not items:
        return None
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"--where {item!r}: use FIELD=VALUE, e.g. --where cell_type=lymphocyte")
        out.setdefault(key, []).append(value)
    return out


@app.command()
@handle_errors
def evaluate(
    model_or_run: Annotated[Path, typer.Argument(help="a saved model folder or a benchmark run folder (runs/<recipe>)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="the FiftyOne dataset to score on")],
    sources: Annotated[list[str] | None, typer.Option("--source", "-s", help="a source to score (repeat; default all)")] = None,
    where: Annotated[list[str] | None, typer.Option(help="filter FIELD=VALUE (repeat)")] = None,
    label_field: Annotated[str | None, typer.Option(help="a bare model's label field (diagnosis, cell_type, subtype)")] = None,
    image_size: Annotated[int | None, typer.Option(help="a bare model's training image size (default 64)")] = None,
    n_boot: Annotated[int, typer.Option(help="bootstrap replicates")] = 1000,
    out: Annotated[Path | None, typer.Option(help="write evaluation.json and evaluation.md here")] = None,
    write_back: Annotated[bool, typer.Option(help="write predictions to eval_<recipe>_<arm>_<model> fields")] = True,
) -> None:
    """Score saved classifiers on DATASET with CIs over its groups; refuse files they were trained on."""
    from rich.table import Table

    from alldata.evaluate import evaluate as run
    from alldata.metrics import format_ci

    results = run(model_or_run, dataset, sources=sources, where=_where(where), label_field=label_field,
                  image_size=image_size, n_boot=n_boot, write_back=write_back, out_dir=out)
    r0 = results[0]
    table = Table(title=f"{dataset} ({', '.join(r0.sources)}; n={r0.pool.n}): value [{r0.confidence:.0%} CI over groups]")
    shown = list(r0.metrics)[:4]
    for col in ("model", "arm", "seed", "trained on", *shown):
        table.add_column(col)
    for r in results:
        table.add_row(r.model, r.arm or "-", "-" if r.seed is None else str(r.seed), r.trained_on or "?",
                      *(format_ci(r.metrics[m].pooled, r.metrics[m].ci_low, r.metrics[m].ci_high) for m in shown))
    console.print(table)
    if not r0.duplicates_checked:
        console.print("[yellow]note:[/] a bare model: its training files are unknown, so no duplicate check was made")
    fields = [r.prediction_field for r in results if r.prediction_field]
    if fields:
        console.print(f"predictions: {', '.join(fields)} in {dataset!r}" + (f"; report: {out / 'evaluation.md'}" if out else ""))
