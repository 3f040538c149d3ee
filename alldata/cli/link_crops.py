"""``alldata link-crops``: give each ALL-IDB2-style crop the group of the smear it was cut from."""

from __future__ import annotations

from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command("link-crops")
@handle_errors
def link_crops(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    crop_source: Annotated[str, typer.Option(help="source of the crops")] = "all_idb2",
    parent_source: Annotated[str, typer.Option(help="source of the smears they were cut from")] = "all_idb1",
    threshold: Annotated[float, typer.Option(help="normalised cross-correlation needed for a match")] = 0.95,
    workers: Annotated[int, typer.Option(help="threads (-1: one per core)")] = 1,
) -> None:
    """Find the smear each crop was cut from and give the crop that smear's group (run split after)."""
    from alldata.link import link_crops as run
    from alldata.store import load_dataset

    matches = run(load_dataset(dataset), crop_source=crop_source, parent_source=parent_source, threshold=threshold,
                  workers=workers)
    linked = [m for m in matches if m.parent]
    console.print(f"{len(linked)} of {len(matches)} {crop_source} crops found in a {parent_source} image "
                  f"(threshold {threshold}); they now share its group. Run `alldata split` again.")
