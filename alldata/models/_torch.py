"""Shared pieces of the deep reference models (:mod:`~alldata.models.cnn`, :mod:`~alldata.models.unet`).

* :func:`select_device`, :func:`seeded`, :func:`autocast` - from :mod:`alldata.devices` (one
  source for the models, the generator families and the encoder);
* :func:`check_images` - uint8 RGB ``(H, W, 3)`` arrays in, a list out, or
  :class:`ImageInputError` naming the first bad image;
* :func:`save_checkpoint` / :func:`read_checkpoint` - ``config.json`` + ``model.safetensors``
  (never pickle), the layout of :mod:`alldata.encoder` and the generators;
* :func:`progress_bar` - tqdm, off when ``progress=False``;
* :func:`recalibrate_batchnorm` - "precise BN": BatchNorm statistics recomputed for the
  final weights.

Importing this module does not import torch; each function does what it needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alldata.devices import autocast, seeded, select_device
from alldata.errors import ImageError
from alldata.models.base import ModelError, read_saved_config

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "ImageInputError",
    "autocast",
    "check_image",
    "check_images",
    "load_state",
    "progress_bar",
    "read_checkpoint",
    "read_weights",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "seeded",
    "select_device",
    "versions",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class ImageInputError(ModelError, ImageError):
    """An image array a deep model cannot take (a :class:`ModelError` and an :class:`ImageError`)."""


def check_images(images: Any, what: str = "images", min_size: int = 8) -> list[np.ndarray]:
    """``images`` (an ``(N, H, W, 3)`` array or a sequence of ``(H, W, 3)`` arrays) as a list.

    Every image must be ``uint8`` RGB at least ``min_size`` pixels on each side; sizes may
    differ between images.

    Examples:
        >>> len(check_images(np.zeros((2, 16, 16, 3), np.uint8)))
        2
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            raise ImageInputError(
                f"{what}: got one image of shape {images.shape}; pass a batch, e.g. images[None] or [image]"
            )
        items = list(images) if images.ndim == 4 else [images]
    elif isinstance(images, Sequence) and not isinstance(images, str | bytes):
        items = list(images)
    else:
        raise ImageInputError(f"{what} must be an (N, H, W, 3) uint8 array or a list of (H, W, 3) arrays")
    if not items:
        raise ImageInputError(f"{what}: empty; need at least one image")
    out = []
    for i, img in enumerate(items):
        out.append(check_image(img, f"{what}[{i}]", min_size))
    return out


def check_image(image: Any, what: str = "image", min_size: int = 8) -> np.ndarray:
    """One uint8 RGB ``(H, W, 3)`` image, at least ``min_size`` pixels on each side."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ImageInputError(
            f"{what}: the models take RGB uint8 arrays of shape (H, W, 3); got {img.dtype} {img.shape}. "
            "Convert first, e.g. np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    if min(img.shape[:2]) < min_size:
        raise ImageInputError(f"{what}: shape {img.shape} is too small (need at least {min_size}x{min_size} pixels)")
    return img


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar over ``total`` steps (disabled when ``enabled`` is false)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, dynamic_ncols=True)


def versions() -> dict[str, str]:
    """Library versions recorded in every saved config."""
    import torch

    from alldata import __version__

    return {"alldata_version": __version__, "torch_version": torch.__version__}


def save_checkpoint(model: nn.Module, config: dict[str, Any], directory: str | Path) -> Path:
    """Write ``model.safetensors`` (the state dict) and ``config.json`` into ``directory``.

    The weights are written to a temporary name and moved into place, so an interrupted
    save never leaves a half-written file under the real name; a re-save overwrites.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as e:
        raise ModelError(f"the model's config cannot be written as JSON ({e}): {config!r}") from None
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = d / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    tmp.replace(d / WEIGHTS_NAME)
    (d / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
    return d


def read_checkpoint(directory: str | Path, fmt: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a folder written by :func:`save_checkpoint` with ``config["format"] == fmt``."""
    config = read_saved_config(directory, CONFIG_NAME, WEIGHTS_NAME, fmt, "model")
    w_path = Path(directory) / WEIGHTS_NAME
    return config, read_weights(w_path)


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors state dict (CPU tensors), or :class:`ModelError` naming the file."""
    from safetensors.torch import load_file

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file {p} not found; pass a local .safetensors file (nothing is downloaded)")
    try:
        return load_file(str(p))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(f"{p}: cannot read as safetensors ({e})") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``model.load_state_dict(state)`` (strict), with a :class:`ModelError` naming ``source`` on mismatch."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ModelError(f"{source}: the weights do not fit the model in its config ({str(e).splitlines()[0]})") from None


def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], device: str) -> None:
    """Recompute every BatchNorm's running mean / variance as the average over ``batches``.

    The running averages lag far behind the weights on short runs (a few hundred steps),
    which leaves eval mode predicting one class; one pass over the unaugmented training
    data with cumulative averaging ("precise BN") gives the statistics of the final
    weights. Batches of one sample are skipped (no variance to measure). The model is left
    in eval mode.
    """
    import torch
    from torch import nn

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the pass
        model.train()
        with torch.no_grad(), autocast(device):
            for x in batches:
                if len(x) > 1:
                    model(x)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    model.eval()
