"""``alldata mix``: an arm's real+synthetic training mix of a recipe, saved as a FiftyOne view."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()


@app.command()
@handle_errors
def mix(
    recipe: Annotated[Path, typer.Argument(help="a recipe YAML, e.g. recipes/rare-class-recovery.yaml")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    arm: Annotated[str | None, typer.Option(help="the arm to materialise (default: the first generator arm)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the rare-class cut")] = 0,
) -> None:
    """Save an arm's real+synthetic training mix (split == train) as a FiftyOne view."""
    from alldata.mix import mix as run
    from alldata.recipes import load_recipe

    result = run(load_recipe(recipe), dataset, arm, seed=seed)
    for cls, c in result.composition.items():
        console.print(f"{cls:>16}: {c['real']:5d} real  {c['synthetic']:5d} synthetic")
    console.print(f"saved view {result.view_name!r}: {result.n_real} real + {result.n_synthetic} synthetic "
                  f"(open it with `alldata app {dataset}`)")
    for cls, n in result.shortfall.items():
        console.print(f"[yellow]note:[/] {n} fewer synthetic {cls} samples than the mix allows are stored; "
                      "generate more or run the benchmark's generator arm")
