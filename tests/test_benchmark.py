"""The benchmark engine on a tiny two-class dataset, and its aggregation against a hand computation."""

from __future__ import annotations

import json
import math

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.benchmark.engine import aggregate, build_pool, fold_plan, plan_cells, run_benchmark
from alldata.benchmark.tasks import TASKS, Cell, CellResult
from alldata.cli import app
from alldata.recipes import Recipe
from alldata.reports import BenchmarkSummary, ReportError, load_benchmark_summary
from alldata.schema import F
from tests.models._synthetic import cell_image

runner = CliRunner()
N_GROUPS = 10  # per class, two images each


def make_cells_dataset(root, name: str) -> str:
    """Two classes of drawn cells (big vs small nucleus), two images per group, split by group."""
    for cls, r_nuc in (("lymphoblast", 12), ("lymphocyte", 6)):
        for g in range(N_GROUPS):
            for j in range(2):
                img, _ = cell_image(32, ((16, 16),), r_cell=14, r_nuc=r_nuc, noise=6.0, seed=100 * g + j + r_nuc)
                (root / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / cls / f"{cls}_{g}_{j}.png")
    r = runner.invoke(app, ["ingest", "folder", str(root), "--dataset", name])
    assert r.exit_code == 0, r.output
    ds = fo.load_dataset(name)
    keys = ds.values(F.KEY)
    ds.set_values(F.GROUP_ID, [k.rsplit("_", 1)[0] for k in keys])
    r = runner.invoke(app, ["split", "--dataset", name, "--ratios", "0.6,0.2,0.2", "--stratify", "cell_type"])
    assert r.exit_code == 0, r.output
    return name


def tiny_recipe(arms=("real", "oracle", "oversample", "augment"), **extra) -> Recipe:
    kinds = {"real": "real", "oracle": "oracle", "oversample": "oversample", "augment": "augment", "gan": "gan"}
    params = {"gan": {"preset": "tiny", "image_size": 16, "steps": 2, "batch_size": 4, "finetune_steps": 1}}
    data = {
        "name": "tiny-rare", "task": "classification",
        "data": {"sources": ["folder"], "label_field": "cell_type", "classes": ["lymphoblast", "lymphocyte"],
                 "image_size": 32},
        "folds": 2, "seeds": [0, 1], "baseline": "real", "oracle": "oracle",
        "rare": {"class": "lymphoblast", "keep_fraction": 0.25, "min_keep": 1},
        "arms": [{"name": a, "kind": kinds[a], "params": params.get(a, {})} for a in arms],
        "models": [{"name": "random_forest", "params": {"n_estimators": 15}}],
        "metrics": ["balanced_accuracy", "accuracy", "sensitivity:lymphoblast"],
        "primary_metric": "balanced_accuracy", "n_boot": 50, **extra,
    }
    return Recipe.model_validate(data)


@pytest.fixture
def cells_ds(tmp_path, dataset_name):
    return make_cells_dataset(tmp_path / "cells", dataset_name)


def test_folds_are_leak_free_and_the_rare_cut_is_on_train_only(cells_ds):
    recipe = tiny_recipe()
    pool = build_pool(recipe, cells_ds)
    assert len(pool) == 4 * N_GROUPS and pool.composition() == {"lymphoblast": 20, "lymphocyte": 20}
    plans = fold_plan(pool, recipe)
    assert len(plans) == 4
    for p in plans:
        train_g = {pool.groups[i] for i in p.train}
        test_g = {pool.groups[i] for i in p.test}
        assert not train_g & test_g
        rare_train_groups = {pool.groups[i] for i in p.train if pool.labels[i] == "lymphoblast"}
        kept_groups = {pool.groups[i] for i in p.rare_kept}
        assert len(kept_groups) == max(1, round(0.25 * len(rare_train_groups)))
        assert set(p.train_cut) <= set(p.train) and set(p.test).isdisjoint(p.train_cut)
        # the cut removes whole rare groups and nothing else
        removed = set(p.train) - set(p.train_cut)
        assert all(pool.labels[i] == "lymphoblast" and pool.groups[i] not in kept_groups for i in removed)
    # deterministic
    again = fold_plan(pool, recipe)
    assert all(np.array_equal(a.train_cut, b.train_cut) and np.array_equal(a.test, b.test) for a, b in zip(plans, again))


