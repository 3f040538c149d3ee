"""alldata: one common schema for ALL microscopy datasets in FiftyOne, synthetic data with
provenance, and honest benchmarks. Importing this package is light (no torch, no fiftyone)."""

from __future__ import annotations

__version__ = "0.1.0"

from typing import TYPE_CHECKING, Any

from alldata.errors import AlldataError, SourceNotFoundError, UnknownNameError

if TYPE_CHECKING:
    from alldata.schema import CellType, Diagnosis, Sample, Subtype

_SCHEMA_NAMES = ("CellType", "Diagnosis", "Sample", "Subtype")

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


def __getattr__(name: str) -> Any:
    """The schema's names load on first use: every command pays for numpy and pydantic only if it needs them."""
    if name in _SCHEMA_NAMES:
        from alldata import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'alldata' has no attribute {name!r}")
