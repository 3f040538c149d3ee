"""The real-vs-synthetic benchmark: recipes run as cells (arm × model × fold × seed).

* :mod:`alldata.benchmark.tasks`: the task contract (:class:`Cell`, :class:`CellContext`,
  :class:`CellResult`, :class:`Task`) and the :data:`TASKS` registry.
* :mod:`alldata.benchmark.engine`: pool, leak-free folds, resumable cells, aggregation
  (:func:`run_benchmark`).
* :mod:`alldata.benchmark.classification`: the ``classification`` task;
  :mod:`alldata.benchmark.segmentation`: the ``segmentation`` task.
* :mod:`alldata.benchmark.report`: ``report.md`` and plots; ``metrics.json`` is an
  :class:`alldata.reports.BenchmarkSummary` the engine writes.

Importing this package is light: the engine and the tasks import their heavy
dependencies when they run.
"""

from __future__ import annotations

import importlib
from typing import Any

from alldata.benchmark.tasks import TASKS, Cell, CellContext, CellResult, Task, get_task

_LAZY = {
    "run_benchmark": "alldata.benchmark.engine",
    "build_pool": "alldata.benchmark.engine",
    "fold_plan": "alldata.benchmark.engine",
    "aggregate": "alldata.benchmark.engine",
    "BenchmarkError": "alldata.benchmark.engine",
    "write_report": "alldata.benchmark.report",
    "write_plots": "alldata.benchmark.report",
}

__all__ = ("TASKS", "BenchmarkError", "Cell", "CellContext", "CellResult", "Task", "aggregate", "build_pool",
           "fold_plan", "get_task", "run_benchmark", "write_plots", "write_report")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
