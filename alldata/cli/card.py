"""``alldata card``: the Hugging Face dataset card of a dataset, facts computed from the data and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors
from alldata.cli._selection import Benchmark, Exclude, ScoreReport, Sources, Splits, Synthetic, TrainedOn, selection

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def card(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")],
    out: Annotated[Path, typer.Option("--out", help="folder for README.md (the card) and LICENSE.md")],
    sources: Sources = None,
    exclude_sources: Exclude = None,
    splits: Splits = None,
    synthetic: Synthetic = True,
    trained_on: TrainedOn = None,
    benchmark: Benchmark = None,
    score_report: ScoreReport = None,
    template: Annotated[Path | None, typer.Option(help="card template (default: cards/dataset_card.md)")] = None,
) -> None:
    """Write the Hugging Face dataset card of a dataset (facts computed from the data and reports)."""
    from alldata.card import write_card
    from alldata.licences import parse_trained_on

    path = write_card(name, out, selection(sources, exclude_sources, splits, synthetic), template=template,
                      benchmarks=benchmark, score_reports=score_report, trained_on=parse_trained_on(trained_on or []))
    console.print(f"card: {path}", highlight=False, soft_wrap=True)
