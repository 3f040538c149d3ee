"""Loaders, one module per source, all registered in :data:`SOURCES`."""

from __future__ import annotations

from pathlib import Path

from alldata.sources import (  # noqa: F401  (importing registers each source)
    all_idb1,
    all_idb2,
    atlas,
    bccd,
    bccd_wbc,
    cnmc,
    folder,
    pbc,
    taleqani,
)
from alldata.sources.base import SOURCES, Problem, Source

__all__ = ["SOURCES", "Problem", "Source", "get_source"]


def get_source(name: str, root: str | Path | None = None) -> Source:
    """Instantiate the registered source ``name`` at ``root`` (default: its folder under the data root)."""
    return SOURCES.get(name)(root)
