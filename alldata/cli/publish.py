"""``alldata publish``: upload the curated samples and their card to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors
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
def publish(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")],
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo ORG/NAME (created if missing)")],
    private: Annotated[bool, typer.Option("--private", help="create the repo private")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write what would be uploaded to --out; no network")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="staging folder (required with --dry-run)")] = None,
    sources: Sources = None,
    exclude_sources: Exclude = None,
    splits: Splits = None,
    synthetic: Synthetic = True,
    override_licence: Override = None,
    trained_on: TrainedOn = None,
    benchmark: Benchmark = None,
    score_report: ScoreReport = None,
) -> None:
    """Upload the curated samples and their card to the Hugging Face Hub (token from HF_TOKEN or `hf auth login`)."""
    from alldata.export import ExportReport
    from alldata.licences import parse_trained_on
    from alldata.publish import publish as do_publish

    r = do_publish(
        name, repo, private=private, dry_run=dry_run, out_dir=out,
        selection=selection(sources, exclude_sources, splits, synthetic), overrides=names(override_licence),
        trained_on=parse_trained_on(trained_on or []), benchmarks=benchmark, score_reports=score_report,
    )
    print_export(ExportReport(**r.export))
    console.print(f"{len(r.files)} files, {r.size_bytes / 2**20:.1f} MiB", highlight=False)
    if r.dry_run:
        console.print(f"dry run: nothing uploaded; what would go to {repo}: {r.folder}", highlight=False, soft_wrap=True)
    else:
        console.print(f"uploaded to {r.url} ({'private' if private else 'public'}): {r.commit_url}", highlight=False, soft_wrap=True)
