"""The ``folder`` source's extras: same-stem mask files and a class-label CSV.

A user's tree often holds each image's mask beside it under the same stem
(``001.bmp`` + ``001.png``) and its labels in a CSV rather than in folder names. Both are
detected (:func:`find_pairs`, :func:`detect_labels_csv`) so the ``folder`` source can refuse
to guess, and read (:func:`read_labels_csv`, :func:`mask_to_classes`) when the user says how.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from alldata.errors import AnnotationError

__all__ = ["LABEL_COLUMNS", "detect_labels_csv", "find_pairs", "mask_to_classes", "read_labels_csv"]

#: Header names taken as the label column when a CSV has more than two columns.
LABEL_COLUMNS = ("label", "labels", "class", "category", "diagnosis", "cell_type", "type", "target")


def find_pairs(files: list[Path] | list[str]) -> dict[Path, list]:
    """Files sharing a folder and a stem (``a/001.bmp`` + ``a/001.png``): ``{a/001: [both, sorted]}``
    (the files as given: Paths or text).

    Grouped folder by folder when ``files`` list each folder's files together (as listings do),
    so the working memory is one folder's, not the whole tree's.
    """
    out: dict[Path, list[Path]] = {}
    done: set[str] = set()
    # one folder at a time (listings give a folder's files together), stems as text: 100k files stay cheap
    for folder, group in itertools.groupby(files, key=os.path.dirname):
        if folder in done:  # a folder's files come in two runs: group them all at once instead
            return _pairs(files)
        done.add(folder)
        out.update(_pairs(group))
    return out


def _pairs(files: Iterable) -> dict[Path, list]:
    by_stem: dict[str, list] = defaultdict(list)
    for f in files:
        by_stem[os.path.splitext(f)[0]].append(f)
    return {Path(k): sorted(v) for k, v in by_stem.items() if len(v) > 1}


def _keys(path: str | Path, root: Path) -> tuple[str, str, str]:
    """What a CSV may call a file: its path below ``root``, its name, its stem."""
    path = Path(path)
    return path.relative_to(root).as_posix(), path.name, path.stem


def _rows(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationError(f"{csv_path}: not UTF-8 text (byte {e.start:,}); save it as UTF-8 CSV") from None
    except OSError as e:
        raise AnnotationError(f"{csv_path}: cannot read ({e.strerror or e})") from None
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    try:
        rows = [(reader.line_num, [c.strip() for c in row]) for row in reader if any(c.strip() for c in row)]
    except csv.Error as e:
        raise AnnotationError(f"{csv_path}: malformed CSV ({e})") from None
    if len(rows) < 2:
        raise AnnotationError(f"{csv_path}: needs a header row and at least one row (file name, label)")
    return rows[0][1], rows[1:]


def _file_column(header: list[str], rows: list[tuple[int, list[str]]], names: set[str]) -> tuple[int, int]:
    """(index, matches) of the column whose values name the most images."""
    best = (-1, 0)
    for j in range(len(header)):
        hits = sum(1 for _, r in rows if j < len(r) and (r[j] in names or Path(r[j]).as_posix() in names))
        if hits > best[1]:
            best = (j, hits)
    return best


def detect_labels_csv(root: Path, images: list[Path] | list[str]) -> Path | None:
    """The first ``*.csv``/``*.tsv`` directly in ``root`` that names at least one of ``images``, else None."""
    tables = sorted(p for p in root.iterdir() if p.suffix.lower() in (".csv", ".tsv") and p.is_file())
    if not tables:  # the usual case: no need to index every image's names
        return None
    names = {k for p in images for k in _keys(p, root)}
    for f in tables:
        try:
            header, rows = _rows(f)
        except AnnotationError:
            continue
        if _file_column(header, rows, names)[1] > 0:
            return f
    return None


def read_labels_csv(csv_path: Path, root: Path, images: list[Path]) -> tuple[dict[Path, str], list[str]]:
    """``{image: label}`` from a CSV with a header, a file-name column and a label column.

    The file column is the one whose values name the most images (path below ``root``,
    file name, or stem); the label column is the only other column, or one named as in
    :data:`LABEL_COLUMNS`. Returns the labels and human notes about rows not used
    (unknown files, empty labels, repeated rows with another label).

    Raises:
        AnnotationError: the CSV cannot be read, names none of the images, or its label
            column cannot be told (the message lists the columns and the fix).
    """
    header, rows = _rows(csv_path)
    index: dict[str, list[Path]] = defaultdict(list)
    for p in images:
        for k in set(_keys(p, root)):
            index[k].append(p)
    col, hits = _file_column(header, rows, set(index))
    if hits == 0:
        raise AnnotationError(
            f"{csv_path}: no column names the images under {root} (by path below it, file name or stem); "
            f"columns: {header}; first image: {images[0].relative_to(root).as_posix() if images else 'none'}"
        )
    others = [j for j in range(len(header)) if j != col]
    named = [j for j in others if header[j].lower() in LABEL_COLUMNS]
    if len(others) == 1:
        lab = others[0]
    elif len(named) == 1:
        lab = named[0]
    else:
        raise AnnotationError(
            f"{csv_path}: cannot tell which column holds the label (columns {header}; file names in "
            f"{header[col]!r}); name exactly one column one of {list(LABEL_COLUMNS)}"
        )
    labels: dict[Path, str] = {}
    notes: list[str] = []
    unknown: list[str] = []
    for line, row in rows:
        key = row[col] if col < len(row) else ""
        label = row[lab] if lab < len(row) else ""
        targets = index.get(key) or index.get(Path(key).as_posix()) or []
        if not targets:
            unknown.append(f"line {line} ({key!r})")
            continue
        if not label:
            notes.append(f"line {line}: no {header[lab]!r} for {key!r}; row not used")
            continue
        for p in targets:
            if p in labels and labels[p] != label:
                notes.append(f"line {line}: {key!r} again, now {label!r}; the first label {labels[p]!r} is kept")
                continue
            labels.setdefault(p, label)
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        notes.append(f"{len(unknown)} row(s) name no image under {root}: {shown}; not used")
    return labels, notes


def mask_to_classes(mask: np.ndarray, path: Path) -> np.ndarray:
    """A user's label mask -> the values of :data:`alldata.schema.SEG_CLASSES`, by grey level.

    Grey levels are ranked: the lowest is background; with three levels the middle one is
    cytoplasm and the highest nucleus; with two levels the other one is nucleus (as in
    nucleus ground truths). RGB masks with three equal channels count as grey; colour
    masks and masks with more than three levels raise :class:`AnnotationError`.
    """
    if mask.ndim == 3:
        if mask.shape[2] >= 3 and not (np.array_equal(mask[..., 0], mask[..., 1]) and np.array_equal(mask[..., 0], mask[..., 2])):
            raise AnnotationError(f"{path}: a colour mask; write it as grey levels (0 background, 1 cytoplasm, 2 nucleus)")
        mask = mask[..., 0]
    levels = np.unique(mask)
    if len(levels) > 3:
        raise AnnotationError(
            f"{path}: {len(levels)} grey levels, not a label mask; use at most three (background < cytoplasm < nucleus)"
        )
    codes = {1: [0], 2: [0, 2], 3: [0, 1, 2]}[max(1, len(levels))]
    out = np.zeros(mask.shape, np.uint8)
    for level, code in zip(levels.tolist(), codes):
        out[mask == level] = code
    return out
