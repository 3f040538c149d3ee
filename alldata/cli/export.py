"""``alldata export``: the curated samples with their card, behind the licence gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import handle_errors
from alldata.cli._selection import (
    Benchmark,
    Exclude,
    Override,
    ScoreReport,
    Sources,
    Splits,
    Synthetic,
    TrainedOn,
    names,
    print_export,
    selection,
)

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def export(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")],
    out: Annotated[Path, typer.Option("--out", help="output folder (a previous alldata export there is replaced)")],
    fmt: Annotated[str, typer.Option("--format", help="hf-parquet | fiftyone | coco | imagefolder")] = "hf-parquet",
    label_field: Annotated[str, typer.Option(help="class folders of imagefolder: cell_type, diagnosis, subtype")] = "cell_type",
    sources: Sources = None,
    exclude_sources: Exclude = None,
    splits: Splits = None,
    synthetic: Synthetic = True,
    override_licence: Override = None,
    trained_on: TrainedOn = None,
    benchmark: Benchmark = None,
    score_report: ScoreReport = None,
) -> None:
    """Export the curated samples with their card; sources that may not be redistributed are refused."""
    from alldata.export import export_dataset
    from alldata.licences import parse_trained_on

    rep = export_dataset(
        name, out, fmt, selection(sources, exclude_sources, splits, synthetic), overrides=names(override_licence),
        trained_on=parse_trained_on(trained_on or []), label_field=label_field, benchmarks=benchmark,
        score_reports=score_report,
    )
    print_export(rep)
