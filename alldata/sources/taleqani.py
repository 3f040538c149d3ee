"""Taleqani Hospital B-ALL set (Aria, Ghaderzadeh et al., Kaggle): Benign/Early/Pre/Pro."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from alldata.schema import CellType, Diagnosis, ImageKind, Subtype
from alldata.sources.base import SOURCES, list_images
from alldata.sources.folder import ClassFolderSource

__all__ = ["Taleqani"]


@SOURCES.register("taleqani")
class Taleqani(ClassFolderSource):
    """Peripheral-blood images of 89 patients, 224x224 JPEG, classes by flow cytometry.

    Benign (hematogones) -> healthy/hematogone; Early, Pre, Pro -> ALL/lymphoblast with the
    B-ALL subtype (these are immunophenotype subtypes, not FAB L1/L2/L3). ``Original/`` is
    ingested; the ``Segmented/`` copy of the same file name (background removed) is recorded
    in ``segmented_filepath``. No patient ids are published, so ``group_id`` is the file
    (exact duplicates are tied together by hash at split time).

    Layout::

        ALL_Taleqani_Kaggle/
        ├── Original/{Benign,Early,Pre,Pro}/WBC-Benign-001.jpg, WBC-Malignant-Early-001.jpg ...
        └── Segmented/{Benign,Early,Pre,Pro}/(same names)     # optional
    """

    name = "taleqani"
    title = "Taleqani B-ALL (Kaggle)"
    dirname = "ALL_Taleqani_Kaggle"
    homepage = "https://www.kaggle.com/datasets/mehradaria/leukemia"
    license = "see the Kaggle dataset's terms; cite the authors"
    citation = (
        "M. Ghaderzadeh, M. Aria et al., A fast and efficient CNN model for B-ALL diagnosis and its "
        "subtypes classification using peripheral blood smear images, Int J Intell Syst 2022"
    )
    obtain = "download 'Acute Lymphoblastic Leukemia (ALL) image dataset' from Kaggle (mehradaria/leukemia)"
    image_kind = ImageKind.cell
    CLASS_MAP = {
        "Benign": {"diagnosis": Diagnosis.healthy, "cell_type": CellType.hematogone},
        "Early": {"diagnosis": Diagnosis.ALL, "cell_type": CellType.lymphoblast, "subtype": Subtype.early_pre_b},
        "Pre": {"diagnosis": Diagnosis.ALL, "cell_type": CellType.lymphoblast, "subtype": Subtype.pre_b},
        "Pro": {"diagnosis": Diagnosis.ALL, "cell_type": CellType.lymphoblast, "subtype": Subtype.pro_b},
    }

    @property
    def class_dir(self) -> Path:
        return self.root / "Original"

    def items(self) -> list[Path]:
        images = super().items()
        for d in sorted(p for p in (self.root / "Segmented").glob("*") if p.is_dir()):
            have = {p.stem for p in list_images(self.class_dir / d.name)}
            self.report_orphans(list_images(d), have, f"no Original/{d.name}/ copy, not used", summary=True)
        return images

    def extra_fields(self, path: Path) -> dict[str, Any]:
        folder = self.root / "Segmented" / path.parent.name
        if path.name not in self._segmented(folder):
            return {}
        return {"extra": {"segmented_filepath": self._resolved(folder / path.name)}}

    def _segmented(self, folder: Path) -> frozenset[str]:
        """The files in ``folder`` (one listing per folder and source object, not a stat per image)."""
        cache: dict[Path, frozenset[str]] = self.__dict__.setdefault("_segmented_names", {})
        if folder not in cache:
            try:
                with os.scandir(folder) as entries:
                    cache[folder] = frozenset(e.name for e in entries if e.is_file())
            except OSError:  # no such folder: no segmented copies
                cache[folder] = frozenset()
        return cache[folder]
