"""Class-folder sources: a user's own ``<root>/<class>/<image>`` tree, and the base of
the published class-folder sets (Taleqani, PBC, BCCD WBC crops)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from alldata.errors import AnnotationError
from alldata.schema import CellType, Diagnosis, ImageKind, Sample, Subtype
from alldata.sources.base import SOURCES, Source, list_images

__all__ = ["ClassFolderSource", "Folder"]


class ClassFolderSource(Source):
    """Images in one folder per class under :attr:`class_dir`.

    Subclasses set :attr:`CLASS_MAP` (folder name -> schema fields). A folder not in the map
    is reported once and its images are not loaded (never silently relabelled).
    """

    #: folder name -> fields of the Sample (diagnosis, cell_type, subtype)
    CLASS_MAP: ClassVar[dict[str, dict[str, Any]]] = {}

    @property
    def class_dir(self) -> Path:
        return self.root

    def _check_layout(self) -> None:
        if not self.class_dir.is_dir():
            self._missing(f"folder {self.class_dir} does not exist")
        if not self.items():
            self._missing(f"no class folders with images under {self.class_dir}")

    def _classes(self) -> list[Path]:
        if not self.class_dir.is_dir():
            return []
        return sorted(p for p in self.class_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def fields_for(self, folder: str) -> dict[str, Any] | None:
        """Schema fields for a class folder, or None when the folder is not a known class."""
        return self.CLASS_MAP.get(folder)

    def items(self) -> list[Path]:
        out = []
        for d in self._classes():
            if self.fields_for(d.name) is None:
                self.skip_once(d, f"unknown class folder {d.name!r}; known {sorted(self.CLASS_MAP)}; its images were not loaded")
                continue
            out += list_images(d)
        return out

    def group_of(self, path: Path) -> str:
        """The group a file belongs to (default: the file itself)."""
        return f"{self.name}/{path.parent.name}/{path.stem}"

    def load(self, path: Path) -> Sample:
        fields = self.fields_for(path.parent.name)
        if fields is None:
            raise AnnotationError(f"{path}: class folder {path.parent.name!r} is not one of {sorted(self.CLASS_MAP)}")
        info = self._image(path)
        return self._sample(
            path,
            info,
            source_id=f"{path.parent.name}/{path.name}",
            group_id=self.group_of(path),
            ground_truth=path.parent.name,
            **fields,
            **self.extra_fields(path),
        )

    def extra_fields(self, path: Path) -> dict[str, Any]:
        """Per-file fields a subclass adds (default none)."""
        return {}


def _vocabulary_fields(name: str) -> dict[str, Any]:
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    for field, enum in (("cell_type", CellType), ("subtype", Subtype), ("diagnosis", Diagnosis)):
        for member in enum:
            if key == member.value.lower():
                return {field: member}
    return {}


@SOURCES.register("folder")
class Folder(ClassFolderSource):
    """A user's own images, one folder per class (any class names).

    Folder names that are schema values (e.g. ``lymphoblast``, ``L3``, ``ALL``, ``healthy``)
    fill ``cell_type``, ``subtype`` or ``diagnosis``; every folder name is kept verbatim in
    ``ground_truth``. Pass the root as PATH: ``alldata ingest folder /my/cells``.

    Layout::

        <root>/
        ├── <class A>/img001.jpg ...
        └── <class B>/img001.png ...
    """

    name = "folder"
    title = "folder (your own class folders)"
    dirname = "folder"
    homepage = ""
    license = "[as set by the data owner]"
    citation = "[as set by the data owner]"
    obtain = "point PATH at a folder holding one sub-folder per class"
    image_kind = ImageKind.cell

    def fields_for(self, folder: str) -> dict[str, Any] | None:
        return _vocabulary_fields(folder)
