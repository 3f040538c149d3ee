"""The benchmark's task contract: what the engine hands a task and what it gets back.

The engine (:mod:`alldata.benchmark.engine`) owns the recipe, the real pool, the leak-free
folds, the cell loop, resuming and the aggregation. A *task* gets one :class:`Cell` (arm ×
model × fold × seed) and its :class:`CellContext` (the fold's train and test sample ids),
trains, predicts the test samples and returns a :class:`CellResult` with one row per test
sample; ``score(rows)`` recomputes the metrics from rows alone (the engine pools rows across
folds and calls it inside the group bootstrap). Tasks are found in the lazy :data:`TASKS`
registry, so listing them imports no torch.

Examples:
    >>> Cell("real_rare", "random_forest", 0, 1).key()
    'arm=real_rare/model=random_forest/fold=0/seed=1'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from alldata.registry import Registry

if TYPE_CHECKING:
    from alldata.recipes import Recipe

__all__ = ["EXTERNAL_FOLD", "TASKS", "Cell", "CellContext", "CellResult", "Task", "get_task"]

#: The ``fold`` of a cell trained on the whole training pool and tested on the external pool.
EXTERNAL_FOLD = -1

@dataclass(frozen=True)
class Cell:
    """One unit of work; its JSON result file makes runs resumable."""

    arm: str
    model: str
    fold: int
    seed: int

    @property
    def external(self) -> bool:
        """Whether this cell trains on the whole pool and tests on the external pool."""
        return self.fold == EXTERNAL_FOLD

    def key(self) -> str:
        """``arm=<arm>/model=<model>/fold=<fold>/seed=<seed>`` (``fold=external`` for an external
        cell): also the result file's relative path."""
        fold = "external" if self.external else self.fold
        return f"arm={self.arm}/model={self.model}/fold={fold}/seed={self.seed}"


@dataclass
class CellContext:
    """Everything a task needs to run one cell.

    Attributes:
        recipe: the validated recipe (quick overrides already applied when ``quick``).
        cell: the cell to run.
        dataset: the FiftyOne dataset name.
        train_ids: FiftyOne sample ids of the REAL pool samples to train on (the fold's train
            side, with the recipe's rare-class cut already applied unless the arm is the oracle).
        test_ids: FiftyOne sample ids of the real pool samples to evaluate (the fold's test side,
            restricted to ``eval_sources`` when the recipe has them).
        work_dir: scratch directory of this cell (created by the engine).
        quick: the run is a ``--quick`` one (smaller epochs / generator steps).
        shared_dir: a directory shared by all models of one ``(arm, fold, seed)``: generators
            trained there are reused by every model and by resumed runs.
        labels: sample id -> class (after the recipe's label map) for train and test ids.
        groups: sample id -> group id for train and test ids.
        rare_kept: for the rare-class protocol, the train ids of the rare class that were kept.
        progress: show inner progress bars.
        test_dataset: the dataset holding ``test_ids`` when it is not ``dataset`` (an external pool).
        model_dir: where to save the fitted model (``config.json`` + safetensors), or None.
    """

    recipe: Recipe
    cell: Cell
    dataset: str
    train_ids: list[str]
    test_ids: list[str]
    work_dir: Path
    quick: bool
    shared_dir: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)
    groups: dict[str, str] = field(default_factory=dict)
    rare_kept: list[str] = field(default_factory=list)
    progress: bool = False
    test_dataset: str | None = None
    model_dir: Path | None = None


@dataclass
class CellResult:
    """What a task returns for one cell.

    Attributes:
        rows: one per test sample: at least ``{"id": sample_id, "group": group_id, ...}``.
        metrics: ``task.score(rows)``.
        info: ``n_train``, ``n_synthetic``, ``seconds``, ...
    """

    rows: list[dict]
    metrics: dict[str, float]
    info: dict = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what the engine writes per cell)."""
        return {"rows": self.rows, "metrics": self.metrics, "info": self.info}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellResult:
        """Inverse of :meth:`to_json`."""
        return cls(rows=list(data["rows"]), metrics=dict(data["metrics"]), info=dict(data.get("info", {})))


@runtime_checkable
class Task(Protocol):
    """What every benchmark task does (see the module docstring)."""

    name: str
    arm_kinds: frozenset[str]

    def run(self, ctx: CellContext) -> CellResult: ...

    def score(self, rows: list[dict]) -> dict[str, float]: ...

    def write_predictions(self, dataset: str, field: str, rows: list[dict]) -> None: ...


#: Tasks by name, imported on first use; each value is a class (or factory) building a :class:`Task`
#: with no arguments. A task module also registers itself (``TASKS.register(name)(cls)``).
TASKS: Registry[Any] = Registry("benchmark task", {
    "classification": "alldata.benchmark.classification:ClassificationTask",
    "segmentation": "alldata.benchmark.segmentation:SegmentationTask",
})


def get_task(name: str) -> Task:
    """Build the task registered as ``name``."""
    return TASKS.get(name)()
