"""``alldata brain``: the FiftyOne Brain on alldata's embeddings and predictions, as fields and saved views."""

from __future__ import annotations

from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def brain(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name (run `alldata embed NAME` first)")] = "alldata",
    predictions: Annotated[
        list[str] | None, typer.Option(help="pred_* fields to score (default: all; repeat the option)")
    ] = None,
    leak_threshold: Annotated[float, typer.Option(help="cosine distance of a Brain leak across splits")] = 0.05,
    by: Annotated[str, typer.Option(help="unit of the exact leak check: group or subject")] = "group",
) -> None:
    """Uniqueness, representativeness, hardness, mistakenness and leaky splits, each a field and a brain-* view."""
    from alldata.brain import run_brain

    r = run_brain(name, predictions=predictions, leak_threshold=leak_threshold, by=by, progress=False)
    console.print(f"{r.n_embedded} embedded samples of {name!r}", highlight=False)
    for f, n in r.fields.items():
        console.print(f"  field {f}: {n} samples", highlight=False)
    for v, n in r.views.items():
        console.print(f"  view {v}: {n} samples  (/datasets/{name}?view={v})", highlight=False)
    console.print(f"exact leak check: {r.exact_leak or 'no group or file in two splits'}", highlight=False, soft_wrap=True)
    for what, why in r.skipped.items():
        err_console.print(f"[yellow]skipped[/] {what}: {why}", highlight=False, soft_wrap=True)
