"""Benchmark recipes: one YAML file says what is compared, on which data, and how.

A recipe names the task, the real pool (sources, label field, class map, filters), the folds
and seeds, the *arms* (what each training set adds to the real data), the models, the
metrics and the baseline; the optional ``rare`` block is the rare-class recovery protocol
(every arm but the ``oracle`` keeps a small share of one class's training groups).
Validation is pydantic with ``extra="forbid"``: :func:`load_recipe` names the file and the
offending key. An arm kind is one the task implements itself (:data:`ARM_KINDS`) or, for
classification, a trainable generator family of :data:`~alldata.generators.GENERATORS`
(:func:`arm_kinds`). Validation imports neither torch nor fiftyone.

Examples:
    >>> sorted(arm_kinds("segmentation"))
    ['overlap', 'real']
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from alldata.errors import AlldataError
from alldata.generators.base import GENERATORS, family_traits, trainable_families
from alldata.schema import CellType, Diagnosis, F, Subtype

__all__ = [
    "ARM_KINDS",
    "CLASSIFICATION_METRICS",
    "LABEL_FIELDS",
    "ArmSpec",
    "DataSpec",
    "MixSpec",
    "ModelSpec",
    "QuickSpec",
    "RareSpec",
    "Recipe",
    "RecipeError",
    "SourceLabels",
    "TestSpec",
    "arm_kinds",
    "is_generator_kind",
    "load_recipe",
    "recipe_slug",
]

#: Arm kinds each task implements itself (generator-family arms come from the registry: :func:`arm_kinds`).
ARM_KINDS: dict[str, frozenset[str]] = {
    "classification": frozenset({"real", "oracle", "augment", "oversample"}),
    "segmentation": frozenset({"real", "overlap"}),
}
#: Tasks whose arms may also name a trainable generator family (trained on the fold's training cells).
GENERATOR_ARM_TASKS = frozenset({"classification"})


def is_generator_kind(kind: str) -> bool:
    """Whether arm kind ``kind`` is a registered, trainable generator family."""
    return kind in GENERATORS and family_traits(kind).trainable


def arm_kinds(task: str) -> frozenset[str]:
    """The arm kinds task ``task`` accepts: its own plus, where it takes them, the trainable families."""
    own = ARM_KINDS.get(task, frozenset())
    return own | frozenset(trainable_families()) if task in GENERATOR_ARM_TASKS else own


#: Label fields a recipe may classify.
LABEL_FIELDS: dict[str, type] = {F.DIAGNOSIS: Diagnosis, F.CELL_TYPE: CellType, F.SUBTYPE: Subtype}
#: Whole-set classification metrics; per-class ones are ``<name>:<class>`` with name in CLASS_METRIC_NAMES.
CLASSIFICATION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "macro_auc", "weighted_f1")
CLASS_METRIC_NAMES = ("sensitivity", "specificity", "precision", "f1", "auc")


class RecipeError(AlldataError, ValueError):
    """A recipe file that cannot be used: bad YAML, unknown key, bad value."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


LabelField = Literal["diagnosis", "cell_type", "subtype"]


class SourceLabels(_Spec):
    """How one source's vocabulary meets the recipe's classes: the field it is read from and its map.

    ALL-IDB2's healthy crops carry no ``cell_type``, only ``diagnosis: healthy``; a recipe that
    classifies ``cell_type`` states ``all_idb2: {label_field: diagnosis, classes: {ALL: blast,
    healthy: non_blast}}`` instead of pretending the vocabularies agree.
    """

    label_field: LabelField | None = None
    classes: dict[str | None, str] = Field(min_length=1)
    #: a label of this source not in ``classes``: ``error`` in an external pool (the default), or
    #: ``leave_out``: stated here, so the source's other cells (PBC's neutrophils, ...) stay out of both pools
    unmapped: Literal["error", "leave_out"] = "error"


