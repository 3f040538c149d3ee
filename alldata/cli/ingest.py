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
    workers: Annotated[int, typer.Option(help="processes reading, hashing and checking files")] = 2,
    shard: Annotated[
        str | None,
        typer.Option(help="i/n: only shard i of n of SOURCE's files (run n of these, on one or many machines, "
                     "against one FIFTYONE_DATABASE_URI)"),
    ] = None,
    recheck: Annotated[bool, typer.Option(help="read and check every file again, even when unchanged on disk")] = False,
    decode: Annotated[
        bool,
        typer.Option(help="decode every image (default). --no-decode checks JPEG/PNG by structure only: truncated "
                     "files are still refused, corrupt data inside an intact file is not (faster)"),
    ] = True,
    masks: Annotated[
        str | None,
        typer.Option(help="folder source: SUFFIX (e.g. png) = every SUFFIX file is the mask of its same-stem image "
                     "(stored as segmentation); 'none' = ingest same-stem files all as images"),
    ] = None,
    labels_csv: Annotated[
        str | None,
        typer.Option(help="folder source: a CSV (header; file column, label column) giving each image's label; "
                     "'none' = labels from the class folder names"),
    ] = None,
) -> None:
    """Ingest SOURCE (or --all) into a persistent dataset; re-running adds nothing new."""
    from alldata.ingest import ingest as run_ingest
    from alldata.ingest import ingest_all, parse_shard, report_path

    if all_sources == (source is not None):
        raise typer.BadParameter("give either a SOURCE or --all")
    parts = None
    if shard is not None:
        if all_sources:
            raise typer.BadParameter("--shard splits one SOURCE; give a SOURCE, not --all", param_hint="--shard")
        try:
            parts = parse_shard(shard)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--shard") from None
    if all_sources and (masks or labels_csv):
        raise typer.BadParameter("--masks and --labels-csv are options of the folder source; give SOURCE folder")
    if all_sources:
        reports, missing = ingest_all(dataset, max_samples=max_samples, workers=workers, recheck=recheck,
                                       decode=decode)
        for name, why in missing.items():
            console.print(f"[yellow]not found[/] {name}: {why}")
        if not reports:
            console.print(
                f"[bold red]No data found under {data_root().resolve()}.[/] Put each dataset in its own folder there "
                "(see `alldata sources` for each expected layout) or set ALLDATA_DATA_ROOT."
            )
            raise typer.Exit(code=1)
    else:
        from alldata.sources import get_source

        options = {k: v for k, v in (("masks", masks), ("labels_csv", labels_csv)) if v is not None}
        if options and source != "folder":
            raise typer.BadParameter(f"--masks and --labels-csv are options of the folder source, not of {source!r}")
        src = get_source(source, path, **options) if options else source
        reports = [run_ingest(src, dataset, root=path, max_samples=max_samples, workers=workers, shard=parts,
                              recheck=recheck, decode=decode)]
    for r in reports:
        console.print(r.summary())
        for p in r.skipped[:10]:
            console.print(f"  [red]skipped[/] {p.path}: {p.reason}", highlight=False)
        for p in r.warnings[:5]:
            console.print(f"  [yellow]warning[/] {p.path}: {p.reason}", highlight=False)
        more = max(0, len(r.skipped) - 10) + max(0, len(r.warnings) - 5)
        if r.problems:
            console.print(f"  full report{f' (+{more} more)' if more else ''}: {report_path(dataset, r.source, parts)}")
