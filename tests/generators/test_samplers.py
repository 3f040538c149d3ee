"""The samplers against an analytic denoiser: no training, 8 px, 20 steps (CPU, about a second).

If the data are a finite set of images ``x0s`` drawn with equal probability, the best epsilon
prediction at timestep ``t`` is known in closed form: ``E[eps | x_t] = (x_t - sqrt(ab_t) *
E[x0 | x_t]) / sqrt(1 - ab_t)``, with ``E[x0 | x_t]`` the posterior mean over ``x0s``. Every
sampler recovers the data from that exact denoiser, so it cannot tell a good sampler from a
bad one. A trained network is not exact: it is off by a little, and its output stays in the
range of its N(0, 1) training targets. :class:`AnalyticDenoiser` models both (``err``,
``clamp``), which is what made DPM-Solver++ saturate under the cosine schedule.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from alldata.generators.diffusion import DEFAULTS, make_scheduler, sample_loop

from tests.models._synthetic import cell_image

SAMPLERS = ("ddim", "dpm++", "ddpm")
#: the analytic denoiser predicts epsilon (v-prediction, the default, is tested on trained models)
EPS_CONFIG = {**DEFAULTS, "prediction_type": "epsilon"}
B, S, STEPS = 8, 8, 20


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class AnalyticDenoiser(torch.nn.Module):
    """Epsilon prediction for data uniform over ``x0s`` ``(K, 3, H, W)``, called like the UNet.

    ``err`` adds a fixed error field of that standard deviation to every prediction and
    ``clamp`` bounds the output to ``[-clamp, clamp]``, as a trained network's would be.
    """

    def __init__(self, x0s: torch.Tensor, *, err: float = 0.0, clamp: float | None = None) -> None:
        super().__init__()
        self.x0s = x0s.double()
        self.alphas_cumprod = make_scheduler("ddpm", DEFAULTS).alphas_cumprod.double()  # the training schedule
        g = torch.Generator().manual_seed(7)
        self.err = err * torch.randn(x0s.shape[1:], generator=g, dtype=torch.float64)
        self.clamp = clamp

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> SimpleNamespace:
        assert float(t).is_integer(), f"timestep {float(t)} is not on the training grid"
        ab = self.alphas_cumprod[int(t)]
        x = x.double()
        dist2 = ((x[:, None] - ab.sqrt() * self.x0s[None]) ** 2).flatten(2).sum(-1)  # (B, K)
        weights = torch.softmax(-dist2 / (2 * (1 - ab)), dim=1)  # posterior over the K images
        x0 = torch.einsum("bk,kchw->bchw", weights, self.x0s)
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt() + self.err
        if self.clamp is not None:
            eps = eps.clamp(-self.clamp, self.clamp)
        return SimpleNamespace(sample=eps.float())


def images(k: int) -> torch.Tensor:
    """``k`` (1 or 2) images in [-1, 1]: a smooth random field and a cell (nucleus on plasma)."""
    yy, xx = np.mgrid[:S, :S] / S
    rng = np.random.default_rng(0)
    smooth = np.stack([0.8 * np.sin(2 * np.pi * (rng.uniform() * yy + rng.uniform() * xx) + c) for c in range(3)])
    cell = cell_image(S, ((S // 2, S // 2),), r_cell=3.5, r_nuc=2.2, noise=0.0)[0].transpose(2, 0, 1) / 127.5 - 1
    return torch.tensor(np.stack([smooth, cell])[:k], dtype=torch.float32)


def run(sampler: str, denoiser: AnalyticDenoiser, guidance_scale: float = 1.0) -> torch.Tensor:
    noise = torch.randn((B, 3, S, S), generator=torch.Generator().manual_seed(3))
    cond = torch.zeros(B, 4)
    uncond = None if guidance_scale == 1.0 else torch.ones(B, 4)  # the denoiser ignores labels: guidance is a no-op
    gens = [torch.Generator().manual_seed(i) for i in range(B)]
    return sample_loop(denoiser, make_scheduler(sampler, EPS_CONFIG), noise, cond, uncond, num_inference_steps=STEPS,
                       guidance_scale=guidance_scale, generator=gens)


def nearest_error(x: torch.Tensor, x0s: torch.Tensor) -> torch.Tensor:
    """Per sample, the max abs pixel error to the closest of ``x0s``."""
    return (x[:, None] - x0s[None]).abs().flatten(2).amax(-1).min(1).values


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("k", [1, 2])
def test_exact_denoiser(sampler, k):
    x0s = images(k)
    x = run(sampler, AnalyticDenoiser(x0s))
    assert float(nearest_error(x, x0s).max()) < 0.01


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("k", [1, 2])
def test_imperfect_denoiser_does_not_saturate(sampler, k):
    """A 0.1 epsilon error costs 2e4 in x0 at t=999 (cosine schedule): the sampler must contain it."""
    x0s = images(k)
    x = run(sampler, AnalyticDenoiser(x0s, err=0.1, clamp=5.0), guidance_scale=2.0)
    saturated = float((x.abs() > 0.999).float().mean())
    assert saturated <= 0.01, f"{sampler}: {saturated:.1%} of the pixels at -1/+1"
    assert float(nearest_error(x, x0s).max()) < 0.05
    if k == 2:
        hits = nearest_error(x, x0s[:1]) < 0.05
        assert 0 < int(hits.sum()) < B  # both images are sampled, not one mode
