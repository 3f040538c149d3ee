"""``alldata train-generator`` and ``alldata generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()


def _where(items: list[str] | None) -> dict[str, str]:
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
) -> None:
    """Train a generator on real cells of the train split (resumable; grids under OUT/samples)."""
    from alldata.generate import train_generator as run

    run(
        family, dataset, out, image_size=image_size, sources=source, split=None if split == "all" else split,
        where=_where(where), label_fields=label_field or ["cell_type"], max_samples=max_samples, preset=preset,
        steps=steps, batch_size=batch_size, seed=seed, sample_every=sample_every, save_every=save_every,
    )
    console.print(f"checkpoint: {out}  (config.json + model.safetensors; sample grids in {out / 'samples'})")


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

    added = _where(add)
    run(checkpoint, dataset, out, add=added, where=_where(where), sources=source,
        split=None if split == "all" else split, steps=steps, seed=seed)
    cond = ",".join(f"{k}={v}" for k, v in added.items())
    console.print(f"fine-tuned checkpoint: {out}  (sample it with --checkpoint {out} --condition {cond})")


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, make nothing")] = False,
) -> None:
    """Sample a checkpoint into the dataset, tagged `synthetic` with full provenance (resumable)."""
    from alldata.generate import generate_to_dataset, plan_generation
    from alldata.generators.base import GENERATORS, parse_condition

    cond = parse_condition(condition)
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
    plan, added = generate_to_dataset(
        checkpoint, cond, num_samples, dataset, out or checkpoint / "generated", seed=seed, batch_size=batch_size, **kwargs
    )
    console.print(f"added {added} synthetic samples to {dataset!r} ({num_samples - plan.to_make} were already there)")
