"""PBC (Acevedo et al., Data in Brief 2020): normal peripheral blood cells, 8 classes."""

from __future__ import annotations

from pathlib import Path

from alldata.schema import CellType, Diagnosis, ImageKind
from alldata.sources.base import SOURCES
from alldata.sources.folder import ClassFolderSource

__all__ = ["PBC"]


@SOURCES.register("pbc")
class PBC(ClassFolderSource):
    """Single normal cells, 360x363 JPEG (a few 366x369 / 360x360), Hospital Clinic Barcelona.

    All samples are ``healthy``; the folder gives ``cell_type`` (``ig`` = immature
    granulocytes). The file-name prefix (BNE, SNE, MMY, MY, PMY ...) is kept in
    ``extra.prefix``. The full set holds 17 byte-identical pairs, one across classes:
    they are tagged as duplicates at ingest and tied together at split time.

    Layout::

        PBC/
        └── PBC_dataset_normal_DIB/{basophil,eosinophil,erythroblast,ig,lymphocyte,monocyte,neutrophil,platelet}/
            └── <PREFIX>_<id>.jpg
    """

    name = "pbc"
    title = "PBC (normal peripheral blood cells)"
    dirname = "PBC"
    homepage = "https://data.mendeley.com/datasets/snkd93bnjr/1"
    license = "CC BY 4.0 (Mendeley Data record; check there)"
    citation = (
        "A. Acevedo et al., A dataset of microscopic peripheral blood cell images for development of "
        "automatic recognition systems, Data in Brief 30 (2020) 105474"
    )
    obtain = "download PBC_dataset_normal_DIB from Mendeley Data (doi:10.17632/snkd93bnjr.1)"
    image_kind = ImageKind.cell
    CLASS_MAP = {
        folder: {"diagnosis": Diagnosis.healthy, "cell_type": cell}
        for folder, cell in {
            "basophil": CellType.basophil,
            "eosinophil": CellType.eosinophil,
            "erythroblast": CellType.erythroblast,
            "ig": CellType.immature_granulocyte,
            "lymphocyte": CellType.lymphocyte,
            "monocyte": CellType.monocyte,
            "neutrophil": CellType.neutrophil,
            "platelet": CellType.platelet,
        }.items()
    }

    @property
    def class_dir(self) -> Path:
        return self.root / "PBC_dataset_normal_DIB"

    def extra_fields(self, path: Path) -> dict[str, object]:
        return {"extra": {"prefix": path.stem.rsplit("_", 1)[0]}}