def test_engine_end_to_end_resume_and_write_back(cells_ds, tmp_path, monkeypatch):
    import torch

    torch.set_num_threads(1)
    recipe = tiny_recipe(seeds=[0])
    out = tmp_path / "run"
    run = run_benchmark(recipe, cells_ds, out, progress=False, command="alldata benchmark tiny")
    assert run.ran == len(plan_cells(recipe)) == 8 and run.skipped == 0
    metrics = json.loads((out / "metrics.json").read_text())
    gains = metrics["gains"]
    assert {(g["arm"], g["metric"]) for g in gains} == {
        (a, m) for a in ("oracle", "oversample", "augment") for m in recipe.metrics}
    assert all(g["n_pairs"] == 2 and g["confidence"] == 0.95 and g["baseline"] == "real" for g in gains)
    # metrics.json is the typed contract, and the run returns what the file says
    summary = load_benchmark_summary(out)
    assert summary == run.summary == BenchmarkSummary.model_validate_json((out / "metrics.json").read_text())
    assert (summary.schema_version, summary.recipe, summary.task, summary.confidence) == (1, "tiny-rare", "classification", 0.95)
    assert summary.arm_names == ["real", "oracle", "oversample", "augment"] and summary.seeds == [0]
    assert summary.cells_run == 8 and len(summary.cells) == 8 and summary.pool.n == 40
    assert "95 % bootstrap interval" in (out / "report.md").read_text()
    assert {g["arm"] for g in metrics["gap_recovered"]} == {"oversample", "augment"}
    by_arm = {e["arm"]: e for e in metrics["arms"]}
    assert by_arm["real"]["n_synthetic"] == 0 and by_arm["oversample"]["n_synthetic"] > 0
    assert by_arm["oracle"]["metrics"]["balanced_accuracy"]["pooled"] > 0.6  # the classes are easy to tell apart
    report = (out / "report.md").read_text()
    assert "pretrained weights: none, trained from scratch" in report and "alldata benchmark tiny" in report
    assert (out / "plots" / "gains_random_forest_balanced_accuracy.png").is_file()
    assert (out / "plots" / "roc_random_forest_lymphoblast.png").is_file()
    assert (out / "plots" / "confusion_random_forest_augment.png").is_file()
    # every cell's rows are exactly its fold's test samples
    cell = json.loads((out / "cells" / "arm=real/model=random_forest/fold=0/seed=0.json").read_text())
    assert cell["metrics"]["accuracy"] == pytest.approx(
        np.mean([r["true"] == r["pred"] for r in cell["rows"]]))
    # predictions are back on the samples, seed 0 over all folds = every pool sample once
    ds = fo.load_dataset(cells_ds)
    field = "pred_tiny_rare_augment"
    labelled = ds.exists(field)
    assert len(labelled) == 40
    pred = labelled.first()[field]
    assert pred.truth_field == "cell_type" and pred.label in {"lymphoblast", "lymphocyte"}
    # resume: a second run does no work
    from alldata.benchmark.classification import ClassificationTask

    calls = []
    monkeypatch.setattr(ClassificationTask, "run", lambda self, ctx: calls.append(ctx) or None)
    again = run_benchmark(recipe, cells_ds, out, progress=False)
    assert calls == [] and again.ran == 0 and again.skipped == 8
    assert again.summary.gains == run.summary.gains and again.summary.cells_reused == 8
    # a cell is keyed by what it computes: rewording the description, adding a metric or an
    # arm keeps the finished cells; changing a model's settings reruns that model's cells
    monkeypatch.undo()
    grown = tiny_recipe(arms=("real", "oracle", "oversample", "augment"), seeds=[0], description="reworded")
    grown = grown.model_copy(update={"arms": [*grown.arms, grown.arm("oversample").model_copy(update={"name": "more"})]})
    third = run_benchmark(grown, cells_ds, out, progress=False, write_back=False)
    assert third.ran == 2 and third.skipped == 8  # only the new arm's two folds
    from alldata.benchmark.engine import cell_hash
    from alldata.benchmark.tasks import Cell

    cell0 = Cell("real", "random_forest", 0, 0)
    retuned = recipe.model_copy(update={"models": [recipe.models[0].model_copy(update={"params": {"n_estimators": 7}})]})
    assert cell_hash(retuned, cell0, cells_ds) != cell_hash(recipe, cell0, cells_ds) == cell_hash(grown, cell0, cells_ds)


