"""Browser-friendly previews of images a browser cannot show (TIFF), for the FiftyOne App.

:func:`ensure_previews` writes a PNG of each such image at the **same pixel size** (so boxes,
keypoints and masks overlay exactly) to ``$ALLDATA_HOME/cache/previews/<sha256>.png``, sets
``preview_path`` on every sample (the PNG, or the file itself when a browser can show it)
and points the App's grid and modal at it (FiftyOne's alternate media fields); ``filepath``
stays the original file, which everything else reads. 16-bit, 32-bit and float images are
stretched linearly to 8 bits (:func:`preview_image`); a multi-page TIFF shows its first page.
Previews are keyed by the file's sha256 (shared across datasets), written once and
atomically, so an interrupted run resumes; an unreadable image is reported and keeps
``preview_path = filepath``. Details: docs/curation.md#previews.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from alldata.config import home, max_image_pixels
from alldata.errors import AlldataError, ImageError
from alldata.imageio import sha256_file
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "PREVIEW_FIELD",
    "PreviewError",
    "PreviewReport",
    "ensure_previews",
    "preview_dir",
    "preview_image",
]

#: Sample field holding the path the App shows.
PREVIEW_FIELD = "preview_path"
#: File suffixes that get a preview by default (browsers show JPEG, PNG, GIF, BMP, WebP).
DEFAULT_FORMATS = (".tif", ".tiff")

_8BIT = {"1", "L", "P", "RGB", "RGBA", "LA", "PA", "CMYK", "YCbCr", "RGBX", "RGBa", "La"}


class PreviewError(AlldataError, ValueError):
    """Bad preview arguments, or a ``preview_path`` field of the wrong type."""


@dataclass
class PreviewReport:
    """What :func:`ensure_previews` did."""

    samples: int = 0  # samples looked at
    converted: int = 0  # samples whose file has one of the preview formats
    written: int = 0  # preview files written this run
    reused: int = 0  # preview files already there (this or an earlier run)
    updated: int = 0  # samples whose preview_path changed
    app_config_changed: bool = False
    failures: dict[str, str] = field(default_factory=dict)  # filepath -> why no preview


def preview_dir() -> Path:
    """Where previews are written: ``$ALLDATA_HOME/cache/previews``."""
    return home() / "cache" / "previews"


def _stretch(arr: np.ndarray) -> np.ndarray:
    """Linear min-max stretch of any numeric array to uint8 (constant images keep their level)."""
    a = np.nan_to_num(arr.astype(np.float64, copy=False), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = float(a.min()), float(a.max())
    if hi > lo:
        return np.round((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        level = lo / float(np.iinfo(arr.dtype).max) if lo > 0 else 0.0
    else:
        level = min(max(lo, 0.0), 1.0)
    return np.full(a.shape, round(level * 255.0), dtype=np.uint8)


def _from_array(arr: np.ndarray) -> Image.Image:
    """8-bit RGB(A) image from an ``(H, W)`` or ``(H, W, C)`` array of any numeric dtype."""
    if arr.ndim == 2:
        arr = arr[..., None]
    alpha = arr.shape[2] in (2, 4)
    colour = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]
    rgb = _stretch(colour)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    if alpha:
        return Image.fromarray(np.dstack([rgb, _stretch(arr[..., -1])]), "RGBA")
    return Image.fromarray(np.ascontiguousarray(rgb), "RGB")


def _tiff_array(path: Path) -> np.ndarray:
    """First page of a TIFF at full bit depth, as ``(H, W)`` or ``(H, W, C)``."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        arr = page.asarray()
        axes = page.axes
    if axes.startswith("S") and arr.ndim == 3:  # planar configuration: samples first
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _wide_tiff(img: Image.Image) -> bool:
    """Whether Pillow decoded a >8-bit-per-sample TIFF as an 8-bit mode (dropping the low bits)."""
    if img.format != "TIFF" or img.mode not in _8BIT:
        return False
    bits = getattr(img, "tag_v2", {}).get(258, 8)  # BitsPerSample
    bits = bits if isinstance(bits, tuple) else (bits,)
    return max(bits) > 8


def preview_image(path: str | Path) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB (RGBA with alpha) image of the same pixel size.

    Raises:
        ImageError: the file is missing, empty, undecodable or over
            :func:`alldata.config.max_image_pixels`.

    Examples:
        >>> import numpy as np, tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "a.tif")
        >>> Image.fromarray(np.full((4, 6), 4000, np.uint16)).save(p)
        >>> im = preview_image(p); (im.mode, im.size)
        ('RGB', (6, 4))
    """
    path = Path(path)
    limit = max_image_pixels()
    try:
        if path.stat().st_size == 0:
            raise ImageError(f"{path}: file is empty (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # e.g. "Corrupt EXIF data": the error follows
            with Image.open(path) as img:
                w, h = img.size
                if w * h > limit:
                    raise ImageError(
                        f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,}; "
                        "raise ALLDATA_MAX_IMAGE_PIXELS if the image is genuine"
                    )
                if _wide_tiff(img):
                    out = _from_array(_tiff_array(path))
                elif img.mode in _8BIT:
                    has_alpha = "A" in img.getbands() or "a" in img.getbands() or "transparency" in img.info
                    out = img.convert("RGBA" if has_alpha else "RGB")
                else:  # I;16*, I, F
                    out = _from_array(np.asarray(img))
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, IndexError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None
    if out.size != (w, h):  # labels are relative to the original size: never show another
        raise ImageError(f"{path}: decoded as {out.size[0]}x{out.size[1]}, but the file says {w}x{h}")
    return out


def _valid_preview(target: Path, size: tuple[int | None, int | None]) -> bool:
    """Whether ``target`` is a readable PNG of ``size`` (when the size is known)."""
    try:
        with Image.open(target) as im:
            if im.format != "PNG":
                return False
            return None in size or im.size == size
    except (OSError, SyntaxError, ValueError):
        return False


def _write_png(img: Image.Image, target: Path) -> None:
    """Write atomically: an interrupted run never leaves a half-written preview."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        img.save(tmp, format="PNG")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _normalise(formats: Sequence[str]) -> tuple[str, ...]:
    if isinstance(formats, str):
        formats = formats.split(",")
    out = tuple(f".{s.strip().lower().lstrip('.')}" for s in formats if s.strip().strip("."))
    if not out:
        raise PreviewError(f"formats={formats!r} is empty; pass file suffixes such as ('.tif', '.tiff')")
    return out


