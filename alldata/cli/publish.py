"""``alldata card``, ``alldata export`` and ``alldata publish``: dataset cards and data for the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()

Sources = Annotated[list[str] | None, typer.Option("--sources", help="keep only these sources (comma-joined or repeated)")]
Exclude = Annotated[list[str] | None, typer.Option("--exclude-sources", help="drop these sources (comma-joined or repeated)")]
Splits = Annotated[list[str] | None, typer.Option("--splits", help="keep only these splits: train,val,test")]
Synthetic = Annotated[bool, typer.Option("--synthetic/--real-only", help="include synthetic samples")]
Override = Annotated[
    list[str] | None,
    typer.Option("--override-licence", help="SOURCE to pass the licence gate although its terms forbid it or are unknown "
                 "(only if you hold the right; recorded on the card; repeatable)"),
]
TrainedOn = Annotated[
    list[str] | None, typer.Option("--trained-on", help="declare a generator's training sources: GEN=SRC[,SRC] (repeatable)")
]
Benchmark = Annotated[list[Path] | None, typer.Option("--benchmark", help="a benchmark --out folder with metrics.json (repeatable)")]
ScoreReport = Annotated[
    list[Path] | None, typer.Option("--score-report", help="`alldata score` JSON reports (default: latest per view)")
]


def _names(values: list[str] | None) -> tuple[str, ...]:
    return tuple(x.strip() for v in values or [] for x in v.split(",") if x.strip())


def _selection(sources, exclude, splits, synthetic):
    from alldata.card import Selection

    return Selection(_names(sources), _names(exclude), _names(splits), synthetic)


def _print_export(rep) -> None:
    console.print(f"{rep.n_samples} samples ({rep.selection}) -> {rep.out_dir} [{rep.format}]", highlight=False, soft_wrap=True)
    for src, d in rep.by_source.items():
        flag = " (override)" if src in rep.overrides else ""
        console.print(f"  {src}: {d['n']} samples, {d['license']}, redistribution {d['redistribution']}{flag}", highlight=False)
    for why, n in rep.skipped.items():
        console.print(f"  [yellow]not exported[/]: {n} samples ({why})", highlight=False)


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

    path = write_card(name, out, _selection(sources, exclude_sources, splits, synthetic), template=template,
                      benchmarks=benchmark, score_reports=score_report, trained_on=parse_trained_on(trained_on or []))
    console.print(f"card: {path}", highlight=False, soft_wrap=True)


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
        name, out, fmt, _selection(sources, exclude_sources, splits, synthetic), overrides=_names(override_licence),
        trained_on=parse_trained_on(trained_on or []), label_field=label_field, benchmarks=benchmark,
        score_reports=score_report,
    )
    _print_export(rep)


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
        selection=_selection(sources, exclude_sources, splits, synthetic), overrides=_names(override_licence),
        trained_on=parse_trained_on(trained_on or []), benchmarks=benchmark, score_reports=score_report,
    )
    _print_export(ExportReport(**r.export))
    console.print(f"{len(r.files)} files, {r.size_bytes / 2**20:.1f} MiB", highlight=False)
    if r.dry_run:
        console.print(f"dry run: nothing uploaded; what would go to {repo}: {r.folder}", highlight=False, soft_wrap=True)
    else:
        console.print(f"uploaded to {r.url} ({'private' if private else 'public'}): {r.commit_url}", highlight=False, soft_wrap=True)