@pytest.fixture
def bench_ds(cells_ds):
    from alldata.synthetic import benchmark_dataset

    name = benchmark_dataset(cells_ds, "tiny-rare")
    yield name
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


def test_gan_arm_trains_on_train_cells_and_adds_synthetic_samples(cells_ds, bench_ds, tmp_path):
    import torch

    from alldata.info import dataset_counts

    torch.set_num_threads(1)
    before = dataset_counts(fo.load_dataset(cells_ds))
    recipe = tiny_recipe(arms=("real", "gan"), oracle=None, seeds=[0])
    run = run_benchmark(recipe, cells_ds, tmp_path / "run", progress=False, write_back=False)
    # the samples land in the run-scoped dataset, never in the user's: its counts are unchanged
    after = dataset_counts(fo.load_dataset(cells_ds))
    assert after["benchmark"] == {bench_ds: len(fo.load_dataset(bench_ds))} and before["benchmark"] == {}
    assert {k: v for k, v in after.items() if k != "benchmark"} == {k: v for k, v in before.items() if k != "benchmark"}
    assert after["synthetic"] == 0
    r = CliRunner().invoke(app, ["info", cells_ds])
    assert r.exit_code == 0 and f"in {bench_ds}" in " ".join(r.output.split()), r.output
    ds = fo.load_dataset(bench_ds)
    syn = ds.match_tags(F.TAG_SYNTHETIC)
    assert len(syn) == len(ds) > 0 and set(syn.values(F.RECIPE)) == {"tiny-rare"}
    assert set(syn.values(f"{F.CELL_TYPE}.label")) == {"lymphoblast"} and set(syn.values(F.GENERATOR)) == {"gan"}
    for fold in range(2):
        meta = json.loads((tmp_path / "run" / "work" / "shared" / "arm=gan" / f"fold={fold}" / "seed=0"
                           / "generator.json").read_text())
        plan = fold_plan(build_pool(recipe, cells_ds), recipe)[fold]
        assert meta["n_train_cells"] == len(plan.train_cut)  # the cut train side only, never a test cell
    info = [run.results[c].info for c in run.results if c.arm == "gan"]
    assert all(i["n_synthetic"] > 0 and i["generator"] == "gan" for i in info)
    # a resumed run reuses the generator and adds no samples twice
    n = len(syn)
    for p in (tmp_path / "run" / "cells").rglob("*.json"):
        p.unlink()
    run_benchmark(recipe, cells_ds, tmp_path / "run", progress=False, write_back=False)
    assert len(fo.load_dataset(bench_ds).match_tags(F.TAG_SYNTHETIC)) == n
    # changed generator settings rerun the gan cells with a newly trained generator, not the cached one
    meta_path = tmp_path / "run" / "work" / "shared" / "arm=gan" / "fold=0" / "seed=0" / "generator.json"
    before = json.loads(meta_path.read_text())
    gan = recipe.arm("gan")
    retuned = recipe.model_copy(update={"arms": [recipe.arm("real"), gan.model_copy(
        update={"params": {**gan.params, "steps": 3}})]})
    again = run_benchmark(retuned, cells_ds, tmp_path / "run", progress=False, write_back=False)
    after = json.loads(meta_path.read_text())
    assert again.ran == 2 and after["steps"] == 3 and after["spec_sha256"] != before["spec_sha256"]
    assert after["sha256"] != before["sha256"]


class FixedTask:
    """A fake task: rows are fixed per cell; score = accuracy."""

    name = "fixed"
    arm_kinds = frozenset({"real", "oversample"})

    def run(self, ctx):  # pragma: no cover - aggregate() is tested on hand-made results
        raise AssertionError

    def score(self, rows):
        return {"accuracy": float(np.mean([r["true"] == r["pred"] for r in rows]))} if rows else {}

    def write_predictions(self, dataset, field, rows):  # pragma: no cover
        pass


