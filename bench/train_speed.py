"""Training speed: ``Diffusion.train`` (the accelerate path) against a bare loop on the same UNet and batch.

    .venv/bin/python bench/train_speed.py                       # CPU, tiny UNet, 16 px (~3 min on 2 busy cores)
    .venv/bin/python bench/train_speed.py --preset cpu --size 32 --batch-size 16 --steps 20
    python bench/train_speed.py --device cuda --preset gpu --size 64 --batch-size 128 --warmup 20 --steps 150
    accelerate launch bench/train_speed.py --device cuda ...    # every GPU: per-process figures, DDP in the train loop

The two loops run interleaved, ``--rounds`` times each (bare, train, bare, train, ...), so a
change of load on a shared machine falls on both; each is timed over the same optimizer
steps after a warm-up by a global optimizer step hook (:class:`StepClock`), and the figure
is images/s summed over the rounds. The bare loop has the data resident on the device, bf16
autocast on CUDA, fused AdamW on CUDA and a foreach EMA, and nothing else (no augmentation,
condition dropout, clipping, loss read-back or accelerate); ``Diffusion.train`` is the
project's loop (dihedral augmentation, condition dropout, clipping, losses read back every
50 steps) through ``accelerate.Accelerator``. Cells: a ``bench/cells_npz.py`` file, or
random images when none is given (speed does not depend on the pixels).

Prints one JSON object (also written to ``--out`` when given). bench/gpu.py imports
:func:`train_speed` for its part (a).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cells import load_npz  # first: it makes the project importable from this checkout
from alldata.generators._torch import ConditionEmbedder, autocast, ema_update, select_device
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion, make_scheduler, make_unet


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StepClock:
    """Times optimizer steps ``warmup`` .. ``warmup + steps`` of any loop (a global step hook)."""

    def __init__(self, device: str, warmup: int, steps: int) -> None:
        self.device, self.warmup, self.steps, self.n, self.t0, self.t1 = device, warmup, steps, 0, None, None

    def __enter__(self) -> Self:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.handle = register_optimizer_step_post_hook(self.hook)
        return self

    def hook(self, *_: Any) -> None:
        self.n += 1
        if self.n in (self.warmup, self.warmup + self.steps):
            sync(self.device)
            if self.n == self.warmup:
                self.t0 = time.perf_counter()
            else:
                self.t1 = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self.handle.remove()

    def seconds(self) -> float:
        if self.t0 is None or self.t1 is None:
            raise RuntimeError(f"the loop ran {self.n} optimizer steps, fewer than {self.warmup + self.steps}")
        return self.t1 - self.t0


def config(cells: CellSet, size: int, preset: str) -> dict[str, Any]:
    """The diffusion config both loops train: the preset's UNet, ``cells``' labels, no morphology."""
    return {"image_size": size, "conditions": cells.vocabulary(), "continuous": [], **Diffusion.preset(preset)}


def bare_train(cells: CellSet, cfg: dict[str, Any], device: str, batch: int, steps: int, lr: float) -> None:
    """The reference loop: resident data, bf16 on CUDA, fused AdamW (CUDA), foreach EMA, nothing else."""
    dev = torch.device(device)
    cfg = Diffusion.check_config(cfg)
    unet = make_unet(cfg).to(dev).train()
    cond = ConditionEmbedder(cfg["conditions"], [], cfg["block_out_channels"][0] * 4).to(dev).train()
    params = [*unet.parameters(), *cond.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, **({"fused": True} if dev.type == "cuda" else {}))
    x_all = torch.from_numpy(cells.images).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    fields, n = list(cfg["conditions"].items()), len(cells)
    lab_all = torch.tensor([[v.index(cells.labels[f][i]) + 1 if cells.labels[f][i] in v else 0 for f, v in fields]
                            for i in range(n)], dtype=torch.long, device=dev).reshape(n, len(fields))
    sched = make_scheduler("ddpm", cfg)
    g = torch.Generator(dev).manual_seed(0)
    none = torch.zeros(batch, 0, device=dev)
    for _ in range(steps):
        idx = torch.randint(0, len(x_all), (batch,), generator=g, device=dev)
        x = x_all[idx]
        noise = torch.randn(x.shape, generator=g, device=dev)
        t = torch.randint(0, cfg["num_train_timesteps"], (batch,), generator=g, device=dev)
        with autocast(dev):
            pred = unet(sched.add_noise(x, noise, t), t, class_labels=cond(lab_all[idx], none)).sample
        loss = torch.nn.functional.mse_loss(pred.float(), sched.get_velocity(x, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, params, 0.999)
    sync(device)


def train_speed(cells: CellSet, cfg: dict[str, Any], device: str, *, batch_size: int, warmup: int, steps: int,
                rounds: int, lr: float = 2e-4) -> dict[str, Any]:
    """images/s of the bare loop and of ``Diffusion.train`` (accelerate), interleaved ``rounds`` times."""
    out: dict[str, Any] = {"batch_size": batch_size, "warmup_steps": warmup, "timed_steps": steps, "rounds": rounds,
                           "bf16": torch.device(device).type == "cuda", "train_path": "accelerate"}
    secs: dict[str, list[float]] = {"bare": [], "train": []}
    for _ in range(rounds):
        with StepClock(device, warmup, steps) as clock:
            bare_train(cells, cfg, device, batch_size, warmup + steps, lr)
        secs["bare"].append(clock.seconds())
        with tempfile.TemporaryDirectory() as d, StepClock(device, warmup, steps) as clock:
            Diffusion.train(cells, d, steps=warmup + steps, batch_size=batch_size, lr=lr, resume=False,
                            sample_every=0, save_every=0, progress=False, device=device, **cfg)
        secs["train"].append(clock.seconds())
    for k, v in secs.items():
        out[f"{k}_img_per_s"] = round(rounds * steps * batch_size / sum(v), 1)
        out[f"{k}_img_per_s_rounds"] = [round(steps * batch_size / s, 1) for s in v]
    out["ratio"] = round(out["train_img_per_s"] / out["bare_img_per_s"], 3)
    out["ratio_rounds"] = [round(b / t, 3) for b, t in zip(secs["bare"], secs["train"])]
    return out


def random_cells(n: int, size: int, seed: int = 0) -> CellSet:
    """``n`` random ``size`` px images in two labelled classes (speed does not depend on the pixels)."""
    rng = np.random.default_rng(seed)
    labels = {"subtype": [("a", "b")[i % 2] for i in range(n)]}
    return CellSet(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), labels, np.full(n, np.nan), np.full(n, np.nan))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", help=".npz from bench/cells_npz.py (default: 64 random images)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (default cpu)")
    ap.add_argument("--preset", default="tiny", help="model size: tiny | cpu | gpu")
    ap.add_argument("--size", type=int, default=16, help="pixels")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per loop per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    if min(args.size, args.batch_size, args.steps, args.rounds) <= 0 or args.warmup < 1:
        raise ValueError("--size, --batch-size, --steps and --rounds must be positive, --warmup at least 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from alldata.generators._accel import distributed, process_device

    device = process_device(args.device) if distributed() else select_device(args.device)
    if args.cells:
        cells = load_npz(args.cells, "subtype", args.size)[0]
    else:
        cells = random_cells(64, args.size)
    cfg = config(cells, args.size, args.preset)
    report = {
        "device": torch.cuda.get_device_name(device) if torch.device(device).type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "preset": args.preset, "size": args.size, "n_cells": len(cells),
        **train_speed(cells, cfg, device, batch_size=args.batch_size, warmup=args.warmup, steps=args.steps,
                      rounds=args.rounds),
    }
    if not distributed() or int(__import__("os").environ.get("RANK", "0")) == 0:
        print(json.dumps(report))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
