"""The generator contract: one class per family, found through one lazy registry.

A family is a :class:`Generator` subclass registered with ``@GENERATORS.register(name)``
(timm's ``register_model``). The class carries everything about the family: its config
(:attr:`~Generator.DEFAULTS`, :meth:`~Generator.check_config`), model sizes
(:attr:`~Generator.PRESETS`), :meth:`~Generator.train`, :meth:`~Generator.finetune`,
:meth:`~Generator.sample`, the recipe-arm settings it accepts (:attr:`~Generator.ARM_PARAMS`)
and ``save_pretrained``/``from_pretrained`` (``config.json`` beside ``model.safetensors``, as
diffusers' ``ConfigMixin``; never pickle). Sampling is deterministic in an explicit seed.
The shipped families are declared lazily (torch is heavy), with the two facts recipes need
without importing them (:func:`family_traits`). Conditions are mappings from a schema field
to a value, e.g. ``{"cell_type": "lymphoblast", "nc_ratio": 0.8}`` (morphology values from
:func:`alldata.generators.data.morphology`, in [0, 1]).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from alldata.devices import select_device
from alldata.errors import AlldataError
from alldata.registry import Registry

if TYPE_CHECKING:
    from alldata.generators.data import CellSet

__all__ = [
    "ARM_PARAMS",
    "CONFIG_NAME",
    "GENERATORS",
    "WEIGHTS_NAME",
    "FamilyTraits",
    "Generator",
    "GeneratorError",
    "checkpoint_sha256",
    "family_traits",
    "parse_condition",
    "select_device",
    "trainable_families",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

#: Generator families by name; the shipped ones are imported on first use.
GENERATORS: Registry[type[Generator]] = Registry(
    "generator",
    {"diffusion": "alldata.generators.diffusion", "gan": "alldata.generators.gan", "overlap": "alldata.generators.overlap"},
    install_hint="the generators need torch and diffusers: pip install 'alldata[gen]'",
)

#: Recipe-arm settings every trainable family accepts, with defaults (``image_size=None``:
#: the recipe's ``data.image_size``).
ARM_PARAMS: dict[str, Any] = {"preset": "cpu", "image_size": None, "steps": 200, "batch_size": 16, "finetune_steps": 0}


@dataclass(frozen=True)
class FamilyTraits:
    """What a recipe needs to know about a family without importing it."""

    trainable: bool
    arm_params: tuple[str, ...] = ()


#: Traits of the lazily declared families (tests check them against the classes).
_DECLARED_TRAITS = {
    "diffusion": FamilyTraits(True, (*ARM_PARAMS, "num_inference_steps", "sampler", "finetune_train")),
    "gan": FamilyTraits(True, tuple(ARM_PARAMS)),
    "overlap": FamilyTraits(False),
}


def family_traits(name: str) -> FamilyTraits:
    """:class:`FamilyTraits` of family ``name``: declared ones without importing, others from the class.

    Raises:
        UnknownNameError: ``name`` is not a registered family (the message lists them).
    """
    if name in _DECLARED_TRAITS and GENERATORS.target(name) is not None:
        return _DECLARED_TRAITS[name]
    cls = GENERATORS.get(name)
    return FamilyTraits(cls.is_trainable(), tuple(cls.ARM_PARAMS))


def trainable_families() -> list[str]:
    """Names of the registered families that can be trained (``train-generator``, recipe arms)."""
    return [n for n in GENERATORS.names() if family_traits(n).trainable]


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
    """Base of every family. A family sets the class attributes and implements ``build``,
    ``sample``, ``state_dict``/``load_state_dict``; a trainable one also ``train``, and
    ``finetune``/``add_condition_value`` when it can learn a new class from a few images."""

    family: ClassVar[str]
    #: config keys and their defaults (:meth:`check_config` fills and checks them)
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    #: model sizes: ``"tiny"`` for tests, ``"cpu"`` for 32-64 px runs on a few cores, ``"gpu"`` for quality runs
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    #: recipe-arm settings (``arms[].params``) and their defaults; see :meth:`arm_settings`
    ARM_PARAMS: ClassVar[dict[str, Any]] = {}

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    # --- config --------------------------------------------------------------------------
    @classmethod
    def check_config(cls, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with :attr:`DEFAULTS` filled in, JSON-normalised and checked.

        Checks the keys, the label ``conditions`` (``{field: [values]}``) and the
        ``continuous`` attributes; families check the rest in their override.

        Raises:
            GeneratorError: an unknown key or a bad value, named with the allowed ones.
        """
        unknown = set(config) - set(cls.DEFAULTS)
        if unknown:
            raise GeneratorError(f"unknown {cls.family} config keys {sorted(unknown)}; known: {sorted(cls.DEFAULTS)}")
        cfg = json.loads(json.dumps({**cls.DEFAULTS, **config}))
        for f, vals in cfg.get("conditions", {}).items():
            if not f or "." in f or f in CONTINUOUS:
                raise GeneratorError(f"condition field {f!r} is not a label field name (e.g. cell_type, subtype)")
            if not all(isinstance(v, str) and v for v in vals) or len(set(vals)) != len(vals):
                raise GeneratorError(f"conditions[{f!r}] must be distinct non-empty strings, got {vals}")
        if "conditions" in cfg:
            cfg["conditions"] = dict(sorted(cfg["conditions"].items()))
        if "continuous" in cfg:
            if not set(cfg["continuous"]) <= set(CONTINUOUS):
                raise GeneratorError(f"continuous={cfg['continuous']} must be a subset of {list(CONTINUOUS)}")
            cfg["continuous"] = [c for c in CONTINUOUS if c in cfg["continuous"]]
        return cfg

    @classmethod
    def preset(cls, name: str) -> dict[str, Any]:
        """The config keys of model size ``name`` (a key of :attr:`PRESETS`)."""
        if name not in cls.PRESETS:
            raise GeneratorError(f"unknown preset {name!r} for generator family {cls.family!r}; "
                                 f"choose one of {sorted(cls.PRESETS) or '(none)'}")
        return dict(cls.PRESETS[name])

    @classmethod
    def is_trainable(cls) -> bool:
        """Whether the family implements :meth:`train`."""
        return cls.train.__func__ is not Generator.train.__func__  # type: ignore[attr-defined]

    # --- what every family provides ------------------------------------------------------
    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> Generator:
        """A new (untrained) generator from its config."""
        raise NotImplementedError

    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, **kwargs: Any) -> np.ndarray:
        """``num_samples`` images as a uint8 ``(N, H, W, 3)`` array, deterministic in ``seed``."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Tensors to save (torch tensors, for safetensors)."""
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- what trainable families provide -------------------------------------------------
    @classmethod
    def train(cls, cells: CellSet, out_dir: str | Path, **kwargs: Any) -> Generator:
        """Train on ``cells`` into ``out_dir`` (resumable; ``steps``, ``batch_size``, ``seed``,
        ``resume``, ``sample_every``, ``save_every``, ``progress``, ``device``, and config keys)."""
        raise GeneratorError(f"generator family {cls.family!r} is not trained; trainable: {trainable_families()}")

    def finetune(self, cells: CellSet, out_dir: str | Path, *, steps: int, base_dir: str | Path | None = None,
                 **kwargs: Any) -> Generator:
        """Few-shot: adapt to a handful of ``cells`` (values added with :meth:`add_condition_value`)."""
        raise GeneratorError(f"generator family {self.family!r} cannot be fine-tuned")

    def add_condition_value(self, field: str, value: str) -> int:
        """Make ``field=value`` a known condition; returns its row (1-based; idempotent)."""
        raise GeneratorError(f"generator family {self.family!r} cannot learn new condition values")

    # --- recipe arms ---------------------------------------------------------------------
    @classmethod
    def arm_settings(cls, params: dict[str, Any], image_size: int) -> dict[str, Any]:
        """A recipe arm's ``params`` with :attr:`ARM_PARAMS` defaults filled in and checked.

        Raises:
            GeneratorError: a setting the family does not take, or an unknown preset.
        """
        unknown = sorted(set(params) - set(cls.ARM_PARAMS))
        if unknown:
            raise GeneratorError(f"arm params {unknown} are not settings of generator family {cls.family!r}; "
                                 f"allowed: {sorted(cls.ARM_PARAMS)}")
        out = {**cls.ARM_PARAMS, **params}
        out["image_size"] = int(out["image_size"] if out.get("image_size") is not None else image_size)
        if "preset" in out:
            cls.preset(out["preset"])
        return out

    @classmethod
    def sample_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The ``options`` (e.g. the ``generate`` command's flags) that this family's :meth:`sample` takes."""
        params = inspect.signature(cls.sample).parameters
        return {k: v for k, v in options.items() if k in params}

    @classmethod
    def arm_kwargs(cls, settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """The family-specific ``(train, finetune, sample)`` keyword arguments of an arm's settings."""
        return {}, {}, {}

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
            raise GeneratorError(f"{d} is not a checkpoint: {CONFIG_NAME} is missing (train one with `alldata train-generator`)")
        cfg = json.loads(cfg_path.read_text())
        family = cfg.pop("family", None)
        if cls is Generator and not isinstance(family, str):
            raise GeneratorError(f"{cfg_path} names no generator family; registered: {GENERATORS.names()}")
        klass = GENERATORS.get(family) if cls is Generator else cls
        gen = klass.build(cfg, device=device)
        gen.load_state_dict(load_file(str(d / WEIGHTS_NAME)))
        return gen

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