class DataSpec(_Spec):
    """The real pool: which samples, which label, which classes."""

    sources: list[str] = Field(min_length=1)
    label_field: Literal["diagnosis", "cell_type", "subtype"]
    #: a list keeps those classes; a mapping ``{raw: class}`` keeps and renames (``null`` = no label).
    classes: list[str] | dict[str | None, str] | None = None
    #: extra filters ``{field: value | [values]}``; label fields match on their ``.label``.
    where: dict[str, str | list[str]] | None = None
    image_size: int = Field(default=64, ge=8, le=512)
    #: per-source label field and map where a source's vocabulary differs (the label map of
    #: cross-source recipes; a source not listed uses ``label_field`` and ``classes``).
    source_labels: dict[str, SourceLabels] | None = None

    @model_validator(mode="after")
    def _labels_consistent(self) -> DataSpec:
        if self.source_labels and self.classes is None:
            raise ValueError("source_labels needs data.classes (the classes every source maps into)")
        return self

    def class_map(self) -> dict[str | None, str] | None:
        """``{raw label: class}`` or None (keep every non-empty label as is)."""
        if self.classes is None:
            return None
        if isinstance(self.classes, list):
            return {c: c for c in self.classes}
        return dict(self.classes)

    def class_names(self) -> list[str] | None:
        """The classes after mapping, sorted (None when the recipe does not list them)."""
        m = self.class_map()
        if m is None:
            return None
        names = set(m.values())
        for sl in (self.source_labels or {}).values():
            names |= set(sl.classes.values())
        return sorted(names)

    def field_for(self, source: str) -> str:
        """The label field samples of ``source`` are read from."""
        sl = (self.source_labels or {}).get(source)
        return sl.label_field or self.label_field if sl is not None else self.label_field

    def map_for(self, source: str) -> dict[str | None, str] | None:
        """``{raw label: class}`` for samples of ``source`` (None: keep labels as they are)."""
        sl = (self.source_labels or {}).get(source)
        return dict(sl.classes) if sl is not None else self.class_map()

    def leaves_out(self, source: str) -> bool:
        """Whether the recipe states that ``source``'s labels outside its map are left out (no error)."""
        sl = (self.source_labels or {}).get(source)
        return sl is not None and sl.unmapped == "leave_out"

    def label_fields(self) -> list[str]:
        """Every label field the pool reads (``label_field`` first)."""
        extra = [sl.label_field for sl in (self.source_labels or {}).values() if sl.label_field]
        return list(dict.fromkeys([self.label_field, *extra]))


class TestSpec(_Spec):
    """An external test pool: models train on the whole training pool and are scored here.

    ``dataset`` (default: the run's dataset) and ``sources`` / ``where`` select the samples;
    the dataset name, not the source name, tells two copies of one source apart. With
    ``leave_one_source_out`` each of ``data.sources`` is held out in turn (``sources`` unset).
    ``in_pool`` also cross-validates inside the training pool (``folds`` × ``seeds``), so the
    report sets the external figures next to the in-pool ones and picks each arm's model by
    in-pool CV (the external pool never chooses a model).
    """

    __test__ = False  # not a pytest class

    dataset: str | None = None
    sources: list[str] | None = Field(default=None, min_length=1)
    where: dict[str, str | list[str]] | None = None
    in_pool: bool = True
    leave_one_source_out: bool = False
    #: write Grad-CAM heatmaps (alldata.explain.write_gradcam) on the external predictions of a CNN
    #: first model, and save the view "mistakes with heatmaps" (of the baseline arm)
    gradcam: bool = False

    @model_validator(mode="after")
    def _one_way(self) -> TestSpec:
        if self.leave_one_source_out == (self.sources is not None):
            raise ValueError("test: give either sources: [...] (an external pool) or leave_one_source_out: true")
        return self


