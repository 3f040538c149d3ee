"""Torch pieces shared by the trained generator families (:mod:`~alldata.generators.diffusion`, ``gan``).

Device choice (:func:`select_device`), bf16 :func:`autocast` on CUDA, :func:`seeded` weight
initialisation, the EMA (:func:`ema_decay`, :func:`ema_update`), the 8-orientation
:func:`dihedral` augmentation, one :class:`ConditionEmbedder`, resumable training state in
safetensors + JSON (:func:`save_train_state`, :func:`load_train_state`; never pickle) and
:func:`save_grid` for the sample grids written while training. Importing it imports torch.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover
    raise ImportError("the trained generators need torch: pip install 'alldata[gen]'") from e

from alldata.generators.base import GeneratorError

from alldata.devices import autocast, seeded, select_device

__all__ = [
    "STATE_DIR",
    "ConditionEmbedder",
    "autocast",
    "dihedral",
    "ema_decay",
    "ema_update",
    "encode_labels",
    "encode_values",
    "grow_rows",
    "load_train_state",
    "rng_from_text",
    "rng_restore",
    "rng_to_text",
    "save_grid",
    "save_train_state",
    "seeded",
    "select_device",
]

#: The folder under a run's ``out_dir`` holding its resumable state.
STATE_DIR = "train_state"


def ema_decay(step: int, decay: float) -> float:
    """The EMA decay at ``step``, with warm-up: ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: Sequence[torch.Tensor], params: Sequence[torch.Tensor], decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * params``, in place, over whole parameter lists."""
    ema, params = list(ema), list(params)
    if len(ema) != len(params):
        raise GeneratorError(f"EMA has {len(ema)} tensors but the model {len(params)}; they must be copies")
    if ema:
        torch._foreach_lerp_(ema, params, 1.0 - decay)


def dihedral(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random horizontal flip then a random quarter turn per image: all 8 orientations.

    ``x`` is ``(B, C, H, W)`` with ``H == W``; the draws come from ``generator`` on its own
    device (a flip draw then a rotation draw per batch), so a generator on ``x``'s device
    keeps the step free of host transfers and a CPU one gives the same draws as always.
    """
    b, dev = x.shape[0], generator.device
    flip = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)[:, None, None, None]
    x = torch.where(flip, x.flip(3), x)
    k = torch.randint(4, (b,), generator=generator, device=dev).to(x.device)[:, None, None, None]
    out = x
    for r in (1, 2, 3):
        out = torch.where(k == r, torch.rot90(x, r, (2, 3)), out)
    return out


def grow_rows(table: torch.Tensor, rows: int) -> torch.Tensor:
    """``table`` (row 0 = null, then one row per value) with ``rows`` more, each the mean of
    the value rows (the null row when there are none)."""
    mean = (table[1:] if len(table) > 1 else table).mean(0, keepdim=True)
    return torch.cat([table, mean.expand(rows, -1)])


