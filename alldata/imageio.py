"""Reading image files safely: hash, decode fully, refuse what cannot be used, and say why.

The pixel limit is alldata's alone (``$ALLDATA_MAX_IMAGE_PIXELS``, see
:func:`alldata.config.max_image_pixels`): each read sets Pillow's own
``Image.MAX_IMAGE_PIXELS`` from it, so Pillow never refuses an image alldata would accept
(Pillow's own default refuses anything over ~179 MP whatever alldata allows). Reasons
describe the file (empty, truncated at byte N, a PDF rather than an image, ...), never
Python objects.
"""

from __future__ import annotations

import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from alldata.config import max_image_pixels
from alldata.errors import ImageError
from alldata.jpeg import read_header

__all__ = ["ImageInfo", "check_structure", "describe_unreadable", "inspect_image", "read_mask", "sha256_file", "sniff_format"]

_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "YCbCr", "I", "I;16", "F"}
_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "TIFF": "image/tiff", "BMP": "image/bmp"}
_ADVICE = "raise ALLDATA_MAX_IMAGE_PIXELS if the image is genuine"
_REPR = re.compile(r"<[\w.]+ object at 0x[0-9a-fA-F]+>")

#: (leading bytes, what the file is, is an image format alldata reads)
_SIGNATURES: tuple[tuple[bytes, str, bool], ...] = (
    (b"\xff\xd8\xff", "JPEG", True),
    (b"\x89PNG\r\n\x1a\n", "PNG", True),
    (b"II*\x00", "TIFF", True),
    (b"MM\x00*", "TIFF", True),
    (b"BM", "BMP", True),
    (b"GIF8", "GIF", True),
    (b"%PDF", "a PDF document", False),
    (b"PK\x03\x04", "a ZIP archive (also .docx/.xlsx)", False),
    (b"\x1f\x8b", "a gzip archive", False),
    (b"7z\xbc\xaf", "a 7-Zip archive", False),
    (b"Rar!", "a RAR archive", False),
    (b"\x00\x00\x00\x0cjP  ", "a JPEG 2000 file", False),
)


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


def sniff_format(data: bytes) -> tuple[str, bool] | None:
    """What the leading bytes say the file is: ``("PNG", True)``, ``("a PDF document", False)``, or None.

    Examples:
        >>> sniff_format(b"%PDF-1.7 ...")
        ('a PDF document', False)
    """
    for magic, what, is_image in _SIGNATURES:
        if data.startswith(magic):
            return what, is_image
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "WEBP", True
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\r\n\t" for c in text)


def describe_unreadable(data: bytes, error: BaseException) -> str:
    """A reason for people why Pillow could not read ``data``: what the file is, or where it breaks.

    Examples:
        >>> describe_unreadable(b"hello world", OSError("cannot identify image file <_io.BytesIO object at 0x1>"))
        "not an image: a text file (it starts with 'hello world')"
    """
    n = len(data)
    msg = _REPR.sub("the file", str(error)).strip()
    sniffed = sniff_format(data)
    truncated = re.search(r"truncated \((\d+) bytes not processed\)", msg)
    if truncated or "truncated" in msg.lower() or "unexpected end" in msg.lower():
        fmt = f"{sniffed[0]} " if sniffed and sniffed[1] else ""
        lost = f"; {int(truncated.group(1)):,} bytes of the last block could not be decoded" if truncated else ""
        return (
            f"truncated: the {fmt}data ends at byte {n:,} before the image is complete{lost} "
            "(an interrupted download or copy?); fetch the file again"
        )
    if "cannot identify image file" in msg or sniffed is not None and not sniffed[1]:
        if sniffed and not sniffed[1]:
            return f"not an image: the file is {sniffed[0]}"
        if sniffed and sniffed[0] == "TIFF" and n >= 8:
            ifd = int.from_bytes(data[4:8], "little" if data[:2] == b"II" else "big")
            if ifd >= n:
                return (
                    f"truncated: the TIFF's image directory should start at byte {ifd:,} but the file ends at "
                    f"byte {n:,} (an interrupted download or copy?); fetch the file again"
                )
        if sniffed:  # an image signature, but Pillow found no usable header
            return (
                f"corrupt {sniffed[0]}: the signature is there but the header cannot be read "
                f"(the file is only {n:,} bytes, or damaged); fetch the file again"
            )
        head = data[:24]
        if not head.strip(b"\x00"):
            return f"not an image: the first {len(head)} bytes are all zero (an unfinished or wiped file?)"
        if _looks_like_text(data[:64]):
            shown = data[:24].decode("utf-8").replace("\n", " ").strip()
            return f"not an image: a text file (it starts with {shown!r})"
        return (
            f"not an image in a format alldata reads (JPEG, PNG, TIFF, BMP): it starts with bytes "
            f"{head[:8].hex(' ')}"
        )
    return f"cannot decode image ({msg or type(error).__name__})"


