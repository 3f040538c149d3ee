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

import hashlib
import inspect
import os
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

__all__ = ["IMAGE_SUFFIXES", "SOURCES", "Problem", "Source", "list_image_names", "list_images"]

#: The content type each image suffix promises (a mismatch is reported as a warning).
_SUFFIX_MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff",
                ".tiff": "image/tiff", ".bmp": "image/bmp"}

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
    #: decode every image (False: JPEG/PNG checked by structure only; see :func:`alldata.imageio.inspect_image`)
    decode: bool = True

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else source_root(self.name, self.dirname)
        self.problems: list[Problem] = []
        self._lock = threading.Lock()
        self._skipped_once: set[str] = set()

    # --- the contract ----------------------------------------------------------------
    def check(self) -> None:
        """Raise :class:`SourceNotFoundError` naming what is missing and how to obtain it."""
        self.forget_listing()  # a new check lists the files again
        self.__dict__.pop("_stamp_head", None)  # and stats the shared files again
        if not self.root.is_dir():
            self._missing(f"folder {self.root} does not exist")
        self._check_layout()

    def _check_layout(self) -> None:
        raise NotImplementedError

    def items(self) -> list[Path] | list[str]:
        """The image files this source will load, sorted (Paths, or text paths: class-folder
        trees of 100k files are listed as text)."""
        raise NotImplementedError

    def listing(self) -> list[Path] | list[str]:
        """:meth:`items`, listed once after each :meth:`check` (which needs the listing itself):
        an ingest of 100k files lists the folders once, not two or three times."""
        if "_listed" not in self.__dict__:
            self.__dict__["_listed"] = self.items()
        return self.__dict__["_listed"]

    def forget_listing(self) -> None:
        """Drop the listings :meth:`listing` and :meth:`_images_in` keep (the caller holds its own copy)."""
        self.__dict__.pop("_listed", None)
        self.__dict__.pop("_folder_lists", None)

    def _images_in(self, folder: Path) -> list[str]:
        """The image files in ``folder`` as text paths (:func:`list_image_names`), listed once until
        the next :meth:`check` (treat as read-only). Text, not Paths: 100k Path objects take ~3x
        the memory, and an ingest turns them into text anyway."""
        memo: dict[Path, list[str]] = self.__dict__.setdefault("_folder_lists", {})
        if folder not in memo:
            base = os.fspath(folder)
            memo[folder] = [os.path.join(base, n) for n in list_image_names(folder)]
        return memo[folder]

    def load(self, path: Path) -> Sample:
        """Load one image file and its labels as a validated :class:`Sample`."""
        raise NotImplementedError

    def quick_stamp(self, path: str | Path) -> tuple[str, str] | None:
        """``(source_id, stamp)`` from file metadata alone, or None (a re-run reads the file again).

        A source whose record depends only on files it can ``stat`` returns a stamp that changes
        whenever any of them (or the label mapping) changes; ingest then skips a file whose
        stored stamp is equal without reading it. The default stamps what :meth:`stamp_inputs`
        and :meth:`stamp_shared` name: each file's path, size, mtime and inode (or its absence),
        the source class and alldata's version.
        """
        inputs = self.stamp_inputs(Path(path))
        if inputs is None:
            return None
        source_id, files = inputs
        head = self.__dict__.get("_stamp_head")
        if head is None:  # the shared files: stat once per check
            from alldata import __version__

            head = self.__dict__["_stamp_head"] = "|".join(
                [type(self).__name__, __version__, *(f"{f}:{_stat_text(f)}" for f in self.stamp_shared())])
        text = "|".join([head, *(f"{f}:{_stat_text(f)}" for f in files)])
        return source_id, hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]] | None:
        """``(source_id, files)``: the ``source_id`` of ``path``'s record and every file the record
        is read from (the image, its annotation and mask files, present or not), for
        :meth:`quick_stamp`; None (the default): the source does not say, a re-run reads every file."""
        return None

    def stamp_shared(self) -> list[Path]:
        """Files every record is read from (split lists, label tables), for :meth:`quick_stamp`."""
        return []

    # --- helpers for subclasses -------------------------------------------------------
    def __iter__(self) -> Iterator[Sample]:
        """Yield every loadable sample; unloadable files are recorded in :attr:`problems`."""
        self.check()
        for path in self.items():
            try:
                yield self.load(Path(path))
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

    def report_orphans(self, annotations: list[Path], has_image: set[str], what: str, *, summary: bool = False) -> None:
        """Record annotation files whose stem is not in ``has_image`` (once, however often called).

        ``what`` says what was lost, e.g. ``"its boxes were not ingested"``. Each orphan is
        ``skipped``; with ``summary`` (supplementary sets annotating more images than a copy
        may hold) one ``warning`` per folder names them all.
        """
        orphans = [a for a in annotations if a.stem not in has_image]
        if summary and orphans:
            folder = orphans[0].parent
            names = ", ".join(a.name for a in orphans[:10]) + (f" and {len(orphans) - 10} more" if len(orphans) > 10 else "")
            reason = f"{len(orphans)} file(s) here have no image of the same name ({names}); {what}"
            found = [(folder, reason, "warning")]
        else:
            found = [(a, f"annotation file with no image: no image named {a.stem}.* was found; {what}", "skipped")
                     for a in orphans]
        for where, reason, severity in found:
            with self._lock:
                if str(where) in self._skipped_once:
                    continue
                self._skipped_once.add(str(where))
                self.problems.append(Problem(str(where), reason, severity))

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
        info = inspect_image(path, decode=self.decode)
        promised = _SUFFIX_MIME.get(path.suffix.lower())
        if promised and info.mime_type != promised:
            real = info.mime_type.split("/")[-1].upper()
            self.warn(path, f"named {path.suffix} but the content is {real}; ingested as {info.mime_type} "
                            f"(rename it to match its content)")
        return info

    def _resolved(self, path: Path) -> str:
        """``path`` with its folder's symbolic links resolved (each folder once per source object)
        and its own name kept; ``Path.resolve`` per file costs 0.2-0.5 ms."""
        cache: dict[str, str] = self.__dict__.setdefault("_resolved_dirs", {})
        parent = os.path.dirname(path)
        real = cache.get(parent)
        if real is None:
            real = cache[parent] = str(Path(parent or ".").resolve())
        return os.path.join(real, path.name)

    def _sample(self, path: Path, info: ImageInfo, source_id: str, group_id: str, **fields: Any) -> Sample:
        """Build a :class:`Sample` with the identity fields filled from the class and ``info``."""
        return Sample(
            filepath=self._resolved(path),  # a symlink keeps its own name
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


def _stat_text(path: Path) -> str:
    """``size:mtime_ns:inode`` of ``path``, or ``-`` when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return "-"
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def list_image_names(folder: Path) -> list[str]:
    """The names of the image files directly in ``folder`` (sorted; hidden files ignored).

    Symbolic links are listed even when broken, so loading them reports the broken link
    instead of leaving the file out without a word.
    """
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with entries:  # no stat per file: ~10x faster than Path.iterdir + is_file
        return sorted(
            e.name
            for e in entries
            if not e.name.startswith(".")
            and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
            and (e.is_file() or e.is_symlink())
        )


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder`` (sorted as Paths sort; see :func:`list_image_names`)."""
    names = list_image_names(folder)
    if not names:
        return []
    children = {p.name: p for p in folder.iterdir()}  # iterdir builds Paths far faster than folder / name
    return [children[n] for n in names if n in children]
