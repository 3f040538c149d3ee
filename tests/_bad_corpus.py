"""A bad-input corpus in every native layout, built on the fly, with the expected outcome per file.

:func:`build` writes, under a temp dir, a small copy of one source's native tree (real files
from ``../shared/data`` where the source is staged there; the C-NMC and ATLAS fixtures
otherwise) plus the odd files a new user's copy may hold: truncated, zero-byte, not an
image, wrong extension, 16-bit, palette, CMYK, an unsupported mode, a huge (225 MP, but
~30 KB) PNG, symbolic links (same class, other class, broken), a byte-identical copy under
another class (the PBC pair), a unicode name, orphaned annotations and malformed ones.
Each file gets a :class:`Expect`: ``ingested`` (with any warnings it must carry) or
``skipped`` / ``warning`` with the words its reason must contain.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tests._fixtures import write_voc

__all__ = ["SOURCES", "Corpus", "Expect", "build", "huge_png"]

#: Every native layout the corpus covers (one test per entry).
SOURCES = ("all_idb1", "all_idb2", "bccd", "bccd_wbc", "pbc", "taleqani", "folder", "cnmc", "atlas")

_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
_MODES = {
    "JPEG": {"L", "RGB", "CMYK"},
    "PNG": {"1", "L", "P", "RGB", "I;16"},
    "TIFF": {"1", "L", "P", "RGB", "CMYK", "I;16", "LAB"},
    "BMP": {"1", "L", "P", "RGB"},
}


@dataclass
class Expect:
    """What must happen to one file: ``ingested`` (plus ``warnings``), or ``skipped``/``warning`` with ``words``."""

    kind: str
    outcome: str  # "ingested" | "skipped" | "warning"
    words: tuple[str, ...] = ()
    warnings: list[tuple[str, ...]] = field(default_factory=list)  # (further) warnings it must carry


@dataclass
class Corpus:
    source: str
    root: Path
    expected: dict[Path, Expect]
    conflicts: int = 0  # label-conflict groups the run must report


def huge_png(width: int = 15000, height: int = 15000, palette: bool = False) -> bytes:
    """A valid 1-bit PNG (grey or palette) of ``width`` x ``height``, written without building the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits, all zero
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 3 if palette else 0, 0, 0, 0)
    plte = chunk(b"PLTE", b"\x00\x00\x00\xff\xff\xff") if palette else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + plte + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _encode(mode: str, suffix: str, size: tuple[int, int] = (40, 32), seed: int = 0) -> tuple[bytes, str]:
    """An image of ``mode``, in the suffix's format where it can hold the mode (else PNG, else TIFF)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (size[1], size[0]), dtype=np.uint16))
    elif mode == "P":
        img = rgb.quantize(16)
    else:
        img = rgb.convert(mode)
    native = _FORMAT[suffix.lower()]
    fmt = next(f for f in (native, "PNG", "TIFF") if mode in _MODES[f])
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue(), fmt


def _copy(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def _write(dst: Path, data: bytes) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data)
    return dst


def _link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, link.parent), link)
    return link


@dataclass
class _Layout:
    """Where a layout puts an image of a class, and the two classes used for conflicts."""

    place: Callable[[str, str], Path]  # (stem, class) -> path
    stem: Callable[[int, str], str]  # (n, class) -> a valid stem
    classes: tuple[str, str]
    suffix: str
    labelled: bool = True  # do its classes give labels (a cross-class copy is a conflict)?
    annotate: Callable[[Path], None] = lambda p: None  # writes the annotation an image needs
    unicode_skip: tuple[str, ...] = ()  # words of the reason when a unicode name cannot carry the label


def _generic(lay: _Layout, good: tuple[Path, Path], c: Corpus, *, cross_copy_name: str | None = None) -> None:
    """The cases every layout gets. ``good`` = a valid file of class A and one of class B (already placed)."""
    a, b = lay.classes
    ex = c.expected
    ex[good[0]] = Expect("good", "ingested")
    ex[good[1]] = Expect("good", "ingested")
    n = iter(range(900, 1000))

    def place(cls: str, kind: str, data: bytes | None = None, suffix: str | None = None) -> Path:
        p = lay.place(lay.stem(next(n), cls), cls)
        p = p.with_suffix(suffix or lay.suffix)
        if data is not None:
            _write(p, data)
            lay.annotate(p)
        return p

    raw = good[0].read_bytes()
    ex[place(a, "", raw[: len(raw) // 2])] = Expect("truncated", "skipped", ("truncated",))
    ex[place(a, "", b"")] = Expect("zero-byte", "skipped", ("empty", "0 bytes"))
    ex[place(a, "", b"this is a note, not a picture\n" * 8)] = Expect("text", "skipped", ("not an image", "text"))
    ex[place(a, "", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(200))] = Expect("pdf", "skipped", ("not an image", "PDF"))
    other = "JPEG" if _FORMAT[lay.suffix] == "PNG" else "PNG"
    data, _ = _encode("RGB", ".jpg" if other == "JPEG" else ".png", seed=1)
    ex[place(a, "", data)] = Expect("wrong-extension", "ingested", warnings=[("named", f"content is {other}")])
    for i, mode in enumerate(("I;16", "P", "CMYK"), 2):
        data, fmt = _encode(mode, lay.suffix, seed=i)
        warn = [] if fmt == _FORMAT[lay.suffix] else [("named", f"content is {fmt}")]
        ex[place(a, "", data)] = Expect(f"mode {mode}", "ingested", warnings=warn)
    data, _ = _encode("LAB", ".tif")
    ex[place(a, "", data)] = Expect("mode LAB", "skipped", ("unsupported image mode", "LAB"))
    ex[place(a, "", _HUGE)] = Expect("huge", "skipped", ("exceeds the limit", "ALLDATA_MAX_IMAGE_PIXELS"))
    # symbolic links: same class (a duplicate), another class (a label conflict), broken
    same = place(a, "")
    lay.annotate(_link(same, good[0]))
    ex[same] = Expect("symlink", "ingested")
    broken = place(a, "")
    lay.annotate(_link(broken, broken.with_name("gone" + broken.suffix)))
    ex[broken] = Expect("broken symlink", "skipped", ("broken symbolic link",))
    conflict = ("label conflict",)
    if lay.labelled:
        cross = place(b, "")
        lay.annotate(_link(cross, good[0]))
        ex[cross] = Expect("symlink other class", "ingested", warnings=[conflict])
        ex[good[0]].warnings.append(conflict)
        ex[same].warnings.append(conflict)
        copy = lay.place(cross_copy_name, a) if cross_copy_name else place(a, "")
        lay.annotate(_copy(good[1], copy))  # the same bytes as a class-B file, filed under class A
        ex[copy] = Expect("copy other class", "ingested", warnings=[conflict])
        ex[good[1]].warnings.append(conflict)
        c.conflicts += 2
    uni = lay.place(lay.stem(next(n), a) + "_Zellé_ß_😀", a).with_suffix(lay.suffix)
    lay.annotate(_copy(good[0], uni))
    if lay.unicode_skip:
        ex[uni] = Expect("unicode name", "skipped", lay.unicode_skip)
    else:
        ex[uni] = Expect("unicode name", "ingested", warnings=[conflict] if lay.labelled else [])


_HUGE = huge_png()


# --- one builder per source --------------------------------------------------------------------------------
def _all_idb1(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "ALL-IDB1"
    im = base / "ALL_IDB1" / "im"
    c = Corpus("all_idb1", base, {})
    good = (_copy(shared / "ALL-IDB1/ALL_IDB1/im/Im001_1.jpg", im / "Im001_1.jpg"),
            _copy(shared / "ALL-IDB1/ALL_IDB1/im/Im064_0.jpg", im / "Im064_0.jpg"))
    lay = _Layout(lambda s, k: im / f"{s}.jpg", lambda i, k: f"Im{i % 1000:03d}_{k}", ("1", "0"), ".jpg",
                  unicode_skip=("name is not ImXXX_Y",))
    _generic(lay, good, c)
    pos = base / "i2mtc_2026_tutorial/WSIs/positions"
    _copy(shared / "ALL-IDB1/i2mtc_2026_tutorial/WSIs/positions/Im001_1.xyc", pos / "Im001_1.xyc")
    orphan = _copy(shared / "ALL-IDB1/i2mtc_2026_tutorial/WSIs/positions/Im003_1.xyc", pos / "Im003_1.xyc")
    c.expected[orphan] = Expect("orphan .xyc", "skipped", ("annotation file with no image", "Im003_1"))
    xyc = _write(base / "ALL_IDB1/xyc/Im001_1.xyc", b"886\t726\nthis is garbage\n9999\t10\n")
    c.expected[xyc] = Expect("malformed .xyc", "warning", ("line 2", "garbage"), [("line 3", "(9999, 10) is outside")])
    bad = _write(base / "ALL_IDB1/xyc/Im064_0.xyc", b"\xff\xfe\x00\x01binary")
    c.expected[bad] = Expect("binary .xyc", "warning", ("not a text positions file",))
    other = tmp / "ALL-IDB1_other_annotations/ALL-IDB1/other"
    _copy(shared / "ALL-IDB1_other_annotations/ALL-IDB1/other/Im064_0.xyc", other / "Im064_0.xyc")
    _copy(shared / "ALL-IDB1_other_annotations/ALL-IDB1/other/Im065_0.xyc", other / "Im065_0.xyc")
    c.expected[other] = Expect("orphan other .xyc", "warning", ("Im065_0.xyc", "no image"))
    return c


def _all_idb2(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "ALL-IDB2"
    img = base / "ALL_IDB2" / "img"
    c = Corpus("all_idb2", base, {})
    good = (_copy(shared / "ALL-IDB2/ALL_IDB2/img/Im001_1.tif", img / "Im001_1.tif"),
            _copy(shared / "ALL-IDB2/ALL_IDB2/img/Im131_0.tif", img / "Im131_0.tif"))
    lay = _Layout(lambda s, k: img / f"{s}.tif", lambda i, k: f"Im{i % 1000:03d}_{k}", ("1", "0"), ".tif",
                  unicode_skip=("name is not ImXXX_Y",))
    _generic(lay, good, c)
    gt = tmp / "ALL-IDB2_masks_Putzu_Loddo/gt"
    _copy(shared / "ALL-IDB2_masks_Putzu_Loddo/gt/Im001_1.tif", gt / "Im001_1.tif")
    bad = _write(gt / "Im131_0.tif", b"II*\x00" + bytes(30))
    c.expected[bad] = Expect("malformed mask", "warning", ("mask not used",))
    _copy(shared / "ALL-IDB2_masks_Putzu_Loddo/gt/Im002_1.tif", gt / "Im002_1.tif")
    c.expected[gt] = Expect("orphan mask", "warning", ("Im002_1.tif", "no image"))
    return c


def _bccd(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "BCCD"
    voc = base / "BCCD"
    c = Corpus("bccd", base, {})
    good = []
    for stem in ("BloodImage_00000", "BloodImage_00001"):
        good.append(_copy(shared / f"BCCD/BCCD/JPEGImages/{stem}.jpg", voc / "JPEGImages" / f"{stem}.jpg"))
        _copy(shared / f"BCCD/BCCD/Annotations/{stem}.xml", voc / "Annotations" / f"{stem}.xml")

    def annotate(p: Path) -> None:
        write_voc(voc / "Annotations" / f"{p.stem}.xml", p.name, (40, 32), [])

    lay = _Layout(lambda s, k: voc / "JPEGImages" / f"{s}.jpg", lambda i, k: f"BloodImage_{i:05d}", ("", ""), ".jpg",
                  labelled=False, annotate=annotate)
    _generic(lay, (good[0], good[1]), c)
    orphan = _copy(shared / "BCCD/BCCD/Annotations/BloodImage_00003.xml", voc / "Annotations/BloodImage_00003.xml")
    c.expected[orphan] = Expect("orphan .xml", "skipped", ("annotation file with no image", "BloodImage_00003"))
    img = _copy(good[0], voc / "JPEGImages/BloodImage_00800.jpg")
    _write(voc / "Annotations/BloodImage_00800.xml", b"<annotation><object><name>WBC</name")
    c.expected[img] = Expect("malformed .xml", "skipped", ("malformed annotation XML",))
    return c


def _class_folders(c: Corpus, class_dir: Path, names: tuple[Path, Path], classes: tuple[str, str], suffix: str,
                   stem: Callable[[int, str], str], unknown: str, cross_copy_name: str | None = None) -> None:
    """Cases of a class-folder layout; ``names`` = real files for class A and class B."""
    good = (_copy(names[0], class_dir / classes[0] / names[0].name), _copy(names[1], class_dir / classes[1] / names[1].name))
    lay = _Layout(lambda s, k: class_dir / k / f"{s}{suffix}", stem, classes, suffix)
    _generic(lay, good, c, cross_copy_name=cross_copy_name)
    stray = _copy(names[0], class_dir / f"stray{suffix}")
    c.expected[stray] = Expect("image outside a class folder", "skipped", ("no class folder",))
    if unknown:
        _copy(names[0], class_dir / unknown / names[0].name)
        c.expected[class_dir / unknown] = Expect("unknown class folder", "skipped", ("unknown class folder",))
    nested = class_dir / classes[0] / "more"
    _copy(names[1], nested / names[1].name)
    c.expected[nested] = Expect("subfolder", "skipped", ("subfolder not read",))


def _pbc(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "PBC"
    c = Corpus("pbc", base, {})
    src = shared / "PBC/PBC_dataset_normal_DIB"
    names = (min((src / "eosinophil").glob("*.jpg")), min((src / "neutrophil").glob("*.jpg")))
    # like the real pair EO_225902 = BNE_191112: a neutrophil's bytes filed as an eosinophil
    _class_folders(c, base / "PBC_dataset_normal_DIB", names, ("eosinophil", "neutrophil"), ".jpg",
                   lambda i, k: f"EO_{i}" if k == "eosinophil" else f"BNE_{i}", "Eosinophils",
                   cross_copy_name="EO_225902")
    return c


def _taleqani(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "ALL_Taleqani_Kaggle"
    c = Corpus("taleqani", base, {})
    src = shared / "ALL_Taleqani_Kaggle/Original"
    names = (src / "Benign/WBC-Benign-001.jpg", src / "Pro/WBC-Malignant-Pro-001.jpg")
    _class_folders(c, base / "Original", names, ("Benign", "Pro"), ".jpg",
                   lambda i, k: f"WBC-Benign-{i}" if k == "Benign" else f"WBC-Malignant-Pro-{i}", "Mystery")
    seg = base / "Segmented/Pro"
    _copy(shared / "ALL_Taleqani_Kaggle/Segmented/Pro/WBC-Malignant-Pro-001.jpg", seg / "WBC-Malignant-Pro-001.jpg")
    _copy(shared / "ALL_Taleqani_Kaggle/Segmented/Pro/WBC-Malignant-Pro-002.jpg", seg / "WBC-Malignant-Pro-002.jpg")
    c.expected[seg] = Expect("orphan segmented copy", "warning", ("WBC-Malignant-Pro-002.jpg", "no image"))
    return c


def _bccd_wbc(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "BCCD_WBC_subtypes"
    c = Corpus("bccd_wbc", base, {})
    src = shared / "BCCD_WBC_subtypes/BCCD_cropped"
    names = (min((src / "Neutrophil").glob("*.jpg")), min((src / "Eosinophil").glob("*.jpg")))
    _class_folders(c, base / "BCCD_cropped", names, ("Neutrophil", "Eosinophil"), ".jpg",
                   lambda i, k: f"BloodImage_{i:05d}_1", "Neutrophils")
    return c


def _folder(shared: Path, tmp: Path) -> Corpus:
    base = tmp / "mine"
    c = Corpus("folder", base, {})
    src = shared / "ALL_Taleqani_Kaggle/Original"
    names = (src / "Pro/WBC-Malignant-Pro-003.jpg", src / "Benign/WBC-Benign-003.jpg")
    _class_folders(c, base, names, ("lymphoblast", "hematogone"), ".jpg", lambda i, k: f"cell_{i}", "")
    return c


def _cnmc(shared: Path, tmp: Path) -> Corpus:
    from tests.sources.test_cnmc import make_cnmc

    base = make_cnmc(tmp / "C-NMC_Leukemia")
    c = Corpus("cnmc", base, {})
    train = base / "training_data/fold_0"
    for p in sorted(base.rglob("*.bmp")):
        c.expected[p] = Expect("fixture", "ingested")
    good = (train / "all/UID_11_1_1_all.bmp", train / "hem/UID_h3_1_1_hem.bmp")
    lay = _Layout(lambda s, k: train / k / f"{s}.bmp",
                  lambda i, k: f"UID_{i}_1_1_all" if k == "all" else f"UID_H{i}_1_1_hem", ("all", "hem"), ".bmp",
                  unicode_skip=("is not UID_",))
    _generic(lay, good, c)
    wrong = _copy(good[0], train / "hem/UID_H5_1_1_all.bmp")
    c.expected[wrong] = Expect("name/folder disagree", "skipped", ("disagree",))
    csv = base / "validation_data/C-NMC_test_prelim_phase_data_labels.csv"
    with csv.open("a") as f:
        f.write("UID_57_31_1_all.bmp,77.bmp,1\nUID_57_32_1_all.bmp,3.bmp,7\n")
    c.expected[csv] = Expect("malformed/orphan CSV rows", "warning", ("77.bmp", "not found"), [("line 6", "not 0 or 1")])
    return c


def _atlas(shared: Path, tmp: Path) -> Corpus:
    from tests.sources.test_atlas import make_atlas

    base = make_atlas(tmp / "ATLAS")
    c = Corpus("atlas", base, {})
    for p in sorted(base.rglob("*")):
        if p.suffix in (".jpg", ".png"):
            c.expected[p] = Expect("fixture", "ingested")
    good = (base / "ALL_L1/a.jpg", base / "CLL/c.jpg")
    lay = _Layout(lambda s, k: base / k / f"{s}.jpg", lambda i, k: f"img_{i}", ("ALL_L1", "CLL"), ".jpg")
    _generic(lay, good, c)
    stray = _copy(good[0], base / "stray.jpg")
    c.expected[stray] = Expect("image in the root", "skipped", ("no category",))
    odd = base / "Mystery"
    _copy(good[0], odd / "m.jpg")
    c.expected[odd] = Expect("unknown category", "skipped", ("unknown atlas category",))
    return c


_BUILDERS: dict[str, Callable[[Path, Path], Corpus]] = {
    "all_idb1": _all_idb1, "all_idb2": _all_idb2, "bccd": _bccd, "bccd_wbc": _bccd_wbc, "pbc": _pbc,
    "taleqani": _taleqani, "folder": _folder, "cnmc": _cnmc, "atlas": _atlas,
}


def build(source: str, shared: Path, tmp: Path) -> Corpus:
    """The corpus of ``source`` under ``tmp`` (``shared``: the shared data folder)."""
    return _BUILDERS[source](shared, tmp)
