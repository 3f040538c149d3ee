"""Loaders, one module per source, all registered in :data:`SOURCES`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alldata.errors import AnnotationError
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

__all__ = ["SOURCES", "Problem", "Source", "get_source", "source_name"]


def _compact(spelling: str) -> str:
    return "".join(ch for ch in spelling.lower() if ch.isalnum())


def source_name(name: str) -> str:
    """The registered name for ``name`` or for a dataset's own spelling of itself.

    Each source answers to its registry name and, compared without case or punctuation, to
    its ``title`` and ``dirname`` (``ALL-IDB1`` -> ``all_idb1``, ``C-NMC 2019`` / ``C_NMC_2019``
    -> ``cnmc``, ``BCCD`` -> ``bccd``). A name that matches nothing is returned unchanged, so
    :meth:`SOURCES.get <alldata.registry.Registry.get>` reports it with its close matches.
    """
    if name in SOURCES:
        return name
    key, found = _compact(name), set()
    for registered in SOURCES.names():
        cls = SOURCES.get(registered)
        spellings = (registered, getattr(cls, "title", ""), getattr(cls, "dirname", ""))
        if key and key in {_compact(s) for s in spellings if s}:
            found.add(registered)
    return found.pop() if len(found) == 1 else name


def get_source(name: str, root: str | Path | None = None, **options: Any) -> Source:
    """Instantiate the registered source ``name`` at ``root`` (default: its folder under the data root).

    ``options`` are the source's own keyword arguments (e.g. ``masks=``/``labels_csv=`` of
    ``folder``); one the source does not take raises :class:`~alldata.errors.AnnotationError`.
    """
    name = source_name(name)
    cls = SOURCES.get(name)
    if options:
        import inspect

        allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "root")]
        bad = sorted(set(options) - set(allowed))
        if bad:
            raise AnnotationError(f"source {name!r} takes no option {bad}; its options: {allowed or 'none'}")
    return cls(root, **options)
