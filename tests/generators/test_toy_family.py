"""A new generator family is one class and one registration: a toy family defined here is then
usable from ``train-generator``, ``generate``, recipes, the job function and the benchmark."""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from alldata.generators import GENERATORS, Generator, GeneratorError, family_traits
from alldata.generators.base import ARM_PARAMS, FamilyTraits
from alldata.generators.data import CellSet, load_cells

from alldata.cli import app
from alldata.generate import run_generator_job, training_view
from alldata.recipes import Recipe, RecipeError, arm_kinds
from alldata.schema import F
from alldata.score import last_score
from tests._fixtures import write_image

runner = CliRunner()


@GENERATORS.register("toy")
class MeanImage(Generator):
    """Memorises the mean image of each value of its first label field (row 0: all cells) and
    samples it with seeded Gaussian noise."""

    family = "toy"
    DEFAULTS = {"image_size": 16, "conditions": {}, "continuous": [], "noise": 4.0, "seed": 0}
    PRESETS = {"tiny": {"noise": 1.0}, "cpu": {}, "gpu": {}}
    ARM_PARAMS = ARM_PARAMS

    def __init__(self, config: dict[str, Any], means: np.ndarray) -> None:
        super().__init__(config)
        self.means = means

    @classmethod
    def build(cls, config: dict[str, Any], device: str | None = None) -> MeanImage:
        cfg = cls.check_config(config)
        rows = len(next(iter(cfg["conditions"].values()), [])) + 1
        return cls(cfg, np.zeros((rows, cfg["image_size"], cfg["image_size"], 3), np.float32))

    @classmethod
    def train(cls, cells: CellSet, out_dir, *, steps: int = 1, batch_size: int = 1, seed: int = 0, resume: bool = True,
              sample_every: int = 0, save_every: int = 0, progress: bool = False, device: str | None = None,
              **config: Any) -> MeanImage:
        gen = cls.build({"image_size": int(cells.images.shape[1]), "conditions": cells.vocabulary(), "seed": seed,
                         **config})
        field, vocab = next(iter(gen.config["conditions"].items()), (None, []))
        gen.means[0] = cells.images.mean(0)
        for i, v in enumerate(vocab, 1):
            gen.means[i] = cells.images[[x == v for x in cells.labels[field]]].mean(0)
        gen.save_pretrained(out_dir)
        return gen

    def sample(self, num_samples: int, condition: dict[str, Any], seed: int, **kwargs: Any) -> np.ndarray:
        self.check_condition(condition)
        field, vocab = next(iter(self.config["conditions"].items()), (None, []))
        row = vocab.index(condition[field]) + 1 if field in condition else 0
        noise = np.random.default_rng(seed).normal(0, self.config["noise"], (num_samples, *self.means.shape[1:]))
        return (self.means[row] + noise).clip(0, 255).round().astype(np.uint8)

    def state_dict(self) -> dict[str, Any]:
        return {"means": torch.from_numpy(self.means)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.means = state["means"].numpy().astype(np.float32)


@pytest.fixture
def cells_dataset(tmp_path, dataset_name):
    root = tmp_path / "cells"
    for cls in ("lymphoblast", "lymphocyte"):
        for i in range(6):
            write_image(root / cls / f"{cls}_{i}.png", (20, 20), seed=hash((cls, i)) % 1000)
    assert runner.invoke(app, ["ingest", "folder", str(root), "--dataset", dataset_name]).exit_code == 0
    assert runner.invoke(app, ["split", "--dataset", dataset_name, "--ratios", "0.75,0.25,0"]).exit_code == 0
    return dataset_name


def test_the_registry_knows_it_and_the_shipped_families():
    assert "toy" in GENERATORS and family_traits("toy") == FamilyTraits(True, tuple(ARM_PARAMS))
    for name in ("diffusion", "gan", "overlap"):  # the declared traits match the classes
        cls = GENERATORS.get(name)
        assert family_traits(name) == FamilyTraits(cls.is_trainable(), tuple(cls.ARM_PARAMS)), name
    with pytest.raises(GeneratorError, match=r"unknown preset 'huge' for generator family 'toy'.*cpu, gpu|'cpu', 'gpu'"):
        MeanImage.preset("huge")


def test_train_generator_and_generate_from_the_cli(cells_dataset, tmp_path):
    ckpt = tmp_path / "toy"
    r = runner.invoke(app, ["train-generator", "toy", "--dataset", cells_dataset, "--out", str(ckpt), "--preset", "tiny",
                            "--image-size", "16", "--steps", "1"])
    assert r.exit_code == 0, r.output
    assert Generator.from_pretrained(ckpt).config["noise"] == 1.0  # the preset reached the config
    r = runner.invoke(app, ["generate", "--checkpoint", str(ckpt), "--condition", "cell_type=lymphoblast",
                            "--num-samples", "3", "--dataset", cells_dataset])
    assert r.exit_code == 0 and "added 3" in r.output, r.output
    syn = fo.load_dataset(cells_dataset).match_tags(F.TAG_SYNTHETIC)
    assert set(syn.values(F.GENERATOR)) == {"toy"} and set(syn.values(f"{F.CELL_TYPE}.label")) == {"lymphoblast"}
    r = runner.invoke(app, ["score", "--dataset", cells_dataset, "--checkpoint", str(ckpt), "--heldout-view", "split=val",
                            "--train-encoder", "--encoder-epochs", "1", "--encoder-out", str(tmp_path / "enc"),
                            "--report", str(tmp_path / "score.json")])
    assert r.exit_code == 0 and "verdict:" in r.output, r.output
    assert last_score(ckpt) is not None and last_score(ckpt).n_fake == 3  # score knows nothing of the family
    r = runner.invoke(app, ["train-generator", "toyy", "--dataset", cells_dataset, "--out", str(ckpt)])
    assert r.exit_code == 1 and "Did you mean 'toy'" in r.output


def test_recipes_take_it_as_an_arm_kind():
    data = {
        "name": "toy", "task": "classification", "baseline": "real",
        "data": {"sources": ["folder"], "label_field": "cell_type", "classes": ["lymphoblast", "lymphocyte"]},
        "arms": [{"name": "real", "kind": "real"}, {"name": "t", "kind": "toy", "params": {"steps": 1}}],
        "models": [{"name": "knn"}], "metrics": ["accuracy"], "primary_metric": "accuracy",
    }
    assert Recipe.model_validate(data).arm("t").kind == "toy" and "toy" in arm_kinds("classification")
    data["arms"][1]["kind"] = "toyy"
    with pytest.raises(ValueError, match=r"'toyy' is not an arm kind.*did you mean 'toy'"):
        Recipe.model_validate(data)
    assert issubclass(RecipeError, ValueError)


def test_the_job_function_writes_provenance_once_and_reuses_the_generator(cells_dataset, tmp_path):
    view = training_view(cells_dataset)

    def cells(size: int) -> CellSet:
        return load_cells(view, size, label_fields=[F.CELL_TYPE], progress=False)

    args = {"train_cells": cells, "requests": [({F.CELL_TYPE: "lymphocyte"}, 4), ({F.CELL_TYPE: "lymphoblast"}, 0)],
            "recipe": "toy-recipe", "cache_key": "k1", "image_size": 16}
    job = run_generator_job("toy", {"preset": "tiny", "steps": 1}, cells_dataset, tmp_path / "job", **args)
    assert job.family == "toy" and job.image_size == 16 and [len(k) for k in job.keys] == [4, 0]
    ds = fo.load_dataset(cells_dataset)
    made = ds.match({F.KEY: {"$in": job.keys[0]}})
    assert len(made) == 4 and set(made.values(F.RECIPE)) == {"toy-recipe"}
    assert set(made.values(F.CHECKPOINT_SHA256)) == {job.checkpoint_sha256}

    def no_training(size: int) -> CellSet:
        raise AssertionError("the finished generator must be reused")

    again = run_generator_job("toy", {"preset": "tiny", "steps": 1}, cells_dataset, tmp_path / "job",
                              **{**args, "train_cells": no_training})
    assert again.keys == job.keys and len(ds.match_tags(F.TAG_SYNTHETIC)) == 4
    with pytest.raises(GeneratorError, match=r"arm params \['stepz'\].*allowed: \[.*'steps'"):
        run_generator_job("toy", {"stepz": 1}, cells_dataset, tmp_path / "bad", **args)


def test_the_benchmark_runs_an_arm_of_it(tmp_path, dataset_name):
    from alldata.benchmark.engine import run_benchmark
    from tests.test_benchmark import make_cells_dataset

    name = make_cells_dataset(tmp_path / "cells", dataset_name)
    recipe = Recipe.model_validate({
        "name": "toy-rare", "task": "classification", "folds": 2, "seeds": [0], "baseline": "real", "n_boot": 50,
        "data": {"sources": ["folder"], "label_field": "cell_type", "classes": ["lymphoblast", "lymphocyte"],
                 "image_size": 16},
        "rare": {"class": "lymphoblast", "keep_fraction": 0.25, "min_keep": 1},
        "arms": [{"name": "real", "kind": "real"}, {"name": "toy", "kind": "toy", "params": {"preset": "tiny"}}],
        "models": [{"name": "random_forest", "params": {"n_estimators": 5}}],
        "metrics": ["balanced_accuracy"], "primary_metric": "balanced_accuracy",
    })
    run = run_benchmark(recipe, name, tmp_path / "run", progress=False, write_back=False)
    info = [run.results[c].info for c in run.results if c.arm == "toy"]
    assert len(info) == 2 and all(i["generator"] == "toy" and i["n_synthetic"] > 0 for i in info)
    from alldata.synthetic import benchmark_dataset

    # the arm's samples live in the run-scoped dataset, never in the user's
    assert len(fo.load_dataset(name).match_tags(F.TAG_SYNTHETIC)) == 0
    bench = fo.load_dataset(benchmark_dataset(name, "toy-rare"))
    try:
        syn = bench.match_tags(F.TAG_SYNTHETIC)
        assert set(syn.values(F.GENERATOR)) == {"toy"} and set(syn.values(F.RECIPE)) == {"toy-rare"}
    finally:
        bench.delete()
