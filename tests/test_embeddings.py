"""Embeddings and the FiftyOne Brain runs on them: vectors, visualisation, similarity, near duplicates."""

from __future__ import annotations

import importlib.util
import shutil

import fiftyone as fo
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from alldata.cli import app as cli
from alldata.embeddings import (
    EMBEDDING_FIELD,
    NEAR_DUPLICATE_OF,
    SIM_KEY,
    TAG_NEAR_DUPLICATE,
    VIS_KEY,
    WORKSPACE,
    EmbedError,
    default_encoder_dir,
    embed_dataset,
)
from alldata.ingest import tag_duplicates
from alldata.schema import F
from alldata.store import open_dataset
from tests.models._synthetic import cell_image

torch.set_num_threads(1)
runner = CliRunner()


def _add(ds, tmp_path, key, img, *, sha, cell_type=None, kind="cell", synthetic=False, path=None):
    if path is None:
        path = tmp_path / f"{key.replace('/', '_')}.png"
        Image.fromarray(img).save(path)
    source, _, sid = key.rpartition("/")
    fields = {F.CELL_TYPE: fo.Classification(label=cell_type)} if cell_type else {}
    ds.add_sample(fo.Sample(filepath=str(path), key=key, source=source, source_id=sid, sha256=sha, image_kind=kind,
                            is_synthetic=synthetic, tags=["synthetic"] if synthetic else [], **fields))
    return path


@pytest.fixture
def ds(tmp_path, dataset_name):
    """8 real cells of 2 kinds, 3 synthetic, a smear, an exact duplicate and a same-pixels copy."""
    ds = open_dataset(dataset_name)
    for i in range(4):
        big, _ = cell_image(24, ((12 + i % 3 - 1, 12),), r_cell=10, r_nuc=8, seed=i)
        small, _ = cell_image(24, ((12, 12 + i % 3 - 1),), r_cell=6, r_nuc=3, seed=10 + i, rbcs=((4, 4, 3),))
        first = _add(ds, tmp_path, f"pbc/big{i}", big, sha=f"b{i}", cell_type="lymphoblast")
        _add(ds, tmp_path, f"pbc/small{i}", small, sha=f"s{i}", cell_type="neutrophil")
        if i == 0:
            _add(ds, tmp_path, "bccd/copy", big, sha="b0", cell_type="lymphoblast", path=first)  # same file
            # same pixels, other bytes (a re-encoded file): a near duplicate, not an exact one
            Image.fromarray(small).save(tmp_path / "resaved.png", compress_level=0)
            _add(ds, tmp_path, "bccd/resaved", small, sha="other", cell_type="neutrophil", path=tmp_path / "resaved.png")
    for i in range(3):
        fake = (cell_image(24, ((12, 12),), r_cell=9, r_nuc=5, seed=50 + i)[0] * [1.0, 0.6, 0.8]).astype(np.uint8)
        _add(ds, tmp_path, f"synthetic/gan/{i}", fake, sha=f"f{i}", cell_type="lymphoblast", synthetic=True)
    smear, _ = cell_image((40, 64), ((10, 10), (25, 40)), r_cell=8, r_nuc=5, seed=99)
    _add(ds, tmp_path, "all_idb1/smear", smear, sha="sm", kind="smear")
    tag_duplicates(ds)
    return ds


def test_embed_with_a_trained_encoder_and_brain_runs(ds):
    r = embed_dataset(ds, image_size=16, epochs=1, method="pca", dup_threshold=1e-4)
    assert r.features == "cnn" and r.n_embedded == len(ds) == 14 and not r.failures
    assert (default_encoder_dir(ds.name) / "config.json").is_file()
    x = np.stack(ds.values(EMBEDDING_FIELD))
    assert x.shape == (14, r.encoder["feature_dim"])
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert set(ds.list_brain_runs()) >= {VIS_KEY, SIM_KEY}
    assert ds.load_brain_results(VIS_KEY).current_points.shape == (14, 2)
    assert ds.has_workspace(WORKSPACE)

    # the same-pixels copy is a near duplicate of its original; the byte-identical copy is left to `duplicate`
    tagged = ds.match_tags(TAG_NEAR_DUPLICATE)
    assert len(tagged) == 1
    assert {tagged.first()[F.KEY], tagged.first()[NEAR_DUPLICATE_OF]} == {"pbc/small0", "bccd/resaved"}
    # similarity search from the App: the copy's nearest samples are itself and its original (distance 0 both)
    query = ds.match({F.KEY: "bccd/resaved"}).first().id
    assert set(ds.sort_by_similarity(query, brain_key=SIM_KEY, k=2).values(F.KEY)) == {"bccd/resaved", "pbc/small0"}

    # re-running reuses the saved encoder and replaces the runs, tags and fields
    again = embed_dataset(ds, method="tsne")  # and the relative default threshold
    assert again.encoder["sha256"] == r.encoder["sha256"] and again.method == "tsne"
    assert sorted(ds.list_brain_runs()) == sorted([VIS_KEY, SIM_KEY])
    assert ds.get_brain_info(VIS_KEY).config.method == "tsne"
    assert 0 < again.dup_threshold < 0.5
    tagged = ds.match_tags(TAG_NEAR_DUPLICATE)
    assert len(tagged) == again.near_duplicates == len(ds.exists(NEAR_DUPLICATE_OF)) >= 1
    assert {"pbc/small0", "bccd/resaved"} & set(tagged.values(F.KEY))
    assert ds.info["embeddings"]["features"] == "cnn"


def test_handcrafted_features_fallback_and_bad_input(ds, tmp_path):
    ds.match({F.CELL_TYPE + ".label": "neutrophil"}).set_field(F.CELL_TYPE, None).save()  # one class left
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    ds.add_sample(fo.Sample(filepath=str(broken), key="pbc/broken", source="pbc", image_kind="cell"))
    r = embed_dataset(ds, image_size=16, epochs=1, method="pca", dup_threshold=0.0)
    assert r.features == "handcrafted" and "hand-crafted" in r.notes[0]  # no 2 classes to train a CNN on
    assert list(r.failures) == [str(broken)] and r.n_embedded == 14
    assert len(ds.exists(EMBEDDING_FIELD)) == 14 and len(ds.values(EMBEDDING_FIELD)[0]) == 37

    with pytest.raises(EmbedError, match="pca"):
        embed_dataset(ds, method="mds")
    with pytest.raises(EmbedError, match="cnn"):
        embed_dataset(ds, features="clip")
    if importlib.util.find_spec("umap") is None:
        with pytest.raises(EmbedError, match="umap-learn"):
            embed_dataset(ds, method="umap")


def test_embed_command(ds):
    shutil.rmtree(default_encoder_dir(ds.name), ignore_errors=True)
    r = runner.invoke(cli, ["embed", ds.name, "--method", "pca", "--epochs", "1", "--image-size", "16",
                            "--dup-threshold", "0.0001"])
    assert r.exit_code == 0, r.output
    assert "embedded 14 samples with cnn encoder" in r.output and "1 tagged near_duplicate" in r.output
    assert len(ds.load_saved_view("alldata-near-duplicates")) == 2  # the pair, side by side
    r = runner.invoke(cli, ["embed", ds.name, "--encoder", str(ds.name) + "-missing"])
    assert r.exit_code == 1 and "config.json" in r.output
