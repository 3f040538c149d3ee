"""``alldata views`` and ``alldata embed``: what the FiftyOne App shows a curator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from alldata.cli._common import console, err_console, handle_errors

app = typer.Typer()


def print_views(name: str, report: object) -> None:
    """Print a :class:`alldata.views.ViewsReport` as a table (plus deleted and skipped views)."""
    t = Table(title=f"{name}: alldata's saved views (open with `alldata app {name}`)")
    t.add_column("view")
    t.add_column("samples", justify="right")
    for view, n in report.views.items():  # type: ignore[attr-defined]
        t.add_row(view, str(n))
    console.print(t)
    console.print(f"App URL of a view: /datasets/{name}?view=SLUG, e.g. ?view={report.slugs.get('alldata-real')}",  # type: ignore[attr-defined]
                  highlight=False, soft_wrap=True)
    for view in report.deleted:  # type: ignore[attr-defined]
        console.print(f"deleted stale view {view}", highlight=False)
    for view, why in report.skipped.items():  # type: ignore[attr-defined]
        err_console.print(f"[yellow]skipped[/] {view}: {why}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def views(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    truth: Annotated[
        list[str] | None,
        typer.Option(help="PRED_FIELD=TRUTH_FIELD for a pred_* field whose truth field is not recorded (repeatable)"),
    ] = None,
) -> None:
    """(Re)build alldata's saved views (named alldata-...); views you saved yourself are kept."""
    from alldata.views import build_views, parse_truth

    print_views(name, build_views(name, parse_truth(truth)))


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
