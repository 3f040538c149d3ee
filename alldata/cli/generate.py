"""``alldata generate``: sample a checkpoint into the dataset (resumable, with provenance).

This module also hands ``train-generator`` and ``finetune-generator`` (their own modules) to
the command list, in the ``--help`` order, ahead of ``generate``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app"]

app = typer.Typer()


@app.command()
@handle_errors
def generate(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint folder from train-generator")],
    condition: Annotated[str, typer.Option(help='e.g. "cell_type=lymphoblast" or "subtype=L3,nc_ratio=0.8"')] = "",
    num_samples: Annotated[int, typer.Option()] = 64,
    dataset: Annotated[str, typer.Option("--dataset", "-d")] = "alldata",
    out: Annotated[Path | None, typer.Option(help="image folder (default CHECKPOINT/generated)")] = None,
    seed: Annotated[int, typer.Option(help="batch k uses seed+k")] = 0,
    batch_size: Annotated[int, typer.Option()] = 64,
    sampler: Annotated[str, typer.Option(help="ddim | dpm++ | ddpm (families that take it: diffusion)")] = "ddim",
    steps: Annotated[int, typer.Option("--steps", help="sampler steps (families that take it: diffusion)")] = 20,
    guidance_scale: Annotated[float, typer.Option(help="classifier-free guidance (diffusion)")] = 2.0,
    devices: Annotated[int, typer.Option(help="sample in N worker processes: one GPU each, or CPU shares "
                                               "(same images whatever N)")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu | cuda (default: cuda when available)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, make nothing")] = False,
) -> None:
    """Sample a checkpoint into the dataset, tagged `synthetic` with full provenance (resumable)."""
    from alldata.generate import FailedScoreWarning, generate_to_dataset, plan_generation, score_warning
    from alldata.generators.base import GENERATORS, parse_condition

    cond = parse_condition(condition)
    if (msg := score_warning(checkpoint)) is not None:
        err_console.print(f"[bold yellow]warning:[/] {msg}", highlight=False, markup=True, soft_wrap=True)
    if dry_run:
        plan = plan_generation(checkpoint, cond, num_samples, dataset, seed=seed, batch_size=batch_size)
        console.print(
            f"would make {plan.to_make} of {num_samples} {plan.family} samples for {cond or 'no condition'} "
            f"in {len(plan.batches) - len(plan.done)} batches (seeds {seed}..{seed + len(plan.batches) - 1}); "
            f"{num_samples - plan.to_make} already in {dataset!r}; checkpoint {plan.checkpoint_sha256[:12]}"
        )
        return
    options = {"sampler": sampler, "num_inference_steps": steps, "guidance_scale": guidance_scale}
    plan = plan_generation(checkpoint, cond, num_samples, dataset, seed=seed, batch_size=batch_size)
    kwargs = GENERATORS.get(plan.family).sample_options(options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FailedScoreWarning)  # printed above
        plan, added = generate_to_dataset(
            checkpoint, cond, num_samples, dataset, out or checkpoint / "generated", seed=seed, batch_size=batch_size,
            devices=devices, device=device, **kwargs,
        )
    if int(os.environ.get("RANK", "0")) != 0:  # accelerate launch: the main process wrote and reports
        return
    console.print(f"added {added} synthetic samples to {dataset!r} ({num_samples - plan.to_make} were already there)")

