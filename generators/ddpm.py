"""Class- and attribute-conditional diffusion generator (diffusers ``UNet2DModel``).

Label fields (``cell_type``, ``subtype``, ...) and the morphology attributes (``area``,
``nc_ratio``) are embedded by a small :class:`Conditioner` whose summed output is added to the
UNet's timestep embedding (``class_embed_type="identity"``). Every condition is dropped at
random while training, so sampling uses classifier-free guidance and any condition left out
of a request is "unknown". Rare classes (L3) are added later with
:meth:`Diffusion.add_condition_value` and :func:`finetune_diffusion` on a handful of images.
"""

from __future__ import annotations

import base64
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from alldata.generators.base import CONTINUOUS, GENERATORS, Generator, GeneratorError, select_device
from alldata.generators.data import CellSet
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["Conditioner", "Diffusion", "finetune_diffusion", "make_scheduler", "sample_loop", "train_diffusion"]

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
    "ema_decay": 0.999,
    "seed": 0,
}
SAMPLERS = ("dpm++", "ddim", "ddpm")
STATE_DIR = "train_state"


def _complete_config(config: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in and checked; raises GeneratorError on a bad config."""
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise GeneratorError(f"unknown diffusion config keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy({**DEFAULTS, **config})
    chans = cfg["block_out_channels"] = [int(c) for c in cfg["block_out_channels"]]
    if cfg["attention_levels"] is None:
        cfg["attention_levels"] = [len(chans) - 1]
    if any(c % cfg["norm_num_groups"] for c in chans):
        raise GeneratorError(f"norm_num_groups={cfg['norm_num_groups']} must divide every channel count {chans}")
    if cfg["image_size"] % 2 ** (len(chans) - 1):
        raise GeneratorError(f"image_size={cfg['image_size']} must be divisible by 2**{len(chans) - 1}")
    if not set(cfg["continuous"]) <= set(CONTINUOUS):
        raise GeneratorError(f"continuous must be a subset of {list(CONTINUOUS)}, got {cfg['continuous']}")
    if not 0.0 <= cfg["cond_drop_prob"] < 1.0:
        raise GeneratorError(f"cond_drop_prob must be in [0, 1), got {cfg['cond_drop_prob']}")
    cfg["conditions"] = {f: list(v) for f, v in sorted(cfg["conditions"].items())}
    cfg["continuous"] = [c for c in CONTINUOUS if c in cfg["continuous"]]
    return cfg


class Conditioner(nn.Module):
    """Label indices (0 = null/unknown) and morphology values (NaN = null) -> one ``(B, dim)`` vector."""

    def __init__(self, conditions: dict[str, list[str]], continuous: list[str], dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.embeds = nn.ModuleDict({f: nn.Embedding(len(v) + 1, dim) for f, v in sorted(conditions.items())})
        self.linears = nn.ModuleDict({c: nn.Linear(1, dim) for c in continuous})
        self.nulls = nn.ParameterDict({c: nn.Parameter(torch.zeros(dim)) for c in continuous})
        self.register_buffer("zero", torch.zeros(dim), persistent=False)

    def forward(self, labels: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> torch.Tensor:
        """``labels`` ``{field: (B,) long}``, ``values`` ``{attr: (B,) float}``; missing ones are null."""
        n = max([len(t) for t in (*labels.values(), *values.values())], default=1)
        out = self.zero.expand(n, -1)
        for f, emb in self.embeds.items():
            out = out + (emb(labels[f]) if f in labels else emb.weight[0])
        for c, lin in self.linears.items():
            v = values.get(c, torch.full((n,), float("nan"), device=out.device))
            out = out + torch.where(torch.isfinite(v)[:, None], lin(torch.nan_to_num(v)[:, None] * 2 - 1), self.nulls[c])
        return out


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


#: DPM-Solver++ settings for pixel-space sampling in [-1, 1]. Under the cosine schedule
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


def make_scheduler(sampler: str, cfg: dict[str, Any]) -> Any:
    """A fresh diffusers scheduler for ``sampler`` ("dpm++", "ddim" or "ddpm").

    All three keep predicted x0 inside the data range: DDIM and DDPM clip it to [-1, 1]
    (diffusers' ``clip_sample``), DPM-Solver++ uses :data:`DPM_SOLVER_KWARGS`.
    """
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    common = {"num_train_timesteps": cfg["num_train_timesteps"], "beta_schedule": cfg["beta_schedule"]}
    if sampler == "dpm++":
        return DPMSolverMultistepScheduler(**common, **DPM_SOLVER_KWARGS)
    if sampler == "ddim":
        return DDIMScheduler(**common, timestep_spacing="trailing")
    if sampler == "ddpm":
        return DDPMScheduler(**common, timestep_spacing="trailing")
    raise GeneratorError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")


def _autocast(device: torch.device | str) -> Any:
    """bf16 autocast on CUDA, nothing elsewhere (fp32 on CPU)."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=torch.device(device).type == "cuda")


@torch.no_grad()
def sample_loop(unet: nn.Module, scheduler: Any, noise: torch.Tensor, cond: torch.Tensor,
                uncond: torch.Tensor | None = None, *, num_inference_steps: int = 20, guidance_scale: float = 2.0,
                generator: torch.Generator | list[torch.Generator] | None = None,
                progress: bool = False) -> torch.Tensor:
    """The bare denoising loop: noise ``(B,3,H,W)`` -> images in [-1, 1] (what benchmarks time).

    ``cond``/``uncond`` are ``(B, D)`` condition embeddings; with ``uncond`` the epsilon is
    guided: ``eps_u + guidance_scale * (eps_c - eps_u)``.
    """
    from tqdm import tqdm

    scheduler.set_timesteps(num_inference_steps, device=noise.device)
    x = noise * scheduler.init_noise_sigma
    labels = cond if uncond is None else torch.cat([cond, uncond])
    for t in tqdm(scheduler.timesteps, desc="sample", disable=not progress, leave=False):
        inp = scheduler.scale_model_input(x, t)
        with _autocast(noise.device):
            eps = unet(inp if uncond is None else torch.cat([inp, inp]), t, class_labels=labels).sample.float()
        if uncond is not None:
            eps_c, eps_u = eps.chunk(2)
            eps = eps_u + guidance_scale * (eps_c - eps_u)
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    return x.clamp(-1, 1)


def _sample_seed(seed: int, index: int) -> int:
    """A per-image seed from (seed, image index): results do not depend on the batch size."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@GENERATORS.register("diffusion")
class Diffusion(Generator):
    """A conditional DDPM: ``unet`` and ``conditioner`` hold the EMA weights."""

    family = "diffusion"

    def __init__(self, config: dict[str, Any], unet: nn.Module, conditioner: Conditioner, device: str) -> None:
        super().__init__(config)
        self.unet, self.conditioner, self.device = unet, conditioner, device

    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> Diffusion:
        cfg = _complete_config(config)
        device = select_device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            unet = make_unet(cfg)
            cond = Conditioner(cfg["conditions"], cfg["continuous"], cfg["block_out_channels"][0] * 4)
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
        labels = {f: torch.full((n,), vocab.index(condition[f]) + 1 if f in condition else 0, device=self.device)
                  for f, vocab in self.config["conditions"].items()}
        values = {}
        for c in self.config["continuous"]:
            v = float(condition.get(c, float("nan")))
            if np.isfinite(v) and not 0.0 <= v <= 1.0:
                raise GeneratorError(f"condition {c}={v} must be in [0, 1]")
            values[c] = torch.full((n,), v, device=self.device)
        with torch.no_grad():
            return self.conditioner(labels, values)

    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, *, sampler: str = "ddim",
               num_inference_steps: int = 20, guidance_scale: float = 2.0, batch_size: int = 64,
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
                            guidance_scale=guidance_scale, generator=gens, progress=progress)
            out.append(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)

    def add_condition_value(self, field: str, value: str, init: str = "mean") -> int:
        """Grow ``field``'s vocabulary by ``value`` (a new field if missing); returns its index.

        ``init="mean"`` starts the new row at the mean of the field's known rows (zeros for a
        new field, which leaves the model's output unchanged), ``"null"`` at the null row.
        """
        if "." in field or field in CONTINUOUS:
            raise GeneratorError(f"{field!r} cannot be a label field")
        if init not in ("mean", "null"):
            raise GeneratorError(f"init must be 'mean' or 'null', got {init!r}")
        vocab = self.config["conditions"].setdefault(field, [])
        if value in vocab:
            return vocab.index(value) + 1
        dim = self.conditioner.dim
        old = self.conditioner.embeds[field].weight.data if field in self.conditioner.embeds else torch.zeros(1, dim)
        old = old.to(self.device)
        row = old[1:].mean(0) if init == "mean" and len(old) > 1 else old[0]
        emb = nn.Embedding(len(old) + 1, dim).to(self.device)
        emb.weight.data = torch.cat([old, row[None]])
        self.conditioner.embeds[field] = emb
        self.conditioner.embeds = nn.ModuleDict(dict(sorted(self.conditioner.embeds.items())))
        self.config["conditions"] = dict(sorted(self.config["conditions"].items()))
        vocab.append(value)
        return len(vocab)


# --- training --------------------------------------------------------------------------------


def _rng_state(g: torch.Generator) -> str:
    return base64.b64encode(g.get_state().numpy().tobytes()).decode()


def _set_rng_state(g: torch.Generator, text: str) -> None:
    g.set_state(torch.from_numpy(np.frombuffer(base64.b64decode(text), np.uint8).copy()))


def _save_state(d: Path, gen: Diffusion, raw: Diffusion, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Write ``d/train_state`` atomically: raw + EMA weights, optimizer, step and RNG (no pickle)."""
    tmp, final = d / (STATE_DIR + ".tmp"), d / STATE_DIR
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous().cpu() for k, v in raw.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({k: v.contiguous().cpu() for k, v in gen.state_dict().items()}, str(tmp / "ema.safetensors"))
    sd = opt.state_dict()
    tensors = {f"{pid}.{k}": v.contiguous().cpu() for pid, st in sd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    other = {str(pid): {k: v for k, v in st.items() if not torch.is_tensor(v)} for pid, st in sd["state"].items()}
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    opt_meta = {"param_groups": sd["param_groups"], "state": other}
    (tmp / "state.json").write_text(json.dumps({**meta, "optimizer": opt_meta, "config": gen.config}))
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)


def _load_state(d: Path, gen: Diffusion, raw: Diffusion, opt: torch.optim.Optimizer) -> dict[str, Any]:
    meta = json.loads((d / "state.json").read_text())
    raw.load_state_dict(load_file(str(d / "model.safetensors")))
    gen.load_state_dict(load_file(str(d / "ema.safetensors")))
    state: dict[int, dict[str, Any]] = {}
    for key, v in load_file(str(d / "optimizer.safetensors")).items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["optimizer"]["state"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
    return meta


def _write_grid(gen: Diffusion, path: Path, cols: int, field: str | None) -> None:
    """One row of ``cols`` samples per value of ``field`` (one unconditional row without fields)."""
    fields = gen.config["conditions"]
    field = field or next(iter(fields), None)
    conds = [{field: v} for v in fields.get(field, [])] or [{}]
    rows = [np.concatenate(list(gen.sample(cols, c, seed=0)), axis=1) for c in conds]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def _fit(gen: Diffusion, cells: CellSet, out_dir: str | Path, *, steps: int, batch_size: int, lr: float, seed: int,
         resume: bool, sample_every: int, save_every: int, progress: bool, train: str, mode: str,
         grid_cols: int = 8, grid_field: str | None = None) -> Diffusion:
    """The training loop shared by :func:`train_diffusion` and :func:`finetune_diffusion`."""
    from tqdm import tqdm

    cfg, dev, out = gen.config, torch.device(gen.device), Path(out_dir)
    if len(cells) == 0:
        raise GeneratorError("no training images")
    if cells.images.shape[1:] != (cfg["image_size"], cfg["image_size"], 3):
        raise GeneratorError(f"images are {cells.images.shape[1:]}, the model wants {cfg['image_size']}px RGB")
    raw = Diffusion(cfg, copy.deepcopy(gen.unet).train(), copy.deepcopy(gen.conditioner).train(), gen.device)
    trained = [raw.conditioner] if train == "conditioner" else [raw.unet, raw.conditioner]
    ema_mods = [gen.conditioner] if train == "conditioner" else [gen.unet, gen.conditioner]
    raw.unet.requires_grad_(train != "conditioner")
    params = [p for m in trained for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    step, losses, runs = 0, [], []
    if resume and (out / STATE_DIR / "state.json").is_file():
        meta = _load_state(out / STATE_DIR, gen, raw, opt)
        if meta["mode"] != mode or meta["config"] != cfg:
            raise GeneratorError(f"{out / STATE_DIR} is from another run; pass resume=False or a new out_dir")
        step, losses, runs = meta["step"], meta["losses"], meta["runs"]
        _set_rng_state(g, meta["rng"])
        for group in opt.param_groups:
            group["lr"] = lr
    images = torch.from_numpy(np.ascontiguousarray(cells.images))  # uint8 NHWC, stays on the CPU
    labels = {f: torch.tensor([v.index(x) + 1 if x in v else 0 for x in cells.labels.get(f, [None] * len(cells))])
              for f, v in cfg["conditions"].items()}
    values = {c: torch.as_tensor(np.asarray(getattr(cells, c), np.float32)) for c in cfg["continuous"]}
    sched = make_scheduler("ddpm", cfg)
    drop_p = 0.0 if train == "conditioner" else cfg["cond_drop_prob"]
    runs.append([step, max(step, steps)])  # (start, end) of each call, for provenance
    bar = tqdm(total=steps, initial=step, desc=mode, disable=not progress)
    while step < steps:
        idx = torch.randint(0, len(cells), (batch_size,), generator=g)
        x = images[idx].permute(0, 3, 1, 2).float() / 127.5 - 1
        flip = torch.rand(batch_size, generator=g) < 0.5  # flips + rot90 span all 8 orientations
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        k = torch.randint(0, 4, (batch_size,), generator=g)
        x = torch.stack([torch.rot90(x, r, (2, 3)) for r in range(4)])[k, torch.arange(batch_size)]
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(0, cfg["num_train_timesteps"], (batch_size,), generator=g)
        drop_all = torch.rand(batch_size, generator=g) < drop_p
        lab, val = {}, {}
        for f, v in labels.items():
            lab[f] = torch.where(drop_all | (torch.rand(batch_size, generator=g) < drop_p), 0, v[idx]).to(dev)
        for c, v in values.items():
            val[c] = torch.where(drop_all | (torch.rand(batch_size, generator=g) < drop_p), float("nan"), v[idx]).to(dev)
        x, noise, t = x.to(dev), noise.to(dev), t.to(dev)
        with _autocast(dev):
            pred = raw.unet(sched.add_noise(x, noise, t), t, class_labels=raw.conditioner(lab, val)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            for e_mod, r_mod in zip(ema_mods, trained):
                for e, p in zip(e_mod.parameters(), r_mod.parameters()):
                    e.lerp_(p, 1 - decay)
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        if sample_every and step % sample_every == 0:
            _write_grid(gen, out / "samples" / f"step_{step:06d}.png", grid_cols, grid_field)
        if (save_every and step % save_every == 0) or step == steps:
            _save_state(out, gen, raw, opt, {"step": step, "rng": _rng_state(g), "mode": mode, "losses": losses,
                                         "runs": runs})
            gen.save_pretrained(out)
    bar.close()
    if not (out / "model.safetensors").is_file():  # resumed a finished run
        gen.save_pretrained(out)
    return gen


def train_diffusion(cells: CellSet, out_dir: str | Path, *, steps: int = 10_000, batch_size: int = 64,
                    lr: float = 2e-4, seed: int = 0, resume: bool = True, sample_every: int = 1000,
                    save_every: int = 1000, progress: bool = True, device: str | None = None, grid_cols: int = 8,
                    **config: Any) -> Diffusion:
    """Train a conditional diffusion model on ``cells`` into ``out_dir``; returns the EMA model.

    ``config`` overrides :data:`DEFAULTS` (``conditions`` defaults to ``cells.vocabulary()``,
    ``continuous`` to the morphology attributes with any known value). With ``resume`` a run
    continues from ``out_dir/train_state`` (its saved config wins). Writes sample grids to
    ``out_dir/samples/`` every ``sample_every`` steps and a checkpoint every ``save_every``.
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
    gen = Diffusion.build(cfg, device=device)
    return _fit(gen, cells, out_dir, steps=steps, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                sample_every=sample_every, save_every=save_every, progress=progress, train="all", mode="train",
                grid_cols=grid_cols)


def finetune_diffusion(gen: Diffusion, cells: CellSet, out_dir: str | Path, *, steps: int = 200, lr: float = 1e-4,
                       train: str = "conditioner", batch_size: int = 8, seed: int = 0, resume: bool = True,
                       sample_every: int = 0, save_every: int = 100, progress: bool = True,
                       grid_field: str | None = None) -> Diffusion:
    """Few-shot fine-tuning of ``gen`` (in place) on a handful of ``cells``, saved to ``out_dir``.

    Add the new label first with :meth:`Diffusion.add_condition_value`. ``train="conditioner"``
    updates only the condition embeddings (no condition dropout, so the null rows and the
    unconditional model stay as they were); ``train="all"`` updates the whole model.
    """
    if train not in ("conditioner", "all"):
        raise GeneratorError(f"train must be 'conditioner' or 'all', got {train!r}")
    for f, vals in cells.labels.items():
        new = sorted({v for v in vals if v and v not in gen.config["conditions"].get(f, [])})
        if new:
            raise GeneratorError(f"{f} values {new} are unknown to the model; call add_condition_value({f!r}, ...) first")
    return _fit(gen, cells, out_dir, steps=steps, batch_size=batch_size, lr=lr, seed=seed, resume=resume,
                sample_every=sample_every, save_every=save_every, progress=progress, train=train,
                mode=f"finetune-{train}", grid_field=grid_field)
