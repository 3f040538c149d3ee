"""``alldata compose-overlaps``: real (and optionally generated) cells pasted onto real smears
with controlled overlap."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()

__all__ = ["app", "parse_range"]


def parse_range(text: str, option: str, *, integer: bool = False, low: float = 0.0, high: float = 1.0) -> tuple:
    """``"0.1-0.5"`` -> ``(0.1, 0.5)``; one value ``"0.3"`` -> ``(0.3, 0.3)``.

    Raises:
        GeneratorError: naming the option and value, the allowed form and how to fix it.
    """
    from alldata.generators.base import GeneratorError

    kind = "integers" if integer else "numbers"
    example = "2-4" if integer else "0.1-0.5"
    bounds = f"{low:g} <= LO <= HI" + ("" if math.isinf(high) else f" <= {high:g}")
    form = f"expected LO-HI, two {kind} with {bounds} (or one value for a fixed setting)"
    fix = f"Fix: e.g. {option} {example}."
    parts = [p.strip() for p in text.strip().split("-")]
    try:
        if len(parts) not in (1, 2) or not all(parts):
            raise ValueError
        values = tuple(int(p) if integer else float(p) for p in parts)
    except ValueError:
        raise GeneratorError(f"{option} {text!r} is not a range: {form}. {fix}") from None
    lo, hi = values if len(values) == 2 else values * 2
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise GeneratorError(f"{option} {text!r} is not a range: {form}. {fix}")
    if lo > hi:
        raise GeneratorError(
            f"{option} {text!r}: LO ({lo:g}) is greater than HI ({hi:g}); {form}. Fix: swap them, {option} {hi:g}-{lo:g}."
        )
    if lo < low or hi > high:
        raise GeneratorError(f"{option} {text!r} is out of bounds: {form}. {fix}")
    return lo, hi


@app.command("compose-overlaps")
@handle_errors
def compose_overlaps(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="FiftyOne dataset: donors and backgrounds come from it, composites go into it")] = "alldata",
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", min=1, help="composites wanted (indices 0..N-1 of the seed)")] = 100,
    overlap: Annotated[str, typer.Option(help="overlap of each placed pair, LO-HI: intersection / smaller cell's area")] = "0.1-0.5",
    output_size: Annotated[int, typer.Option(min=32, help="side of the square output images, pixels")] = 256,
    cells_per_image: Annotated[str, typer.Option(help="cells pasted per image, LO-HI")] = "2-4",
    scale: Annotated[str, typer.Option(help="per-cell scale jitter, LO-HI")] = "0.9-1.1",
    stain_jitter: Annotated[float, typer.Option(min=0.0, max=1.0, help="HED-like stain jitter strength (0: off)")] = 0.05,
    feather: Annotated[float, typer.Option(min=0.0, max=32.0, help="edge blend width, pixels")] = 2.0,
    seed: Annotated[int, typer.Option(min=0, help="composite i is drawn from (seed, i) alone")] = 0,
    out: Annotated[Path | None, typer.Option(help="folder for the PNGs and the composer config (default: under ALLDATA_HOME)")] = None,
    donor_source: Annotated[
        list[str] | None, typer.Option("--donor-source", help="donor cell source, repeatable (default: all_idb2, taleqani)")
    ] = None,
    donors_view: Annotated[str | None, typer.Option("--donors-view", help="a saved view of the dataset to take donors from")] = None,
    background_source: Annotated[
        list[str] | None, typer.Option("--background-source", help="smear background source, repeatable (default: bccd, all_idb1)")
    ] = None,
    synthetic_donors: Annotated[
        str | None,
        typer.Option(
            "--synthetic-donors",
            help="also paste generated cells: 'all', a generator ('gan', 'diffusion') or a saved view ('view=NAME')",
        ),
    ] = None,
    synthetic_segmenter: Annotated[
        str, typer.Option("--synthetic-segmenter", help="reference segmenter that masks the generated cells")
    ] = "otsu_hsv",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be made; write nothing")] = False,
) -> None:
    """Compose overlapping real cells onto real smear crops, with exact instance masks.

    With --synthetic-donors, generated cells are donors too (masked by a reference segmenter).

    Re-running with the same arguments adds nothing; an interrupted run resumes.
    """
    from alldata.compose import plan_compose, run_compose
    from alldata.config import home
    from alldata.generators.overlap import DEFAULT_BACKGROUND_SOURCES, DEFAULT_DONOR_SOURCES

    config = {
        "overlap_range": list(parse_range(overlap, "--overlap")),
        "cells_per_image": list(parse_range(cells_per_image, "--cells-per-image", integer=True, low=1, high=math.inf)),
        "scale_range": list(parse_range(scale, "--scale", low=0.05, high=20.0)),
        "output_size": output_size,
        "stain_jitter": stain_jitter,
        "feather": feather,
    }
    if donor_source:
        donors = list(donor_source)
    else:
        donors = None if donors_view else list(DEFAULT_DONOR_SOURCES)
    backgrounds = list(background_source) if background_source else list(DEFAULT_BACKGROUND_SOURCES)
    out_dir = out if out is not None else home() / "synthetic" / dataset / "overlap"
    kw = {"donor_sources": donors, "background_sources": backgrounds, "donors_view": donors_view,
          "synthetic_donors": synthetic_donors, "synthetic_segmenter": synthetic_segmenter, **config}
    if dry_run:
        plan = plan_compose(dataset, num_samples, out_dir, seed, **kw)
        by = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())
        console.print(f"[bold]dry run[/]: nothing written. Would compose into dataset {dataset!r}:", highlight=False)
        console.print(f"  {plan.to_make} new composites (of {plan.requested}; {plan.existing} already there), seed {seed}")
        console.print(f"  donors: {by(plan.donors)} (candidates; unusable masks are rejected when drawn)")
        console.print(f"  backgrounds: {by(plan.backgrounds)}")
        if synthetic_donors is not None:
            _print_generated(synthetic_donors, synthetic_segmenter, plan.synthetic_donors, plan.synthetic_rejected)
        lo, hi = config["overlap_range"]
        clo, chi = config["cells_per_image"]
        console.print(f"  {output_size}x{output_size} px, {clo}-{chi} cells per image, overlap {lo:g}-{hi:g}", highlight=False)
        if plan.first_file:
            console.print(f"  files: {plan.first_file} ... (PNG) and the composer config in {out_dir}", highlight=False)
        return
    r = run_compose(dataset, num_samples, out_dir, seed, **kw)
    console.print(
        f"overlap: {r.added} added, {r.skipped_existing} skipped (already in {dataset!r}); files in {r.out_dir}",
        highlight=False,
    )
    if r.controlled_overlaps:
        lo, hi = config["overlap_range"]
        console.print(
            f"  mean achieved overlap {r.mean_overlap:.3f} over {len(r.controlled_overlaps)} placed pairs "
            f"({r.in_range} within {lo:g}-{hi:g})",
            highlight=False,
        )
    elif r.added:
        console.print("  no overlapping pairs placed (one cell per image)")
    if r.dropped_cells:
        console.print(f"  [yellow]{r.dropped_cells} cells could not be placed[/] (no room at the wanted overlap)")
    if r.unclean_backgrounds:
        console.print(
            f"  [yellow]{r.unclean_backgrounds} backgrounds[/] could not avoid an annotated WBC (unlabelled in the image)"
        )
    if r.unannotated_backgrounds:
        console.print(
            f"  [yellow]{r.unannotated_backgrounds} backgrounds[/] come from smears without WBC annotations "
            "(no annotated smear had a WBC-free crop); unlabelled WBCs may show"
        )
    if synthetic_donors is not None:
        _print_generated(synthetic_donors, synthetic_segmenter, r.synthetic_donors, r.synthetic_rejected_by_reason)
        console.print(f"  {r.pasted_synthetic} of {r.pasted_cells} pasted cells generated (this run)", highlight=False)
    real_rejected = {k: v for k, v in r.rejected_donors.items() if k not in r.synthetic_rejected}
    if real_rejected:
        key, why = next(iter(real_rejected.items()))
        console.print(f"  {len(real_rejected)} donors rejected, e.g. {key}: {why}", highlight=False)
    console.print(f"  composer checkpoint sha256 {r.checkpoint_sha256[:16]}...", highlight=False)


def _print_generated(selector: str, segmenter: str, usable: int, rejected: dict[str, int]) -> None:
    why = ", ".join(f"{k} {n}" for k, n in rejected.items())
    console.print(
        f"  generated donors ({selector}, segmenter {segmenter}): {usable} usable, "
        f"{sum(rejected.values())} rejected" + (f" ({why})" if why else ""),
        highlight=False,
    )
