"""ATLAS: hematology-atlas smear images saved by the user, one folder per atlas category."""

from __future__ import annotations

import re
from pathlib import Path

from alldata.errors import AnnotationError
from alldata.schema import Diagnosis, ImageKind, Sample, Subtype
from alldata.sources.base import IMAGE_SUFFIXES, SOURCES, Source, list_images

__all__ = ["CATEGORIES", "Atlas", "category_labels", "normalise_category"]

_ALL, _AML = Diagnosis.ALL, Diagnosis.AML

#: Accepted category names (normalised: lower case, ``-``/space/``_`` runs -> ``_``).
CATEGORIES: dict[str, tuple[Diagnosis, Subtype | None]] = {
    "all": (_ALL, None),
    **{f"{p}{n}": (_ALL, Subtype(f"L{n}")) for n in (1, 2, 3) for p in ("all_l", "l", "fab_l")},
    "burkitt": (_ALL, Subtype.L3),
    "all_burkitt": (_ALL, Subtype.L3),
    "aml": (_AML, None),
    **{f"aml_m{n}": (_AML, Subtype(f"M{n}")) for n in range(8)},
    "apl": (_AML, Subtype.M3),  # acute promyelocytic leukemia = FAB M3
    "cll": (Diagnosis.CLL, None),
    "cml": (Diagnosis.CML, None),
    "normal": (Diagnosis.healthy, None),
    "healthy": (Diagnosis.healthy, None),
    **{
        name: (Diagnosis.other, None)
        for name in ("mds", "myeloma", "multiple_myeloma", "lymphoma", "hairy_cell", "hairy_cell_leukemia")
    },
}


def normalise_category(name: str) -> str:
    """``"ALL-L3"``, ``"all l3"``, ``"All__L3"`` -> ``"all_l3"``."""
    return re.sub(r"[\s_\-]+", "_", name.strip().lower()).strip("_")


def category_labels(folder: str) -> tuple[Diagnosis, Subtype | None] | None:
    """(diagnosis, subtype) for a category folder name, or None when it is not known."""
    return CATEGORIES.get(normalise_category(folder))


@SOURCES.register("atlas")
class Atlas(Source):
    """Images from a hematology atlas (e.g. hematologyatlas.com), saved by the user.

    There is no standard packaging: the folder holds one subfolder per atlas category,
    named after it, and the folder name gives the diagnosis (and FAB subtype). Names are
    matched case-insensitively, with ``-``, spaces and ``_`` treated alike. A folder whose
    name is not known is not loaded; it is recorded once as skipped (rename it, or ingest
    it with the generic ``folder`` source). Images directly in the root, and subfolders
    inside a category folder, are recorded as skipped too. Each image is its own group:
    the atlas does not say which images come from the same patient.

    Layout::

        ATLAS/
        ├── ALL_L1/  ALL_L2/  ALL_L3/      # *.jpg, *.png, ... (any image type)
        └── AML_M3/  CLL/  normal/  ...    # one folder per atlas category
        Accepted names -> diagnosis (subtype):
          ALL_L1 | L1 | FAB_L1             -> ALL (L1);  likewise L2
          ALL_L3 | L3 | FAB_L3 | Burkitt | ALL_Burkitt -> ALL (L3)
          ALL -> ALL;  AML -> AML;  AML_M0 ... AML_M7 -> AML (M0 ... M7);  APL -> AML (M3)
          CLL -> CLL;  CML -> CML;  normal | healthy -> healthy
          MDS | myeloma | multiple_myeloma | lymphoma | hairy_cell | hairy_cell_leukemia -> other
    """

    name = "atlas"
    title = "ATLAS"
    dirname = "ATLAS"
    homepage = "https://www.hematologyatlas.com/"
    license = "atlas terms (check the atlas' site; usually research/teaching use)"
    citation = "hematologyatlas.com / the atlas the images were taken from"
    obtain = "save the atlas images you are licensed to use into one folder per atlas category"
    image_kind = ImageKind.smear

    def _check_layout(self) -> None:
        if not self.items():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            self._missing(
                f"no images in a known category folder under {self.root} "
                f"(folders found: {', '.join(found) or 'none'}; known e.g. ALL_L1, AML_M3, CLL, normal)"
            )

    def items(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        out: list[Path] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                self.skip_once(
                    entry, "image directly in the atlas root has no category; move it into a category folder"
                )
            elif entry.is_dir() and category_labels(entry.name) is None:
                known = ", ".join(sorted(CATEGORIES))
                self.skip_once(
                    entry,
                    f"unknown atlas category {entry.name!r}; known: {known}; "
                    "rename the folder or use the `folder` source",
                )
            elif entry.is_dir():
                out += list_images(entry)
                for sub in sorted(entry.iterdir()):
                    if sub.is_dir() and not sub.name.startswith("."):
                        self.skip_once(sub, f"subfolder not read; put its images directly in {entry.name}/")
        return out

    def stamp_inputs(self, path: Path) -> tuple[str, list[Path]]:
        return f"{path.parent.name}/{path.name}", [path]

    def load(self, path: Path) -> Sample:
        if path.parent == self.root:
            raise AnnotationError(f"{path}: image directly in the atlas root has no category")
        if path.parent.parent != self.root:
            raise AnnotationError(f"{path}: not in a category folder directly under {self.root}")
        category = path.parent.name
        labels = category_labels(category)
        if labels is None:
            raise AnnotationError(f"{path}: unknown atlas category {category!r}")
        diagnosis, subtype = labels
        info = self._image(path)
        return self._sample(
            path,
            info,
            source_id=f"{category}/{path.name}",
            group_id=f"{self.name}/{category}/{path.stem}",
            ground_truth=category,
            diagnosis=diagnosis,
            subtype=subtype,
        )