class RareSpec(_Spec):
    """Rare-class recovery: keep only ``keep_fraction`` of the class's training groups."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_: str = Field(alias="class")
    keep_fraction: float = Field(gt=0, le=1)
    min_keep: int = Field(default=1, ge=1)


class ArmSpec(_Spec):
    """One way of building the training set."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class ModelSpec(_Spec):
    """A model trained on every arm (a key of :data:`alldata.models.CLASSIFIERS` / segmenters)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class MixSpec(_Spec):
    """How much synthetic data a mix may hold."""

    #: the largest share of synthetic samples in a training set (synthetic / all).
    max_synthetic_ratio: float = Field(default=0.5, ge=0, lt=1)


class QuickSpec(_Spec):
    """Overrides applied by ``--quick``."""

    folds: int | None = Field(default=None, ge=2)
    seeds: list[int] | None = Field(default=None, min_length=1)
    epochs: int | None = Field(default=None, ge=1)
    generator_steps: int | None = Field(default=None, ge=1)
    finetune_steps: int | None = Field(default=None, ge=0)
    num_inference_steps: int | None = Field(default=None, ge=1)
    max_per_class: int | None = Field(default=None, ge=2)
    n_boot: int | None = Field(default=None, ge=10)
    arm_params: dict[str, dict[str, Any]] = Field(default_factory=dict)


class Recipe(_Spec):
    """A whole benchmark (see the module docstring)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    description: str = ""
    task: Literal["classification", "segmentation"]
    data: DataSpec
    eval_sources: list[str] | None = None
    folds: int = Field(default=5, ge=2)
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    baseline: str
    oracle: str | None = None
    rare: RareSpec | None = None
    arms: list[ArmSpec] = Field(min_length=1)
    models: list[ModelSpec] = Field(min_length=1)
    metrics: list[str] = Field(min_length=1)
    primary_metric: str
    mix: MixSpec = Field(default_factory=MixSpec)
    n_boot: int = Field(default=1000, ge=10)
    max_per_class: int | None = Field(default=None, ge=2)
    quick: QuickSpec = Field(default_factory=QuickSpec)
    #: an external test pool (train on the whole pool, test on another dataset or selection)
    test: TestSpec | None = None

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds {v} repeat a value; list each seed once")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        allowed = arm_kinds(self.task)
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arms: names {names} repeat; give every arm its own name")
        for i, arm in enumerate(self.arms):
            if arm.kind not in allowed:
                close = difflib.get_close_matches(arm.kind, sorted(allowed), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else " (or register a generator family)"
                raise ValueError(
                    f"arms.{i}.kind: {arm.kind!r} is not an arm kind of task {self.task!r}; "
                    f"allowed: {', '.join(sorted(allowed))}{hint}"
                )
        for i, arm in enumerate(self.arms):
            _check_harmonisation(i, arm, self.task)
        if self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not an arm; arms are {names}")
        by_name = {a.name: a for a in self.arms}
        if self.oracle is not None:
            if self.oracle not in names:
                raise ValueError(f"oracle: {self.oracle!r} is not an arm; arms are {names}")
            if by_name[self.oracle].kind != "oracle":
                raise ValueError(f"oracle: arm {self.oracle!r} has kind {by_name[self.oracle].kind!r}; it must be 'oracle'")
            if self.rare is None:
                raise ValueError("oracle is set but rare is not; the oracle is the rare protocol's full-data arm")
        if any(a.kind == "oracle" for a in self.arms) and self.rare is None:
            raise ValueError("an arm of kind 'oracle' needs a rare: {class, keep_fraction} block")
        classes = self.data.class_names()
        if self.rare is not None and classes is not None and self.rare.class_ not in classes:
            raise ValueError(f"rare.class: {self.rare.class_!r} is not one of the classes {classes}")
        if any(is_generator_kind(a.kind) for a in self.arms):
            enum = LABEL_FIELDS[self.data.label_field]
            made = [self.rare.class_] if self.rare is not None else (classes or [])
            for c in made:
                if c not in {e.value for e in enum}:
                    raise ValueError(
                        f"generated samples carry {self.data.label_field}={c!r}, which is not a "
                        f"{self.data.label_field} value ({', '.join(e.value for e in enum)}); map a real value to it"
                    )
        if self.task == "classification":
            for m in [*self.metrics, self.primary_metric]:
                _check_classification_metric(m, classes)
        if self.primary_metric not in self.metrics:
            raise ValueError(f"primary_metric: {self.primary_metric!r} is not in metrics {self.metrics}")
        if self.test is not None:
            if self.task != "classification":
                raise ValueError(f"test: external test pools are implemented for classification, not {self.task!r}")
            if self.test.leave_one_source_out and len(self.data.sources) < 2:
                raise ValueError(f"test.leave_one_source_out needs two or more data.sources, got {self.data.sources}")
        return self

    # --- helpers ---------------------------------------------------------------------------

    def arm(self, name: str) -> ArmSpec:
        """The arm called ``name`` (RecipeError listing the arms otherwise)."""
        for a in self.arms:
            if a.name == name:
                return a
        raise RecipeError(f"recipe {self.name!r} has no arm {name!r}; arms: {[a.name for a in self.arms]}")

    def with_quick(self) -> Recipe:
        """This recipe with its ``quick:`` overrides applied (fewer folds, seeds, steps)."""
        q = self.quick
        update: dict[str, Any] = {}
        if q.folds is not None:
            update["folds"] = q.folds
        if q.seeds is not None:
            update["seeds"] = q.seeds
        if q.n_boot is not None:
            update["n_boot"] = q.n_boot
        if q.max_per_class is not None:
            update["max_per_class"] = q.max_per_class
        arms = []
        for a in self.arms:
            p = dict(a.params)
            takes = family_traits(a.kind).arm_params if is_generator_kind(a.kind) else ()
            if q.generator_steps is not None and "steps" in takes:
                p["steps"] = q.generator_steps
            if q.finetune_steps is not None and "finetune_steps" in takes:
                p["finetune_steps"] = q.finetune_steps
            if q.num_inference_steps is not None and "num_inference_steps" in takes:
                p["num_inference_steps"] = q.num_inference_steps
            p.update(q.arm_params.get(a.name, {}))
            arms.append(a.model_copy(update={"params": p}))
        update["arms"] = arms
        if q.epochs is not None:
            update["models"] = [
                m.model_copy(update={"params": {**m.params, "epochs": q.epochs}}) if _takes_epochs(m.name) else m
                for m in self.models
            ]
        return self.model_copy(update=update)


#: Stain normalisations an arm may apply to its train and test images (``params: {stain: ...}``).
STAIN_KINDS = ("macenko", "reinhard", "none")


def _check_harmonisation(i: int, arm: ArmSpec, task: str) -> None:
    """``stain`` (a normaliser name or a StainTransform mapping), ``hed_jitter`` (a strength) and
    ``rbc_px`` / ``source_rbc_px`` (scale harmonisation: a common red-cell diameter) arm params."""
    p = arm.params
    if any(k in p for k in ("stain", "hed_jitter", "rbc_px", "source_rbc_px")) and task != "classification":
        raise ValueError(f"arms.{i}.params: stain / hed_jitter / rbc_px are classification arm params, not {task!r} ones")
    if "source_rbc_px" in p and "rbc_px" not in p:
        raise ValueError(f"arms.{i}.params.source_rbc_px needs rbc_px (the common red-cell diameter, e.g. rbc_px: 16)")
    if "rbc_px" in p:
        ok = isinstance(p["rbc_px"], (int, float)) and not isinstance(p["rbc_px"], bool) and p["rbc_px"] > 0
        table = p.get("source_rbc_px") or {}
        ok = ok and isinstance(table, dict) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in table.values())
        if not ok:
            raise ValueError(f"arms.{i}.params.rbc_px: {p['rbc_px']!r} (source_rbc_px: {p.get('source_rbc_px')!r}); "
                             "give the common red-cell diameter in pixels (> 0, e.g. 16) and, optionally, "
                             "source_rbc_px: {source: pixels} to override alldata.generators.overlap.RBC_PX")
        if is_generator_kind(arm.kind):
            raise ValueError(f"arms.{i}.params.rbc_px: arm kind {arm.kind!r} generates images with no source red-cell "
                             "size; use rbc_px on real / oracle / oversample / augment arms")
    if "stain" in p:
        kind = p["stain"] if isinstance(p["stain"], str) else (p["stain"] or {}).get("kind")
        if kind not in STAIN_KINDS:
            raise ValueError(f"arms.{i}.params.stain: {p['stain']!r}; use one of {', '.join(STAIN_KINDS)} or a "
                             "mapping {kind: macenko, beta: 0.1, ...} (alldata.models.stain.StainTransform)")
    if "hed_jitter" in p and not (isinstance(p["hed_jitter"], (int, float)) and 0 < p["hed_jitter"] <= 1):
        raise ValueError(f"arms.{i}.params.hed_jitter: {p['hed_jitter']!r}; give the jitter strength in (0, 1], "
                         "e.g. 0.05 (adds one HED-jittered copy of every training image)")


