"""Typed contracts for what crosses a stage: the benchmark summary and the ingest report.

A writer builds one of these models and saves ``model_dump_json()``; every reader loads it
back through :func:`load_benchmark_summary` or :func:`load_ingest_report`, so a renamed
or missing key fails where the file is read, with the file's name, not as an empty table
cell further on. All models forbid unknown keys and carry a ``schema_version``.
Undefined numbers (a metric with no positive sample, an interval over one group) are NaN in
Python and ``null`` in the JSON. ``ScoreReport`` lives in :mod:`alldata.score`.

Examples:
    >>> g = Gain(arm="gan", model="rf", metric="f1", baseline="real", mean=0.05, ci_low=0.01,
    ...          ci_high=0.09, n_pairs=10, confidence=0.95)
    >>> Gain.model_validate_json(g.model_dump_json()) == g
    True
"""

from __future__ import annotations

import math
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from alldata.errors import AlldataError

__all__ = [
    "SCHEMA_VERSION",
    "ArmResult",
    "BenchmarkSummary",
    "CellSummary",
    "ExternalDrop",
    "ExternalResult",
    "FoldSummary",
    "Gain",
    "GapRecovered",
    "IngestProblem",
    "IngestReport",
    "LabelConflict",
    "LabelCopy",
    "MetricSummary",
    "PoolSummary",
    "ReportError",
    "load_benchmark_summary",
    "load_ingest_report",
    "save_report",
]

#: The version every contract written now carries; a reader refuses any other.
SCHEMA_VERSION = 1


class ReportError(AlldataError, ValueError):
    """A report file that is missing, not JSON, or not the contract it should be (names the file)."""


def _nan_if_none(v: Any) -> Any:
    return math.nan if v is None else v


#: A number that may be undefined: NaN in Python, ``null`` in JSON.
Num = Annotated[float, BeforeValidator(_nan_if_none)]


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")


# --- benchmark ------------------------------------------------------------------------------------
class MetricSummary(_Contract):
    """One metric of one arm and model: over cells (``mean``, ``sd``) and pooled over test rows
    (``pooled`` with its bootstrap interval ``ci_low``/``ci_high`` over test groups)."""

    mean: Num
    sd: Num
    pooled: Num
    ci_low: Num
    ci_high: Num


class ArmResult(_Contract):
    """One arm × model: its metrics and the mean training-set size over cells."""

    arm: str
    kind: str
    model: str
    n_cells: int
    metrics: dict[str, MetricSummary]
    n_train: Num
    n_synthetic: Num


class _Paired(_Contract):
    """An estimate over (seed, fold) pairs with its percentile-bootstrap interval."""

    arm: str
    model: str
    metric: str
    baseline: str
    mean: Num
    ci_low: Num
    ci_high: Num
    n_pairs: int = Field(ge=0, description="pairs with a defined value (NaN pairs are left out)")
    confidence: float = Field(gt=0, lt=1, description="the interval's confidence level, e.g. 0.95")


class Gain(_Paired):
    """Arm − baseline on ``metric``, paired per (seed, fold)."""


class GapRecovered(_Paired):
    """The share of the baseline → oracle gap an arm recovers on ``metric`` (0 none, 1 all)."""

    oracle: str
    aggregate: Literal["ratio_of_means", "mean_of_ratios"] = "ratio_of_means"


class CellSummary(_Contract):
    """One cell's metrics and what the task reported about it (``n_train``, ``seconds``, ...)."""

    key: str
    arm: str
    model: str
    fold: int
    seed: int
    metrics: dict[str, Num]
    info: dict[str, Any] = Field(default_factory=dict)


class FoldSummary(_Contract):
    """Sizes of one fold of one seed (``n_train_cut``: after the rare-class cut)."""

    seed: int
    fold: int
    n_train: int
    n_train_cut: int
    n_rare_kept: int
    n_test: int


class PoolSummary(_Contract):
    """The real pool: size, groups, samples per class and source, and what was left out why."""

    n: int
    n_groups: int
    per_class: dict[str, int]
    sources: dict[str, int]
    left_out: dict[str, int]


class ExternalDrop(_Contract):
    """One arm × model × metric on the external pool next to its in-pool (cross-validated) value;
    ``drop`` is external − in-pool (negative: worse on the new data)."""

    arm: str
    model: str
    metric: str
    in_pool: Num
    in_pool_ci_low: Num
    in_pool_ci_high: Num
    external: Num
    external_ci_low: Num
    external_ci_high: Num
    drop: Num


class ExternalResult(_Contract):
    """A recipe's external test pool (``test:``): models trained on the whole training pool,
    scored on another dataset or selection. ``gains`` are paired on the same external rows
    (CI over external groups); ``selected`` is each arm's model chosen by in-pool CV;
    ``model_dirs`` maps a cell key to its saved model folder (relative to the run)."""

    dataset: str
    sources: list[str]
    where: dict[str, Any] | None = None
    pool: PoolSummary
    arms: list[ArmResult]
    gains: list[Gain]
    cells: list[CellSummary]
    drops: list[ExternalDrop] = Field(default_factory=list)
    selected: dict[str, str] = Field(default_factory=dict)
    prediction_fields: dict[str, str] = Field(default_factory=dict)
    model_dirs: dict[str, str] = Field(default_factory=dict)
    heatmap_fields: dict[str, str] = Field(default_factory=dict)


