"""Crop -> parent smear linking (ALL-IDB2 crops inside ALL-IDB1 photographs)."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.feature import match_template

from alldata.errors import AlldataError
from alldata.ingest import ingest
from alldata.link import PARENT_KEY, _grey, link_crops, match_crops
from alldata.schema import F
from alldata.split import check_no_leak, split_dataset


def _smear(path, seed):
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8), np.ones((4, 4, 1), np.uint8))
    Image.fromarray(img).save(path)
    return img


def test_match_crops_finds_the_parent_and_refuses_strangers(tmp_path):
    a = _smear(tmp_path / "a.png", 1)
    _smear(tmp_path / "b.png", 2)
    Image.fromarray(a[40:104, 100:164]).save(tmp_path / "crop.png")
    Image.fromarray(_smear(tmp_path / "c.png", 3)[0:64, 0:64]).save(tmp_path / "stranger.png")
    parents = [("p/a", str(tmp_path / "a.png"), None), ("p/b", str(tmp_path / "b.png"), None)]
    m = match_crops([("c/1", str(tmp_path / "crop.png"), None), ("c/2", str(tmp_path / "stranger.png"), None)],
                    parents, scale=4, progress=False)
    assert (m[0].parent, m[0].x, m[0].y) == ("p/a", 100, 40) and m[0].score > 0.99
    assert m[1].parent is None and m[1].score < 0.95


def _exhaustive(crops, parents, scale=4, threshold=0.95):
    """The reference: skimage's match_template over every position of every same-diagnosis parent."""
    smears = [(k, _grey(p, scale), d) for k, p, d in parents]
    out = []
    for key, path, diag in crops:
        crop, best = _grey(path, scale), (-1.0, None, 0, 0)
        for pkey, smear, pdiag in smears:
            if diag and pdiag and diag != pdiag:
                continue
            ncc = match_template(smear, crop)
            y, x = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
            if ncc[y, x] > best[0]:
                best = (float(ncc[y, x]), pkey, int(x) * scale, int(y) * scale)
        out.append((key, best[1] if best[0] >= threshold else None, best[2], best[3], best[0]))
    return out


def _field(path, seed, shape=(700, 900)):
    """A smooth random RGB 'smear' (blobs about 30 px across), saved to ``path``."""
    rng = np.random.default_rng(seed)
    img = np.stack([gaussian_filter(rng.normal(size=shape), 10) for _ in range(3)], axis=-1)
    img = np.clip(128 + 60 * img / img.std(), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path)
    return img


def test_coarse_to_fine_equals_the_exhaustive_search(tmp_path):
    """Crops at offsets that are not multiples of the coarse grid, a border crop, a crop in two
    overlapping smears, a crop of another diagnosis's smear and a stranger: same as match_template."""
    a = _field(tmp_path / "a.png", 1)
    b = _field(tmp_path / "b.png", 2)
    b[100:400, 200:500] = a[300:600, 50:350]  # b overlaps a: a crop of that region is in both
    Image.fromarray(b).save(tmp_path / "b.png")
    h = _field(tmp_path / "h.png", 3)
    cuts = {"c1": (a, 37, 123, 257, 257), "c2": (a, 443, 641, 257, 257), "edge": (a, 0, 702, 196, 198),
            "both": (b, 130, 251, 200, 190), "healthy": (h, 211, 97, 257, 257)}
    crops = []
    for name, (img, y, x, ch, cw) in cuts.items():
        Image.fromarray(img[y : y + ch, x : x + cw]).save(tmp_path / f"{name}.png")
        crops.append((f"c/{name}", str(tmp_path / f"{name}.png"), "healthy" if name == "healthy" else "ALL"))
    Image.fromarray(_field(tmp_path / "s.png", 4, (300, 300))[20:277, 20:277]).save(tmp_path / "stranger.png")
    crops.append(("c/stranger", str(tmp_path / "stranger.png"), "ALL"))
    parents = [("p/a", str(tmp_path / "a.png"), "ALL"), ("p/b", str(tmp_path / "b.png"), "ALL"),
               ("p/h", str(tmp_path / "h.png"), "healthy")]
    ref = _exhaustive(crops, parents)
    got = match_crops(crops, parents, progress=False)
    assert [(m.crop, m.parent, m.x, m.y) for m in got] == [r[:4] for r in ref]
    assert [r[1] for r in ref] == ["p/a", "p/a", "p/a", "p/a", "p/h", None]  # what the fixture was built to show
    assert (ref[1][2], ref[1][3]) == (640, 440) and ref[2][2:4] == (700, 0)  # 1/4 resolution: multiples of 4
    for m, r in zip(got, ref):
        assert m.score == pytest.approx(r[4], abs=1e-4) if m.parent else m.score <= r[4] + 1e-4


