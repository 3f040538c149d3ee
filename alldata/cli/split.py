"""``alldata split``: deterministic grouped train/val/test splits."""

from __future__ import annotations

from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def split(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    by: Annotated[str, typer.Option(help="subject (patient where known, else group) | group (source image)")] = "group",
    ratios: Annotated[str, typer.Option(help="train,val,test shares")] = "0.7,0.15,0.15",
    seed: Annotated[int, typer.Option(help="shuffle seed")] = 0,
    source: Annotated[list[str] | None, typer.Option(help="split only these sources (repeatable)")] = None,
    stratify: Annotated[str, typer.Option(help="label field to balance ('' for none)")] = "diagnosis",
) -> None:
    """Write a grouped split into the `split` field; no group ever spans two splits."""
    from alldata.schema import F
    from alldata.split import parse_ratios, split_dataset
    from alldata.store import load_dataset

    shares = parse_ratios(ratios)
    ds = load_dataset(dataset)
    view = ds.match({F.SOURCE: {"$in": source}}) if source else ds
    summary = split_dataset(view, by=by, ratios=shares, seed=seed, stratify=stratify or None)
    for name in ("train", "val", "test"):
        console.print(f"{name:>5}: {summary.counts.get(name, 0):6d} samples in {summary.groups.get(name, 0):5d} groups")
    console.print(f"checked: no {by} and no file hash appears in two splits")

