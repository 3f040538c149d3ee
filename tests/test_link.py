"""Crop -> parent smear linking (ALL-IDB2 crops inside ALL-IDB1 photographs)."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
from PIL import Image

from alldata.ingest import ingest
from alldata.link import PARENT_KEY, link_crops, match_crops
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