class BenchmarkSummary(_Contract):
    """What one benchmark run found: ``metrics.json`` (written by the engine).

    ``arms`` holds one :class:`ArmResult` per arm × model; ``gains`` one :class:`Gain` per
    non-baseline arm × model × metric; ``gap_recovered`` the rare-class gap shares (empty
    without an oracle and a rare block). ``rare`` is the recipe's rare block as written.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    recipe: str = Field(description="the recipe's name")
    description: str = ""
    task: str
    dataset: str
    arm_names: list[str]
    models: list[str]
    metrics: list[str]
    primary_metric: str
    baseline: str
    oracle: str | None = None
    rare: dict[str, Any] | None = None
    n_folds: int
    seeds: list[int]
    n_boot: int
    confidence: float = Field(gt=0, lt=1)
    arms: list[ArmResult]
    gains: list[Gain]
    gap_recovered: list[GapRecovered] = Field(default_factory=list)
    cells: list[CellSummary]
    pool: PoolSummary
    folds: list[FoldSummary]
    # provenance and timings
    quick: bool = False
    command: str | None = None
    recipe_hash: str
    alldata_version: str
    created: datetime
    seconds: float
    cells_run: int
    cells_reused: int
    machine: dict[str, Any] = Field(default_factory=dict)
    prediction_fields: dict[str, str] = Field(default_factory=dict)
    plots: list[str] = Field(default_factory=list)
    #: the external test pool's results (``test:`` in the recipe); ``arms``/``gains`` above are then in-pool CV
    external: ExternalResult | None = None


# --- ingest ---------------------------------------------------------------------------------------
class IngestProblem(_Contract):
    """A file the ingest lost (``skipped``) or read only in part (``warning``), and why."""

    path: str
    reason: str
    severity: Literal["skipped", "warning"] = "skipped"


class LabelCopy(_Contract):
    """One copy of a file in a :class:`LabelConflict`: its key, file and labels (field -> value)."""

    key: str
    filepath: str
    labels: dict[str, str]


class LabelConflict(_Contract):
    """Byte-identical files (same ``sha256``) that carry different labels; ``fields`` disagree."""

    sha256: str
    fields: list[str]
    copies: list[LabelCopy]


class IngestReport(_Contract):
    """What one ``alldata ingest`` of one source did (``ingest-<source>.json``).

    Counts are of this run: ``found`` files, of which ``added``, ``updated`` (replaced) and
    ``unchanged``; ``not_on_disk``: samples of the source in the dataset whose file this run
    did not find; ``duplicates_tagged``: samples loaded by this run that are tagged ``duplicate``
    after it (byte-identical to another sample of any source), not the whole dataset's count;
    ``label_conflicts``: the groups of exact duplicates with different labels that involve
    this run's samples (tagged ``label_conflict``; each copy also has a warning in ``problems``).
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    source: str
    root: str
    dataset: str
    found: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    not_on_disk: int = 0
    duplicates_tagged: int = 0
    label_conflicts: list[LabelConflict] = Field(default_factory=list)
    decoded: bool = True  # False: JPEG/PNG files were checked by structure only (``--no-decode``)
    seconds: float = 0.0
    finished: datetime | None = None
    problems: list[IngestProblem] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Reports written before the contract had counts of ``problems`` and no version."""
        if isinstance(data, dict) and "schema_version" not in data:
            data = {k: v for k, v in data.items() if k not in ("skipped", "warnings")}
            data["schema_version"] = SCHEMA_VERSION
        return data

    @property
    def skipped(self) -> list[IngestProblem]:
        return [p for p in self.problems if p.severity == "skipped"]

    @property
    def warnings(self) -> list[IngestProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        """One line for people: ``bccd: 364 files, 364 added, ...``."""
        return (
            f"{self.source}: {self.found} files, {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped, {len(self.warnings)} warnings"
            + (f", {len(self.label_conflicts)} label conflict(s)" if self.label_conflicts else "")
            + f" ({self.seconds:.1f} s)"
        )


# --- reading and writing --------------------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)


def save_report(report: BaseModel, path: str | Path) -> Path:
    """Write ``report.model_dump_json()`` to ``path`` atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(report.model_dump_json(indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _load(cls: type[M], path: Path, what: str, fix: str) -> M:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{what} {path} is not readable: {e}") from None
    try:
        return cls.model_validate_json(text)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ReportError(
            f"{path} is not a {what} (schema_version {SCHEMA_VERSION}): {where}: {first['msg']} "
            f"({e.error_count()} error(s)); {fix}"
        ) from None


def load_benchmark_summary(path: str | Path) -> BenchmarkSummary:
    """The :class:`BenchmarkSummary` in ``DIR/metrics.json`` (or the file itself).

    Raises:
        ReportError: the file is missing, not JSON or not a benchmark summary.
    """
    p = Path(path)
    f = p / "metrics.json" if p.is_dir() else p
    return _load(BenchmarkSummary, f, "benchmark summary",
                 "re-run `alldata benchmark RECIPE --out DIR` on it (finished cells are reused)")


def load_ingest_report(path: str | Path) -> IngestReport:
    """The :class:`IngestReport` in ``path`` (``ingest-<source>.json``).

    Raises:
        ReportError: the file is missing, not JSON or not an ingest report.
    """
    return _load(IngestReport, Path(path), "ingest report", "re-run `alldata ingest` for that source")
