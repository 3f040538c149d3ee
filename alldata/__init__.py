"""alldata: one common schema for ALL microscopy datasets in FiftyOne, synthetic data with
provenance, and honest benchmarks. Importing this package is light (no torch, no fiftyone)."""

from __future__ import annotations

__version__ = "0.1.0"

from alldata.errors import AlldataError, SourceNotFoundError, UnknownNameError
from alldata.schema import CellType, Diagnosis, Sample, Subtype

__all__ = [
    "AlldataError",
    "CellType",
    "Diagnosis",
    "Sample",
    "SourceNotFoundError",
    "Subtype",
    "UnknownNameError",
    "__version__",
]
