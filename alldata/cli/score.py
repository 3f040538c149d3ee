"""``alldata score``: quality gates and memorisation scores of synthetic cells."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from alldata.cli._common import console, handle_errors

app = typer.Typer()


def _fmt(v: Any, digits: int = 4) -> str:
    return "n/a" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _help() -> str:
    from alldata.score_report import Gates

    lines = Gates().describe().splitlines()
    return (
        "FD, KID, precision/recall, density/coverage, memorisation, pixel statistics and CAS of synthetic cells "
        "vs real ones, and a pass/fail verdict against the quality gates (alldata.score.Gates):\n\n"
        + "\n\n".join(lines)
    )


def _gate_row(g: Any) -> tuple[str, str, str, str]:
    verdict = "[green]pass[/]" if g.passed else "[red]FAIL[/]" if g.passed is False else f"[yellow]n/a[/] ({g.note})"
    return g.name, _fmt(g.value, 3), f"{_fmt(g.threshold, 3)}  ({g.rule})", verdict


@app.command(help=_help())
@handle_errors
def score(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset name")] = "alldata",
    synthetic_view: Annotated[
        str, typer.Option(help="synthetic samples to score: generator=NAME, tag=TAG (comma-joined) or all")
    ] = "all",
    real_view: Annotated[
        str, typer.Option(help="real reference (also the memorisation reference): split=S, source=NAME or all")
    ] = "split=train",
    heldout_view: Annotated[
        str, typer.Option(help="real held-out cells CAS and TRS are tested on (cells of --real-view left out)")
    ] = "split=test",
    checkpoint: Annotated[
        Path | None, typer.Option(help="score only this checkpoint's samples and write CHECKPOINT/score.json")
    ] = None,
    label_field: Annotated[
        str | None, typer.Option(help="label CAS classifies (default: cell_type, subtype or diagnosis)")
    ] = None,
    encoder: Annotated[Path | None, typer.Option(help="folder of a trained encoder (`alldata train-encoder`)")] = None,
    train_encoder: Annotated[bool, typer.Option(help="train an encoder on the real view first")] = False,
    encoder_out: Annotated[
        Path | None, typer.Option(help="where --train-encoder saves it (default: ~/.alldata/datasets/NAME/encoder)")
    ] = None,
    encoder_epochs: Annotated[int, typer.Option(help="epochs for --train-encoder")] = 10,
    inception_weights: Annotated[
        Path | None, typer.Option(help="a torchvision inception_v3 state dict (.safetensors or torch file)")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="JSON report path (default: ~/.alldata/datasets/NAME/score-<time>.json)")
    ] = None,
    image_size: Annotated[
        int | None, typer.Option(help="read images at this size (default: the encoder's, 64 CNN / 299 Inception)")
    ] = None,
    percentile: Annotated[float, typer.Option(help="copy threshold: percentile of real-to-real NN distances")] = 5.0,
    strict: Annotated[bool, typer.Option(help="exit with code 1 when a gate fails")] = False,
    seed: Annotated[int, typer.Option(help="seed of KID subsets, the real halves, CAS and encoder training")] = 0,
    device: Annotated[str | None, typer.Option(help="cpu, cuda, ... (default: cuda if available)")] = None,
) -> None:
    from alldata.score import ScoreParams, get_encoder, parse_view, score_dataset

    syn_f, real_f = parse_view(synthetic_view, "synthetic"), parse_view(real_view, "real")
    enc = get_encoder(
        dataset, real_f, encoder_dir=encoder, inception_weights=inception_weights, train=train_encoder,
        encoder_out=encoder_out, epochs=encoder_epochs, seed=seed, device=device,
    )
    if train_encoder:
        console.print(f"trained encoder saved to {enc.path}")
    r = score_dataset(dataset, syn_f, real_f, enc, image_size, heldout_filter=parse_view(heldout_view, "real"),
                      checkpoint=checkpoint, label_field=label_field, report_path=report,
                      params=ScoreParams(percentile=percentile, seed=seed), progress=True)
    m = r.metrics
    t = Table(title=f"{dataset}: synthetic [{r.synthetic_view}] vs real [{r.real_view}] ({enc.kind} encoder)")
    t.add_column("metric")
    t.add_column("value", justify="right")
    kid = "n/a" if m.kid_mean is None else f"{m.kid_mean:.4g} ± {m.kid_std:.2g}"
    rows = [("FD", _fmt(m.fd)), ("KID", kid)]
    rows += [(n, _fmt(getattr(m, n), 3)) for n in ("precision", "recall", "density", "coverage", "cas", "trs")]
    copy = "n/a" if m.copy_rate is None else f"{m.copy_rate:.1%} ({len(r.memorised)} tagged memorised)"
    rows += [("copy rate", copy), ("n_real", str(r.n_real)), ("n_fake", str(r.n_fake)), ("n_heldout", str(r.n_heldout))]
    for row in rows:
        t.add_row(*row)
    console.print(t)
    g = Table(title="quality gates (alldata.score.Gates)")
    for col in ("gate", "value", "threshold", "verdict"):
        g.add_column(col)
    for gate in r.gates:
        g.add_row(*_gate_row(gate))
    console.print(g)
    for names, why in r.skipped.items():
        console.print(f"[yellow]skipped[/] {names}: {why}", highlight=False)
    measured = sum(x.passed is not None for x in r.gates)
    failed = ", ".join(x.name for x in r.failed())
    verdict = "[green]PASSED[/]" if r.passed else f"[red]FAILED[/] ({failed})"
    console.print(f"verdict: {verdict}, {measured} of {len(r.gates)} gates measured", highlight=False)
    console.print(f"report: {r.report_path}", highlight=False, soft_wrap=True)
    if checkpoint is not None:
        console.print(f"checkpoint score: {checkpoint / 'score.json'}", highlight=False, soft_wrap=True)
    if strict and not r.passed:
        raise typer.Exit(code=1)
