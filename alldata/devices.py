"""Torch device choice, bf16 autocast and seeded initialisation, shared by every torch model.

One source for the reference models (:mod:`alldata.models._torch`), the generator families
(:mod:`alldata.generators._torch`) and the scoring encoder (:mod:`alldata.encoder`).
Importing this module does not import torch; each function does what it needs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from alldata.errors import AlldataError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceError", "autocast", "cpu_cores", "seeded", "select_device", "worker_devices"]


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


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def worker_devices(n: int, device: str | None = None) -> list[tuple[str, int]]:
    """``(device, torch threads)`` for ``n`` worker processes, one device each.

    ``device`` None: GPUs ``cuda:0`` .. ``cuda:n-1`` when CUDA is available, else the CPU;
    ``"cuda"`` or ``"cpu"`` to choose. Each worker gets ``cpu_cores() // n`` threads (at
    least 1), so ``n`` CPU workers share the cores instead of each taking all of them.

    Raises:
        DeviceError: ``n`` < 1, another device than None/"cpu"/"cuda", or more GPUs asked for
            than there are (the message says how many there are).

    Examples:
        >>> worker_devices(2, "cpu")[0][0]
        'cpu'
    """
    import torch

    if n < 1:
        raise DeviceError(f"devices={n}: give 1 or more worker devices")
    if device not in (None, "cpu", "cuda"):
        raise DeviceError(f"device={device!r} for {n} workers; use None (GPUs when there are), 'cuda' or 'cpu'")
    threads = max(1, cpu_cores() // n)
    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return [("cpu", threads)] * n
    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > have:
        raise DeviceError(f"devices={n} GPUs asked for but this machine has {have}; use --devices {have} "
                          "or the CPU (device='cpu')" if have else
                          f"devices={n} GPUs asked for but CUDA is not available here; use device='cpu'")
    return [(f"cuda:{i}", threads) for i in range(n)]


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
