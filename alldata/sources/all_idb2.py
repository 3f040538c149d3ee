"""ALL-IDB2: 260 single-cell crops from ALL-IDB1 smears, with two optional mask sets."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from alldata.errors import AnnotationError
from alldata.imageio import read_mask
from alldata.schema import CellType, Diagnosis, ImageKind, Sample, SegMask
from alldata.sources.base import SOURCES, Source, list_images

__all__ = ["ALLIDB2", "banik_grey_to_classes", "putzu_rgb_to_classes"]

_NAME = re.compile(r"^Im(\d{3})_([01])$")
# Putzu & Loddo colour code -> SEG_CLASSES value
_PUTZU = {(255, 255, 255): 0, (0, 0, 255): 1, (0, 255, 255): 2}


def putzu_rgb_to_classes(rgb: np.ndarray, path: Path) -> np.ndarray:
    """Map the Putzu & Loddo RGB code (white bg, blue cytoplasm, cyan nucleus) to 0/1/2."""
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise AnnotationError(f"{path}: expected an RGB mask, got shape {rgb.shape}")
    out = np.full(rgb.shape[:2], 255, np.uint8)
    for colour, value in _PUTZU.items():
        out[np.all(rgb[..., :3] == colour, axis=-1)] = value
    if (out == 255).any():
        bad = {tuple(c) for c in rgb[out == 255][:5, :3].tolist()}
        raise AnnotationError(f"{path}: colours {sorted(bad)} are not in the Putzu & Loddo code {sorted(_PUTZU)}")
    return out


def banik_grey_to_classes(mask: np.ndarray) -> np.ndarray:
    """Map the Banik grey code (0 bg, ~155 cytoplasm, 255 nucleus) to 0/1/2 by thresholds.

    Thresholds (not exact values) because some of these masks are blurred RGB copies.
    """
    grey = mask[..., 0] if mask.ndim == 3 else mask
    grey = grey.astype(np.uint8)
    out = np.zeros(grey.shape, np.uint8)
    out[grey >= 78] = 1
    out[grey >= 205] = 2
    return out


@SOURCES.register("all_idb2")
class ALLIDB2(Source):
    """ALL-IDB2 (Donida Labati, Piuri, Scotti, ICIP 2011): 257x257 crops, one cell each.

    ``ImXXX_1`` (Im001-Im130) are probable lymphoblasts, ``ImXXX_0`` (Im131-Im260) healthy
    cells. The crops were cut from ALL-IDB1 smears, but which smear each came from is not
    recorded in the distribution, so ``group_id`` is the crop itself: do not train on
    ALL-IDB1 and test on ALL-IDB2 (or the reverse) and call it independent.
    Optional masks, read from sibling folders of the data root when present:
    Putzu & Loddo RGB masks -> ``segmentation``; Banik grey masks -> ``segmentation_alt``.

    Layout::

        ALL-IDB2/
        └── ALL_IDB2/img/Im001_1.tif ... Im260_0.tif          # Y after "_": 1 ALL, 0 healthy
        ALL-IDB2_masks_Putzu_Loddo/gt/ImXXX_Y.tif              # optional, RGB code
        WBC_nucleus_GT_Banik/Datasets/Ground Truth/ALL-IDB2/ImXXX_Y.png   # optional, grey code
    """

    name = "all_idb2"
    title = "ALL-IDB2"
    dirname = "ALL-IDB2"
    homepage = "https://scotti.di.unimi.it/all/"
    license = "ALL-IDB terms: research use on request; cite the paper"
    citation = (
        "R. Donida Labati, V. Piuri, F. Scotti, ALL-IDB: the acute lymphoblastic leukemia image "
        "database for image processing, IEEE ICIP 2011"
    )
    obtain = "request ALL-IDB from the University of Milan (https://scotti.di.unimi.it/all/)"
    image_kind = ImageKind.cell

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        putzu_masks: str | Path | None = None,
        banik_masks: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        self.putzu_masks = Path(putzu_masks) if putzu_masks else self.root.parent / "ALL-IDB2_masks_Putzu_Loddo" / "gt"
        self.banik_masks = (
            Path(banik_masks)
            if banik_masks
            else self.root.parent / "WBC_nucleus_GT_Banik" / "Datasets" / "Ground Truth" / "ALL-IDB2"
        )

    @property
    def img_dir(self) -> Path:
        return self.root / "ALL_IDB2" / "img"

    def _check_layout(self) -> None:
        if not self.img_dir.is_dir():
            self._missing(f"folder {self.img_dir} does not exist")
        if not self.items():
            self._missing(f"no images in {self.img_dir}")

    def items(self) -> list[Path]:
        images = list_images(self.img_dir)
        stems = {p.stem for p in images}
        for folder in (self.putzu_masks, self.banik_masks):  # mask sets cover all 260 crops; a copy may hold fewer
            self.report_orphans(list_images(folder), stems, "these masks were not used", summary=True)
        return images

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]]:
        return path.stem, [path, self.putzu_masks / f"{path.stem}.tif", self.banik_masks / f"{path.stem}.png"]

    def load(self, path: Path) -> Sample:
        m = _NAME.match(path.stem)
        if not m:
            raise AnnotationError(f"{path}: name is not ImXXX_Y (Y = 0 healthy, 1 ALL); cannot read the label")
        blast = m.group(2) == "1"
        info = self._image(path)
        seg = alt = None
        putzu = self.putzu_masks / f"{path.stem}.tif"
        if putzu.is_file():
            seg = self._mask(path, putzu, lambda a: putzu_rgb_to_classes(a, putzu), "putzu_loddo", info)
        banik = self.banik_masks / f"{path.stem}.png"
        if banik.is_file():
            alt = self._mask(path, banik, banik_grey_to_classes, "banik", info)
        return self._sample(
            path,
            info,
            source_id=path.stem,
            group_id=f"{self.name}/{path.stem}",
            ground_truth=m.group(2),
            diagnosis=Diagnosis.ALL if blast else Diagnosis.healthy,
            cell_type=CellType.lymphoblast if blast else None,
            segmentation=seg,
            segmentation_alt=alt,
        )

    def _mask(self, img: Path, mask_path: Path, convert, annotator: str, info) -> SegMask | None:
        try:
            classes = convert(read_mask(mask_path))
        except Exception as e:  # noqa: BLE001 - any bad mask costs only the mask
            self.warn(mask_path, f"mask not used: {e}")
            return None
        if classes.shape != (info.height, info.width):
            self.warn(mask_path, f"mask size {classes.shape[::-1]} != image size {(info.width, info.height)}; not used")
            return None
        return SegMask(mask=classes, annotator=annotator)
