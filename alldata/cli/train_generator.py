"""``alldata train-generator``: train a generator family on real cells of the store.

On every GPU of a machine (or several): ``accelerate launch -m alldata.cli train-generator
diffusion ...`` (the diffusion family trains through accelerate; ``--batch-size`` is per process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

__all__ = ["app", "parse_where"]

app = typer.Typer()


def parse_where(items: list[str] | None) -> dict[str, str]:
    """``["field=a|b", ...]`` -> ``{field: "a|b"}`` (the ``--where`` / ``--add`` options)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise typer.BadParameter(f"--where {item!r} is not field=value[|value] (e.g. cell_type=lymphoblast|lymphocyte)")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


@app.command("train-generator")
@handle_errors
def train_generator(
    family: Annotated[str, typer.Argument(help="a trainable generator family (diffusion, gan, ...)")],
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "alldata",
    out: Annotated[Path, typer.Option(help="checkpoint folder (resumes from it)")] = Path("checkpoints/generator"),
    source: Annotated[list[str] | None, typer.Option(help="train on these sources (repeatable)")] = None,
    split: Annotated[str, typer.Option(help="train | val | test | all")] = "train",
    where: Annotated[list[str] | None, typer.Option(help="label filter field=a|b (repeatable)")] = None,
    label_field: Annotated[list[str] | None, typer.Option(help="condition on these label fields")] = None,
    image_size: Annotated[int, typer.Option(help="pixels (32-64 on CPU)")] = 64,
    preset: Annotated[str, typer.Option(help="model size: tiny | cpu | gpu")] = "cpu",
    steps: Annotated[int, typer.Option(help="optimisation steps")] = 1000,
    batch_size: Annotated[int, typer.Option()] = 16,
    seed: Annotated[int, typer.Option()] = 0,
    sample_every: Annotated[int, typer.Option(help="write a sample grid every N steps")] = 200,
    save_every: Annotated[int, typer.Option(help="save a resumable state every N steps")] = 200,
    max_samples: Annotated[int | None, typer.Option(help="use at most N training images")] = None,
    device: Annotated[str | None, typer.Option(help="cpu | cuda | cuda:N (default: cuda when available; "
                                                    "under accelerate launch each process's own)")] = None,
) -> None:
    """Train a generator on real cells of the train split (resumable; grids under OUT/samples)."""
    from alldata.generate import train_generator as run

    run(
        family, dataset, out, image_size=image_size, sources=source, split=None if split == "all" else split,
        where=parse_where(where), label_fields=label_field or ["cell_type"], max_samples=max_samples, preset=preset,
        steps=steps, batch_size=batch_size, seed=seed, sample_every=sample_every, save_every=save_every,
        **({"device": device} if device else {}),
    )
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: the main process reports
        return
    console.print(f"checkpoint: {out}  (config.json + model.safetensors; sample grids in {out / 'samples'})")
