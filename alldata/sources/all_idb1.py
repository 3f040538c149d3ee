"""ALL-IDB1: full smear photographs with blast centroids and optional instance masks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from alldata.errors import AnnotationError
from alldata.imageio import read_mask
from alldata.schema import Box, CellType, Diagnosis, ImageKind, Point, Sample
from alldata.sources.base import SOURCES, Source, list_images

__all__ = ["ALLIDB1", "instance_boxes", "read_positions"]

_NAME = re.compile(r"^Im(\d{3})_([01])$")


def read_positions(path: Path, warn) -> dict[str, list[tuple[int, int]]]:
    """Read an ``.xyc`` file in either format; garbage lines are passed to ``warn`` and skipped.

    * original ALL-IDB1 ``xyc/``: one blast ``x<TAB>y`` per line;
    * merged (i2mtc tutorial): a ``blasts`` line, points, a ``normal`` line, points
      (``x y``, single space).
    Returns ``{"blasts": [...], "normal": [...]}`` of integer ``(x, y)`` = (column, row).
    Raises :class:`AnnotationError` when the file cannot be read as UTF-8 text.
    """
    return {k: [(x, y) for x, y, _ in v] for k, v in _read_points(path, warn).items()}


def _read_points(path: Path, warn) -> dict[str, list[tuple[int, int, int]]]:
    """:func:`read_positions` with each point's line number: ``(x, y, line)``."""
    out: dict[str, list[tuple[int, int, int]]] = {"blasts": [], "normal": []}
    section = "blasts"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise AnnotationError(
            f"{path}: not a text positions file (byte {e.start:,} is not UTF-8 text); its points were not used"
        ) from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot read positions ({e.strerror or e}); its points were not used") from None
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        if text.lower() in out:
            section = text.lower()
            continue
        parts = text.split()
        if len(parts) != 2 or not all(p.lstrip("-").isdigit() for p in parts):
            warn(path, f"line {n}: {text[:40]!r} is not 'x y' integers; skipped")
            continue
        out[section].append((int(parts[0]), int(parts[1]), n))
    return out


def instance_boxes(binary: np.ndarray, label: CellType) -> list[Box]:
    """One :class:`Box` (with its cropped bool mask) per 4-connected component of ``binary > 0``.

    4-connectivity, because these masks separate touching cells by one-pixel background
    lines, which diagonal (8-) connectivity would step across.
    """
    from scipy import ndimage

    lab, _ = ndimage.label(binary > 0)
    h, w = binary.shape
    boxes = []
    for i, sl in enumerate(ndimage.find_objects(lab), 1):
        if sl is None:
            continue
        ys, xs = sl
        boxes.append(
            Box(
                label=label,
                bbox=(xs.start / w, ys.start / h, (xs.stop - xs.start) / w, (ys.stop - ys.start) / h),
                mask=lab[sl] == i,
            )
        )
    return boxes