def _pixels(error: BaseException) -> str:
    """``"225,000,000 pixels"`` from Pillow's DecompressionBombError message (else "more pixels")."""
    m = re.search(r"\((\d+) pixels\)", str(error))
    return f"{int(m.group(1)):,} pixels" if m else "more pixels"


def _sync_pillow_limit(limit: int) -> None:
    """Make Pillow's refusal threshold follow alldata's (Pillow refuses only above twice its value)."""
    Image.MAX_IMAGE_PIXELS = max(1, limit)


def check_structure(data: bytes, fmt: str) -> None:
    """Check a JPEG or PNG file's structure without decoding its pixels; raise ``OSError`` saying
    where it breaks (:func:`describe_unreadable` words it for people).

    JPEG: the marker segments are walked from the start to the first scan (SOS), and an
    end-of-image marker (FF D9) must follow it (:func:`alldata.jpeg.read_header`).
    PNG: every chunk's length and CRC are checked up to IEND (Pillow's ``verify``); the
    compressed pixel data is not inflated.
    """
    if fmt == "PNG":
        Image.open(io.BytesIO(data)).verify()
        return
    read_header(data)


def _check_pixels(path: Path, w: int, h: int, limit: int) -> None:
    if w * h > limit:
        raise ImageError(
            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,} (possible decompression bomb); {_ADVICE}"
        )


def inspect_image(path: str | Path, *, max_pixels: int | None = None, decode: bool = True) -> ImageInfo:
    """Hash and fully decode ``path``; raise :class:`ImageError` saying why it is unusable.

    Refuses empty files, undecodable or truncated data, unusual modes and images larger
    than ``max_pixels`` (default :func:`alldata.config.max_image_pixels`), the last
    *before* decoding, so a decompression bomb costs nothing.

    ``decode=False`` checks JPEG and PNG files by their structure instead of decoding them
    (:func:`check_structure`): a truncated file is still refused, corrupt compressed data
    inside an intact file is not. Other formats are always decoded.
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    try:
        data = path.read_bytes()
    except OSError as e:
        if path.is_symlink() and not path.exists():
            raise ImageError(f"{path}: broken symbolic link (its target {path.readlink()} does not exist)") from None
        raise ImageError(f"{path}: cannot read file ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    if not decode and data[:3] == b"\xff\xd8\xff":  # JPEG, checked by its structure: headers read here
        try:
            head = read_header(data)
        except OSError as e:
            raise ImageError(f"{path}: {describe_unreadable(data, e)}") from None
        if head.plain:
            _check_pixels(path, head.width, head.height, limit)
            return ImageInfo(sha256=hashlib.sha256(data).hexdigest(), width=head.width, height=head.height,
                             size_bytes=len(data), mime_type=_MIME["JPEG"], num_channels=head.components,
                             mode=head.mode, exif_model=head.exif_model)
    _sync_pillow_limit(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            _check_pixels(path, w, h, limit)
            if img.mode not in _MODES:
                raise ImageError(f"{path}: unsupported image mode {img.mode!r}; allowed {sorted(_MODES)}")
            if decode or img.format not in ("JPEG", "PNG"):
                if img.format == "JPEG":  # decode every byte of the stream, at 1/8 scale in the DCT domain:
                    img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))  # same errors as a full decode, ~2x faster
                img.load()  # full decode of the data: catches truncation and corrupt data
            else:
                check_structure(data, img.format)
            exif_model = None
            if img.format == "JPEG":
                model = img.getexif().get(0x0110)
                exif_model = str(model).strip("\x00 ").strip() or None if model else None
    except ImageError:
        raise
    except Image.DecompressionBombError as e:  # Pillow refuses at twice the limit, before the size check
        raise ImageError(
            f"{path}: {_pixels(e)} exceeds the limit of {limit:,} (possible decompression bomb); {_ADVICE}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: {describe_unreadable(data, e)}") from None
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


def read_mask(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Decode a mask file to a numpy array (bool for 1-bit, else its own dtype).

    The same pixel limit as :func:`inspect_image` applies, checked before decoding.
    """
    path = Path(path)
    limit = max_image_pixels() if max_pixels is None else max_pixels
    _sync_pillow_limit(limit)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read mask ({e.strerror or e})") from None
    if not data:
        raise ImageError(f"{path}: mask file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                w, h = img.size
                if w * h > limit:
                    raise ImageError(f"{path}: mask of {w}x{h} = {w * h:,} pixels exceeds the limit of {limit:,}; {_ADVICE}")
                return np.array(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: mask of {_pixels(e)} exceeds the limit of {limit:,}; {_ADVICE}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{path}: cannot decode mask: {describe_unreadable(data, e)}") from None
