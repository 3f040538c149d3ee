"""``alldata finetune-generator``: teach a trained generator a rare class from a few images.

Runs under ``accelerate launch -m alldata.cli finetune-generator ...`` too (diffusion: every
process fine-tunes on its own device, the main process saves).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors
from alldata.cli.train_generator import parse_where

__all__ = ["app"]

app = typer.Typer()


@app.command("finetune-generator")
@handle_errors
def finetune_generator(
    checkpoint: Annotated[Path, typer.Option(help="a trained checkpoint (of a family that fine-tunes: diffusion, gan)")],
    add: Annotated[list[str], typer.Option(help="new condition value field=value, e.g. subtype=L3 (repeatable)")],
    where: Annotated[list[str], typer.Option(help="select the few examples: field=a|b (repeatable)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "alldata",
    out: Annotated[Path, typer.Option(help="where the fine-tuned checkpoint goes")] = Path("checkpoints/finetuned"),
    source: Annotated[list[str] | None, typer.Option(help="only these sources (repeatable)")] = None,
    split: Annotated[str, typer.Option(help="train | val | test | all")] = "train",
    steps: Annotated[int, typer.Option()] = 200,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Few-shot: teach a trained generator a rare class (e.g. FAB L3) from a handful of images."""
    from alldata.generate import finetune_generator as run

    added = parse_where(add)
    run(checkpoint, dataset, out, add=added, where=parse_where(where), sources=source,
        split=None if split == "all" else split, steps=steps, seed=seed)
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: the main process reports
        return
    cond = ",".join(f"{k}={v}" for k, v in added.items())
    console.print(f"fine-tuned checkpoint: {out}  (sample it with --checkpoint {out} --condition {cond})")
