"""Writers for tiny fixture files in the sources' native layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (16, 12), mode: str = "RGB", seed: int = 0, fmt: str | None = None) -> Path:
    """A small random image at ``path`` (format from the suffix unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path, format=fmt)
    return path


def write_voc(path: Path, filename: str, size: tuple[int, int], objects: list[tuple[str, int, int, int, int]]) -> Path:
    """A Pascal VOC annotation like BCCD's (with a bogus absolute <path>)."""
    objs = "".join(
        f"<object><name>{n}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
        f"<bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></object>"
        for n, a, b, c, d in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><folder>JPEGImages</folder><filename>{filename}</filename>"
        f"<path>/home/pi/detection_dataset/JPEGImages/{filename}</path>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>"
    )
    return path


def make_bccd(root: Path, n: int = 3) -> Path:
    """A BCCD tree (root/BCCD/{Annotations,ImageSets/Main,JPEGImages}) with n good images."""
    voc = root / "BCCD"
    ids = [f"BloodImage_{i:05d}" for i in range(n)]
    for i, stem in enumerate(ids):
        write_image(voc / "JPEGImages" / f"{stem}.jpg", (64, 48), seed=i)
        write_voc(voc / "Annotations" / f"{stem}.xml", f"{stem}.jpg", (64, 48), [("WBC", 10, 10, 30, 30), ("RBC", 1, 1, 8, 8)])
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    return root
