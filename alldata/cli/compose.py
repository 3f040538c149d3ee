"""Old name of :mod:`alldata.cli.compose_overlaps` (``alldata compose-overlaps``), kept for its importers."""

from __future__ import annotations

from alldata.cli.compose_overlaps import app, parse_range

__all__ = ["app", "parse_range"]
