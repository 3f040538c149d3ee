"""Train generators on the store's real cells, and write their samples back with provenance.

``train_generator`` picks the training view (real cells of the chosen sources and split),
loads them with :func:`alldata.generators.data.load_cells` and calls the family's trainer.
``generate_to_dataset`` samples a checkpoint in seeded batches, writes PNGs and adds them
to the dataset tagged ``synthetic``; batch ``k`` always uses seed ``seed + k``, so an
interrupted run resumes by skipping the batches already stored, without duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alldata import __version__
from alldata.errors import AlldataError
from alldata.schema import CellType, Diagnosis, F, Provenance, Subtype

__all__ = ["PRESETS", "TRAINERS", "GeneratePlan", "finetune_generator", "generate_to_dataset", "plan_generation", "train_generator", "training_view"]

#: family -> "module:function" of its trainer (imported lazily: torch is heavy)
TRAINERS = {"diffusion": "alldata.generators.ddpm:train_diffusion", "gan": "alldata.generators.gan:train_gan"}
#: model sizes by family: "tiny" for tests, "cpu" for 32-64 px runs on a few cores, "gpu" for quality runs
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "diffusion": {
        "tiny": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
        "cpu": {"block_out_channels": [16, 32, 32, 64], "layers_per_block": 1, "norm_num_groups": 8},
        "gpu": {"block_out_channels": [64, 128, 128, 256], "layers_per_block": 2, "norm_num_groups": 32},
    },
    "gan": {
        "tiny": {"z_dim": 16, "ngf": 8, "ndf": 8, "cond_dim": 16},
        "cpu": {"z_dim": 64, "ngf": 32, "ndf": 32, "cond_dim": 64},
        "gpu": {"z_dim": 128, "ngf": 64, "ndf": 64, "cond_dim": 128},
    },
}
_ENUMS = {F.CELL_TYPE: CellType, F.DIAGNOSIS: Diagnosis, F.SUBTYPE: Subtype}


def training_view(dataset: str, *, sources: Sequence[str] | None = None, split: str | None = "train", where: dict[str, str] | None = None):
    """Real cell samples of ``dataset`` for training: optional sources, split and label filters.

    ``split="train"`` (the default) keeps validation and test groups out of generator
    training, so synthetic data can never carry a test image into a benchmark.
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    view = ds.match({F.IMAGE_KIND: "cell", F.IS_SYNTHETIC: {"$ne": True}})
    if sources:
        view = view.match({F.SOURCE: {"$in": list(sources)}})
    if split:
        if split not in {"train", "val", "test"}:
            raise AlldataError(f"split {split!r} is not train, val or test (or pass none for all samples)")
        view = view.match({F.SPLIT: split})
    for k, v in (where or {}).items():
        view = view.match({f"{k}.label": {"$in": v.split("|")}})
    if len(view) == 0:
        raise AlldataError(
            f"no real cell samples in {dataset!r} for sources={list(sources or [])} split={split} where={where}; "
            "ingest a cell source and run `alldata split` first"
        )
    return view


def train_generator(
    family: str,
    dataset: str,
    out_dir: str | Path,
    *,
    image_size: int = 64,
    sources: Sequence[str] | None = None,
    split: str | None = "train",
    where: dict[str, str] | None = None,
    label_fields: Sequence[str] = (F.CELL_TYPE,),
    max_samples: int | None = None,
    preset: str = "cpu",
    **train_kwargs: Any,
):
    """Train generator ``family`` on the real cells selected by the arguments; returns it.

    ``preset`` picks a model size from :data:`PRESETS`; ``train_kwargs`` go to the family's
    trainer (steps, batch_size, seed, ...) and override the preset's config keys.
    """
    import importlib

    from alldata.generators.data import load_cells

    if family not in TRAINERS:
        raise AlldataError(f"unknown trainable generator {family!r}; choose one of {sorted(TRAINERS)} (overlap needs no training)")
    if preset not in PRESETS[family]:
        raise AlldataError(f"unknown preset {preset!r} for {family}; choose one of {sorted(PRESETS[family])}")
    view = training_view(dataset, sources=sources, split=split, where=where)
    cells = load_cells(view, image_size, label_fields=label_fields, max_samples=max_samples)
    module, fn = TRAINERS[family].split(":")
    return getattr(importlib.import_module(module), fn)(cells, out_dir, **{**PRESETS[family][preset], **train_kwargs})


