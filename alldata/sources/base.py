"""The Source contract every loader follows (after FiftyOne importers and torchvision datasets).

A source is one small class per public dataset. ``__init__`` only stores arguments;
:meth:`Source.check` says what is missing and how to get it; :meth:`Source.items` lists the
image files (cheap, sorted, deterministic); :meth:`Source.load` turns one file into a
validated :class:`~alldata.schema.Sample` (the expensive part, safe to run in threads).
Problems that cost a whole file raise an :class:`~alldata.errors.AlldataError`, which the
ingest driver records and skips; problems that cost only part of a record (a garbage
position line, a degenerate box) are recorded with :meth:`Source.warn` and the rest kept.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from alldata.config import data_root, source_root
from alldata.errors import AlldataError, SourceNotFoundError
from alldata.imageio import ImageInfo, inspect_image
from alldata.registry import Registry
from alldata.schema import ImageKind, Sample

__all__ = ["IMAGE_SUFFIXES", "SOURCES", "Problem", "Source", "list_images"]

#: Every loader, by registry key (``@SOURCES.register("name")`` on the class).
SOURCES: Registry[type[Source]] = Registry("source")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class Problem:
    """A problem found while loading: ``skipped`` lost the file, ``warning`` only part of it."""

    path: str
    reason: str
    severity: str = "skipped"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


class Source:
    """Base class of every loader. Subclasses set the class constants and implement
    :meth:`_check_layout`, :meth:`items` and :meth:`load`."""

    name: ClassVar[str]  # registry key, e.g. "all_idb2"
    title: ClassVar[str]  # official name, e.g. "ALL-IDB2"
    dirname: ClassVar[str]  # folder under the data root, e.g. "ALL-IDB2"
    homepage: ClassVar[str]
    license: ClassVar[str]
    citation: ClassVar[str]
    obtain: ClassVar[str]  # how to get the data
    image_kind: ClassVar[ImageKind]

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else source_root(self.name, self.dirname)
        self.problems: list[Problem] = []
        self._lock = threading.Lock()
        self._skipped_once: set[str] = set()

    # --- the contract ----------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`SourceNotFoundError` naming what is missing and how to obtain it."""
        if not self.root.is_dir():
            self._missing(f"folder {self.root} does not exist")
        self._check_layout()

    def _check_layout(self) -> None:
        raise NotImplementedError

    def items(self) -> list[Path]:
        """The image files this source will load, sorted."""
        raise NotImplementedError

    def load(self, path: Path) -> Sample:
        """Load one image file and its labels as a validated :class:`Sample`."""
        raise NotImplementedError

    # --- helpers for subclasses -------------------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        """Yield every loadable sample; unloadable files are recorded in :attr:`problems`."""
        self.check()
        for path in self.items():
            try:
                yield self.load(path)
            except AlldataError as e:
                self.skip(path, str(e))

    def __len__(self) -> int:
        return len(self.items())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r})"

    def warn(self, path: str | Path, reason: str) -> None:
        """Record a problem that cost part of a record (thread-safe)."""
        with self._lock:
            self.problems.append(Problem(str(path), reason, "warning"))

    def skip(self, path: str | Path, reason: str) -> None:
        """Record a file that could not be ingested (thread-safe)."""
        with self._lock:
            self.problems.append(Problem(str(path), reason, "skipped"))

    def skip_once(self, path: str | Path, reason: str) -> None:
        """Record ``path`` as skipped unless it already is (``items()`` may run more than once)."""
        with self._lock:
            if str(path) in self._skipped_once:
                return
            self._skipped_once.add(str(path))
        self.skip(path, reason)

    def _missing(self, what: str) -> NoReturn:
        raise SourceNotFoundError(
            f"{self.title} not found: {what}.\n"
            f"Expected layout (under {self.root}):\n{self.layout()}\n"
            f"How to obtain it: {self.obtain}\n"
            f"Then put it at {data_root() / self.dirname}, set ALLDATA_{self.name.upper()}_ROOT, "
            f"or pass its folder as PATH to `alldata ingest {self.name} PATH`."
        )

    @classmethod
    def layout(cls) -> str:
        """The expected on-disk tree, taken from the class docstring."""
        doc = inspect.getdoc(cls) or ""
        if "Layout::" not in doc:
            return doc
        block = []
        for line in doc.split("Layout::", 1)[1].lstrip("\n").splitlines():
            if line and not line.startswith(" "):
                break
            block.append(line)
        return "\n".join(block).rstrip()

    def _image(self, path: Path) -> ImageInfo:
        return inspect_image(path)

    def _sample(self, path: Path, info: ImageInfo, source_id: str, group_id: str, **fields: Any) -> Sample:
        """Build a :class:`Sample` with the identity fields filled from the class and ``info``."""
        return Sample(
            filepath=str(path.resolve()),
            source=self.name,
            source_id=source_id,
            sha256=info.sha256,
            license=self.license,
            citation=self.citation,
            group_id=group_id,
            image_kind=self.image_kind,
            width=info.width,
            height=info.height,
            size_bytes=info.size_bytes,
            mime_type=info.mime_type,
            num_channels=info.num_channels,
            **fields,
        )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted; hidden files ignored)."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