@SOURCES.register("all_idb1")
class ALLIDB1(Source):
    """ALL-IDB1 (Donida Labati, Piuri, Scotti, ICIP 2011): 108 smear photographs.

    ``ImXXX_1`` ALL, ``ImXXX_0`` healthy (Im001-033 1712x1368, later 2592x1944). Blast
    centroids come from the original ``xyc/`` files (``x<TAB>y``) or from the merged
    ``blasts``/``normal`` files of the i2mtc tutorial (both read; ``blasts`` and
    ``other_wbcs`` keypoints). Non-blast white-cell centroids also come from the
    ALL-IDB-Patches ``other/`` files. Loddo & Putzu WBC/RBC masks become ``cells``
    detections with instance masks. No patient ids exist: ``group_id`` is the image.

    Layout::

        ALL-IDB1/
        ├── ALL_IDB1/im/Im001_1.jpg ... Im108_0.jpg
        ├── ALL_IDB1/xyc/ImXXX_1.xyc                          # optional, original: x<TAB>y
        └── i2mtc_2026_tutorial/WSIs/positions/ImXXX_1.xyc    # optional, merged: blasts / normal
        ALL-IDB1_other_annotations/ALL-IDB1/other/ImXXX_Y.xyc # optional, other WBCs: x y
        ALL-IDB1_masks_Loddo_Putzu/ImXXX_1_WBCs.tif, ImXXX_1_RBC.tif   # optional, 1-bit masks
    """

    name = "all_idb1"
    title = "ALL-IDB1"
    dirname = "ALL-IDB1"
    homepage = "https://scotti.di.unimi.it/all/"
    license = "ALL-IDB terms: research use on request; cite the paper"
    citation = (
        "R. Donida Labati, V. Piuri, F. Scotti, ALL-IDB: the acute lymphoblastic leukemia image "
        "database for image processing, IEEE ICIP 2011"
    )
    obtain = "request ALL-IDB from the University of Milan (https://scotti.di.unimi.it/all/)"
    image_kind = ImageKind.smear

    def __init__(
        self,
        root: str | Path | None = None,
        *,
        masks: str | Path | None = None,
        other: str | Path | None = None,
    ) -> None:
        super().__init__(root)
        self.masks = Path(masks) if masks else self.root.parent / "ALL-IDB1_masks_Loddo_Putzu"
        self.other = Path(other) if other else self.root.parent / "ALL-IDB1_other_annotations" / "ALL-IDB1" / "other"

    @property
    def img_dir(self) -> Path:
        return self.root / "ALL_IDB1" / "im"

    def _check_layout(self) -> None:
        if not self.img_dir.is_dir():
            self._missing(f"folder {self.img_dir} does not exist")
        if not self.items():
            self._missing(f"no images in {self.img_dir}")

    def items(self) -> list[Path]:
        images = list_images(self.img_dir)
        stems = {p.stem for p in images}
        own = sorted((self.root / "ALL_IDB1" / "xyc").glob("*.xyc")) + sorted(self.root.glob("*/WSIs/positions/*.xyc"))
        self.report_orphans(own, stems, "its positions were not ingested")
        if self.other.is_dir():  # ALL-IDB-Patches annotates all 108 images; a copy may hold fewer
            self.report_orphans(sorted(self.other.glob("*.xyc")), stems, "their points were not used", summary=True)
        return images

    def _position_files(self, stem: str, present: bool = True) -> list[Path]:
        """The positions files of image ``stem`` (``present=False``: also where its own would be)."""
        cands = [self.root / "ALL_IDB1" / "xyc" / f"{stem}.xyc"]
        cands += sorted(self.root.glob(f"*/WSIs/positions/{stem}.xyc"))
        return [p for p in cands if p.is_file() or not present]

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]]:
        stem = path.stem
        return stem, [path, *self._position_files(stem, present=False), self.other / f"{stem}.xyc",
                      *(self.masks / f"{stem}_{suffix}.tif" for suffix in ("WBCs", "RBC"))]

    def load(self, path: Path) -> Sample:
        m = _NAME.match(path.stem)
        if not m:
            raise AnnotationError(f"{path}: name is not ImXXX_Y (Y = 0 healthy, 1 ALL); cannot read the label")
        info = self._image(path)
        w, h = info.width, info.height
        blasts: dict[tuple[int, int], tuple[Path, int]] = {}  # point -> (file, line) it came from
        normal: dict[tuple[int, int], tuple[Path, int]] = {}
        files = self._position_files(path.stem)
        other = self.other / f"{path.stem}.xyc"
        for f in files + ([other] if other.is_file() else []):
            try:
                pos = _read_points(f, self.warn)
            except AnnotationError as e:  # an unreadable positions file costs its points, not the image
                self.warn(f, str(e))
                continue
            for (x, y, n) in pos["blasts"] if f != other else []:
                blasts.setdefault((x, y), (f, n))
            for (x, y, n) in pos["normal"] + (pos["blasts"] if f == other else []):
                normal.setdefault((x, y), (f, n))
        return self._sample(
            path,
            info,
            source_id=path.stem,
            group_id=f"{self.name}/{path.stem}",
            ground_truth=m.group(2),
            diagnosis=Diagnosis.ALL if m.group(2) == "1" else Diagnosis.healthy,
            device=info.exif_model,
            blasts=self._points(blasts, CellType.lymphoblast, w, h) if files else None,
            other_wbcs=self._points(normal, CellType.wbc, w, h) if (files or other.is_file()) else None,
            cells=self._cells(path.stem, w, h),
        )

    def _points(self, pts: dict[tuple[int, int], tuple[Path, int]], label: CellType, w: int, h: int) -> list[Point]:
        """Relative points; one outside the image is reported under its positions file and line."""
        out = []
        for (x, y), (where, n) in pts.items():
            if not (0 <= x < w and 0 <= y < h):
                self.warn(where, f"line {n}: point ({x}, {y}) is outside the {w}x{h} image; skipped")
                continue
            out.append(Point(label=label, x=(x + 0.5) / w, y=(y + 0.5) / h))
        return out

    def _cells(self, stem: str, w: int, h: int) -> list[Box] | None:
        found = [(self.masks / f"{stem}_{suffix}.tif", label) for suffix, label in (("WBCs", CellType.wbc), ("RBC", CellType.rbc))]
        if not any(p.is_file() for p, _ in found):
            return None
        boxes: list[Box] = []
        for p, label in found:
            if not p.is_file():
                continue
            try:
                mask = read_mask(p)
            except AnnotationError as e:
                self.warn(p, str(e))
                continue
            except Exception as e:  # noqa: BLE001 - a bad mask costs only the mask
                self.warn(p, f"mask not used: {e}")
                continue
            if mask.shape[:2] != (h, w):
                self.warn(p, f"mask size {mask.shape[1::-1]} != image size {(w, h)}; not used")
                continue
            boxes += instance_boxes(mask if mask.ndim == 2 else mask[..., 0], label)
        return boxes
