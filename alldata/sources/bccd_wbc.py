"""BCCD WBC crops (apple2373/BCCD): one white cell per image, cut from BCCD smears."""

from __future__ import annotations

import re
from pathlib import Path

from alldata.schema import CellType, Diagnosis, ImageKind
from alldata.sources.base import SOURCES
from alldata.sources.folder import ClassFolderSource

__all__ = ["BCCDWBC"]

_PARENT = re.compile(r"^(BloodImage_\d{5})")


@SOURCES.register("bccd_wbc")
class BCCDWBC(ClassFolderSource):
    """351 square WBC crops (131-367 px) in five class folders.

    Each crop ``BloodImage_XXXXX_1.jpg`` was cut from the BCCD smear ``BloodImage_XXXXX``,
    so its ``group_id`` is that smear's (``bccd/BloodImage_XXXXX``): a split never puts a
    crop and its parent smear on different sides.

    Layout::

        BCCD_WBC_subtypes/
        ├── labels.csv
        └── BCCD_cropped/{Basophil,Eosinophil,Lymphocyte,Monocyte,Neutrophil}/BloodImage_XXXXX_1.jpg
    """

    name = "bccd_wbc"
    title = "BCCD WBC subtypes"
    dirname = "BCCD_WBC_subtypes"
    homepage = "https://github.com/apple2373/BCCD"
    license = "MIT (BCCD images); the crop repository states no licence"
    citation = "BCCD Dataset, Shenggan (2017); WBC crops from apple2373/BCCD"
    obtain = "git clone https://github.com/apple2373/BCCD (labels.csv and BCCD_cropped/)"
    image_kind = ImageKind.cell
    CLASS_MAP = {
        name: {"diagnosis": Diagnosis.healthy, "cell_type": cell}
        for name, cell in {
            "Basophil": CellType.basophil,
            "Eosinophil": CellType.eosinophil,
            "Lymphocyte": CellType.lymphocyte,
            "Monocyte": CellType.monocyte,
            "Neutrophil": CellType.neutrophil,
        }.items()
    }

    @property
    def class_dir(self) -> Path:
        return self.root / "BCCD_cropped"

    def group_of(self, path: Path) -> str:
        m = _PARENT.match(path.stem)
        return f"bccd/{m.group(1)}" if m else super().group_of(path)