def finetune_generator(
    checkpoint: str | Path,
    dataset: str,
    out_dir: str | Path,
    *,
    add: dict[str, str],
    where: dict[str, str],
    sources: Sequence[str] | None = None,
    split: str | None = "train",
    steps: int = 200,
    **finetune_kwargs: Any,
):
    """Few-shot: grow a trained generator's vocabulary by ``add`` and fine-tune it on the few
    real cells selected by ``where`` (e.g. a handful of FAB L3 blasts); saved to ``out_dir``.

    This is how a rare class the base model never saw (``subtype=L3``) becomes sampleable:
    the new condition row starts at the mean of the known ones and is fitted on the examples.
    """
    from alldata.generators.base import Generator
    from alldata.generators.data import load_cells

    if not add or not where:
        raise AlldataError("give the new condition value(s) to add (e.g. subtype=L3) and a --where filter selecting their examples")
    gen = Generator.from_pretrained(checkpoint)
    known = gen.config.get("conditions", {})
    for field_, value in add.items():
        if value not in known.get(field_, []):
            gen.add_condition_value(field_, value)
    view = training_view(dataset, sources=sources, split=split, where=where)
    cells = load_cells(view, int(gen.config["image_size"]), label_fields=list(gen.config["conditions"]))
    if gen.family == "diffusion":
        from alldata.generators.ddpm import finetune_diffusion

        return finetune_diffusion(gen, cells, out_dir, steps=steps, **finetune_kwargs)
    if gen.family == "gan":
        from alldata.generators.gan import finetune_gan

        return finetune_gan(gen, cells, out_dir, steps, base_dir=checkpoint, **finetune_kwargs)
    raise AlldataError(f"generator family {gen.family!r} cannot be fine-tuned (only diffusion and gan)")


def _slug(condition: dict[str, Any]) -> str:
    return ",".join(f"{k}={condition[k]}" for k in sorted(condition)) or "unconditional"


@dataclass
class GeneratePlan:
    """What ``generate`` will make: batches (seed, size) and which are already stored."""

    checkpoint_sha256: str
    family: str
    condition: dict[str, Any]
    batches: list[tuple[int, int]]  # (seed, size)
    done: set[int] = field(default_factory=set)  # batch indices already in the dataset

    @property
    def to_make(self) -> int:
        return sum(n for i, (_, n) in enumerate(self.batches) if i not in self.done)

    def source_id(self, batch: int, index: int) -> str:
        cond = hashlib.sha256(_slug(self.condition).encode()).hexdigest()[:8]
        return f"{self.checkpoint_sha256[:12]}-{cond}-s{self.batches[batch][0]}-{index:04d}"


def plan_generation(checkpoint: str | Path, condition: dict[str, Any], num_samples: int, dataset: str, *, seed: int = 0, batch_size: int = 64) -> GeneratePlan:
    """Work out batches and which of them a previous (possibly interrupted) run already stored."""
    from alldata.generators.base import CONFIG_NAME, checkpoint_sha256
    from alldata.synthetic import existing_keys, synthetic_source

    if num_samples <= 0 or batch_size <= 0:
        raise AlldataError(f"num_samples={num_samples} and batch_size={batch_size} must be positive")
    sha = checkpoint_sha256(checkpoint)
    family = json.loads((Path(checkpoint) / CONFIG_NAME).read_text()).get("family", "?")
    sizes = [min(batch_size, num_samples - i) for i in range(0, num_samples, batch_size)]
    plan = GeneratePlan(sha, family, condition, [(seed + k, n) for k, n in enumerate(sizes)])
    have = existing_keys(dataset, synthetic_source(family))
    src = synthetic_source(family)
    plan.done = {k for k, (_, n) in enumerate(plan.batches) if all(f"{src}/{plan.source_id(k, i)}" in have for i in range(n))}
    return plan


def generate_to_dataset(
    checkpoint: str | Path,
    condition: dict[str, Any],
    num_samples: int,
    dataset: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    **sample_kwargs: Any,
) -> tuple[GeneratePlan, int]:
    """Sample ``num_samples`` images for ``condition`` and add them to ``dataset`` with provenance.

    Returns the plan and the number of samples added. ``sample_kwargs`` go to the
    generator's ``sample`` (e.g. ``sampler="dpm++"``, ``num_inference_steps=20``).
    """
    from PIL import Image
    from tqdm import tqdm

    from alldata.generators.base import Generator
    from alldata.synthetic import add_synthetic, make_synthetic_sample

    plan = plan_generation(checkpoint, condition, num_samples, dataset, seed=seed, batch_size=batch_size)
    gen = Generator.from_pretrained(checkpoint)
    gen.check_condition(condition)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = {k: _ENUMS[k](v) for k, v in condition.items() if k in _ENUMS}
    added = 0
    bar = tqdm(total=plan.to_make, desc=f"generate {plan.family}", unit="img", disable=not progress)
    for k, (batch_seed, n) in enumerate(plan.batches):
        if k in plan.done:
            continue
        images = gen.sample(n, condition, batch_seed, **sample_kwargs)
        samples = []
        for i, img in enumerate(images):
            sid = plan.source_id(k, i)
            path = out / f"{sid}.png"
            Image.fromarray(img).save(path)
            prov = Provenance(
                generator=plan.family,
                checkpoint_sha256=plan.checkpoint_sha256,
                seed=batch_seed,
                condition=dict(condition, batch_index=i),
                sampler=sample_kwargs.get("sampler"),
                num_inference_steps=sample_kwargs.get("num_inference_steps"),
                alldata_version=__version__,
            )
            samples.append(make_synthetic_sample(path, family=plan.family, source_id=sid, provenance=prov, **labels))
        added += add_synthetic(dataset, samples)
        bar.update(n)
    bar.close()
    return plan, added
