"""``alldata embed``: embeddings, the Brain's visualisation, similarity index and near duplicates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def embed(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    features: Annotated[str, typer.Option(help="cnn (encoder trained on the real cells) or handcrafted")] = "cnn",
    encoder: Annotated[
        Path | None, typer.Option(help="a saved encoder folder (default: ~/.alldata/datasets/NAME/encoder, trained if missing)")
    ] = None,
    retrain: Annotated[bool, typer.Option(help="train the default encoder again")] = False,
    epochs: Annotated[int, typer.Option(help="encoder training epochs")] = 5,
    image_size: Annotated[int, typer.Option(help="encoder input size when training one")] = 64,
    method: Annotated[str, typer.Option(help="2-D visualisation: pca, tsne or umap (needs umap-learn)")] = "tsne",
    dup_threshold: Annotated[
        float | None, typer.Option(help="cosine distance for near_duplicate tags (default: 0.05 x median NN distance)")
    ] = None,
    seed: Annotated[int, typer.Option(help="seed of training and the visualisation")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available)")] = None,
) -> None:
    """Embed every sample and compute the Brain's visualisation, similarity index and near duplicates."""
    from alldata.embeddings import embed_dataset
    from alldata.views import build_views

    r = embed_dataset(name, features=features, encoder_dir=encoder, retrain=retrain, epochs=epochs,
                      image_size=image_size, method=method, dup_threshold=dup_threshold, seed=seed, device=device,
                      progress=True)
    enc = r.encoder or {}
    what = f"{enc.get('kind')} encoder {enc.get('path')}" if r.encoder else "hand-crafted features"
    console.print(f"embedded {r.n_embedded} samples with {what}", highlight=False, soft_wrap=True)
    console.print(f"brain runs: {r.brain_keys['visualization']} ({r.method}), {r.brain_keys['similarity']} (sklearn, cosine)")
    console.print(f"App workspace {r.workspace}: /datasets/{name}?workspace={r.workspace}", highlight=False)
    console.print(f"{r.near_duplicates} tagged near_duplicate (cosine distance < {r.dup_threshold:.3g})")
    for note in r.notes:
        err_console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)
    for path, why in list(r.failures.items())[:20]:
        err_console.print(f"[yellow]not embedded[/] {path}: {why}", highlight=False, soft_wrap=True)
    if len(r.failures) > 20:
        err_console.print(f"... and {len(r.failures) - 20} more unreadable images")
    build_views(name)  # the near-duplicates view follows the new tags
