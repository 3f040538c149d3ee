"""Hugging Face accelerate glue for the trained generator families' training loops.

One training loop runs on one CPU, one GPU, or every GPU of one or several machines: started
plainly it is one process; started by ``accelerate launch`` (or ``torchrun``) each process
trains its own batches and accelerate wraps the model in DDP, which averages the gradients.
A loop adopts it in five places (see :func:`~alldata.generators.diffusion._fit`):

- :func:`make_accelerator` once, instead of choosing a device (bf16 mixed precision on CUDA,
  fp32 on the CPU; the process's own GPU under a launcher);
- :func:`rank_generator` for the loop's random stream (rank 0 draws what a single process
  draws, so one process is the run it always was) and :func:`rng_states` /
  :func:`resume_rng` to save and continue every rank's stream;
- ``accelerator.prepare(model, optimizer)``, ``accelerator.backward`` and
  ``accelerator.clip_grad_norm_`` in the step;
- :func:`read_losses`: the per-step losses stay on the device and are averaged over the
  processes and read back every N steps (one host sync per N steps, not per step);
- EMA, sample grids and saving on the main process only (``accelerator.is_main_process``),
  then :func:`share_from_main` so every rank returns the main process's EMA weights.

Importing it imports torch; ``accelerate`` is imported by :func:`make_accelerator`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from alldata.generators._torch import rng_from_text, rng_to_text

from alldata.devices import select_device

if TYPE_CHECKING:
    from accelerate import Accelerator

__all__ = [
    "distributed",
    "make_accelerator",
    "process_device",
    "rank_generator",
    "read_losses",
    "resume_rng",
    "rng_states",
    "share_from_main",
]

#: mixed precision modes a caller may ask for (accelerate's names)
PRECISIONS = ("no", "bf16", "fp16")


def distributed() -> bool:
    """Whether this process is one of several started by ``accelerate launch`` / ``torchrun``."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_device(device: str | None = None) -> str:
    """This process's training device: its own GPU (or the CPU) under a multi-process launch,
    else ``device`` checked by :func:`~alldata.devices.select_device` (None: CUDA when there)."""
    if distributed():
        from accelerate import PartialState

        return str(PartialState(cpu=not torch.cuda.is_available()).device)  # cpu=True: gloo across CPU processes
    return select_device(device)


def _precision(device: str, mixed_precision: str | None) -> str:
    """``mixed_precision`` if given; on CUDA, ``ACCELERATE_MIXED_PRECISION`` when it asks for
    one (``accelerate launch --mixed_precision fp16``) else bf16; on the CPU fp32 ("no")."""
    if mixed_precision is None:
        env = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
        cuda = torch.device(device).type == "cuda"
        mixed_precision = (env if env != "no" else "bf16") if cuda else "no"
    if mixed_precision not in PRECISIONS:
        from alldata.generators.base import GeneratorError

        raise GeneratorError(f"mixed_precision={mixed_precision!r}; choose one of {list(PRECISIONS)}")
    return mixed_precision


def make_accelerator(device: str | None = None, mixed_precision: str | None = None) -> tuple[Accelerator, str]:
    """An ``Accelerator`` for one training run and the device to put the model on.

    Places nothing itself (``device_placement=False``): the caller builds the model and its
    resident data on the returned device. One process: ``device`` (None: CUDA when there);
    under a launcher: the process's own device, and ``prepare`` wraps the model in DDP.
    ``mixed_precision`` defaults to bf16 on CUDA and fp32 on the CPU (see :func:`_precision`).

    accelerate keeps its settings in a process-wide state; a single process that trains
    once on the CPU and then on a GPU (or at another precision) gets that state reset, which
    holds nothing else there (no process group). Under a launcher the settings are fixed.
    """
    try:
        from accelerate import Accelerator
        from accelerate.state import AcceleratorState
    except ImportError as e:  # pragma: no cover - a bare machine
        from alldata.generators.base import GeneratorError

        raise GeneratorError(f"training runs through Hugging Face accelerate ({e}): pip install 'alldata[gen]' "
                             "or pip install accelerate") from None
    dev = process_device(device)
    mp = _precision(dev, mixed_precision)
    want = torch.device(dev).type
    state = AcceleratorState._shared_state
    if state and not distributed():
        have = getattr(state.get("device"), "type", None)
        if state.get("_mixed_precision") != mp or have != want:
            AcceleratorState._reset_state(reset_partial_state=True)
    acc = Accelerator(cpu=want == "cpu", mixed_precision=mp, device_placement=False)
    return acc, dev


def rank_generator(seed: int, device: str | torch.device, rank: int) -> torch.Generator:
    """The training stream of process ``rank``: ``seed`` itself on rank 0 (so one process
    draws what it always drew), ``SeedSequence([seed, rank])`` on the others."""
    s = seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
    return torch.Generator(torch.device(device)).manual_seed(s)


def rng_states(accelerator: Accelerator, g: torch.Generator) -> list[str]:
    """Every process's stream state (:func:`~alldata.generators._torch.rng_to_text`), in rank
    order, on every process. A collective: every rank calls it at the same step."""
    from accelerate.utils import gather_object

    return list(gather_object([rng_to_text(g)]))


def resume_rng(g: torch.Generator, saved: Sequence[str], saved_device: str, *, seed: int, step: int,
               rank: int, world: int) -> None:
    """Continue this rank's saved stream in ``g``; when the state was saved by another number of
    processes or on another device type (whose generator states do not convert), warn and
    start a fresh stream seeded from ``(seed, step[, rank])``."""
    if len(saved) == world and saved_device == g.device.type:
        rng_from_text(g, saved[rank])
        return
    why = (f"the training state's random stream was saved on {saved_device}, this run is on {g.device.type}"
           if saved_device != g.device.type else
           f"the training state was saved by {len(saved)} process(es), this run has {world}")
    if rank == 0:
        warnings.warn(f"{why}; continuing with a new stream seeded from (seed={seed}, step={step})", stacklevel=2)
    g.manual_seed(int(np.random.SeedSequence([seed, step] + ([rank] if rank else [])).generate_state(1)[0]))


def read_losses(accelerator: Accelerator, pending: list[torch.Tensor]) -> list[float]:
    """The pending per-step 0-d losses, averaged over the processes, in one host read; clears
    ``pending``. A collective under a launcher: every rank calls it at the same step."""
    if not pending:
        return []
    x = torch.stack(pending)
    pending.clear()
    if accelerator.num_processes > 1:
        x = accelerator.reduce(x, "mean")
    return x.tolist()


def share_from_main(accelerator: Accelerator, modules: Iterable[torch.nn.Module]) -> None:
    """Copy the main process's weights of ``modules`` to every process (in place; nothing to do
    in one process). For the EMA model, which only the main process updates."""
    if accelerator.num_processes <= 1:
        return
    from accelerate.utils import broadcast

    broadcast([t.data for m in modules for t in (*m.parameters(), *m.buffers())], from_process=0)
