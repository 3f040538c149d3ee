"""The generator contract, shared by every family (diffusion, GAN, overlap).

A generator is trained on real cells, saved with :meth:`Generator.save_pretrained` as a
``config.json`` beside ``model.safetensors`` (never pickle), reloaded with
:meth:`Generator.from_pretrained`, and sampled with an explicit seed only:
the same checkpoint, condition and seed give the same images.

Conditions are plain mappings from a schema field to a wanted value, e.g.
``{"cell_type": "lymphoblast", "subtype": "L3"}`` for a label, or
``{"area": 0.45, "nc_ratio": 0.8}`` for the morphology attributes of
:func:`alldata.generators.data.morphology` (cell area as a fraction of the image,
nucleus / (nucleus + cytoplasm) area). A condition a checkpoint was not trained with is
an error that lists what it knows.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from alldata.errors import AlldataError
from alldata.registry import Registry

__all__ = [
    "CONFIG_NAME",
    "FAMILY_MODULES",
    "GENERATORS",
    "WEIGHTS_NAME",
    "Generator",
    "GeneratorError",
    "checkpoint_sha256",
    "get_family",
    "parse_condition",
    "select_device",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

#: Generator families by name (``@GENERATORS.register("ddpm")`` on the class).
GENERATORS: Registry[type[Generator]] = Registry("generator")

#: family -> the module that registers it (imported on first use: torch is heavy)
FAMILY_MODULES = {
    "diffusion": "alldata.generators.ddpm",
    "gan": "alldata.generators.gan",
    "overlap": "alldata.generators.overlap",
}


def get_family(name: str) -> type[Generator]:
    """The generator class registered as ``name``, importing its module if needed."""
    if name not in GENERATORS and name in FAMILY_MODULES:
        import importlib

        importlib.import_module(FAMILY_MODULES[name])
    return GENERATORS.get(name)


#: Continuous (morphology) condition names; everything else is a label field.
CONTINUOUS = ("area", "nc_ratio")


class GeneratorError(AlldataError, ValueError):
    """Bad generator arguments, an unknown condition, or an unusable checkpoint."""


def parse_condition(text: str) -> dict[str, Any]:
    """``"subtype=L3,cell_type=lymphoblast,nc_ratio=0.8"`` -> a condition dict.

    Morphology values (``area``, ``nc_ratio``) become floats in [0, 1]; the rest stay strings.
    """
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise GeneratorError(f"condition part {part!r} is not field=value (e.g. subtype=L3,nc_ratio=0.8)")
        k, v = (x.strip() for x in part.split("=", 1))
        if k in CONTINUOUS:
            try:
                f = float(v)
            except ValueError:
                raise GeneratorError(f"condition {k}={v!r} must be a number in [0, 1]") from None
            if not 0.0 <= f <= 1.0:
                raise GeneratorError(f"condition {k}={f} must be in [0, 1]")
            out[k] = f
        else:
            out[k] = v
    return out


def select_device(device: str | None = None) -> str:
    """``device`` if given, else ``"cuda"`` when available, else ``"cpu"``."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def checkpoint_sha256(directory: str | Path) -> str:
    """sha256 over a checkpoint's config and weights (what provenance records)."""
    d = Path(directory)
    h = hashlib.sha256()
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        p = d / name
        if not p.is_file():
            raise GeneratorError(f"{d} is not a checkpoint: {name} is missing (train one with `alldata train-generator`)")
        h.update(name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


class Generator:
    """Base of every family. Subclasses implement ``sample`` and the (de)serialisation."""

    family: ClassVar[str]

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    # --- what every family provides ------------------------------------------------------
    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, **kwargs: Any) -> np.ndarray:
        """``num_samples`` images as a uint8 ``(N, H, W, 3)`` array, deterministic in ``seed``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Tensors to save (torch tensors, for safetensors)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory``."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dict(self.config, family=self.family)
        tmp = d / (WEIGHTS_NAME + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(d / WEIGHTS_NAME)
        (d / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True))
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> Generator:
        """Load a checkpoint written by :meth:`save_pretrained` (of any registered family)."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path = d / CONFIG_NAME
        if not cfg_path.is_file():
            raise GeneratorError(f"{d} is not a checkpoint: {CONFIG_NAME} is missing")
        cfg = json.loads(cfg_path.read_text())
        family = cfg.pop("family", None)
        klass = get_family(family) if cls is Generator else cls
        gen = klass.build(cfg, device=device)
        gen.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return gen

    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> Generator:
        """A new (untrained) generator from its config."""
        raise NotImplementedError

    def check_condition(self, condition: dict[str, Any]) -> None:
        """Raise :class:`GeneratorError` for a condition this checkpoint was not trained with."""
        known: dict[str, list[str]] = self.config.get("conditions", {})
        for k, v in condition.items():
            if k in CONTINUOUS:
                if k not in self.config.get("continuous", []):
                    raise GeneratorError(f"this checkpoint was not trained with morphology condition {k!r}")
                continue
            if k not in known:
                raise GeneratorError(f"unknown condition field {k!r}; this checkpoint knows {sorted(known) or 'none'}")
            if v not in known[k]:
                raise GeneratorError(f"{k}={v!r} was not in the training data; known values: {known[k]}")