def test_aggregation_equals_a_hand_computation():
    TASKS.register("fixed-test")(FixedTask)
    recipe = Recipe.model_validate({
        "name": "agg", "task": "classification", "baseline": "real", "folds": 2, "seeds": [0, 1], "n_boot": 200,
        "data": {"sources": ["s"], "label_field": "diagnosis", "classes": ["ALL", "healthy"]},
        "arms": [{"name": "real", "kind": "real"}, {"name": "more", "kind": "oversample"}],
        "models": [{"name": "knn"}], "metrics": ["accuracy"], "primary_metric": "accuracy",
    })
    task = TASKS.get("fixed-test")()
    # 4 test samples per fold, groups g0..g7; "real" gets k right in (seed, fold), "more" one more
    right = {(0, 0): 2, (0, 1): 3, (1, 0): 1, (1, 1): 4}
    results = {}
    for arm, extra in (("real", 0), ("more", 1)):
        for (seed, fold), k in right.items():
            k = min(4, k + extra)
            rows = [{"id": f"s{fold}{i}", "group": f"g{fold * 4 + i}", "true": "ALL",
                     "pred": "ALL" if i < k else "healthy"} for i in range(4)]
            results[Cell(arm, "knn", fold, seed)] = CellResult(rows, task.score(rows), {})
    summary = aggregate(recipe, task, results)
    real = next(e for e in summary["arms"] if e.arm == "real").metrics["accuracy"]
    more = next(e for e in summary["arms"] if e.arm == "more").metrics["accuracy"]
    assert real.mean == pytest.approx(np.mean([2, 3, 1, 4]) / 4)
    assert more.mean == pytest.approx(np.mean([3, 4, 2, 4]) / 4)
    # pooled point: per seed, accuracy over the 8 pooled rows, then the mean over seeds
    assert real.pooled == pytest.approx(np.mean([(2 + 3) / 8, (1 + 4) / 8]))
    assert real.ci_low <= real.pooled <= real.ci_high
    (gain,) = summary["gains"]
    diffs = [1, 1, 1, 0]  # more - real per (seed, fold), in quarters
    assert (gain.arm, gain.baseline, gain.n_pairs, gain.confidence) == ("more", "real", 4, 0.95)
    assert gain.mean == pytest.approx(np.mean(diffs) / 4)
    assert 0 <= gain.ci_low <= gain.mean <= gain.ci_high <= 0.25
    assert summary["gap_recovered"] == []
    missing = dict(results)
    missing.pop(Cell("more", "knn", 1, 1))
    with pytest.raises(Exception, match="1 cells have no result"):
        aggregate(recipe, task, missing)
    assert not math.isnan(real.sd)


def test_benchmark_cli_prints_the_tables(cells_ds, tmp_path):
    import yaml

    recipe = tiny_recipe(arms=("real", "oracle", "oversample"), seeds=[0])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True)))
    r = runner.invoke(app, ["benchmark", str(path), "--dataset", cells_ds, "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    assert "paired gain over real" in r.output and "gap recovered (sensitivity:lymphoblast)" in r.output
    r = runner.invoke(app, ["benchmark", str(tmp_path / "nope.yaml"), "--dataset", cells_ds])
    assert r.exit_code == 1 and "does not exist" in r.output


def test_a_file_that_is_not_a_benchmark_summary_is_named(tmp_path):
    f = tmp_path / "metrics.json"
    with pytest.raises(ReportError, match="metrics.json does not exist"):
        load_benchmark_summary(tmp_path)
    f.write_text(json.dumps({"name": "cells-rf", "gains": []}))  # an older, hand-written shape
    with pytest.raises(ReportError, match=r"metrics.json is not a benchmark summary \(schema_version 1\).*re-run"):
        load_benchmark_summary(f)
    f.write_text("{not json")
    with pytest.raises(ReportError, match="is not a benchmark summary"):
        load_benchmark_summary(tmp_path)
