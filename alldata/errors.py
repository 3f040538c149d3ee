"""The alldata exception tree.

Library code raises these; the CLI catches :class:`AlldataError` (and pydantic's
``ValidationError``), prints the message and exits with status 1. Each subclass also
subclasses the builtin a caller would expect, after Hugging Face ``datasets.exceptions``.
"""

from __future__ import annotations

__all__ = [
    "AlldataError",
    "AnnotationError",
    "ImageError",
    "ManualDownloadError",
    "SchemaError",
    "SourceNotFoundError",
    "SplitError",
    "StoreError",
    "UnknownNameError",
]


class AlldataError(Exception):
    """Root of every error alldata raises on purpose."""


class SourceNotFoundError(AlldataError, FileNotFoundError):
    """A source's files are not where its loader expects them."""


class ManualDownloadError(SourceNotFoundError):
    """A gated (e.g. medical, by-request) dataset must be obtained by hand first."""


class UnknownNameError(AlldataError, KeyError):
    """A registry lookup with a name that is not registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class ImageError(AlldataError, ValueError):
    """An image file that cannot be used: empty, truncated, corrupt, too large, bad mode."""


class SchemaError(AlldataError, ValueError):
    """A record that does not fit the common schema."""


class SplitError(AlldataError, ValueError):
    """Bad split arguments, or a split that would leak a group across splits."""


class StoreError(AlldataError, RuntimeError):
    """The FiftyOne store is missing a dataset or cannot be reached."""


class AnnotationError(AlldataError, ValueError):
    """An annotation file (XML, CSV, positions, mask) that cannot be used as it is."""
