"""Torch device choice, bf16 autocast and seeded initialisation, shared by every torch model.

One source for the reference models (:mod:`alldata.models._torch`), the generator families
(:mod:`alldata.generators._torch`) and the scoring encoder (:mod:`alldata.encoder`).
Importing this module does not import torch; each function does what it needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from alldata.errors import AlldataError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceError", "autocast", "seeded", "select_device"]


class DeviceError(AlldataError, ValueError):
    """A device that is not a torch device, or CUDA asked for where there is none."""


def select_device(device: str | None = None) -> str:
    """``device`` if given (checked by torch), else ``"cuda"`` when available, else ``"cpu"``.

    Examples:
        >>> select_device("cpu")
        'cpu'
    """
    import torch

    if not device:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        torch.device(device)
    except RuntimeError as e:
        raise DeviceError(f"device={device!r} is not a torch device ({e}); use 'cpu', 'cuda' or 'cuda:N'") from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"device={device!r} but CUDA is not available here; use device='cpu' or leave it None")
    return str(device)


def autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a null context elsewhere (the CPU runs in fp32)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch (CPU and CUDA) for the body; the caller's CPU random state is restored after.

    Weight initialisation and dropout draw from torch's global generator, so a fit runs
    inside this to be reproducible without changing anyone else's random stream.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
