"""Grad-CAM heatmaps written to FiftyOne on the samples with predictions, and the mistakes view."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image

from alldata.explain import MISTAKES_VIEW, ExplainError, write_gradcam
from alldata.models.cnn import TimmClassifier


@pytest.fixture(scope="module")
def tiny_cnn():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
    images[4:, 8:24, 8:24] = 255
    return TimmClassifier("test_resnet", image_size=32, epochs=1, batch_size=8, augment=False,
                          progress=False, device="cpu").fit(images, ["normal"] * 4 + ["blast"] * 4)


def _dataset(tmp_path, name):
    ds = fo.Dataset(name)
    rng = np.random.default_rng(1)
    rows = [  # size, truth, prediction (None: not predicted)
        ((40, 30), "blast", "blast"),
        ((48, 48), "blast", "normal"),  # a mistake
        ((32, 56), "normal", "blast"),  # a mistake
        ((32, 32), "normal", None),
    ]
    for i, ((h, w), truth, pred) in enumerate(rows):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3)).astype(np.uint8)).save(path)
        s = fo.Sample(filepath=str(path), cell_type=fo.Classification(label=truth))
        if pred:
            s["pred_cnn"] = fo.Classification(label=pred, truth_field="cell_type")
        ds.add_sample(s)
    return ds


def test_write_gradcam_adds_heatmaps_and_the_mistakes_view(tmp_path, dataset_name, tiny_cnn):
    ds = _dataset(tmp_path, dataset_name)
    rep = write_gradcam(ds, tiny_cnn, pred_field="pred_cnn", output_dir=tmp_path / "heat", progress=False)
    assert (rep.field, rep.written, rep.view, rep.mistakes) == ("gradcam_pred_cnn", 3, MISTAKES_VIEW, 2)
    for s in ds:
        heat = s["gradcam_pred_cnn"] if s.has_field("gradcam_pred_cnn") else None
        if s["pred_cnn"] is None:
            assert heat is None
            continue
        assert isinstance(heat, fo.Heatmap) and heat.range == [0, 255]
        hmap = np.asarray(Image.open(heat.map_path))
        assert hmap.shape == Image.open(s.filepath).size[::-1] and hmap.dtype == np.uint8
    view = ds.load_saved_view(MISTAKES_VIEW)
    assert sorted(view.values("cell_type.label")) == ["blast", "normal"]
    assert all(p != t for p, t in zip(view.values("pred_cnn.label"), view.values("cell_type.label")))
    # a rerun replaces the heatmaps and the view, nothing is added twice
    again = write_gradcam(ds, tiny_cnn, pred_field="pred_cnn", output_dir=tmp_path / "heat", progress=False)
    assert again.written == 3 and ds.list_saved_views().count(MISTAKES_VIEW) == 1


def test_write_gradcam_errors(tmp_path, dataset_name, tiny_cnn):
    ds = _dataset(tmp_path, dataset_name)
    with pytest.raises(ExplainError, match="has a 'pred_svm' prediction"):
        write_gradcam(ds, tiny_cnn, pred_field="pred_svm", progress=False)
    sample = ds.first()
    sample["pred_cnn"] = fo.Classification(label="lymphoblast", truth_field="cell_type")
    sample.save()
    with pytest.raises(ExplainError, match=r"labels \['lymphoblast'\] that the model does not predict"):
        write_gradcam(ds, tiny_cnn, pred_field="pred_cnn", output_dir=tmp_path / "heat", progress=False)
