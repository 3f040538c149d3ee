"""BCCD: 640x480 smear images with Pascal VOC boxes (RBC, WBC, Platelets)."""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from functools import cached_property
from pathlib import Path

from alldata.errors import AnnotationError
from alldata.imageio import read_mask
from alldata.schema import Box, CellType, ImageKind, Sample, SegMask
from alldata.sources.all_idb2 import banik_grey_to_classes
from alldata.sources.base import SOURCES, Source, list_images

__all__ = ["BCCD", "parse_voc", "parse_wbc_category"]

LABEL_MAP = {"RBC": CellType.rbc, "WBC": CellType.wbc, "Platelets": CellType.platelet}
WBC_MAP = {
    "NEUTROPHIL": CellType.neutrophil,
    "EOSINOPHIL": CellType.eosinophil,
    "LYMPHOCYTE": CellType.lymphocyte,
    "MONOCYTE": CellType.monocyte,
    "BASOPHIL": CellType.basophil,
}


def parse_wbc_category(raw: str) -> list[CellType]:
    """``"NEUTROPHIL, EOSINOPHIL"`` -> ``[neutrophil, eosinophil]``; empty -> ``[]``; unknown -> error."""
    out = []
    for part in (p.strip().upper() for p in raw.split(",")):
        if not part:
            continue
        if part not in WBC_MAP:
            raise ValueError(f"unknown WBC category {part!r}; known {sorted(WBC_MAP)}")
        out.append(WBC_MAP[part])
    return out


