"""``alldata train-encoder``: the small CNN feature encoder of ``alldata score`` and ``alldata embed``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()


@app.command("train-encoder")
@handle_errors
def train_encoder_(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    out: Annotated[Path | None, typer.Option(help="output folder (default: ~/.alldata/datasets/NAME/encoder)")] = None,
    real_view: Annotated[str, typer.Option(help="cells to train on: split=S, source=NAME or all")] = "split=train",
    epochs: Annotated[int, typer.Option(help="training epochs")] = 10,
    image_size: Annotated[int, typer.Option(help="input size in pixels")] = 64,
    label_field: Annotated[
        str | None, typer.Option(help="label to classify (default: cell_type, else diagnosis)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available)")] = None,
) -> None:
    """Train the small CNN feature encoder of `alldata score` on real cells (config.json + model.safetensors)."""
    from alldata.score import get_encoder, parse_view

    enc = get_encoder(
        dataset, parse_view(real_view, "real"), train=True, encoder_out=out, epochs=epochs, image_size=image_size,
        label_field=label_field, seed=seed, device=device,
    )
    c = enc.config
    last = c["history"][-1]
    console.print(
        f"trained on {c['n_train']} cells, {c['label_field']}: "
        + ", ".join(f"{k} {v}" for k, v in c["class_counts"].items())
    )
    console.print(f"epoch {last['epoch']}: loss {last['loss']:.3f}, train accuracy {last['accuracy']:.1%}")
    console.print(f"saved to {enc.path}", highlight=False, soft_wrap=True)
