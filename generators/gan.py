"""A class-conditional GAN for tiny data: the cheap, fast comparison point for diffusion.

A DCGAN-shaped network trained with the StyleGAN2-ADA recipe (Karras et al. 2020):

* generator: ``z`` concatenated with the condition -> 4x4 -> stride-2 transposed convs;
  after each, pixel norm (ProGAN) with a gain and bias from the condition, then LeakyReLU;
  a *linear* RGB output in the data's [-1, 1] units (clamped only when sampled). No batch
  norm: a sample does not depend on the rest of its batch, so train and eval behave alike;
* discriminator: strided convs with LeakyReLU, minibatch standard deviation (ProGAN), a 3x3
  conv and a dense layer over the flattened 4x4 map (it sees *where* things are, which a
  global sum pool does not), then a projection head for the condition (Miyato & Koyama 2018);
* loss: non-saturating logistic with an R1 penalty on real images (``r1_gamma``), no
  spectral norm; Adam with betas (0, 0.99) and the two-time-scale rule (Heusel et al. 2017;
  SAGAN/BigGAN): lr 1e-4 for the generator, 4e-4 for the discriminator. With equal rates the
  discriminator sat at chance on real cells (loss ~1.35) while the generator chased it.
  StyleGAN's 2e-3 assumes its equalised learning rate; with PyTorch's default init it is
  unstable on real cells (it memorises a 4-image set fast, which the test uses);
* DiffAugment (Zhao et al. 2020) on real and fake alike, translation only by default
  (colour jitter hides the colour the pixel gates measure), and an EMA of the generator,
  which is what is saved and sampled.

bench/RESULTS.md "GAN: why it did not make cells, and the fix" has the ablation behind each
choice. Few-shot: :meth:`GAN.add_condition_value` grows the embedding tables by one row and
:meth:`GAN.finetune` adapts the model to a handful of images.

Examples:
    >>> gan = GAN.train(cells, "runs/gan", steps=20_000, batch_size=64)  # doctest: +SKIP
    >>> imgs = gan.sample(16, {"cell_type": "lymphoblast"}, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover
    raise ImportError("the GAN generator needs torch: pip install 'alldata[gen]'") from e

from alldata.generators._torch import (
    STATE_DIR,
    ConditionEmbedder,
    autocast,
    dihedral,
    ema_decay,
    ema_update,
    encode_labels,
    encode_values,
    grow_rows,
    load_train_state,
    rng_from_text,
    rng_to_text,
    save_grid,
    save_train_state,
    seeded,
    select_device,
)
from alldata.generators.base import ARM_PARAMS, CONTINUOUS, GENERATORS, Generator, GeneratorError
from alldata.generators.data import CellSet

__all__ = ["AUGMENTS", "DEFAULTS", "GAN", "diff_augment"]

AUGMENTS = ("color", "translation", "cutout")
#: config keys and defaults (:attr:`GAN.DEFAULTS`)
DEFAULTS: dict[str, Any] = {
    "image_size": 64, "z_dim": 128, "ngf": 64, "ndf": 64, "cond_dim": 128, "conditions": {},
    "continuous": [], "diffaug": "translation", "ema_decay": 0.999, "cond_drop": 0.1, "r1_gamma": 0.01, "seed": 0,
}
_BETAS = (0.0, 0.99)  # StyleGAN2-ADA
_MBSTD_GROUP = 4


def _policy(policy: str) -> list[str]:
    names = [p.strip() for p in policy.split(",") if p.strip()]
    bad = sorted(set(names) - set(AUGMENTS))
    if bad:
        raise GeneratorError(f"unknown DiffAugment policy {bad}; known: {list(AUGMENTS)}")
    return names


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable augmentation of ``x`` (B, 3, H, W) in [-1, 1], after Zhao et al. 2020.

    ``policy`` is a comma list of ``color``, ``translation`` (up to 1/8 of the side, zero fill)
    and ``cutout`` (a half-side square zeroed); ``""`` is the identity. Random parameters come
    from ``generator`` (a CPU ``torch.Generator``), one draw per image.
    """
    b, _, h, w = x.shape
    dev = x.device

    def rand() -> torch.Tensor:
        return torch.rand(b, 1, 1, 1, generator=generator).to(dev, x.dtype)

    def randint(lo: int, hi: int) -> torch.Tensor:
        return torch.randint(lo, hi, (b, 1, 1), generator=generator).to(dev)

    for name in _policy(policy):
        if name == "color":
            x = x + (rand() - 0.5)  # brightness
            m = x.mean(1, keepdim=True)
            x = (x - m) * (rand() * 2) + m  # saturation
            m = x.mean((1, 2, 3), keepdim=True)
            x = (x - m) * (rand() + 0.5) + m  # contrast
            continue
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        if name == "translation":
            sy, sx = int(h / 8 + 0.5), int(w / 8 + 0.5)
            iy, ix = gy[None] - randint(-sy, sy + 1) + sy, gx[None] - randint(-sx, sx + 1) + sx
            padded = F.pad(x, (sx, sx, sy, sy)).permute(0, 2, 3, 1)
            x = padded[torch.arange(b, device=dev)[:, None, None], iy, ix].permute(0, 3, 1, 2)
        else:  # cutout
            ch, cw = h // 2, w // 2
            y0, x0 = randint(-(ch // 2), h - ch // 2), randint(-(cw // 2), w - cw // 2)
            hole = (gy[None] >= y0) & (gy[None] < y0 + ch) & (gx[None] >= x0) & (gx[None] < x0 + cw)
            x = x * (~hole)[:, None].to(x.dtype)
    return x


class _CondNorm(nn.Module):
    """Pixel norm (each position's feature vector to unit RMS) with a gain and bias from the condition."""

    def __init__(self, ch: int, cdim: int) -> None:
        super().__init__()
        self.gain, self.bias = nn.Linear(cdim, ch), nn.Linear(cdim, ch)
        for lin in (self.gain, self.bias):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-8)
        return x * (1 + self.gain(c))[:, :, None, None] + self.bias(c)[:, :, None, None]


def _minibatch_std(h: torch.Tensor) -> torch.Tensor:
    """``h`` with one more channel: the feature std across groups of up to 4 images (ProGAN),
    so the discriminator can see a batch of fakes that are all alike."""
    b = h.shape[0]
    g = next(k for k in range(min(_MBSTD_GROUP, b), 0, -1) if b % k == 0)
    y = h.float().view(g, -1, *h.shape[1:])
    y = (y - y.mean(0)).pow(2).mean(0).add(1e-8).sqrt().mean((1, 2, 3))  # (b / g,)
    return torch.cat([h, y.repeat(g).to(h.dtype)[:, None, None, None].expand(-1, 1, *h.shape[2:])], 1)


class _G(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        n = int(math.log2(cfg["image_size"])) - 2
        chans = [cfg["ngf"] * min(8, 2 ** (n - 1 - i)) for i in range(n)]  # 4x4 .. size/2
        self.c0 = chans[0]
        self.cond = ConditionEmbedder(cfg["conditions"], cfg["continuous"], cfg["cond_dim"], std=1.0)
        self.fc = nn.Linear(cfg["z_dim"] + cfg["cond_dim"], 16 * self.c0)
        self.norms = nn.ModuleList([_CondNorm(c, cfg["cond_dim"]) for c in chans])
        self.convs = nn.ModuleList([nn.ConvTranspose2d(a, b, 4, 2, 1) for a, b in itertools.pairwise(chans)])
        self.to_rgb = nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1)  # 3.5x faster on CPU than upsample + 3x3 conv

    def forward(self, z: torch.Tensor, lab: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] units, unclamped (linear output: no tanh to saturate near white)."""
        c = self.cond(lab, cont)
        h = F.leaky_relu(self.norms[0](self.fc(torch.cat([z, c], 1)).view(-1, self.c0, 4, 4), c), 0.2)
        for conv, norm in zip(self.convs, self.norms[1:]):
            h = F.leaky_relu(norm(conv(h), c), 0.2)
        return self.to_rgb(h)


class _D(nn.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        n = int(math.log2(cfg["image_size"])) - 2
        chans = [3] + [cfg["ndf"] * min(8, 2**i) for i in range(n)]
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(chans):
            layers += [nn.Conv2d(a, b, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = chans[-1]
        self.body = nn.Sequential(*layers)  # -> (c, 4, 4)
        self.conv = nn.Conv2d(c + 1, c, 3, 1, 1)  # after the minibatch-std channel
        self.fc = nn.Linear(16 * c, c)  # the StyleGAN2 epilogue: dense over the flattened 4x4 map
        self.out = nn.Linear(c, 1)
        self.cond = ConditionEmbedder(cfg["conditions"], cfg["continuous"], c, std=c**-0.5)

    def forward(self, x: torch.Tensor, lab: torch.Tensor, cont: torch.Tensor) -> torch.Tensor:
        """Logits (real > 0); projection discriminator: linear head + <embed(c), h>."""
        h = F.leaky_relu(self.conv(_minibatch_std(self.body(x))), 0.2)
        h = F.leaky_relu(self.fc(h.flatten(1)), 0.2)
        return self.out(h).squeeze(1) + (self.cond(lab, cont) * h).sum(1)


def _seeded(fn: Callable[[], nn.Module], seed: int) -> nn.Module:
    with seeded(seed):
        return fn()


def _load(module: nn.Module, state: dict[str, torch.Tensor], grow: bool = False) -> None:
    """Strict load; with ``grow`` an embedding table may be short (new rows = mean of its value rows) or absent (zeros)."""
    fixed = {}
    for k, v in module.state_dict().items():
        table = ".embeds." in k
        if k not in state:
            if not (grow and table):
                raise GeneratorError(f"checkpoint lacks {k!r}; it was written for another GAN config or by the GAN "
                                     "before the fix of issue #9 (batch-norm generator): retrain it")
            fixed[k] = torch.zeros_like(v)
            continue
        s = state[k]
        if s.shape != v.shape:
            if not (grow and table and s.shape[1:] == v.shape[1:] and s.shape[0] < v.shape[0]):
                raise GeneratorError(f"{k!r} has shape {tuple(s.shape)} in the checkpoint, {tuple(v.shape)} in the model")
            s = grow_rows(s, v.shape[0] - s.shape[0])
        fixed[k] = s
    extra = set(state) - set(fixed)
    if extra:
        raise GeneratorError(f"checkpoint has keys this GAN config does not: {sorted(extra)[:5]}")
    module.load_state_dict(fixed)


@GENERATORS.register("gan")
class GAN(Generator):
    """Conditional GAN generator (the EMA weights); train with :meth:`GAN.train`."""

    family = "gan"
    DEFAULTS = DEFAULTS
    PRESETS = {
        "tiny": {"z_dim": 16, "ngf": 8, "ndf": 8, "cond_dim": 16},
        "cpu": {"z_dim": 64, "ngf": 32, "ndf": 32, "cond_dim": 64},
        "gpu": {"z_dim": 128, "ngf": 64, "ndf": 64, "cond_dim": 128},
    }
    ARM_PARAMS = ARM_PARAMS

    def __init__(self, config: dict[str, Any], model: nn.Module, device: str) -> None:
        super().__init__(config)
        self.model, self.device = model, device

    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """Defaults filled in, validated, JSON-normalised; raises :class:`GeneratorError`."""
        cfg = super().check_config(config)
        s = cfg["image_size"]
        if not isinstance(s, int) or s not in (16, 32, 64, 128):
            raise GeneratorError(f"image_size={s!r} must be a power of two in 16..128")
        for k in ("z_dim", "ngf", "ndf", "cond_dim"):
            if not isinstance(cfg[k], int) or cfg[k] < 1:
                raise GeneratorError(f"{k}={cfg[k]!r} must be a positive integer")
        _policy(cfg["diffaug"])
        for k in ("ema_decay", "cond_drop"):
            if not 0.0 <= cfg[k] < 1.0:
                raise GeneratorError(f"{k}={cfg[k]} must be in [0, 1)")
        if not (isinstance(cfg["r1_gamma"], (int, float)) and cfg["r1_gamma"] >= 0):
            raise GeneratorError(f"r1_gamma={cfg['r1_gamma']!r} must be a number >= 0 (0 turns the R1 penalty off)")
        return cfg

    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> GAN:
        """An untrained generator from ``config`` (keys of :data:`DEFAULTS`)."""
        cfg, dev = cls.check_config(config), select_device(device)
        return cls(cfg, _seeded(lambda: _G(cfg), cfg["seed"]).to(dev).eval(), dev)

    def state_dict(self) -> dict[str, Any]:
        """The EMA generator's tensors, flat."""
        return dict(self.model.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _load(self.model, state)

    def add_condition_value(self, field: str, value: str) -> int:
        """Make ``field=value`` known (see :meth:`ConditionEmbedder.add_value`); returns its row, idempotent."""
        if field in CONTINUOUS or "." in field or not field:
            raise GeneratorError(f"{field!r} is not a label field; only label fields (e.g. subtype) take new values")
        vocab = self.config["conditions"].get(field, [])
        if value in vocab:
            return vocab.index(value) + 1
        self.model.cond.add_value(field)
        self.config = self.check_config({**self.config, "conditions": {**self.config["conditions"], field: [*vocab, value]}})
        return len(vocab) + 1

    @torch.no_grad()
    def sample(
        self, num_samples: int, condition: dict[str, Any], seed: int, *, batch_size: int = 256,
        truncation: float | None = None, progress: bool = False,
    ) -> np.ndarray:
        """``num_samples`` uint8 (N, H, W, 3) images; absent fields are null; same seed, same images."""
        from tqdm import tqdm

        self.check_condition(condition)
        if num_samples < 0 or batch_size < 1:
            raise GeneratorError(f"num_samples={num_samples} must be >= 0 and batch_size={batch_size} >= 1")
        cont = encode_values(self.config["continuous"], condition, 1).to(self.device)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(num_samples, self.config["z_dim"], generator=gen)
        if truncation is not None:
            if truncation <= 0:
                raise GeneratorError(f"truncation={truncation} must be > 0")
            while (bad := z.abs() > truncation).any():
                z[bad] = torch.randn(int(bad.sum()), generator=gen)
        lab = encode_labels(self.config["conditions"], {k: [v] for k, v in condition.items()}, 1).to(self.device)
        self.model.eval()
        s = self.config["image_size"]
        out = np.empty((num_samples, s, s, 3), np.uint8)
        for i in tqdm(range(0, num_samples, batch_size), desc="sample", disable=not progress):
            zb = z[i : i + batch_size].to(self.device)
            with autocast(self.device):
                x = self.model(zb, lab.expand(len(zb), -1), cont.expand(len(zb), -1))
            x = (x.float().clamp(-1, 1) + 1) * 127.5
            out[i : i + len(zb)] = x.round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return out

    @classmethod
    def train(
        cls, cells: CellSet, out_dir: str | Path, *, steps: int, batch_size: int = 32, lr_g: float = 1e-4,
        lr_d: float = 4e-4, seed: int = 0, resume: bool = True, sample_every: int = 500, save_every: int = 1000,
        progress: bool = True, device: str | None = None, **config: Any,
    ) -> GAN:
        """Train a conditional GAN on ``cells``; returns the EMA generator (also saved to ``out_dir``).

        ``config`` overrides :data:`DEFAULTS`; ``conditions`` defaults to ``cells.vocabulary()``,
        ``continuous`` to the morphology attributes with any known value. Sample grids go to
        ``out_dir/samples/``, resumable state to ``out_dir/train_state/``; ``resume`` continues a
        run found there up to ``steps`` in all.
        """
        known = [k for k in CONTINUOUS if np.isfinite(np.asarray(getattr(cells, k), np.float32)).any()]
        cfg = cls.check_config({"image_size": int(np.shape(cells.images)[1]), "conditions": cells.vocabulary(),
                                "continuous": known, "seed": seed, **config})
        return _fit(cfg, cells, out_dir, steps=steps, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, seed=seed,
                    resume=resume, sample_every=sample_every, save_every=save_every, progress=progress, device=device)

    def finetune(
        self, cells: CellSet, out_dir: str | Path, *, steps: int, base_dir: str | Path | None = None,
        batch_size: int = 16, lr_g: float = 5e-5, lr_d: float = 2e-4, seed: int = 0, resume: bool = True,
        sample_every: int = 100, save_every: int = 100, progress: bool = True, device: str | None = None,
    ) -> GAN:
        """Few-shot fine-tuning on a handful of ``cells`` (e.g. a rare class added with
        :meth:`add_condition_value`), with DiffAugment; returns the new generator.

        The generator starts from these EMA weights, the discriminator from
        ``base_dir/train_state/d.safetensors`` (the original run), grown to the new vocabulary; without
        it a fresh discriminator is used, with a warning. Output layout as :meth:`train`.
        """
        from safetensors.torch import load_file

        d_path = Path(base_dir) / STATE_DIR / "d.safetensors" if base_dir is not None else None
        init_d = None
        if not (resume and (Path(out_dir) / STATE_DIR / "state.json").is_file()):
            if d_path is not None and d_path.is_file():
                init_d = load_file(str(d_path))
            else:
                where = f"at {d_path}" if d_path else "(no base_dir given)"
                warnings.warn(f"no discriminator state {where}: fine-tuning starts a fresh discriminator, "
                              "which needs more steps and gives worse few-shot results", stacklevel=2)
        return _fit(self.config, cells, out_dir, steps=steps, batch_size=batch_size, lr_g=lr_g, lr_d=lr_d, seed=seed,
                    resume=resume, sample_every=sample_every, save_every=save_every, progress=progress,
                    device=device or self.device, init_g=self.model.state_dict(), init_d=init_d)


# --- training ---------------------------------------------------------------------------------------------


def _write_grid(gan: GAN, path: Path, cols: int = 8) -> None:
    """One row per value of the first (sorted) condition field, same latents in every row."""
    conds = gan.config["conditions"]
    rows = [{min(conds): v} for v in conds[min(conds)]] if conds else [{}]
    save_grid([gan.sample(cols, cond, seed=gan.config["seed"]) for cond in rows], path, pad=2)


def _fit(
    cfg: dict[str, Any], cells: CellSet, out_dir: str | Path, *, steps: int, batch_size: int, lr_g: float,
    lr_d: float, seed: int, resume: bool, sample_every: int, save_every: int, progress: bool, device: str | None,
    init_g: dict[str, torch.Tensor] | None = None, init_d: dict[str, torch.Tensor] | None = None,
) -> GAN:
    """The training loop shared by :meth:`GAN.train` and :meth:`GAN.finetune`."""
    from tqdm import tqdm

    if steps < 0 or batch_size < 1:
        raise GeneratorError(f"steps={steps} must be >= 0 and batch_size={batch_size} >= 1")
    dev, out, s = select_device(device), Path(out_dir), cfg["image_size"]
    sd = out / STATE_DIR
    imgs = np.asarray(cells.images)
    if len(imgs) == 0 or imgs.dtype != np.uint8 or imgs.shape[1:] != (s, s, 3):
        raise GeneratorError(f"cells must be uint8 (N, {s}, {s}, 3) with N > 0, got {imgs.dtype} {imgs.shape}; "
                             f"load them with load_cells(view, image_size={s})")
    n = len(imgs)
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)
    lab_all = encode_labels(cfg["conditions"], cells.labels, n).to(dev)
    cont_np = [np.asarray(getattr(cells, k), np.float32) for k in cfg["continuous"]]
    cont_all = torch.from_numpy(np.stack(cont_np, 1) if cont_np else np.zeros((n, 0), np.float32)).to(dev)

    G = _seeded(lambda: _G(cfg), cfg["seed"]).to(dev)
    D = _seeded(lambda: _D(cfg), cfg["seed"] + 1).to(dev)
    if init_g is not None:
        _load(G, init_g, grow=True)
    if init_d is not None:
        _load(D, init_d, grow=True)
    ema = copy.deepcopy(G).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr_g, betas=_BETAS)
    opt_d = torch.optim.Adam(D.parameters(), lr_d, betas=_BETAS)
    rng, step = torch.Generator().manual_seed(seed), 0
    if resume and (sd / "state.json").is_file():
        saved = json.loads((sd / "state.json").read_text())["config"]
        if saved != cfg:
            diff = sorted(k for k in cfg if saved.get(k) != cfg[k])
            raise GeneratorError(f"{sd} holds a run with another config (differs in {diff}); "
                                 "pass resume=False or another out_dir")
        meta, weights = load_train_state(sd, {"opt_g": opt_g, "opt_d": opt_d}, ("g", "d", "ema"))
        for name, net in (("g", G), ("d", D), ("ema", ema)):
            _load(net, weights[name])
        rng_from_text(rng, meta["rng"])
        step = meta["step"]

    gan = GAN(cfg, ema, dev)

    def checkpoint(grid: bool, save: bool) -> None:
        if grid:
            _write_grid(gan, out / "samples" / f"step_{step:06d}.png")
        if save:
            meta = {"step": step, "rng": rng_to_text(rng), "config": cfg, "lr_g": lr_g, "lr_d": lr_d,
                    "batch_size": batch_size, "seed": seed}
            nets = {"g": G.state_dict(), "d": D.state_dict(), "ema": ema.state_dict()}
            save_train_state(sd, nets, {"opt_g": opt_g, "opt_d": opt_d}, meta)
            gan.save_pretrained(out)

    policy, gamma = cfg["diffaug"], float(cfg["r1_gamma"])
    G.train()
    D.train()
    ema_params, g_params = list(ema.parameters()), list(G.parameters())
    bar = tqdm(total=steps, initial=step, desc="gan", disable=not progress)
    while step < steps:
        idx = torch.randint(n, (batch_size,), generator=rng).to(dev)
        real = dihedral(images[idx].float() / 127.5 - 1, rng)
        lab, cont = lab_all[idx], cont_all[idx]
        lab = lab.masked_fill((torch.rand(lab.shape, generator=rng) < cfg["cond_drop"]).to(dev), 0)
        cont = cont.masked_fill((torch.rand(cont.shape, generator=rng) < cfg["cond_drop"]).to(dev), math.nan)
        z = torch.randn(batch_size, cfg["z_dim"], generator=rng).to(dev)
        real = diff_augment(real, policy, rng).requires_grad_(gamma > 0)  # R1 on what D sees, as in ADA
        with autocast(dev):
            fake = G(z, lab, cont)
            d_real = D(real, lab, cont)
            loss_d = F.softplus(-d_real).mean() + F.softplus(D(diff_augment(fake.detach(), policy, rng), lab, cont)).mean()
        if gamma > 0:
            (grad,) = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
            loss_d = loss_d + gamma / 2 * grad.float().pow(2).sum((1, 2, 3)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        D.requires_grad_(False)
        with autocast(dev):
            loss_g = F.softplus(-D(diff_augment(fake, policy, rng), lab, cont)).mean()  # non-saturating
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
        step += 1
        ema_update(ema_params, g_params, ema_decay(step, cfg["ema_decay"]))
        bar.update(1)
        if step % 10 == 0 or step == steps:
            bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}")
        grid, save = sample_every > 0 and step % sample_every == 0, save_every > 0 and step % save_every == 0
        if (grid or save) and step < steps:
            checkpoint(grid, save)
    bar.close()
    checkpoint(sample_every > 0, True)
    return gan