def test_match_crops_refuses_bad_settings(tmp_path):
    _smear(tmp_path / "a.png", 1)
    one = [("p/a", str(tmp_path / "a.png"), None)]
    for bad in ({"coarse": 0}, {"peaks": 0}, {"workers": 0}, {"scale": 0}):
        with pytest.raises(AlldataError, match="must be >= 1"):
            match_crops(one, one, progress=False, **bad)


def test_real_crops_match_as_the_exhaustive_search(shared_data):
    """Real ALL-IDB2 crops, including ones found in two overlapping smears and one with no smear here."""
    img, im = shared_data / "ALL-IDB2" / "ALL_IDB2" / "img", shared_data / "ALL-IDB1" / "ALL_IDB1" / "im"
    crops = [(f"all_idb2/{n}", str(img / f"{n}.tif"), "ALL") for n in ("Im001_1", "Im007_1", "Im024_1", "Im025_1")]
    parents = [(f"all_idb1/{p.stem}", str(p), "ALL") for p in sorted(im.glob("Im0*_1.jpg"))]
    ref = _exhaustive(crops, parents)
    got = match_crops(crops, parents, progress=False)
    assert [(m.crop, m.parent, m.x, m.y) for m in got] == [r[:4] for r in ref]
    assert ref[1][1] is None and all(r[1] for r in ref[2:])  # Im007_1's smear is not in the shared data


def test_real_all_idb2_crops_join_their_all_idb1_smear(shared_data, dataset_name):
    ingest("all_idb1", dataset_name, root=shared_data / "ALL-IDB1", progress=False)
    ingest("all_idb2", dataset_name, root=shared_data / "ALL-IDB2", progress=False, max_samples=25)
    ds = fo.load_dataset(dataset_name)
    matches = {m.crop: m for m in link_crops(ds, progress=False)}
    # measured with this code: Im001_1 -> Im001_1 (0.99), Im022_1 -> Im009_1 (1.00); Im007_1's smear is not here
    assert matches["all_idb2/Im001_1"].parent == "all_idb1/Im001_1"
    assert matches["all_idb2/Im022_1"].parent == "all_idb1/Im009_1"
    assert matches["all_idb2/Im007_1"].parent is None
    crop = ds.match({F.KEY: "all_idb2/Im022_1"}).first()
    assert crop[PARENT_KEY] == "all_idb1/Im009_1" and crop[F.GROUP_ID] == "all_idb1/Im009_1"
    split_dataset(ds, seed=0)
    check_no_leak(ds)
    split_of = dict(zip(*ds.values([F.KEY, F.SPLIT])))
    assert split_of["all_idb2/Im022_1"] == split_of["all_idb1/Im009_1"]


def test_cli_passes_workers_and_reports_the_links(dataset_name, monkeypatch):
    from typer.testing import CliRunner

    import alldata.link
    from alldata.cli import app as cli
    from alldata.link import CropMatch

    fo.Dataset(dataset_name)
    seen = {}

    def fake(ds, **kwargs):
        seen.update(kwargs, dataset=ds.name)
        return [CropMatch("c/1", "p/1", 0.99, 4, 8), CropMatch("c/2", None, 0.5, 0, 0)]

    monkeypatch.setattr(alldata.link, "link_crops", fake)
    result = CliRunner().invoke(cli, ["link-crops", "-d", dataset_name, "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert seen["workers"] == 2 and seen["dataset"] == dataset_name and seen["threshold"] == 0.95
    assert "1 of 2 all_idb2 crops found" in result.output
