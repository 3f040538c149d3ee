"""``alldata ingest``: native files -> the common schema in a FiftyOne dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors
from alldata.config import data_root

app = typer.Typer()


@app.command()
@handle_errors
def ingest(
    source: Annotated[str | None, typer.Argument(help="registered source name (see `alldata sources`)")] = None,
    path: Annotated[Path | None, typer.Argument(help="the source's folder (default: under the data root)")] = None,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    all_sources: Annotated[bool, typer.Option("--all", help="ingest every source found under the data root")] = False,
    max_samples: Annotated[int | None, typer.Option(help="only the first N files of each source")] = None,
    workers: Annotated[int, typer.Option(help="decoding threads")] = 2,
) -> None:
    """Ingest SOURCE (or --all) into a persistent dataset; re-running adds nothing new."""
    from alldata.ingest import ingest as run_ingest
    from alldata.ingest import ingest_all, report_path

    if all_sources == (source is not None):
        raise typer.BadParameter("give either a SOURCE or --all")
    if all_sources:
        reports, missing = ingest_all(dataset, max_samples=max_samples, workers=workers)
        for name, why in missing.items():
            console.print(f"[yellow]not found[/] {name}: {why}")
        if not reports:
            console.print(
                f"[bold red]No data found under {data_root().resolve()}.[/] Put each dataset in its own folder there "
                "(see `alldata sources` for each expected layout) or set ALLDATA_DATA_ROOT."
            )
            raise typer.Exit(code=1)
    else:
        reports = [run_ingest(source, dataset, root=path, max_samples=max_samples, workers=workers)]
    for r in reports:
        console.print(r.summary())
        for p in r.skipped[:10]:
            console.print(f"  [red]skipped[/] {p.path}: {p.reason}", highlight=False)
        for p in r.warnings[:5]:
            console.print(f"  [yellow]warning[/] {p.path}: {p.reason}", highlight=False)
        more = max(0, len(r.skipped) - 10) + max(0, len(r.warnings) - 5)
        if r.problems:
            console.print(f"  full report{f' (+{more} more)' if more else ''}: {report_path(dataset, r.source)}")
