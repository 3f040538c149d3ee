"""Diagnostics that separate "the denoiser is bad" from "the path to pixels is wrong".

:func:`x0_reconstruction` noises real cells to a timestep and asks the model for the clean
image; :func:`sampler_sweep` samples the same seeds through every sampler and guidance;
:func:`nearest_rms` measures how far samples sit from the training images (all 8 dihedral
orientations, as training augments). ``bench/diagnose.py`` runs them on a checkpoint and
writes the figures of bench/RESULTS.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from alldata.generators.base import GeneratorError

from alldata.metrics.generative import nearest, pixel_statistics

__all__ = ["dihedral_views", "implied_x0", "nearest_rms", "sampler_sweep", "x0_reconstruction"]

#: (sampler, steps) pairs the sweep runs; DDPM-1000 is the reference ancestral sampler.
SWEEP = (("ddpm", 1000), ("ddim", 20), ("ddim", 100), ("dpm++", 20))


def dihedral_views(images: np.ndarray) -> np.ndarray:
    """The 8 flips/rotations of ``(N, H, W, C)`` images, stacked: ``(8N, H, W, C)``."""
    return np.concatenate([np.rot90(f, k, (1, 2)) for f in (images, images[:, :, ::-1]) for k in range(4)])


def nearest_rms(samples: np.ndarray, train: np.ndarray, *, dihedral: bool = True) -> np.ndarray:
    """Per sample, the RMS pixel distance (0-255 levels) to its nearest training image."""
    ref = dihedral_views(train) if dihedral else train
    _, dist = nearest(samples.reshape(len(samples), -1).astype(np.float64), ref.reshape(len(ref), -1).astype(np.float64))
    return dist / np.sqrt(samples[0].size)


def implied_x0(x_t: torch.Tensor, out: torch.Tensor, alpha_bar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The clean image a model output implies at noise level ``alpha_bar`` (no clipping).

    epsilon: ``(x_t - sqrt(1-a) eps) / sqrt(a)`` (the error is amplified by ``1/sqrt(a)``);
    v: ``sqrt(a) x_t - sqrt(1-a) v`` (bounded for every ``a``).
    """
    a = alpha_bar.view(-1, 1, 1, 1)
    if prediction_type == "epsilon":
        return (x_t - (1 - a).sqrt() * out) / a.sqrt()
    if prediction_type == "v_prediction":
        return a.sqrt() * x_t - (1 - a).sqrt() * out
    raise GeneratorError(f"prediction_type={prediction_type!r}; choose 'epsilon' or 'v_prediction'")


@torch.no_grad()
def x0_reconstruction(gen: Any, images: np.ndarray, timesteps: Sequence[int], *,
                      condition: dict[str, Any] | None = None, seed: int = 0) -> list[dict[str, Any]]:
    """Noise ``images`` (uint8 NHWC) to each t, predict x0 with ``gen``; MSE in [-1, 1] units and mean RGB.

    ``gen`` is a diffusion generator (``unet``, ``embed``, ``config``, ``device``).
    """
    from alldata.generators.diffusion import make_scheduler

    sched = make_scheduler("ddpm", gen.config)
    pred_type = gen.config.get("prediction_type", "epsilon")
    x0 = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1).to(gen.device)
    cond = gen.embed(condition or {}, len(x0))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for t in timesteps:
        noise = torch.randn(x0.shape, generator=g).to(gen.device)
        tt = torch.full((len(x0),), int(t), dtype=torch.long, device=gen.device)
        x_t = sched.add_noise(x0, noise, tt)
        out = gen.unet(x_t, tt, class_labels=cond).sample.float()
        ab = sched.alphas_cumprod.to(gen.device)[tt]
        pred = implied_x0(x_t, out, ab, pred_type)
        rows.append({
            "t": int(t),
            "alpha_bar": float(ab[0]),
            "x0_mse": float(((pred - x0) ** 2).mean()),
            "x0_mse_clipped": float(((pred.clamp(-1, 1) - x0) ** 2).mean()),
            "pred_mean_rgb": [round(float(v), 1) for v in ((pred.clamp(-1, 1) + 1) * 127.5).mean((0, 2, 3))],
            "true_mean_rgb": [round(float(v), 1) for v in ((x0 + 1) * 127.5).mean((0, 2, 3))],
        })
    return rows


def sampler_sweep(gen: Any, train: np.ndarray, *, n: int = 16, seed: int = 1,
                  conditions: Sequence[dict[str, Any]] = ({},), guidance: Sequence[float] = (1.0, 2.0),
                  sweep: Sequence[tuple[str, int]] = SWEEP) -> list[dict[str, Any]]:
    """Sample the same seeds with every (sampler, steps) x condition x guidance; stats per run.

    Each row: mean RGB, std, high-frequency energy (mean |neighbour difference|), and the
    median nearest-training-image RMS; ``samples`` holds the images for grids.
    """
    rows = []
    for sampler, steps in sweep:
        for cond in conditions:
            for gs in guidance if cond else (1.0,):
                x = gen.sample(n, cond, seed=seed, sampler=sampler, num_inference_steps=steps, guidance_scale=gs)
                st = pixel_statistics(x)
                rows.append({
                    "sampler": sampler, "steps": steps, "condition": dict(cond), "guidance": gs,
                    "mean_rgb": [round(v, 1) for v in st.mean], "std": round(float(np.mean(st.std)), 1),
                    "hf_energy": round(st.hf_energy, 2),
                    "nn_rms_median": round(float(np.median(nearest_rms(x, train))), 1),
                    "samples": x,
                })
    return rows
