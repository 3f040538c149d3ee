"""Class- and attribute-conditional diffusion generator (diffusers ``UNet2DModel``).

Label fields (``cell_type``, ``subtype``, ...) and the morphology attributes (``area``,
``nc_ratio``) are embedded by a :class:`~alldata.generators._torch.ConditionEmbedder` whose output is added to the
UNet's timestep embedding (``class_embed_type="identity"``). Every condition is dropped at
random while training, so sampling uses classifier-free guidance and any condition left out
of a request is "unknown". Rare classes (L3) are added later with
:meth:`Diffusion.add_condition_value` and :meth:`Diffusion.finetune` on a handful of images.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from alldata.generators._torch import (
    STATE_DIR,
    ConditionEmbedder,
    autocast,
    dihedral,
    ema_decay,
    ema_update,
    encode_values,
    load_train_state,
    save_grid,
    save_train_state,
    seeded,
    select_device,
)
from alldata.generators.base import ARM_PARAMS, CONTINUOUS, GENERATORS, Generator, GeneratorError
from alldata.generators.data import CellSet
from torch import nn

__all__ = ["DEFAULTS", "Diffusion", "make_scheduler", "make_unet", "sample_loop"]

DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "block_out_channels": [64, 128, 128, 256],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "attention_levels": None,  # None: the lowest-resolution level only
    "conditions": {},
    "continuous": [],
    "cond_drop_prob": 0.1,
    "num_train_timesteps": 1000,
    "beta_schedule": "squaredcos_cap_v2",
    "prediction_type": "v_prediction",
    "ema_decay": 0.999,
    "seed": 0,
}
SAMPLERS = ("dpm++", "ddim", "ddpm")
PREDICTION_TYPES = ("v_prediction", "epsilon")


def make_unet(cfg: dict[str, Any]) -> nn.Module:
    """The UNet a config describes (attention on ``attention_levels`` and in the middle block)."""
    from diffusers import UNet2DModel

    levels = range(len(cfg["block_out_channels"]))
    att = set(cfg["attention_levels"])
    return UNet2DModel(
        sample_size=cfg["image_size"],
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(cfg["block_out_channels"]),
        layers_per_block=cfg["layers_per_block"],
        norm_num_groups=cfg["norm_num_groups"],
        down_block_types=tuple("AttnDownBlock2D" if i in att else "DownBlock2D" for i in levels),
        up_block_types=tuple("AttnUpBlock2D" if i in att else "UpBlock2D" for i in reversed(levels)),
        class_embed_type="identity",
    )


#: DPM-Solver++ settings for an *epsilon* checkpoint in [-1, 1]. Under the cosine schedule
#: alpha_bar(999) is ~2.4e-9, so an epsilon error e becomes an x0 error of e * 2e4 at the first
#: step, and the unclipped solver carries it to saturated (0/255) pixels. ``lambda_min_clipped``
#: (diffusers: "critical for the cosine noise schedule") starts at log-SNR -10.2 (x0 error
#: e * 164) and Imagen's dynamic thresholding rescales each predicted x0 by its 99.5th
#: percentile |value| when that is above 1 (uncapped, as in Imagen; predictions already in
#: [-1, 1] pass unchanged). Plain clipping (``sample_max_value=1``) is not enough: it left
#: 21 % of the pixels at 0/255 on a 350-step model where this leaves 0.5 % (bench/RESULTS.md (b)).
DPM_SOLVER_KWARGS: dict[str, Any] = {
    "algorithm_type": "dpmsolver++",
    "solver_order": 2,
    "lambda_min_clipped": -5.1,
    "thresholding": True,
    "dynamic_thresholding_ratio": 0.995,
    "sample_max_value": float("inf"),
}
#: ... and for a v-prediction checkpoint (the default): x0 stays bounded at every t, so no
#: clipping of lambda or thresholding; the thresholding darkened v samples by ~8 levels.
DPM_SOLVER_V_KWARGS: dict[str, Any] = {"algorithm_type": "dpmsolver++", "solver_order": 2}


def make_scheduler(sampler: str, cfg: dict[str, Any]) -> Any:
    """A fresh diffusers scheduler for ``sampler`` ("dpm++", "ddim" or "ddpm").

    All three keep predicted x0 inside the data range: DDIM and DDPM clip it to [-1, 1]
    (diffusers' ``clip_sample``), DPM-Solver++ uses :data:`DPM_SOLVER_KWARGS` for epsilon and
    :data:`DPM_SOLVER_V_KWARGS` for v-prediction checkpoints.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = {"num_train_timesteps": cfg["num_train_timesteps"], "beta_schedule": cfg["beta_schedule"],
              "prediction_type": cfg.get("prediction_type", "epsilon")}
    if sampler == "dpm++":
        kwargs = DPM_SOLVER_KWARGS if common["prediction_type"] == "epsilon" else DPM_SOLVER_V_KWARGS
        return DPMSolverMultistepScheduler(**common, **kwargs)
    if sampler == "ddim":
        return DDIMScheduler(**common, timestep_spacing="trailing")
    if sampler == "ddpm":
        return DDPMScheduler(**common, timestep_spacing="trailing")
    raise GeneratorError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")


@torch.no_grad()
def sample_loop(unet: nn.Module, scheduler: Any, noise: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None = None, *, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                guidance_rescale: float = 0.0, generator: torch.Generator | list[torch.Generator] | None = None,
                progress: bool = False) -> torch.Tensor:
    """The bare denoising loop: noise ``(B,3,H,W)`` -> images in [-1, 1] (what benchmarks time).

    ``cond``/``uncond`` are ``(B, D)`` condition embeddings; with ``uncond`` the model output
    (epsilon or v, whichever the scheduler's ``prediction_type`` says) is guided:
    ``out_u + guidance_scale * (out_c - out_u)``, then with ``guidance_rescale`` = phi its
    per-image std is pulled back towards the conditional output's (Lin et al. 2024, eq. 15-16),
    which keeps strong guidance from shifting colours.
    """
    from tqdm import tqdm

    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    labels = cond if uncond is None else torch.cat([cond, uncond])
    for t in tqdm(scheduler.timesteps, desc="sample", disable=not progress, leave=False):
        inp = scheduler.scale_model_input(x, t)
        with autocast(noise.device):
            eps = unet(inp if uncond is None else torch.cat([inp, inp]), t, class_labels=labels).sample.float()
        if uncond is not None:
            eps_c, eps_u = eps.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
            if guidance_rescale:
                dims = tuple(range(1, eps.ndim))
                fixed = eps * (eps_c.std(dims, keepdim=True) / eps.std(dims, keepdim=True).clamp_min(1e-8))
                eps = guidance_rescale * fixed + (1 - guidance_rescale) * eps
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


def _sample_seed(seed: int, index: int) -> int:
    """A per-image seed from (seed, image index): results do not depend on the batch size."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@GENERATORS.register("diffusion")
class Diffusion(Generator):
    """A conditional DDPM: ``unet`` and ``conditioner`` hold the EMA weights."""

    family = "diffusion"
    DEFAULTS = DEFAULTS
    PRESETS = {
        "tiny": {"block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4},
        "cpu": {"block_out_channels": [16, 32, 32, 64], "layers_per_block": 1, "norm_num_groups": 8},
        "gpu": {"block_out_channels": [64, 128, 128, 256], "layers_per_block": 2, "norm_num_groups": 32},
    }
    ARM_PARAMS = {**ARM_PARAMS, "image_size": 32, "num_inference_steps": 20, "sampler": "ddim",
                  "finetune_train": "conditioner"}

    def __init__(self, config: dict[str, Any], unet: nn.Module, conditioner: ConditionEmbedder, device: str) -> None:
        super().__init__(config)
        self.unet, self.conditioner, self.device = unet, conditioner, device

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in and checked; raises GeneratorError on a bad config."""
        if "prediction_type" not in config and set(DEFAULTS) - {"prediction_type"} <= set(config):
            config = {**config, "prediction_type": "epsilon"}  # a checkpoint saved before v-prediction
        cfg = super().check_config(config)
        if cfg["prediction_type"] not in PREDICTION_TYPES:
            raise GeneratorError(f"prediction_type={cfg['prediction_type']!r}; choose one of {list(PREDICTION_TYPES)}")
        chans = cfg["block_out_channels"] = [int(c) for c in cfg["block_out_channels"]]
        if cfg["attention_levels"] is None:
            cfg["attention_levels"] = [len(chans) - 1]
        if any(c % cfg["norm_num_groups"] for c in chans):
            raise GeneratorError(f"norm_num_groups={cfg['norm_num_groups']} must divide every channel count {chans}")
        if cfg["image_size"] % 2 ** (len(chans) - 1):
            raise GeneratorError(f"image_size={cfg['image_size']} must be divisible by 2**{len(chans) - 1}")
        if not 0.0 <= cfg["cond_drop_prob"] < 1.0:
            raise GeneratorError(f"cond_drop_prob must be in [0, 1), got {cfg['cond_drop_prob']}")
        return cfg

    @classmethod
    def arm_kwargs(cls, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """Fine-tune ``train=finetune_train``; sample with ``sampler`` and ``num_inference_steps``."""
        sample = {"num_inference_steps": int(settings["num_inference_steps"]), "sampler": settings["sampler"]}
        return {}, {"train": settings["finetune_train"]}, sample

    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> Diffusion:
        cfg = cls.check_config(config)
        device = select_device(device)
        with seeded(cfg["seed"]):
            unet = make_unet(cfg)
            cond = ConditionEmbedder(cfg["conditions"], cfg["continuous"], cfg["block_out_channels"][0] * 4)
        return cls(cfg, unet.to(device).eval(), cond.to(device).eval(), device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**{f"unet.{k}": v for k, v in self.unet.state_dict().items()},
                **{f"conditioner.{k}": v for k, v in self.conditioner.state_dict().items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parts: dict[str, dict[str, Any]] = {"unet": {}, "conditioner": {}}
        for k, v in state.items():
            head, _, rest = k.partition(".")
            if head not in parts:
                raise GeneratorError(f"unexpected weight {k!r} in a diffusion checkpoint")
            parts[head][rest] = v
        for name, sd in parts.items():
            try:
                getattr(self, name).load_state_dict(sd, strict=True)
            except RuntimeError as e:
                raise GeneratorError(f"the {name} weights do not match this config: {e}") from None

    def embed(self, condition: dict[str, Any], n: int = 1) -> torch.Tensor:
        """``(n, D)`` condition embedding; fields not in ``condition`` are null."""
        rows = [vocab.index(condition[f]) + 1 if f in condition else 0 for f, vocab in self.config["conditions"].items()]
        labels = torch.tensor([rows], dtype=torch.long, device=self.device).expand(n, -1)
        values = encode_values(self.config["continuous"], condition, n).to(self.device)
        with torch.no_grad():
            return self.conditioner(labels, values)

    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, *, sampler: str = "ddim",
               num_inference_steps: int = 20, guidance_scale: float = 2.0, guidance_rescale: float = 0.0,
               batch_size: int = 64,
               progress: bool = False) -> np.ndarray:
        """``num_samples`` uint8 ``(N, H, W, 3)`` images; each image's noise comes from (seed, index)."""
        self.check_condition(condition)
        if sampler not in SAMPLERS:
            raise GeneratorError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        s = self.config["image_size"]
        cond = self.embed(condition)
        uncond = self.embed({}) if condition and guidance_scale != 1.0 else None
        out = [np.zeros((0, s, s, 3), np.uint8)]
        for start in range(0, num_samples, batch_size):
            n = min(batch_size, num_samples - start)
            gens = [torch.Generator().manual_seed(_sample_seed(seed, start + i)) for i in range(n)]
            noise = torch.cat([torch.randn((1, 3, s, s), generator=g) for g in gens]).to(self.device)
            x = sample_loop(self.unet, make_scheduler(sampler, self.config), noise, cond.expand(n, -1),
                            None if uncond is None else uncond.expand(n, -1), num_inference_steps=num_inference_steps,
                            guidance_scale=guidance_scale, guidance_rescale=guidance_rescale, generator=gens,
                            progress=progress)
            out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def add_condition_value(self, field: str, value: str) -> int:
        """Grow ``field``'s vocabulary by ``value`` (a new field if missing); returns its row, idempotent.

        The new row starts at the mean of the field's value rows (see
        :meth:`~alldata.generators._torch.ConditionEmbedder.add_value`; zeros for a new field,
        which leaves the model's output unchanged).
        """
        if not field or "." in field or field in CONTINUOUS:
            raise GeneratorError(f"{field!r} is not a label field; only label fields (e.g. subtype) take new values")
        vocab = self.config["conditions"].setdefault(field, [])
        if value in vocab:
            return vocab.index(value) + 1
        self.conditioner.add_value(field)
        self.config["conditions"] = dict(sorted(self.config["conditions"].items()))
        vocab.append(value)
        return len(vocab)

    @classmethod
    def train(cls, cells: CellSet, out_dir: str | Path, *, steps: int = 10_000, batch_size: int = 64,
              lr: float = 2e-4, seed: int = 0, resume: bool = True, sample_every: int = 1000,
              save_every: int = 1000, progress: bool = True, device: str | None = None, grid_cols: int = 8,
              **config: Any) -> Diffusion:
        """Train a conditional diffusion model on ``cells`` into ``out_dir``; returns the EMA model.

        ``config`` overrides :data:`DEFAULTS` (``conditions`` defaults to ``cells.vocabulary()``,
        ``continuous`` to the morphology attributes with any known value). With ``resume`` a run
        continues from ``out_dir/train_state`` (its saved config wins). Writes sample grids to
        ``out_dir/samples/`` every ``sample_every`` steps and a checkpoint every ``save_every``.
        Runs through accelerate: ``accelerate launch`` trains on every GPU it starts, with
        ``batch_size`` images per process (see :func:`_fit`).
        """
        state = Path(out_dir) / STATE_DIR / "state.json"
        if resume and state.is_file():
            cfg = json.loads(state.read_text())["config"]
        else:
            cfg = {
                "image_size": int(cells.images.shape[1]),
                "conditions": cells.vocabulary(),
                "continuous": [c for c in CONTINUOUS if np.isfinite(np.asarray(getattr(cells, c), float)).any()],
                **config,
                "seed": seed,
            }
        from alldata.generators._accel import process_device

        gen = cls.build(cfg, device=process_device(device))  # a launched process's own GPU
        return _fit(gen, cells, out_dir, steps=steps, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                    sample_every=sample_every, save_every=save_every, progress=progress, train="all", mode="train",
                    grid_cols=grid_cols)

    def finetune(self, cells: CellSet, out_dir: str | Path, *, steps: int = 200, base_dir: str | Path | None = None,
                 lr: float = 1e-4, train: str = "conditioner", batch_size: int = 8, seed: int = 0, resume: bool = True,
                 sample_every: int = 0, save_every: int = 100, progress: bool = True,
                 grid_field: str | None = None) -> Diffusion:
        """Few-shot fine-tuning (in place) on a handful of ``cells``, saved to ``out_dir``.

        Add the new label first with :meth:`add_condition_value`. ``train="conditioner"``
        updates only the condition embeddings (no condition dropout, so the null rows and the
        unconditional model stay as they were); ``train="all"`` updates the whole model.
        ``base_dir`` (the base checkpoint) is not needed: the EMA weights are the whole model.
        """
        if train not in ("conditioner", "all"):
            raise GeneratorError(f"train must be 'conditioner' or 'all', got {train!r}")
        for f, vals in cells.labels.items():
            new = sorted({v for v in vals if v and v not in self.config["conditions"].get(f, [])})
            if new:
                raise GeneratorError(f"{f} values {new} are unknown to the model; call add_condition_value({f!r}, ...) first")
        return _fit(self, cells, out_dir, steps=steps, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                    sample_every=sample_every, save_every=save_every, progress=progress, train=train,
                    mode=f"finetune-{train}", grid_field=grid_field)


# --- training --------------------------------------------------------------------------------


def _write_grid(gen: Diffusion, path: Path, cols: int, field: str | None) -> None:
    """One row of ``cols`` samples per value of ``field`` (one unconditional row without fields)."""
    fields = gen.config["conditions"]
    field = field or next(iter(fields), None)
    conds = [{field: v} for v in fields.get(field, [])] or [{}]
    save_grid([gen.sample(cols, c, seed=0) for c in conds], path)


class _Denoiser(nn.Module):
    """The UNet and its conditioner as one module (what accelerate prepares, e.g. wraps in DDP):
    ``(x_t, t, labels, values) -> model output`` (epsilon or v)."""

    def __init__(self, unet: nn.Module, conditioner: ConditionEmbedder) -> None:
        super().__init__()
        self.unet, self.conditioner = unet, conditioner

    def forward(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=self.conditioner(labels, values)).sample


def _to(gen: Diffusion, device: str) -> None:
    """Move ``gen``'s modules to ``device`` (a launched process's own GPU), in place."""
    gen.unet.to(device)
    gen.conditioner.to(device)
    gen.device = device


def _fit(gen: Diffusion, cells: CellSet, out_dir: str | Path, *, steps: int, batch_size: int, lr: float, seed: int,
         resume: bool, sample_every: int, save_every: int, progress: bool, train: str, mode: str,
         grid_cols: int = 8, grid_field: str | None = None, fused: bool | None = None,
         log_every: int = 50, mixed_precision: str | None = None) -> Diffusion:
    """The training loop shared by :meth:`Diffusion.train` and :meth:`Diffusion.finetune`, run
    through Hugging Face accelerate (:mod:`~alldata.generators._accel`).

    One process trains on ``gen.device``; under ``accelerate launch`` (or ``torchrun``)
    every process trains on its own device with its own batches of ``batch_size`` (the
    effective batch is ``batch_size`` times the number of processes) and DDP averages the
    gradients. Mixed precision: bf16 on CUDA, fp32 on the CPU (``mixed_precision``
    overrides). Only the main process updates the EMA (``gen``), writes grids and saves; at
    the end every process gets its EMA weights.

    Everything a step needs lives on the device: the uint8 training images (moved once),
    their labels, and one ``torch.Generator`` per process that draws the batch indices, the
    dihedral augmentation, the noise, the timesteps and the condition dropout, in that order
    (every process's stream is saved with the state, so a resumed run continues them; one
    seed gives one run per device type and number of processes). Losses stay on the device
    and are averaged and read back every ``log_every`` steps and at each save, so a GPU step
    never waits for the host; ``losses`` in the state still holds one value per step.
    ``fused`` AdamW (default: on CUDA) is the same update rule in one kernel.
    """
    from alldata.generators import _accel
    from tqdm import tqdm

    cfg, out = gen.config, Path(out_dir)
    if len(cells) == 0:
        raise GeneratorError("no training images")
    if cells.images.shape[1:] != (cfg["image_size"], cfg["image_size"], 3):
        raise GeneratorError(f"images are {cells.images.shape[1:]}, the model wants {cfg['image_size']}px RGB")
    acc, device = _accel.make_accelerator(gen.device, mixed_precision)
    if device != gen.device:
        _to(gen, device)
    dev, rank, world, main = torch.device(device), acc.process_index, acc.num_processes, acc.is_main_process
    raw = Diffusion(cfg, copy.deepcopy(gen.unet).train(), copy.deepcopy(gen.conditioner).train(), device)
    trained = [raw.conditioner] if train == "conditioner" else [raw.unet, raw.conditioner]
    ema_mods = [gen.conditioner] if train == "conditioner" else [gen.unet, gen.conditioner]
    raw.unet.requires_grad_(train != "conditioner")
    params = [p for m in trained for p in m.parameters()]
    ema_params = [p for m in ema_mods for p in m.parameters()]
    fused = dev.type == "cuda" if fused is None else fused
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **({"fused": True} if fused else {}))
    g = _accel.rank_generator(seed, dev, rank)
    step, losses, runs = 0, [], []
    if resume and (out / STATE_DIR / "state.json").is_file():
        saved = json.loads((out / STATE_DIR / "state.json").read_text())
        if saved["mode"] != mode or saved["config"] != cfg:
            raise GeneratorError(f"{out / STATE_DIR} is from another run; pass resume=False or a new out_dir")
        meta, weights = load_train_state(out / STATE_DIR, {"optimizer": opt}, ("model", "ema"))
        raw.load_state_dict(weights["model"])
        gen.load_state_dict(weights["ema"])
        step, losses, runs = meta["step"], meta["losses"], meta["runs"]
        _accel.resume_rng(g, meta.get("rng_ranks") or [meta["rng"]], meta.get("rng_device", "cpu"), seed=seed,
                          step=step, rank=rank, world=world)
        for group in opt.param_groups:
            group["lr"] = lr
    model, step_opt = acc.prepare(_Denoiser(raw.unet, raw.conditioner), opt)
    n = len(cells)
    images = torch.from_numpy(np.ascontiguousarray(cells.images)).to(dev)  # uint8 NHWC, moved once
    labels = [torch.tensor([v.index(x) + 1 if x in v else 0 for x in cells.labels.get(f, [None] * n)], device=dev)
              for f, v in cfg["conditions"].items()]  # columns in the conditioner's (sorted) field order
    values = [torch.as_tensor(np.asarray(getattr(cells, c), np.float32)).to(dev) for c in cfg["continuous"]]
    sched = make_scheduler("ddpm", cfg)
    drop_p = 0.0 if train == "conditioner" else cfg["cond_drop_prob"]
    runs.append([step, max(step, steps)])  # (start, end) of each call, for provenance
    bar = tqdm(total=steps, initial=step, desc=mode, disable=not (progress and main))
    pending: list[torch.Tensor] = []  # this run's losses not yet read back (one 0-d tensor per step)

    def read_losses() -> None:
        if pending:
            losses.extend(_accel.read_losses(acc, pending))
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")

    while step < steps:
        idx = torch.randint(0, n, (batch_size,), generator=g, device=dev)
        x = dihedral(images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1, g)
        noise = torch.randn(x.shape, generator=g, device=dev)
        t = torch.randint(0, cfg["num_train_timesteps"], (batch_size,), generator=g, device=dev)
        drop_all = torch.rand(batch_size, generator=g, device=dev) < drop_p
        lab = torch.zeros((batch_size, len(labels)), dtype=torch.long, device=dev)
        val = torch.zeros((batch_size, len(values)), device=dev)
        for j, v in enumerate(labels):
            lab[:, j] = torch.where(drop_all | (torch.rand(batch_size, generator=g, device=dev) < drop_p), 0, v[idx])
        for j, v in enumerate(values):
            val[:, j] = torch.where(drop_all | (torch.rand(batch_size, generator=g, device=dev) < drop_p),
                                    float("nan"), v[idx])
        pred = model(sched.add_noise(x, noise, t), t, lab, val)  # bf16 autocast on CUDA (accelerate)
        target = sched.get_velocity(x, noise, t) if cfg["prediction_type"] == "v_prediction" else noise
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        step_opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(params, 1.0)
        step_opt.step()
        if main:
            ema_update(ema_params, params, ema_decay(step, cfg["ema_decay"]))
        step += 1
        pending.append(loss.detach())
        bar.update(1)
        if len(pending) >= log_every:
            read_losses()
        if main and sample_every and step % sample_every == 0:
            _write_grid(gen, out / "samples" / f"step_{step:06d}.png", grid_cols, grid_field)
        if (save_every and step % save_every == 0) or step == steps:
            read_losses()
            rngs = _accel.rng_states(acc, g)
            if main:
                meta = {"step": step, "rng": rngs[0], "rng_ranks": rngs, "rng_device": dev.type, "num_processes": world,
                        "batch_size": batch_size, "mode": mode, "losses": losses, "runs": runs, "config": cfg}
                save_train_state(out / STATE_DIR, {"model": raw.state_dict(), "ema": gen.state_dict()}, {"optimizer": opt},
                                 meta)
                gen.save_pretrained(out)
            acc.wait_for_everyone()
    read_losses()
    bar.close()
    _accel.share_from_main(acc, ema_mods)
    if main and not (out / "model.safetensors").is_file():  # resumed a finished run
        gen.save_pretrained(out)
    acc.wait_for_everyone()
    return gen
