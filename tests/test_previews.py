"""PNG previews of TIFFs for the App: same pixel size, preview_path everywhere, idempotent, bad files reported."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from alldata.cli import app as cli
from alldata.errors import ImageError
from alldata.imageio import sha256_file
from alldata.previews import PREVIEW_FIELD, PreviewError, ensure_previews, preview_dir, preview_image
from alldata.store import open_dataset
from tests.models._synthetic import cell_image

runner = CliRunner()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLDATA_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def _add(ds: fo.Dataset, paths: list) -> None:
    samples = []
    for i, p in enumerate(paths):
        with Image.open(p) as im:
            w, h = im.size
        samples.append(fo.Sample(filepath=str(p), key=f"t/{i}", sha256=sha256_file(p), width=w, height=h,
                                 cells=fo.Detections(detections=[fo.Detection(label="wbc", bounding_box=[0.1, 0.1, 0.5, 0.5])])))
    ds.add_samples(samples, progress=False)


@pytest.fixture
def images(tmp_path):
    rgb, _ = cell_image((20, 30), cells=((10, 15),), r_cell=8, r_nuc=5)
    Image.fromarray(rgb).save(tmp_path / "rgb.tif")
    grey16 = (np.arange(24 * 16, dtype=np.uint16).reshape(16, 24) * 10 + 1000)  # 1000..4830: 12-bit-like
    Image.fromarray(grey16).save(tmp_path / "grey16.TIFF")
    assert Image.open(tmp_path / "grey16.TIFF").mode.startswith("I;16")
    Image.fromarray(rgb).save(tmp_path / "plain.png")
    return {"rgb": tmp_path / "rgb.tif", "grey16": tmp_path / "grey16.TIFF", "png": tmp_path / "plain.png", "rgb_array": rgb}


def test_previews_same_size_set_everywhere_and_idempotent(images, dataset_name):
    ds = open_dataset(dataset_name)
    _add(ds, [images["rgb"], images["grey16"], images["png"]])
    r = ensure_previews(dataset_name, batch_size=2, progress=False)
    assert (r.samples, r.converted, r.written, r.reused, r.updated, r.failures) == (3, 2, 2, 0, 3, {})
    assert r.app_config_changed

    ds = fo.load_dataset(dataset_name)
    cfg = ds.app_config
    assert cfg.media_fields == ["filepath", PREVIEW_FIELD]
    assert cfg.grid_media_field == cfg.modal_media_field == PREVIEW_FIELD
    previews = dict(zip(*ds.values(["filepath", PREVIEW_FIELD])))
    assert previews[str(images["png"])] == str(images["png"])  # browser-friendly: the file itself
    for name in ("rgb", "grey16"):
        p = previews[str(images[name])]
        assert p == str(preview_dir() / f"{sha256_file(images[name])}.png")
        with Image.open(p) as pv, Image.open(images[name]) as orig:
            assert pv.format == "PNG" and pv.mode == "RGB" and pv.size == orig.size
            arr = np.asarray(pv)
    with Image.open(previews[str(images["rgb"])]) as pv:
        assert np.array_equal(np.asarray(pv), images["rgb_array"])  # 8-bit RGB: pixels unchanged
    assert arr.min() == 0 and arr.max() == 255  # 16-bit: stretched, not truncated to the high byte
    assert np.array_equal(arr[..., 0], arr[..., 2])  # grey stays grey

    files = sorted(preview_dir().iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]
    r2 = ensure_previews(ds, progress=False)
    assert (r2.written, r2.reused, r2.updated, r2.app_config_changed, r2.failures) == (0, 2, 0, False, {})
    assert sorted(preview_dir().iterdir()) == files and [f.stat().st_mtime_ns for f in files] == mtimes

    # a stale preview of the wrong size (e.g. from another tool) is replaced
    Image.new("RGB", (2, 2)).save(files[0])
    r3 = ensure_previews(ds, progress=False)
    assert (r3.written, r3.reused) == (1, 1)
    with Image.open(files[0]) as pv:
        assert pv.size in {(30, 20), (24, 16)}


def test_corrupt_and_missing_tiffs_are_reported_and_skipped(images, tmp_path, dataset_name):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + b"\x00garbage" * 10)
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(images["rgb"].read_bytes()[:200])
    ds = open_dataset(dataset_name)
    ds.add_samples([fo.Sample(filepath=str(p), sha256=sha256_file(p)) for p in (bad, truncated)], progress=False)
    _add(ds, [images["rgb"]])
    ds.add_sample(fo.Sample(filepath=str(tmp_path / "gone.tif")))  # no file, no sha256
    r = ensure_previews(ds, progress=False)
    assert set(r.failures) == {str(bad), str(truncated), str(tmp_path / "gone.tif")}
    assert all(path in why for path, why in r.failures.items())
    assert r.written == 1
    previews = dict(zip(*ds.values(["filepath", PREVIEW_FIELD])))
    for p in (bad, truncated, tmp_path / "gone.tif"):
        assert previews[str(p)] == str(p)  # keeps the original
    assert previews[str(images["rgb"])].endswith(".png")

    r = runner.invoke(cli, ["previews", ds.name])
    assert r.exit_code == 0, r.output
    assert "0 written, 1 reused, 3 failed" in r.output and "bad.tif" in r.output


def test_wide_and_float_tiffs_use_their_full_depth(tmp_path):
    rgb16 = np.zeros((6, 5, 3), np.uint16)
    rgb16[..., 0] = 4000  # Pillow reads 48-bit RGB as 8-bit high bytes (15 here): too dark to see
    rgb16[0, 0] = 0
    tifffile.imwrite(tmp_path / "rgb16.tif", rgb16)
    im = preview_image(tmp_path / "rgb16.tif")
    assert im.mode == "RGB" and im.size == (5, 6) and np.asarray(im)[1, 1].tolist() == [255, 0, 0]
    tifffile.imwrite(tmp_path / "f.tif", np.linspace(-1, 3, 12, dtype=np.float32).reshape(3, 4))
    arr = np.asarray(preview_image(tmp_path / "f.tif"))
    assert arr.shape == (3, 4, 3) and arr.min() == 0 and arr.max() == 255
    (tmp_path / "empty.tif").touch()
    with pytest.raises(ImageError, match="empty"):
        preview_image(tmp_path / "empty.tif")


def test_bad_arguments(dataset_name):
    ds = open_dataset(dataset_name)
    with pytest.raises(PreviewError, match="formats"):
        ensure_previews(ds, formats=[], progress=False)
    r = runner.invoke(cli, ["previews", "no-such-dataset"])
    assert r.exit_code == 1 and "no-such-dataset" in r.output
    ds.add_sample_field(PREVIEW_FIELD, fo.IntField)
    with pytest.raises(PreviewError, match="StringField"):
        ensure_previews(ds, progress=False)


def test_app_command_writes_previews_unless_told_not_to(images, dataset_name, monkeypatch):
    import importlib

    app_module = importlib.import_module("alldata.cli.app")  # the module (alldata.cli.app is the Typer app)

    class FakeServer:
        def __init__(self, cmd):
            pass

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(app_module.subprocess, "Popen", FakeServer)
    ds = open_dataset(dataset_name)
    _add(ds, [images["rgb"]])
    r = runner.invoke(cli, ["app", ds.name, "--no-previews", "--no-views"])
    assert r.exit_code == 0, r.output
    assert ds.get_field(PREVIEW_FIELD) is None and not preview_dir().exists()
    r = runner.invoke(cli, ["app", ds.name, "--no-views"])
    assert r.exit_code == 0 and "1 written" in r.output, r.output
    ds.reload()
    assert ds.values(PREVIEW_FIELD)[0].endswith(".png") and ds.app_config.grid_media_field == PREVIEW_FIELD