def _takes_epochs(model: str) -> bool:
    return model not in {"svm", "random_forest", "knn", "otsu_hsv", "kmeans_color", "watershed"}


def _check_classification_metric(name: str, classes: list[str] | None) -> None:
    if name in CLASSIFICATION_METRICS:
        return
    if ":" in name:
        kind, cls = name.split(":", 1)
        if kind in CLASS_METRIC_NAMES and (classes is None or cls in classes):
            return
        if kind in CLASS_METRIC_NAMES:
            raise ValueError(f"metric {name!r}: class {cls!r} is not one of {classes}")
    raise ValueError(
        f"metric {name!r} is unknown; use one of {', '.join(CLASSIFICATION_METRICS)} or "
        f"<{'|'.join(CLASS_METRIC_NAMES)}>:<class>"
    )


def recipe_slug(name: str) -> str:
    """``name`` as a FiftyOne field-safe slug: ``rare-class-recovery`` -> ``rare_class_recovery``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").lower()


def _where(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate the YAML recipe at ``path``.

    Raises:
        RecipeError: the file is missing or not YAML, or a key is unknown or has a bad value;
            the message names the file and the key.

    Examples:
        >>> r = load_recipe("recipes/allidb2-binary.yaml")  # doctest: +SKIP
        >>> r.task
        'classification'
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; pass a path such as recipes/rare-class-recovery.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, task:, data:, arms:, ...), got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            key = _where(err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(f"unknown key {key!r}; remove or fix it (see alldata/recipes.py for the keys)")
            else:
                problems.append(f"{key}: {err['msg']}")
        raise RecipeError(f"{path}: invalid recipe: " + "; ".join(problems)) from None
