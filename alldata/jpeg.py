"""Read a JPEG file's headers without decoding it: structure, size, mode, camera model.

:func:`read_header` walks the marker segments from the start of the file to the first scan
(SOS) and requires an end-of-image marker after it, the check ``alldata ingest --no-decode``
makes instead of decoding (a file cut anywhere after its headers has no end-of-image marker:
inside entropy-coded data FF is always followed by 00 or a restart marker). On the way it
reads what Pillow's ``Image.open`` + ``getexif`` would report, ~3x faster (no file object, no
quantisation tables built), and says when it cannot vouch for giving Pillow's answer, so the
caller asks Pillow instead: :attr:`JpegHeader.plain` is False for anything but one 8-bit
frame of 1, 3 or 4 components, with no multi-picture (MPO) or Adobe segment and only markers
Pillow knows. ``tests/test_jpeg_header.py`` holds it to Pillow's answers on every real JPEG.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["JpegHeader", "read_header"]

#: Pillow's JPEG mode for a frame's number of components
_MODE = {1: "L", 3: "RGB", 4: "CMYK"}
#: markers Pillow's JPEG reader knows (others: it refuses, so the caller must ask it)
_KNOWN = {*range(0xC0, 0xD0), 0xDB, 0xDD, *range(0xE0, 0xF0), 0xFE}
#: bytes per value of each TIFF field type Pillow reads (BYTE, ASCII, SHORT, LONG, RATIONAL, ... IFD8)
_TIFF_UNIT = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}
#: start-of-frame markers (C4 DHT, C8 JPG and CC DAC are not frames)
_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class JpegHeader:
    """What the headers say; ``plain``: the other fields are what Pillow would report."""

    width: int
    height: int
    mode: str
    components: int
    exif_model: str | None
    plain: bool


def read_header(data: bytes) -> JpegHeader:
    """Walk ``data``'s JPEG headers; raise ``OSError`` saying where its structure breaks."""
    pos, n = 2, len(data)
    frames: list[bytes] = []
    exif: bytes | None = None
    plain = data[:3] == b"\xff\xd8\xff"
    while True:
        if pos + 4 > n:
            raise OSError(f"image file is truncated (headers end at byte {n:,}, before the image data)")
        if data[pos] != 0xFF:
            raise OSError(f"broken JPEG structure: no marker at byte {pos:,}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the entropy-coded data follows
            break
        if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            pos += 2
            plain = False
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        end = pos + 2 + length
        body = data[pos + 4 : end]
        if marker not in _KNOWN or end > n or length < 2:
            plain = False
        elif marker in _SOF:
            frames.append(body)
        elif marker == 0xDB:
            plain = plain and _quantisation_tables_fit(body)
        elif marker == 0xE1 and exif is None and body[:6] == b"Exif\x00\x00":
            exif = body[6:]
        elif (marker == 0xE2 and body[:4] == b"MPF\x00") or (marker == 0xEE and body[:5] == b"Adobe"):
            plain = False
        pos = end
    if data.rfind(b"\xff\xd9") < pos:
        raise OSError(f"image file is truncated: no end-of-image marker after the image data (the file ends at byte {n:,})")
    if len(frames) != 1 or len(frames[0]) < 6 or frames[0][0] != 8 or frames[0][5] not in _MODE:
        return JpegHeader(0, 0, "", 0, None, False)
    sof = frames[0]
    if not int.from_bytes(sof[1:3], "big") or not int.from_bytes(sof[3:5], "big"):  # Pillow: "not identified"
        return JpegHeader(0, 0, "", 0, None, False)
    model, model_plain = _exif_model(exif) if exif is not None else (None, True)
    return JpegHeader(
        width=int.from_bytes(sof[3:5], "big"),
        height=int.from_bytes(sof[1:3], "big"),
        mode=_MODE[sof[5]],
        components=sof[5],
        exif_model=model,
        plain=plain and model_plain,
    )


def _quantisation_tables_fit(body: bytes) -> bool:
    """Pillow refuses a DQT segment whose tables overrun it ("bad quantization table marker")."""
    while body:
        size = 1 + (1 if body[0] >> 4 == 0 else 2) * 64
        if len(body) < size:
            return False
        body = body[size:]
    return True


def _exif_model(tiff: bytes) -> tuple[str | None, bool]:
    """The camera model (TIFF tag 0x0110 of the first image directory) as Pillow's ``getexif``
    gives it, with the trailing NULs and spaces stripped; False when the directory is not one
    this reads as Pillow would (the caller then asks Pillow)."""
    order = {b"II*\x00": "little", b"MM\x00*": "big"}.get(tiff[:4])
    if order is None or len(tiff) < 8:
        return None, False
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None, False
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        return None, False
    model: bytes | None = None
    for at in range(ifd + 2, ifd + 2 + 12 * count, 12):  # in order, as Pillow reads them
        tag, kind = int.from_bytes(tiff[at : at + 2], order), int.from_bytes(tiff[at + 2 : at + 4], order)
        size = _TIFF_UNIT.get(kind, 0) * int.from_bytes(tiff[at + 4 : at + 8], order)
        data = tiff[at + 8 : at + 8 + size]
        if size > 4:
            offset = int.from_bytes(tiff[at + 8 : at + 12], order)
            data = tiff[offset : offset + size] if offset + size <= len(tiff) else b""
        # a type Pillow skips, data outside the block (Pillow stops reading there), a second model: ask Pillow
        if kind not in _TIFF_UNIT or len(data) != size or (tag == 0x0110 and (kind != 2 or model is not None)):
            return None, False
        if tag == 0x0110:
            model = data[:-1] if data.endswith(b"\x00") else data
    if model is None:
        return None, True
    return model.decode("latin-1", "replace").strip("\x00 ").strip() or None, True
