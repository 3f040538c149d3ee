"""C-NMC 2019: segmented single-cell BMPs, ALL blasts vs healthy B cells (Kaggle or TCIA copy)."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alldata.errors import AnnotationError
from alldata.schema import CellType, Diagnosis, ImageKind, Sample
from alldata.sources.base import SOURCES, Problem, Source, list_images

__all__ = ["CNMC", "parse_cell_name", "read_prelim_labels"]

_NAME = re.compile(r"^UID_(H?\d+)_(\d+)_(\d+)_(all|hem)$", re.IGNORECASE)
_FOLD = re.compile(r"^fold_\d+$")
_PRELIM, _FINAL = "C-NMC_test_prelim_phase_data", "C-NMC_test_final_phase_data"
_PRELIM_CSV = f"{_PRELIM}_labels.csv"
_COLUMNS = ("patient_id", "new_names", "labels")
_CSV_LABEL = {"1": "all", "0": "hem"}
_FIELDS: dict[str, dict[str, Any]] = {
    "all": {"diagnosis": Diagnosis.ALL, "cell_type": CellType.lymphoblast, "ground_truth": "all"},
    "hem": {"diagnosis": Diagnosis.healthy, "cell_type": None, "ground_truth": "hem"},
}


def parse_cell_name(stem: str) -> tuple[str, str]:
    """``UID_11_10_1_all`` -> ``("11", "all")``; ``UID_h3_2_1_hem`` -> ``("H3", "hem")``.

    Raises ValueError when the name is not ``UID_<subject>_<image>_<cell>_<all|hem>`` or
    its subject id (``H<n>`` = healthy) contradicts its suffix.
    """
    m = _NAME.match(stem)
    if not m:
        raise ValueError(f"name {stem!r} is not UID_<subject>_<image>_<cell>_<all|hem>")
    subject, label = m.group(1).upper(), m.group(4).lower()
    if subject.startswith("H") != (label == "hem"):
        raise ValueError(f"name {stem!r}: subject {subject} and suffix _{label} disagree (H<n> marks healthy subjects)")
    return subject, label


def _csv_row(row: list[str], col: dict[str, int], width: int, image_dir: Path) -> tuple[str, str, str, str]:
    """(new name, subject, label, original name) of one labels row; ValueError says what is wrong."""
    if len(row) != width:
        raise ValueError(f"{len(row)} fields, expected {width}")
    original, new, value = (row[col[c]].strip() for c in _COLUMNS)
    if value not in _CSV_LABEL:
        raise ValueError(f"labels={value!r} is not 0 or 1")
    subject, label = parse_cell_name(Path(original).stem)
    if label != _CSV_LABEL[value]:
        raise ValueError(f"labels={value} but Patient_ID {original} says {label}")
    if not new or not (image_dir / new).is_file():
        raise ValueError(f"image {new!r} not found in {image_dir}")
    return new, subject, label, original


def read_prelim_labels(csv_path: Path, image_dir: Path) -> tuple[dict[str, tuple[str, str, str]] | None, list[Problem]]:
    """Read ``Patient_ID,new_names,labels``: ``{new name: (subject, label, original name)}``.

    Returns ``None`` (and one warning) when the file is missing or unusable; bad rows, rows
    whose image is missing and duplicate rows are left out, each with a warning.
    """
    if not csv_path.is_file():
        return None, [Problem(str(csv_path), f"{csv_path.name} not found; prelim-test images unlabelled", "warning")]
    try:
        reader = csv.reader(io.StringIO(csv_path.read_text(encoding="utf-8-sig")))
        rows = [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        return None, [Problem(str(csv_path), f"cannot read {csv_path.name} ({e}); images unlabelled", "warning")]
    header = [h.strip().lower() for h in rows[0][1]] if rows else []
    if not set(_COLUMNS) <= set(header):
        reason = f"{csv_path.name}: header {header} lacks Patient_ID,new_names,labels; prelim-test images unlabelled"
        return None, [Problem(str(csv_path), reason, "warning")]
    col = {c: header.index(c) for c in _COLUMNS}
    labels: dict[str, tuple[str, str, str]] = {}
    problems: list[Problem] = []
    for line, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        try:
            new, subject, label, original = _csv_row(row, col, len(header), image_dir)
            if new in labels:
                raise ValueError(f"second row for {new!r} (the first is kept)")
        except ValueError as e:
            problems.append(Problem(str(csv_path), f"{csv_path.name} line {line}: {e}; row not used", "warning"))
            continue
        labels[new] = (subject, label, original)
    return labels, problems


@dataclass(frozen=True)
class _Paths:
    packaging: str  # "kaggle" or "tcia"
    train: Path
    prelim: Path
    prelim_csv: Path
    final: Path


def _natural(path: Path, base: Path) -> tuple[tuple[Any, ...], ...]:
    """Sort key: the path below ``base`` with digit runs compared as numbers (2.bmp < 10.bmp)."""
    return tuple(
        tuple(int(t) if i % 2 else t for i, t in enumerate(re.split(r"(\d+)", part)))
        for part in path.relative_to(base).parts
    )


def _subdirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


@SOURCES.register("cnmc")
class CNMC(Source):
    """C-NMC 2019 (ISBI 2019 challenge, SBILab IIIT Delhi / AIIMS): 450x450 24-bit BMPs,
    one segmented cell on black, ALL blast (``all``) or healthy B cell (``hem``).

    Training folds are labelled by folder (the name suffix must agree); ``UID_<P>_...`` is
    ALL subject ``P``, ``UID_H<S>_...`` healthy subject ``H<S>`` (one subject is written
    ``h3``; it is read as ``H3``). ``group_id`` is the subject, so split by subject.
    Prelim-test images are labelled from the CSV (subject taken from the original name in
    ``Patient_ID``); final-test images are unlabelled. Either packaging is accepted; if
    both are present the Kaggle one is read and the TCIA folder is recorded as skipped.

    Layout::

        C-NMC_Leukemia/                                   # Kaggle mirror
        ├── training_data/fold_0/{all,hem}/ ... fold_2/{all,hem}/
        │       UID_11_10_1_all.bmp  UID_H10_43_1_hem.bmp  UID_h3_1_1_hem.bmp
        ├── validation_data/
        │   ├── C-NMC_test_prelim_phase_data/1.bmp ... 1867.bmp
        │   └── C-NMC_test_prelim_phase_data_labels.csv   # Patient_ID,new_names,labels (1 ALL, 0 hem)
        └── testing_data/C-NMC_test_final_phase_data/1.bmp ... 2586.bmp   # unlabelled
        C-NMC_Leukemia/                                   # or the TCIA packaging
        ├── C-NMC_training_data/fold_0/{all,hem}/ ... fold_2/{all,hem}/
        ├── C-NMC_test_prelim_phase_data/  + C-NMC_test_prelim_phase_data_labels.csv
        └── C-NMC_test_final_phase_data/
    """

    name = "cnmc"
    title = "C-NMC 2019"
    dirname = "C-NMC_Leukemia"
    homepage = "https://www.cancerimagingarchive.net/collection/c-nmc-2019/"
    license = "CC BY 3.0 (as distributed by TCIA)"
    citation = (
        "A. Gupta, R. Gupta (eds.), ISBI 2019 C-NMC Challenge: Classification in Cancer Cell Imaging, "
        "data by SBILab, IIIT Delhi and AIIMS New Delhi"
    )
    obtain = "download the TCIA collection 'C-NMC 2019', or the Kaggle mirror 'C-NMC_Leukemia'"
    image_kind = ImageKind.cell

    def _paths(self) -> _Paths | None:
        """The folders of whichever packaging the root holds (Kaggle first), or None."""
        r = self.root
        if (r / "training_data").is_dir():
            v = r / "validation_data"
            return _Paths("kaggle", r / "training_data", v / _PRELIM, v / _PRELIM_CSV, r / "testing_data" / _FINAL)
        if (r / "C-NMC_training_data").is_dir():
            return _Paths("tcia", r / "C-NMC_training_data", r / _PRELIM, r / _PRELIM_CSV, r / _FINAL)
        return None

    def _check_layout(self) -> None:
        p = self._paths()
        if p is None:
            self._missing(
                f"neither {self.root / 'training_data'} (Kaggle mirror) nor "
                f"{self.root / 'C-NMC_training_data'} (TCIA packaging) exists"
            )
        elif not self.items():
            self._missing(f"no images under {p.train}, {p.prelim} or {p.final}")

    def items(self) -> list[Path]:
        p = self._paths()
        if p is None:
            return []
        if p.packaging == "kaggle" and (self.root / "C-NMC_training_data").is_dir():
            self.skip_once(
                self.root / "C-NMC_training_data",
                "both Kaggle and TCIA packagings present; only the Kaggle one is read",
            )
        train: list[Path] = []
        for fold in _subdirs(p.train):  # anything that is not fold_k/{all,hem}/ is refused by load()
            train += list_images(fold)
            for sub in _subdirs(fold):
                train += list_images(sub)
        train.sort(key=lambda q: _natural(q, p.train))
        prelim = sorted(list_images(p.prelim), key=lambda q: _natural(q, p.prelim))
        if prelim:
            self._prelim_labels(p)  # read once here, before any loading process starts
        final = sorted(list_images(p.final), key=lambda q: _natural(q, p.final))
        return train + prelim + final

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]] | None:
        p = self._paths()
        if p is None:
            return None
        phase = {p.prelim: "prelim/", p.final: "final/"}.get(path.parent, "")
        return f"{phase}{path.stem}", [path]

    def stamp_shared(self) -> list[Path]:
        p = self._paths()
        return [] if p is None else [p.prelim_csv]

    def load(self, path: Path) -> Sample:
        p = self._paths()
        if p is None:
            raise AnnotationError(f"{path}: {self.root} holds no C-NMC training folder")
        if path.parent == p.prelim:
            return self._load_test(path, "prelim", p)
        if path.parent == p.final:
            return self._load_test(path, "final", p)
        if path.parent.parent.parent == p.train or path.parent.parent == p.train:
            return self._load_train(path)
        raise AnnotationError(f"{path}: not inside a C-NMC folder under {self.root}")

    def _load_train(self, path: Path) -> Sample:
        fold, folder = path.parent.parent.name, path.parent.name.lower()
        if not _FOLD.match(fold) or folder not in _FIELDS:
            rel = path.relative_to(self.root)
            raise AnnotationError(
                f"{path}: not in a fold_<k>/all/ or fold_<k>/hem/ folder ({rel}); cannot read the label"
            )
        try:
            subject, label = parse_cell_name(path.stem)
        except ValueError as e:
            raise AnnotationError(f"{path}: {e}") from None
        if label != folder:
            raise AnnotationError(f"{path}: name says '{label}' but the file is in {path.parent.name}/; label unclear")
        group = f"{self.name}/{subject}"
        return self._sample(
            path, self._image(path), path.stem, group, subject_id=subject, source_split=fold, **_FIELDS[label]
        )

    def _load_test(self, path: Path, phase: str, p: _Paths) -> Sample:
        info = self._image(path)
        fields: dict[str, Any] = {"group_id": f"{self.name}/{phase}/{path.stem}"}  # unlabelled: the image alone
        labels = self._prelim_labels(p) if phase == "prelim" else None
        if labels is not None and path.name in labels:
            subject, label, original = labels[path.name]
            fields = {"group_id": f"{self.name}/{subject}", "subject_id": subject, **_FIELDS[label]}
            fields["extra"] = {"original_name": original}
        elif labels is not None:
            self.warn(path, f"no usable row for {path.name} in {p.prelim_csv}; ingested unlabelled")
        return self._sample(path, info, source_id=f"{phase}/{path.stem}", source_split=f"{phase}_test", **fields)

    def _prelim_labels(self, p: _Paths) -> dict[str, tuple[str, str, str]] | None:
        """The prelim CSV, read once per instance (thread-safe); its problems are recorded once."""
        with self._lock:
            if not hasattr(self, "_labels"):
                self._labels, problems = read_prelim_labels(p.prelim_csv, p.prelim)
                self.problems.extend(problems)
            return self._labels

