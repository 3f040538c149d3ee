"""The common schema: every field name and label vocabulary alldata writes.

Every loader yields :class:`Sample` records, validated here (pydantic) before anything
reaches FiftyOne (:mod:`alldata.store` converts them). Coordinate conventions:

* Boxes (:class:`Box.bbox`) are FiftyOne relative ``[x, y, w, h]`` (top-left corner and size
  as fractions of the image width and height, in ``[0, 1]``); instance masks
  (:class:`Box.mask`) are boolean arrays covering the box only. Points (:class:`Point`) are
  relative ``(x, y)``: column / width, row / height, pixel centres at ``(col + 0.5) / width``.
* Loaders convert source conventions: Pascal VOC boxes (BCCD) are 1-based and inclusive
  (``x = (xmin - 1) / W``, ``w = (xmax - xmin + 1) / W``; ``xmin == xmax`` is one pixel wide);
  ALL-IDB ``.xyc`` centroids are integer full-image pixels (``x`` column, ``y`` row), 0-based.
* Semantic masks (:class:`SegMask`) are full-image ``uint8`` arrays with the values of
  :data:`SEG_CLASSES` (0 background, 1 cytoplasm, 2 nucleus).
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SEG_CLASSES",
    "Box",
    "CellType",
    "Diagnosis",
    "F",
    "ImageKind",
    "Point",
    "Provenance",
    "Sample",
    "SegMask",
    "Split",
    "Subtype",
]


class Diagnosis(str, Enum):
    """Diagnosis of the subject (or of the image, where that is all a source says)."""

    ALL = "ALL"
    AML = "AML"
    CLL = "CLL"
    CML = "CML"
    healthy = "healthy"
    other = "other"  # another disorder named by the source


class CellType(str, Enum):
    """What a cell (or a single-cell image) shows."""

    lymphoblast = "lymphoblast"
    myeloblast = "myeloblast"
    hematogone = "hematogone"  # benign B-cell precursor (Taleqani "Benign")
    lymphocyte = "lymphocyte"
    neutrophil = "neutrophil"
    eosinophil = "eosinophil"
    basophil = "basophil"
    monocyte = "monocyte"
    immature_granulocyte = "immature_granulocyte"  # promyelo-, myelo-, metamyelocytes
    erythroblast = "erythroblast"
    wbc = "wbc"  # a white cell of unspecified type (BCCD boxes)
    rbc = "rbc"
    platelet = "platelet"


class Subtype(str, Enum):
    """Morphological (FAB) or immunophenotype (B-ALL) subtype."""

    L1 = "L1"
    L2 = "L2"
    L3 = "L3"
    pro_b = "pro_b"  # Taleqani "Pro"
    early_pre_b = "early_pre_b"  # Taleqani "Early"
    pre_b = "pre_b"  # Taleqani "Pre"
    M0 = "M0"
    M1 = "M1"
    M2 = "M2"
    M3 = "M3"
    M4 = "M4"
    M5 = "M5"
    M6 = "M6"
    M7 = "M7"


class ImageKind(str, Enum):
    smear = "smear"  # a field of view with many cells
    cell = "cell"  # a crop centred on one cell


class Split(str, Enum):
    train = "train"
    val = "val"
    test = "test"


#: Values of a semantic mask.
SEG_CLASSES: dict[int, str] = {0: "background", 1: "cytoplasm", 2: "nucleus"}


class F:
    """FiftyOne field names, in one place (use these, never string literals)."""

    SOURCE = "source"
    SOURCE_ID = "source_id"
    KEY = "key"  # "<source>/<source_id>", unique within a dataset
    SHA256 = "sha256"
    RECORD_SHA256 = "record_sha256"
    LICENSE = "license"
    CITATION = "citation"
    SUBJECT_ID = "subject_id"
    GROUP_ID = "group_id"
    SPLIT = "split"
    SOURCE_SPLIT = "source_split"
    IMAGE_KIND = "image_kind"
    WIDTH = "width"
    HEIGHT = "height"
    MAGNIFICATION = "magnification"
    STAIN = "stain"
    DEVICE = "device"
    GROUND_TRUTH = "ground_truth"
    DIAGNOSIS = "diagnosis"
    CELL_TYPE = "cell_type"
    SUBTYPE = "subtype"
    CELLS = "cells"
    BLASTS = "blasts"
    OTHER_WBCS = "other_wbcs"
    SEGMENTATION = "segmentation"
    SEGMENTATION_ALT = "segmentation_alt"
    WBC_LABELS = "wbc_labels"
    DUPLICATE_OF = "duplicate_of"
    RELATED = "related"
    IS_SYNTHETIC = "is_synthetic"
    GENERATOR = "generator"
    CHECKPOINT_SHA256 = "checkpoint_sha256"
    SEED = "seed"
    CONDITION = "condition"
    RECIPE = "recipe"
    SAMPLER = "sampler"
    NUM_INFERENCE_STEPS = "num_inference_steps"
    ALLDATA_VERSION = "alldata_version"
    # tags
    TAG_DUPLICATE = "duplicate"
    TAG_SYNTHETIC = "synthetic"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, use_enum_values=False)


def _unit(v: float, what: str) -> float:
    if not (0.0 <= v <= 1.0):  # also rejects NaN
        raise ValueError(f"{what}={v!r} is outside [0, 1]; coordinates are relative to the image size")
    return float(v)


class Box(_Model):
    """One cell: a relative box, its label and optionally its instance mask."""

    label: CellType
    bbox: tuple[float, float, float, float] = Field(description="relative [x, y, w, h]")
    mask: np.ndarray | None = Field(default=None, description="bool array over the box only")
    attributes: dict[str, Any] = Field(default_factory=dict)

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x, y, w, h = (_unit(c, n) for c, n in zip(v, "xywh"))
        if x + w > 1.0 + 1e-9 or y + h > 1.0 + 1e-9:
            raise ValueError(f"box {v!r} extends past the image (x+w or y+h > 1)")
        return (x, y, w, h)

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, v: np.ndarray | None) -> np.ndarray | None:
        if v is not None and (v.ndim != 2 or v.dtype != bool):
            raise ValueError(f"instance mask must be a 2-D bool array, got {v.dtype} {v.shape}")
        return v


class Point(_Model):
    """A cell centroid in relative coordinates."""

    label: CellType
    x: float
    y: float

    @field_validator("x", "y")
    @classmethod
    def _check(cls, v: float) -> float:
        return _unit(v, "point coordinate")


class SegMask(_Model):
    """A full-image semantic mask with :data:`SEG_CLASSES` values, and who drew it."""

    mask: np.ndarray
    annotator: str

    @field_validator("mask")
    @classmethod
    def _check_mask(cls, v: np.ndarray) -> np.ndarray:
        if v.ndim != 2 or v.dtype != np.uint8:
            raise ValueError(f"semantic mask must be a 2-D uint8 array, got {v.dtype} {v.shape}")
        if v.size and int(v.max()) > max(SEG_CLASSES):
            bad = set(np.unique(v).tolist()) - set(SEG_CLASSES)
            raise ValueError(f"semantic mask has values {sorted(bad)}; allowed {sorted(SEG_CLASSES)}")
        return v


class Provenance(_Model):
    """Where a synthetic sample came from (absent on real samples)."""

    generator: str
    checkpoint_sha256: str
    seed: int
    condition: dict[str, Any] = Field(default_factory=dict)
    sampler: str | None = None  # e.g. "dpm++"
    num_inference_steps: int | None = None
    recipe: str | None = None
    alldata_version: str | None = None


class Sample(_Model):
    """One image and its labels, in the common schema.

    ``group_id`` is what a leakage-free split keeps together: the subject where the source
    has one, else the source image a crop was cut from, else the file itself. It is
    written ``"<source>/<id>"`` so a crop and its parent smear share it across sources.
    """

    filepath: str
    source: str
    source_id: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    license: str
    citation: str
    subject_id: str | None = None
    group_id: str
    source_split: str | None = None
    image_kind: ImageKind
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    size_bytes: int = Field(gt=0)
    mime_type: str
    num_channels: int = Field(gt=0)
    magnification: str | None = None
    stain: str | None = None
    device: str | None = None
    ground_truth: str | None = Field(default=None, description="the source's own class name, verbatim")
    diagnosis: Diagnosis | None = None
    cell_type: CellType | None = None
    subtype: Subtype | None = None
    cells: list[Box] | None = None
    blasts: list[Point] | None = None
    other_wbcs: list[Point] | None = None
    segmentation: SegMask | None = None
    segmentation_alt: SegMask | None = None
    wbc_labels: list[CellType] | None = None
    provenance: Provenance | None = None
    extra: dict[str, Any] = Field(default_factory=dict, description="source-specific scalar fields")

    @property
    def key(self) -> str:
        """``"<source>/<source_id>"``: unique within a store."""
        return f"{self.source}/{self.source_id}"

    @property
    def is_synthetic(self) -> bool:
        return self.provenance is not None

    @model_validator(mode="after")
    def _check_masks_fit(self) -> Sample:
        for seg in (self.segmentation, self.segmentation_alt):
            if seg is not None and seg.mask.shape != (self.height, self.width):
                raise ValueError(
                    f"{self.source_id}: mask shape {seg.mask.shape} != image (height, width) "
                    f"({self.height}, {self.width})"
                )
        return self

    def fingerprint(self) -> str:
        """sha256 of the whole record (arrays by content): equal iff nothing changed."""

        def enc(o: Any) -> Any:
            if isinstance(o, np.ndarray):
                return [str(o.dtype), list(o.shape), hashlib.sha256(np.ascontiguousarray(o).tobytes()).hexdigest()]
            if isinstance(o, Enum):
                return o.value
            raise TypeError(f"cannot fingerprint {type(o).__name__}")

        blob = json.dumps(self.model_dump(mode="python"), default=enc, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()
