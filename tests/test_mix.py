"""``alldata mix``: a recipe arm's real+synthetic training mix as a saved, deterministic view."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.cli import app
from alldata.mix import MixError, mix, mix_view_name
from alldata.schema import CellType, F, Provenance
from alldata.synthetic import add_synthetic, make_synthetic_sample
from tests.test_benchmark import make_cells_dataset, tiny_recipe

runner = CliRunner()


def _add_fake_gan_samples(ds_name, tmp_path, n, recipe_name=None):
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        path = tmp_path / "syn" / f"s{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(path)
        prov = Provenance(generator="gan", checkpoint_sha256="0" * 64, seed=i, condition={"cell_type": "lymphoblast"},
                          recipe=recipe_name)
        samples.append(make_synthetic_sample(path, family="gan", source_id=f"fake-{i:03d}", provenance=prov,
                                             cell_type=CellType.lymphoblast))
    assert add_synthetic(ds_name, samples) == n


@pytest.fixture
def mixed_ds(tmp_path, dataset_name):
    make_cells_dataset(tmp_path / "cells", dataset_name)
    _add_fake_gan_samples(dataset_name, tmp_path, 30)
    return dataset_name


def test_mix_balances_caps_and_is_deterministic(mixed_ds):
    recipe = tiny_recipe(arms=("real", "oracle", "gan"))
    ds = fo.load_dataset(mixed_ds)
    n_train = {c: len(ds.match({F.SPLIT: "train", F.IS_SYNTHETIC: {"$ne": True}, "cell_type.label": c}))
               for c in ("lymphoblast", "lymphocyte")}
    result = mix(recipe, mixed_ds, "gan")
    comp = result.composition
    assert result.view_name == mix_view_name(recipe, "gan") == "mix-tiny_rare-gan"
    assert comp["lymphocyte"] == {"real": n_train["lymphocyte"], "synthetic": 0}
    assert comp["lymphoblast"]["real"] < n_train["lymphoblast"]  # the rare cut
    # filled up to balance (the cap of 50 % synthetic is not binding here)
    assert comp["lymphoblast"]["real"] + comp["lymphoblast"]["synthetic"] == comp["lymphocyte"]["real"]
    view = ds.load_saved_view(result.view_name)
    assert len(view) == result.n_real + result.n_synthetic
    assert set(view.values(F.SPLIT)) >= {"train"} and len(view.match({F.SPLIT: {"$in": ["val", "test"]}})) == 0
    first = sorted(view.values("id"))
    assert sorted(ds.load_saved_view(mix(recipe, mixed_ds, "gan").view_name).values("id")) == first
    # the oracle mix keeps every rare training sample and adds nothing synthetic
    oracle = mix(recipe, mixed_ds, "oracle")
    assert oracle.composition["lymphoblast"] == {"real": n_train["lymphoblast"], "synthetic": 0}


def test_mix_excludes_rejected_and_caps_the_synthetic_share(mixed_ds):
    ds = fo.load_dataset(mixed_ds)
    syn = ds.match_tags(F.TAG_SYNTHETIC)
    syn.tag_samples("reject")
    recipe = tiny_recipe(arms=("real", "gan"), oracle=None, mix={"max_synthetic_ratio": 0.1})
    result = mix(recipe, mixed_ds, "gan")
    assert result.n_synthetic == 0 and result.shortfall  # every synthetic sample is rejected
    syn.untag_samples("reject")
    result = mix(recipe, mixed_ds, "gan")
    assert 0 < result.n_synthetic <= 0.1 / 0.9 * result.n_real


def test_mix_refuses_in_memory_arms_and_unknown_arms(mixed_ds):
    recipe = tiny_recipe()
    with pytest.raises(MixError, match="in memory"):
        mix(recipe, mixed_ds, "augment")
    with pytest.raises(Exception, match="has no arm 'nope'"):
        mix(recipe, mixed_ds, "nope")


def test_mix_cli(mixed_ds, tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(arms=("real", "oracle", "gan")).model_dump(mode="json", by_alias=True)))
    r = runner.invoke(app, ["mix", str(path), "--dataset", mixed_ds])
    assert r.exit_code == 0, r.output
    assert "saved view 'mix-tiny_rare-gan'" in r.output and "synthetic" in r.output
    r = runner.invoke(app, ["mix", str(path), "--dataset", mixed_ds, "--arm", "augment"])
    assert r.exit_code == 1 and "has no arm 'augment'" in r.output, r.output