class ConditionEmbedder(nn.Module):
    """Labels and morphology values -> one ``(B, dim)`` condition vector (the sum of parts).

    Each label field has an embedding table whose row 0 is *null* (unknown or dropped) and
    row ``i + 1`` the field's ``i``-th value; each continuous attribute (``area``,
    ``nc_ratio`` in [0, 1]) has a ``Linear(1, dim)`` of ``2 v - 1``, with a learned null
    vector for NaN. Inputs are ``labels`` ``(B, len(fields))`` long and ``values``
    ``(B, len(continuous))`` float, columns in the order of :attr:`fields` (sorted) and
    :attr:`continuous`. Weights: ``embeds.<field>.weight``, ``linears.<attr>.*``, ``nulls.<attr>``.
    """

    def __init__(self, conditions: dict[str, list[str]], continuous: Sequence[str], dim: int,
                 std: float | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.embeds = nn.ModuleDict({f: nn.Embedding(len(conditions[f]) + 1, dim) for f in sorted(conditions)})
        for t in self.embeds.values() if std is not None else ():  # None: torch's default N(0, 1)
            nn.init.normal_(t.weight, std=std)
        self.linears = nn.ModuleDict({c: nn.Linear(1, dim) for c in continuous})
        self.nulls = nn.ParameterDict({c: nn.Parameter(torch.zeros(dim)) for c in continuous})

    @property
    def fields(self) -> list[str]:
        return list(self.embeds)

    @property
    def continuous(self) -> list[str]:
        return list(self.linears)

    def forward(self, labels: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(labels), self.dim, device=labels.device)
        for i, emb in enumerate(self.embeds.values()):
            out = out + emb(labels[:, i])
        for j, (c, lin) in enumerate(self.linears.items()):
            v = values[:, j : j + 1]
            out = out + torch.where(torch.isnan(v), self.nulls[c], lin(torch.nan_to_num(v) * 2 - 1))
        return out

    def add_value(self, field: str) -> None:
        """One more row for ``field`` (a new field gets a table whose null row is zeros): the
        mean of the field's value rows, or its null row when it has none. In place."""
        dev = next(iter([*self.parameters(), *self.buffers()]), torch.zeros(0)).device
        old = self.embeds[field].weight.data if field in self.embeds else torch.zeros(1, self.dim, device=dev)
        emb = nn.Embedding(len(old) + 1, self.dim).to(dev)
        emb.weight.data = grow_rows(old, 1)
        self.embeds[field] = emb
        self.embeds = nn.ModuleDict(dict(sorted(self.embeds.items())))


def encode_labels(conditions: dict[str, list[str]], labels: dict[str, Sequence[str | None]], n: int) -> torch.Tensor:
    """``(n, fields)`` long row indices for :class:`ConditionEmbedder` (fields sorted; 0 = null).

    Raises:
        GeneratorError: a value not in ``conditions`` (the fix: ``add_condition_value``).
    """
    cols = []
    for f in sorted(conditions):
        vocab = conditions[f]
        col = []
        for v in labels.get(f) or [None] * n:
            if v and v not in vocab:
                raise GeneratorError(f"{f}={v!r} is not in this generator's conditions {vocab}; "
                                     "add it with add_condition_value first")
            col.append(vocab.index(v) + 1 if v else 0)
        cols.append(col)
    return torch.tensor(cols, dtype=torch.long).reshape(len(cols), n).T


def encode_values(continuous: Sequence[str], condition: dict[str, Any], n: int) -> torch.Tensor:
    """``(n, len(continuous))`` float values of one condition (NaN = absent), checked to be in [0, 1]."""
    vals = [float(condition.get(k, float("nan"))) for k in continuous]
    bad = [f"{k}={v}" for k, v in zip(continuous, vals) if np.isfinite(v) and not 0.0 <= v <= 1.0]
    if bad:
        raise GeneratorError(f"condition {', '.join(bad)} must be in [0, 1]")
    return torch.tensor([vals], dtype=torch.float32).expand(n, -1)


# --- resumable state ----------------------------------------------------------------------------


def rng_to_text(g: torch.Generator) -> str:
    """A generator's state (CPU or CUDA) as base64 text (for ``state.json``)."""
    return base64.b64encode(g.get_state().numpy().tobytes()).decode()


def rng_from_text(g: torch.Generator, text: str) -> None:
    """Restore a generator's state from :func:`rng_to_text` (a state of the same device type)."""
    g.set_state(torch.from_numpy(np.frombuffer(base64.b64decode(text), np.uint8).copy()))


def rng_restore(g: torch.Generator, text: str, saved_device: str, seed: int, step: int) -> None:
    """Continue a saved random stream in ``g``: :func:`rng_from_text` when the state was saved
    on ``g``'s device type, else (a run moved between CPU and GPU, whose generator states do
    not convert) a warning and a fresh stream seeded from ``(seed, step)``."""
    if saved_device == g.device.type:
        rng_from_text(g, text)
        return
    import warnings

    warnings.warn(f"the training state's random stream was saved on {saved_device}, this run is on "
                  f"{g.device.type}; continuing with a new stream seeded from (seed={seed}, step={step})", stacklevel=2)
    g.manual_seed(int(np.random.SeedSequence([seed, step]).generate_state(1)[0]))


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def save_train_state(directory: str | Path, weights: dict[str, dict[str, torch.Tensor]],
                     optimizers: dict[str, torch.optim.Optimizer], meta: dict[str, Any]) -> Path:
    """Write ``directory`` atomically: ``<name>.safetensors`` per weight set and optimizer,
    and ``state.json`` (``meta`` plus the optimizers' hyper-parameters). Returns it."""
    from safetensors.torch import save_file

    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, sd in weights.items():
        save_file(_cpu(sd), str(tmp / f"{name}.safetensors"))
    opt_meta = {}
    for name, opt in optimizers.items():
        sd = opt.state_dict()
        save_file(_cpu({f"{pid}.{k}": v for pid, st in sd["state"].items() for k, v in st.items() if torch.is_tensor(v)}),
                  str(tmp / f"{name}.safetensors"))
        other = {str(pid): {k: v for k, v in st.items() if not torch.is_tensor(v)} for pid, st in sd["state"].items()}
        opt_meta[name] = {"param_groups": sd["param_groups"], "state": other}
    (tmp / "state.json").write_text(json.dumps({**meta, "optimizers": opt_meta}, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.replace(final)
    return final


#: optimizer settings that choose an implementation, not the update (kept from the live optimizer on load)
_IMPL_FLAGS = ("fused", "foreach", "capturable", "differentiable")


def load_train_state(directory: str | Path, optimizers: dict[str, torch.optim.Optimizer],
                     weights: Sequence[str]) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read :func:`save_train_state`'s folder: restores ``optimizers`` in place and returns
    ``(meta, {name: tensors})`` for the weight sets named in ``weights``.

    The optimizers keep their own implementation flags (``fused``, ``foreach``,
    ``capturable``): a state saved by a fused AdamW on a GPU resumes in a plain one on the
    CPU and back; only the hyper-parameters and moments come from the folder."""
    from safetensors.torch import load_file

    d = Path(directory)
    meta = json.loads((d / "state.json").read_text())
    for name, opt in optimizers.items():
        state: dict[int, dict[str, Any]] = {}
        for key, v in load_file(str(d / f"{name}.safetensors")).items():
            pid, k = key.split(".", 1)
            state.setdefault(int(pid), {})[k] = v
        saved = meta["optimizers"][name]
        for pid, st in saved["state"].items():
            state.setdefault(int(pid), {}).update(st)
        groups = [{**sg, **{k: g[k] for k in _IMPL_FLAGS if k in g}} for sg, g in zip(saved["param_groups"], opt.param_groups)]
        opt.load_state_dict({"state": state, "param_groups": groups})
    return meta, {name: load_file(str(d / f"{name}.safetensors")) for name in weights}


def save_grid(rows: Sequence[np.ndarray], path: str | Path, pad: int = 0) -> Path:
    """Save ``rows`` (each ``(cols, H, W, 3)`` uint8) as one PNG grid, ``pad`` white pixels apart."""
    from PIL import Image

    cols = max(len(r) for r in rows)
    h, w = rows[0].shape[1:3]
    grid = np.full((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            grid[y : y + h, x : x + w] = img
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path
