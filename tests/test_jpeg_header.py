"""alldata.jpeg.read_header gives Pillow's answer (size, mode, camera model) or says it cannot."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from alldata.imageio import inspect_image
from alldata.jpeg import read_header


def _pillow(data: bytes) -> tuple[int, int, str, str | None]:
    img = Image.open(io.BytesIO(data))
    model = img.getexif().get(0x0110)
    return (*img.size, img.mode, str(model).strip("\x00 ").strip() or None if model else None)


def _jpeg(mode: str = "RGB", size: tuple[int, int] = (37, 21), **save) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, {"L": 90, "RGB": (200, 40, 90), "CMYK": (10, 200, 30, 5)}[mode]).save(buf, "JPEG", **save)
    return buf.getvalue()


def _exif(model: bytes, order: str = "little") -> bytes:
    """A TIFF block (big- or little-endian) holding only tag 0x0110 = ``model`` (ASCII)."""
    b = order == "little"
    u16 = (lambda v: v.to_bytes(2, order))
    u32 = (lambda v: v.to_bytes(4, order))
    value = model if len(model) <= 4 else u32(26)
    head = (b"II*\x00" if b else b"MM\x00*") + u32(8) + u16(1) + u16(0x0110) + u16(2) + u32(len(model))
    return head + value.ljust(4, b"\x00") + u32(0) + (model if len(model) > 4 else b"")


def _pillow_exif(model: str) -> bytes:
    exif = Image.Exif()
    exif[0x0110] = model
    return exif.tobytes()


def _twelve_bit(data: bytes) -> bytes:
    """The frame header's sample precision set to 12 bits (Pillow refuses those)."""
    at = data.index(b"\xff\xc0") + 4
    return data[:at] + b"\x0c" + data[at + 1 :]


def _with_exif(data: bytes, tiff: bytes) -> bytes:
    body = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + data[2:]


CASES = {
    "rgb": _jpeg(),
    "gray": _jpeg("L", (64, 48)),
    "progressive": _jpeg(progressive=True),
    "exif model (Pillow)": _jpeg(exif=_pillow_exif("Canon PowerShot G5")),
    "exif model big-endian": _with_exif(_jpeg(), _exif(b"C2500L\x00", "big")),
    "exif model inline": _with_exif(_jpeg(), _exif(b"G5\x00")),
    "exif model of spaces": _with_exif(_jpeg(), _exif(b"    \x00")),
}
ODD = {
    "cmyk (Adobe segment)": _jpeg("CMYK"),
    "12-bit frame": _twelve_bit(_jpeg()),
    "exif not TIFF": _with_exif(_jpeg(), b"XX*\x00\x08\x00\x00\x00"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_plain_files_read_as_pillow_reads_them(name):
    head = read_header(CASES[name])
    assert head.plain
    assert (head.width, head.height, head.mode, head.exif_model) == _pillow(CASES[name])


@pytest.mark.parametrize("name", sorted(ODD))
def test_odd_files_are_left_to_pillow(name, tmp_path):
    assert not read_header(ODD[name]).plain
    path = tmp_path / "odd.jpg"
    path.write_bytes(ODD[name])
    try:  # the no-decode result is Pillow's: the same as a decoding run's, or the same refusal
        expected = inspect_image(path)
    except Exception as e:  # noqa: BLE001
        with pytest.raises(type(e)):
            inspect_image(path, decode=False)
    else:
        assert inspect_image(path, decode=False) == expected


def test_truncated_headers_and_data_are_refused():
    data = CASES["exif model (Pillow)"]
    for cut in (10, 40, len(data) // 2, len(data) - 2):
        with pytest.raises(OSError, match="truncated"):
            read_header(data[:cut])


def test_every_real_jpeg_reads_as_pillow_reads_it(shared_data):
    """The shared data's JPEGs (PBC, Taleqani, BCCD, ALL-IDB1 with camera models ...): the header
    reader's answer is Pillow's for each, so ``--no-decode`` records what a decoding run records."""
    files = sorted(p for p in shared_data.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    assert len(files) > 1000
    models = set()
    for p in files:
        data = p.read_bytes()
        head = read_header(data)
        assert head.plain, p
        assert (head.width, head.height, head.mode, head.exif_model) == _pillow(data), p
        models.add(head.exif_model)
    assert len(models) > 2  # camera models were read, not only absent


def test_damaged_headers_get_pillows_answer_or_are_left_to_it(shared_data):
    """Random bytes written over the headers (markers, tables, EXIF) of real JPEGs, camera models
    included: whenever the reader vouches for its answer (``plain``), it is Pillow's."""
    import random
    import warnings

    files = sorted((shared_data / "ALL-IDB1" / "ALL_IDB1" / "im").glob("*.jpg"))[:4]
    files += sorted((shared_data / "PBC").rglob("*.jpg"))[:2]
    rng, vouched = random.Random(0), 0
    for p in files:
        data = p.read_bytes()
        for _ in range(60):
            bad = bytearray(data)
            at = rng.randrange(2, 700)
            bad[at : at + rng.choice((1, 4, 8))] = bytes(rng.randrange(256) for _ in range(8))[: len(bad[at : at + 8])]
            try:
                head = read_header(bytes(bad))
            except OSError:
                continue
            if not head.plain:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert (head.width, head.height, head.mode, head.exif_model) == _pillow(bytes(bad)), (p, at)
            vouched += 1
    assert vouched > 100