def _ensure_field(ds: fo.Dataset) -> None:
    import fiftyone as fo

    have = ds.get_field_schema().get(PREVIEW_FIELD)
    if have is None:
        ds.add_sample_field(PREVIEW_FIELD, fo.StringField)
    elif not isinstance(have, fo.StringField):
        raise PreviewError(
            f"dataset {ds.name!r} has a field {PREVIEW_FIELD!r} of type {type(have).__name__}; alldata needs a "
            f"StringField there: delete it (ds.delete_sample_field({PREVIEW_FIELD!r})) and run again"
        )


def _set_app_config(ds: fo.Dataset) -> bool:
    cfg = ds.app_config
    fields = ["filepath", PREVIEW_FIELD] + [f for f in (cfg.media_fields or []) if f not in ("filepath", PREVIEW_FIELD)]
    if (cfg.media_fields, cfg.grid_media_field, cfg.modal_media_field) == (fields, PREVIEW_FIELD, PREVIEW_FIELD):
        return False
    cfg.media_fields = fields
    cfg.grid_media_field = PREVIEW_FIELD
    cfg.modal_media_field = PREVIEW_FIELD
    ds.save()
    return True


def ensure_previews(
    dataset: str | fo.Dataset,
    *,
    formats: Sequence[str] = DEFAULT_FORMATS,
    batch_size: int = 256,
    progress: bool = True,
) -> PreviewReport:
    """Give every sample of ``dataset`` a ``preview_path`` the App can show, and point the App at it.

    Args:
        dataset: a dataset name or a loaded dataset.
        formats: file suffixes (case-insensitive) that need a PNG preview.
        batch_size: samples read and written per database round trip (memory stays bounded).
        progress: show a progress bar.

    Returns:
        a :class:`PreviewReport`; unreadable images are in ``failures`` (file -> reason).

    Raises:
        StoreError: no such dataset.
        PreviewError: empty ``formats``, ``batch_size < 1``, or a non-string ``preview_path`` field.

    Examples:
        >>> report = ensure_previews("alldata")  # doctest: +SKIP
        >>> report.written, report.reused, report.failures  # doctest: +SKIP
        (260, 0, {})
    """
    from tqdm import tqdm

    from alldata.store import load_dataset

    suffixes = _normalise(formats)
    if batch_size < 1:
        raise PreviewError(f"batch_size={batch_size} must be >= 1")
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    _ensure_field(ds)
    out_dir = preview_dir()
    report = PreviewReport()
    ids = ds.values("id")
    report.samples = len(ids)
    schema = ds.get_field_schema()
    cols = ["filepath", PREVIEW_FIELD] + [f for f in (F.SHA256, F.WIDTH, F.HEIGHT) if f in schema]
    with tqdm(total=len(ids), desc="previews", unit="img", disable=not progress) as bar:
        for start in range(0, len(ids), batch_size):
            batch = ids[start:start + batch_size]
            rows = dict(zip(cols, ds.select(batch, ordered=True).values(cols)))
            n = len(batch)
            paths, current = rows["filepath"], rows[PREVIEW_FIELD]
            shas = rows.get(F.SHA256, [None] * n)
            sizes = list(zip(rows.get(F.WIDTH, [None] * n), rows.get(F.HEIGHT, [None] * n)))
            changes: dict[str, str] = {}
            for sid, path, cur, sha, size in zip(batch, paths, current, shas, sizes):
                want = path
                if Path(path).suffix.lower() in suffixes:
                    report.converted += 1
                    try:
                        want = str(_preview_for(path, sha, size, out_dir, report))
                    except ImageError as e:
                        report.failures[path] = str(e)
                if cur != want:
                    changes[sid] = want
                bar.update(1)
            if changes:
                ds.set_values(PREVIEW_FIELD, changes, key_field="id")
                report.updated += len(changes)
    report.app_config_changed = _set_app_config(ds)
    return report


def _preview_for(path: str, sha: str | None, size: tuple[int | None, int | None], out_dir: Path,
                 report: PreviewReport) -> Path:
    """The preview of ``path``: reused when a valid one exists, else written now."""
    if not sha:
        try:
            sha = sha256_file(path)
        except OSError as e:
            raise ImageError(f"{path}: cannot read file ({e.strerror or e})") from None
    target = out_dir / f"{sha}.png"
    if target.is_file() and _valid_preview(target, size):
        report.reused += 1
        return target
    img = preview_image(path)
    if None not in size and img.size != size:
        raise ImageError(
            f"{path}: is {img.size[0]}x{img.size[1]} but the dataset says {size[0]}x{size[1]}; "
            "the file changed since ingest: re-run `alldata ingest`"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_png(img, target)
    report.written += 1
    return target
