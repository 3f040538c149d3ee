"""Reading image files safely: hash, decode fully, refuse what cannot be used."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from alldata.config import max_image_pixels
from alldata.errors import ImageError

__all__ = ["ImageInfo", "inspect_image", "read_mask", "sha256_file"]

_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "BMP": "image/bmp"}


@dataclass(frozen=True)
class ImageInfo:
    """What ingest needs to know about an image file."""

    sha256: str
    width: int
    height: int
    size_bytes: int
    mime_type: str
    num_channels: int
    mode: str
    exif_model: str | None


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inspect_image(path: str | Path, *, max_pixels: int | None = None) -> ImageInfo:
    """Hash and fully decode ``path``; raise :class:`ImageError` saying why it is unusable.

    Refuses empty files, undecodable or truncated data, unusual modes and images larger
    than ``max_pixels`` (default :func:`alldata.config.max_image_pixels`), the last
    *before* decoding, so a decompression bomb costs nothing.
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > limit:
                raise ImageError(
                    f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} "
                    "(possible decompression bomb); raise ALLDATA_MAX_IMAGE_PIXELS if the image is genuine"
                )
            if img.mode not in _MODES:
                raise ImageError(f"{path}: unsupported image mode {img.mode!r}; allowed {sorted(_MODES)}")
            img.load()  # full decode: catches truncation and corrupt data
            exif_model = None
            if img.format == "JPEG":
                model = img.getexif().get(0x0110)
                exif_model = str(model).strip("\x00 ").strip() or None if model else None
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode image ({e})") from None
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(),
        width=w,
        height=h,
        size_bytes=len(data),
        mime_type=_MIME.get(img.format or "", f"image/{(img.format or 'unknown').lower()}"),
        num_channels=len(img.getbands()),
        mode=img.mode,
        exif_model=exif_model,
    )


def read_mask(path: str | Path) -> np.ndarray:
    """Decode a mask file to a numpy array (bool for 1-bit, else its own dtype)."""
    try:
        with Image.open(path) as img:
            return np.array(img)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: cannot decode mask ({e})") from None