def parse_voc(xml_path: Path, width: int, height: int, warn) -> list[Box]:
    """Read VOC objects as relative boxes (VOC is 1-based inclusive: ``w = xmax - xmin + 1``).

    Degenerate boxes (``xmin == xmax`` or ``ymin == ymax``) are kept as one-pixel boxes with
    ``degenerate=True`` and reported; boxes past the image are clipped and reported; boxes
    wholly outside, inverted, or with an unknown class are reported and left out.
    """
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as e:
        raise AnnotationError(f"{xml_path}: malformed annotation XML ({e})") from None
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object {i} ({name or '?'})"
        if name not in LABEL_MAP:
            warn(xml_path, f"{where}: unknown class {name!r}, known {sorted(LABEL_MAP)}; left out")
            continue
        try:
            x1, y1, x2, y2 = (int(float(obj.findtext(f"bndbox/{k}") or "")) for k in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            warn(xml_path, f"{where}: bndbox is missing or not numeric; left out")
            continue
        if x2 < x1 or y2 < y1:
            warn(xml_path, f"{where}: inverted box ({x1},{y1},{x2},{y2}); left out")
            continue
        if x2 < 1 or y2 < 1 or x1 > width or y1 > height:
            warn(xml_path, f"{where}: box ({x1},{y1},{x2},{y2}) is outside the {width}x{height} image; left out")
            continue
        c = (max(x1, 1), max(y1, 1), min(x2, width), min(y2, height))
        if c != (x1, y1, x2, y2):
            warn(xml_path, f"{where}: box ({x1},{y1},{x2},{y2}) clipped to the {width}x{height} image")
        attrs = {}
        if x1 == x2 or y1 == y2:
            warn(xml_path, f"{where}: degenerate box ({x1},{y1},{x2},{y2}); kept as a 1-pixel box, degenerate=True")
            attrs["degenerate"] = True
        x1, y1, x2, y2 = c
        boxes.append(
            Box(
                label=LABEL_MAP[name],
                bbox=((x1 - 1) / width, (y1 - 1) / height, (x2 - x1 + 1) / width, (y2 - y1 + 1) / height),
                attributes=attrs,
            )
        )
    return boxes


@SOURCES.register("bccd")
class BCCD(Source):
    """BCCD (Shenggan/BCCD_Dataset, MIT): 364 smear images, VOC boxes for RBC/WBC/Platelets.

    ``source_split`` comes from ``ImageSets/Main/{train,val,test}.txt``. The WBC subtype of
    each image is joined from the ``labels.csv`` of ``BCCD_WBC_subtypes`` (empty rows give no
    label, multi-label rows several) into ``wbc_labels``; where an image has exactly one WBC
    box and one label, the box also gets a ``wbc_type`` attribute. Banik nucleus/cytoplasm
    masks, when present, become ``segmentation``. The XML ``<path>`` is ignored.

    Layout::

        BCCD/
        └── BCCD/
            ├── Annotations/BloodImage_00000.xml ...
            ├── ImageSets/Main/{train,val,test,trainval}.txt
            └── JPEGImages/BloodImage_00000.jpg ...
        BCCD_WBC_subtypes/labels.csv                                        # optional
        WBC_nucleus_GT_Banik/Datasets/Ground Truth/BCCD/BloodImage_Mask_XXXXX.png   # optional
    """

    name = "bccd"
    title = "BCCD"
    dirname = "BCCD"
    homepage = "https://github.com/Shenggan/BCCD_Dataset"
    license = "MIT"
    citation = "BCCD Dataset, Shenggan (2017), https://github.com/Shenggan/BCCD_Dataset"
    obtain = "git clone https://github.com/Shenggan/BCCD_Dataset (the BCCD/ folder)"
    image_kind = ImageKind.smear

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        labels_csv: str | Path | None = None,
        banik_masks: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        self.labels_csv = Path(labels_csv) if labels_csv else self.root.parent / "BCCD_WBC_subtypes" / "labels.csv"
        self.banik_masks = (
            Path(banik_masks) if banik_masks else self.root.parent / "WBC_nucleus_GT_Banik" / "Datasets" / "Ground Truth" / "BCCD"
        )

    @property
    def voc(self) -> Path:
        return self.root / "BCCD"

    def _check_layout(self) -> None:
        for sub in ("JPEGImages", "Annotations"):
            if not (self.voc / sub).is_dir():
                self._missing(f"folder {self.voc / sub} does not exist")

    def items(self) -> list[Path]:
        images = list_images(self.voc / "JPEGImages")
        xmls = sorted(p for p in (self.voc / "Annotations").glob("*.xml") if not p.name.startswith("."))
        self.report_orphans(xmls, {p.stem for p in images}, "its boxes were not ingested (no JPEGImages/ file of that name)")
        return images

    @cached_property
    def _splits(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for split in ("train", "val", "test"):
            f = self.voc / "ImageSets" / "Main" / f"{split}.txt"
            if f.is_file():
                for line in f.read_text().split():
                    out[line.strip()] = split
        return out

    @cached_property
    def _wbc_labels(self) -> dict[int, list[CellType]]:
        out: dict[int, list[CellType]] = {}
        if not self.labels_csv.is_file():
            return out
        with open(self.labels_csv, newline="", encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f), 2):
                try:
                    out[int(row["Image"])] = parse_wbc_category(row.get("Category") or "")
                except (KeyError, TypeError, ValueError) as e:
                    self.warn(self.labels_csv, f"line {n}: {e}; row not used")
        return out

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]]:
        return path.stem, [path, self.voc / "Annotations" / f"{path.stem}.xml", self._mask_path(path)]

    def stamp_shared(self) -> list[Path]:
        return [self.voc / "ImageSets" / "Main" / f"{split}.txt" for split in ("train", "val", "test")] + [self.labels_csv]

    def load(self, path: Path) -> Sample:
        xml = self.voc / "Annotations" / f"{path.stem}.xml"
        if not xml.is_file():
            raise AnnotationError(f"{path}: no annotation file {xml}")
        info = self._image(path)
        boxes = parse_voc(xml, info.width, info.height, self.warn)
        m = re.search(r"(\d+)$", path.stem)
        labels = self._wbc_labels.get(int(m.group(1))) if m else None
        wbcs = [b for b in boxes if b.label is CellType.wbc]
        if labels is not None and len(wbcs) == 1 and len(labels) == 1:
            wbcs[0].attributes["wbc_type"] = labels[0].value
        return self._sample(
            path,
            info,
            source_id=path.stem,
            group_id=f"{self.name}/{path.stem}",
            source_split=self._splits.get(path.stem),
            cells=boxes,
            wbc_labels=labels,
            segmentation=self._mask(path, info.width, info.height),
        )

    def _mask_path(self, path: Path) -> Path:
        return self.banik_masks / path.name.replace("BloodImage_", "BloodImage_Mask_").replace(path.suffix, ".png")

    def _mask(self, path: Path, w: int, h: int) -> SegMask | None:
        p = self._mask_path(path)
        if not p.is_file():
            return None
        try:
            classes = banik_grey_to_classes(read_mask(p))
        except Exception as e:  # noqa: BLE001 - a bad mask costs only the mask
            self.warn(p, f"mask not used: {e}")
            return None
        if classes.shape != (h, w):
            self.warn(p, f"mask size {classes.shape[::-1]} != image size {(w, h)}; not used")
            return None
        return SegMask(mask=classes, annotator="banik")
