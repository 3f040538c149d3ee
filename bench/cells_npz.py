"""Cell images of one source as an ``.npz`` for GPU scripts and diagnostics (no FiftyOne).

    python bench/cells_npz.py taleqani --size 32 --out runs/cells/taleqani-32.npz

Reads the source in its native layout, squares and resizes every cell image, and splits
by content hash (``sha256`` mod 100 < ``--test-percent`` goes to test), so the held-out
cells are the same at every size. Arrays: ``images_train``/``images_test`` (uint8 NHWC),
``labels_train``/``labels_test`` (the ``--label-field`` value, "" when unknown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from alldata.generators.data import square_resize
from PIL import Image
from tqdm import tqdm

from alldata.sources import SOURCES


def build(source: str, size: int, label_field: str, test_percent: int, root: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` (see the module docstring)."""
    src = SOURCES.get(source)(root)
    parts: dict[str, tuple[list[np.ndarray], list[str]]] = {"train": ([], []), "test": ([], [])}
    for s in tqdm(src, total=len(src), desc=f"read {source}"):
        if s.image_kind != "cell":
            continue
        with Image.open(s.filepath) as im:
            img = square_resize(im, size)
        label = getattr(s, label_field, None)
        part = "test" if int(s.sha256[:8], 16) % 100 < test_percent else "train"
        parts[part][0].append(img)
        parts[part][1].append(str(getattr(label, "value", label) or ""))
    return {f"{k}_{p}": np.stack(v[0]) if k == "images" else np.array(v[1])
            for p, v in parts.items() for k in ("images", "labels")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--label-field", default="subtype")
    ap.add_argument("--test-percent", type=int, default=30)
    ap.add_argument("--root", default=None, help="the source's folder (default: the data root)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    arrays = build(args.source, args.size, args.label_field, args.test_percent, args.root)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print({k: v.shape for k, v in arrays.items()})


if __name__ == "__main__":
    main()
