"""train-generator -> generate -> score from the CLI, on a tiny class-folder dataset."""

from __future__ import annotations

import fiftyone as fo
import pytest
from typer.testing import CliRunner

from alldata.cli import app
from alldata.schema import F
from tests._fixtures import write_image

runner = CliRunner()


@pytest.fixture
def cells_dataset(tmp_path, dataset_name):
    root = tmp_path / "cells"
    for cls in ("lymphoblast", "lymphocyte"):
        for i in range(8):
            write_image(root / cls / f"{cls}_{i}.png", (20, 20), seed=hash((cls, i)) % 1000)
    assert runner.invoke(app, ["ingest", "folder", str(root), "--dataset", dataset_name]).exit_code == 0
    assert runner.invoke(app, ["split", "--dataset", dataset_name, "--ratios", "0.75,0.25,0"]).exit_code == 0
    return dataset_name


@pytest.mark.parametrize("family", ["gan", "diffusion"])
def test_train_generate_resume_and_provenance(cells_dataset, tmp_path, family):
    ckpt = tmp_path / family
    r = runner.invoke(app, ["train-generator", family, "--dataset", cells_dataset, "--out", str(ckpt), "--preset", "tiny",
                            "--image-size", "16", "--steps", "2", "--batch-size", "4", "--sample-every", "2", "--save-every", "2"])
    assert r.exit_code == 0, r.output
    assert (ckpt / "config.json").is_file() and (ckpt / "model.safetensors").is_file()
    args = ["generate", "--checkpoint", str(ckpt), "--condition", "cell_type=lymphoblast", "--num-samples", "5",
            "--dataset", cells_dataset, "--batch-size", "2", "--steps", "2"]
    r = runner.invoke(app, [*args, "--dry-run"])
    assert r.exit_code == 0 and "would make 5 of 5" in r.output, r.output
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "added 5" in r.output, r.output
    ds = fo.load_dataset(cells_dataset)
    syn = ds.match_tags(F.TAG_SYNTHETIC)
    assert len(syn) == 5 and set(syn.values(F.GENERATOR)) == {family}
    assert set(syn.values(f"{F.CELL_TYPE}.label")) == {"lymphoblast"}
    assert all(len(h) == 64 for h in syn.values(F.CHECKPOINT_SHA256)) and set(syn.values(F.SEED)) == {0, 1, 2}
    assert set(syn.values(F.ALLDATA_VERSION)) == {"0.1.0"}
    # re-running (or resuming) adds nothing
    r = runner.invoke(app, args)
    assert "added 0" in r.output and len(ds.match_tags(F.TAG_SYNTHETIC)) == 5
    # a condition the checkpoint never saw is a clear error
    r = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--condition", "subtype=L3", "--dataset", cells_dataset])
    assert r.exit_code == 1 and "unknown condition field 'subtype'" in r.output
    # a bad worker count is a clear error before any work
    r = runner.invoke(app, [*args, "--num-samples", "7", "--devices", "0"])
    assert r.exit_code == 1 and "devices=0" in r.output and len(ds.match_tags(F.TAG_SYNTHETIC)) == 5, r.output


def test_synthetic_never_trains_on_test_or_synthetic(cells_dataset):
    from alldata.generate import training_view

    view = training_view(cells_dataset)
    assert set(view.values(F.SPLIT)) == {"train"} and not any(view.values(F.IS_SYNTHETIC))


@pytest.mark.parametrize("family", ["diffusion", "gan"])
def test_few_shot_rare_class_from_the_cli(tmp_path, dataset_name, family):
    """A model trained without L3 learns `subtype=L3` from three examples, then samples it."""
    root = tmp_path / "cells"
    for cls, n in (("lymphoblast", 6), ("lymphocyte", 6), ("L3", 3)):
        for i in range(n):
            write_image(root / cls / f"{cls}_{i}.png", (20, 20), seed=hash((cls, i)) % 1000)
    runner.invoke(app, ["ingest", "folder", str(root), "--dataset", dataset_name])
    base, tuned = tmp_path / "base", tmp_path / "tuned"
    r = runner.invoke(app, ["train-generator", family, "--dataset", dataset_name, "--out", str(base), "--preset", "tiny",
                            "--image-size", "16", "--steps", "2", "--batch-size", "4", "--split", "all",
                            "--where", "cell_type=lymphoblast|lymphocyte"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "--checkpoint", str(base), "--condition", "subtype=L3", "--dataset", dataset_name])
    assert r.exit_code == 1  # the base model has never seen L3
    r = runner.invoke(app, ["finetune-generator", "--checkpoint", str(base), "--add", "subtype=L3", "--where", "subtype=L3",
                            "--dataset", dataset_name, "--out", str(tuned), "--steps", "2", "--split", "all"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["generate", "--checkpoint", str(tuned), "--condition", "subtype=L3", "--num-samples", "2",
                            "--dataset", dataset_name, "--steps", "2"])
    assert r.exit_code == 0 and "added 2" in r.output, r.output
    syn = fo.load_dataset(dataset_name).match_tags(F.TAG_SYNTHETIC)
    assert set(syn.values(f"{F.SUBTYPE}.label")) == {"L3"}
