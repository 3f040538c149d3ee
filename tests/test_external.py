"""External test pools: train on one dataset, test on another (engine, label map, duplicates, evaluate)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import yaml
from PIL import Image
from sklearn.metrics import balanced_accuracy_score
from typer.testing import CliRunner

from alldata.benchmark.engine import LabelMapError, run_benchmark
from alldata.benchmark.external import DuplicateAcrossPoolsError, build_external_pool
from alldata.cli import app
from alldata.recipes import Recipe
from alldata.schema import F
from tests.models._synthetic import cell_image

runner = CliRunner()
N_GROUPS = 6  # per class, two images each


def make_dataset(root, name: str, seed: int, extra_class: str | None = None) -> str:
    """Two classes of drawn cells (big vs small nucleus) in the ``folder`` source, grouped in pairs."""
    classes = [("lymphoblast", 12), ("lymphocyte", 6)] + ([(extra_class, 9)] if extra_class else [])
    for cls, r_nuc in classes:
        for g in range(N_GROUPS):
            for j in range(2):
                img, _ = cell_image(32, ((16, 16),), r_cell=14, r_nuc=r_nuc, noise=6.0, seed=seed + 100 * g + j + r_nuc)
                (root / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / cls / f"{cls}_{g}_{j}.png")
    r = runner.invoke(app, ["ingest", "folder", str(root), "--dataset", name])
    assert r.exit_code == 0, r.output
    ds = fo.load_dataset(name)
    ds.set_values(F.GROUP_ID, [k.rsplit("_", 1)[0] for k in ds.values(F.KEY)])
    return name


def external_recipe(test_dataset: str, **test) -> Recipe:
    return Recipe.model_validate({
        "name": "tiny-external", "task": "classification",
        "data": {"sources": ["folder"], "label_field": "cell_type", "classes": ["lymphoblast", "lymphocyte"],
                 "image_size": 32},
        "folds": 2, "seeds": [0], "baseline": "real",
        "arms": [{"name": "real", "kind": "real"}, {"name": "oversample", "kind": "oversample"}],
        "models": [{"name": "knn", "params": {"n_neighbors": 3}}],
        "metrics": ["balanced_accuracy", "accuracy"], "primary_metric": "balanced_accuracy", "n_boot": 30,
        "test": {"dataset": test_dataset, "sources": ["folder"], **test},
    })


@pytest.fixture
def two_datasets(tmp_path):
    names = [f"test-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    make_dataset(tmp_path / "a", names[0], seed=0)
    make_dataset(tmp_path / "b", names[1], seed=5000)
    yield names
    for n in names:
        if fo.dataset_exists(n):
            fo.delete_dataset(n)


def test_external_pool_metrics_write_back_and_saved_models(two_datasets, tmp_path):
    train_ds, test_ds = two_datasets
    out = tmp_path / "run"
    run = run_benchmark(external_recipe(test_ds), train_ds, out, progress=False)
    ext = run.summary.external
    assert ext is not None and ext.dataset == test_ds and ext.pool.n == 4 * N_GROUPS
    assert len(run.summary.arms) == 2  # in-pool CV ran as well
    # external metrics equal a hand computation from the saved rows of the external cell
    cell = json.loads((out / "cells/arm=real/model=knn/fold=external/seed=0.json").read_text())
    truth, pred = [r["true"] for r in cell["rows"]], [r["pred"] for r in cell["rows"]]
    hand = balanced_accuracy_score(truth, pred)
    real = next(a for a in ext.arms if a.arm == "real")
    assert real.metrics["balanced_accuracy"].pooled == pytest.approx(hand)
    assert real.metrics["accuracy"].pooled == pytest.approx(np.mean(np.array(truth) == np.array(pred)))
    assert real.n_train == 4 * N_GROUPS  # the whole training pool, no fold held out
    # the drop table pairs the same arm and model in-pool and external
    d = next(d for d in ext.drops if d.arm == "real" and d.metric == "balanced_accuracy")
    assert d.drop == pytest.approx(d.external - d.in_pool)
    assert {g.arm for g in ext.gains} == {"oversample"} and ext.selected == {"real": "knn", "oversample": "knn"}
    # predictions land in the external dataset only, one per external sample, and match the rows
    field = ext.prediction_fields["real"]
    tds, trn = fo.load_dataset(test_ds), fo.load_dataset(train_ds)
    assert tds.has_sample_field(field) and not trn.has_sample_field(field)
    written = dict(zip(tds.values("id"), tds.values(f"{field}.label")))
    assert {r["id"]: r["pred"] for r in cell["rows"]} == written
    report = (out / "report.md").read_text()
    assert "## External test pool" in report and "external − in-pool" in report
    # the final model is saved beside what it was trained on
    mdir = out / ext.model_dirs["arm=real/model=knn/fold=external/seed=0"]
    info = json.loads((mdir / "alldata_model.json").read_text())
    assert (mdir / "config.json").is_file() and len(info["train_sha256"]) == 4 * N_GROUPS

    # alldata evaluate scores the run's saved models on the external dataset: the same numbers
    r = runner.invoke(app, ["evaluate", str(out), "--dataset", test_ds, "--n-boot", "20", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    ev = {(e["arm"], e["model"]): e for e in json.loads((tmp_path / "ev" / "evaluation.json").read_text())}
    assert ev[("real", "knn")]["metrics"]["balanced_accuracy"]["pooled"] == pytest.approx(hand)
    assert ev[("real", "knn")]["duplicates_checked"] is True
    # ... and refuses the training dataset (every file was trained on)
    r = runner.invoke(app, ["evaluate", str(mdir), "--dataset", train_ds])
    assert r.exit_code == 1 and "trained on" in r.output and "folder/" in r.output


def test_a_file_in_both_pools_is_refused_by_name(tmp_path):
    a, b = (f"test-{uuid.uuid4().hex[:10]}" for _ in range(2))
    try:
        make_dataset(tmp_path / "a", a, seed=0)
        make_dataset(tmp_path / "a", b, seed=0)  # the same files, a second dataset
        with pytest.raises(DuplicateAcrossPoolsError, match=rf"{a}:folder/\S+ = {b}:folder/"):
            run_benchmark(external_recipe(b), a, tmp_path / "run", progress=False)
        # the same dataset as its own external pool: refused too
        with pytest.raises(DuplicateAcrossPoolsError):
            run_benchmark(external_recipe(a), a, tmp_path / "run2", progress=False)
    finally:
        for n in (a, b):
            if fo.dataset_exists(n):
                fo.delete_dataset(n)


def test_an_external_label_outside_the_map_is_an_error_naming_it(tmp_path):
    a, b = (f"test-{uuid.uuid4().hex[:10]}" for _ in range(2))
    try:
        make_dataset(tmp_path / "a", a, seed=0)
        make_dataset(tmp_path / "b", b, seed=7000, extra_class="neutrophil")
        with pytest.raises(LabelMapError, match=r"folder cell_type='neutrophil' \(12 samples\).*source_labels"):
            run_benchmark(external_recipe(b), a, tmp_path / "run", progress=False)
        # from the CLI: a plain error naming the label and the fix, exit code 1
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump(external_recipe(b).model_dump(mode="json", by_alias=True)))
        r = runner.invoke(app, ["benchmark", str(path), "--dataset", a, "--out", str(tmp_path / "cli")])
        assert r.exit_code == 1 and "neutrophil" in r.output and "label map" in r.output
        # the fix the message names: leave them out with where (or map them)
        recipe = external_recipe(b, where={"cell_type": ["lymphoblast", "lymphocyte"]}, in_pool=False)
        run = run_benchmark(recipe, a, tmp_path / "run", progress=False, write_back=False)
        assert run.summary.external.pool.n == 4 * N_GROUPS and run.summary.arms == []
        # ... or state in the label map that the source's other labels stay out
        stated = external_recipe(b).model_dump(by_alias=True)
        stated["data"]["source_labels"] = {"folder": {"classes": {"lymphoblast": "lymphoblast",
                                                                  "lymphocyte": "lymphocyte"}, "unmapped": "leave_out"}}
        ext = build_external_pool(Recipe.model_validate(stated), a)
        assert len(ext) == 4 * N_GROUPS and ext.dropped["label_not_in_classes"] == 12
    finally:
        for n in (a, b):
            if fo.dataset_exists(n):
                fo.delete_dataset(n)


def test_evaluate_a_bare_saved_model(two_datasets, tmp_path):
    from alldata.benchmark.classification import ClassificationTask
    from alldata.models import KNN

    train_ds, test_ds = two_datasets
    ds = fo.load_dataset(train_ds)
    ids, labels = ds.values(["id", "cell_type.label"])
    X = ClassificationTask().features(train_ds, ids, 32)
    KNN(n_neighbors=3).fit(X, labels).save(tmp_path / "knn")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "knn"), "--dataset", test_ds])
    assert r.exit_code == 1 and "--label-field" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "knn"), "--dataset", test_ds, "--label-field", "cell_type",
                            "--image-size", "32", "--n-boot", "20", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "ev" / "evaluation.json").read_text())[0]
    tds = fo.load_dataset(test_ds)
    truth, pred = tds.values("cell_type.label"), tds.values(f"{got['prediction_field']}.label")
    assert got["metrics"]["balanced_accuracy"]["pooled"] == pytest.approx(balanced_accuracy_score(truth, pred))
    assert got["duplicates_checked"] is False and "no duplicate check" in r.output


def test_leave_one_source_out_holds_each_source_out_in_turn():
    from alldata.benchmark.protocols import held_out_recipe

    r = Recipe.model_validate({
        **external_recipe("x").model_dump(by_alias=True, exclude={"test"}),
        "data": {"sources": ["a", "b", "c"], "label_field": "cell_type", "classes": ["lymphoblast", "lymphocyte"]},
        "test": {"leave_one_source_out": True},
    })
    held = held_out_recipe(r, "b")
    assert held.data.sources == ["a", "c"] and held.test.sources == ["b"] and not held.test.leave_one_source_out
    assert held.name == "tiny-external-b" and held.data.classes == r.data.classes
    with pytest.raises(Exception, match="leave-one-source-out protocol"):
        run_benchmark(r, "x", "/nonexistent", progress=False)


def test_the_fast_scores_equal_classification_metrics():
    from alldata.benchmark.classification import ClassificationTask
    from alldata.metrics import classification_metrics

    task = ClassificationTask()
    rng = np.random.default_rng(0)
    cases = []
    for n, k in ((40, 2), (60, 3), (15, 4)):
        labels = [f"c{j}" for j in range(k)]
        proba = rng.dirichlet(np.ones(k), n).round(1)  # rounded: ties in the scores
        true = rng.choice(labels[:-1] if k == 4 else labels, n)  # k == 4: a class never true
        cases.append([{"true": t, "pred": labels[int(p.argmax())], "proba": dict(zip(labels, p.tolist()))}
                      for t, p in zip(true, proba)])
    cases.append([{"true": "a", "pred": "a", "proba": {"a": 0.9, "b": 0.1}}] * 5)  # one class only
    for rows in cases:
        labels = sorted(rows[0]["proba"])
        rep = classification_metrics([r["true"] for r in rows], [r["pred"] for r in rows], labels=labels,
                                     scores=np.array([[r["proba"][c] for c in labels] for r in rows]))
        want = {"accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy, "macro_f1": rep.macro["f1"],
                "weighted_f1": rep.weighted["f1"], "macro_auc": rep.macro.get("auc", np.nan)}
        for c in labels:
            want.update({f"{m}:{c}": rep.per_class[c][m] for m in ("sensitivity", "specificity", "precision", "f1", "auc")})
        got = task.score(rows)
        assert got.keys() == want.keys()
        for key, v in want.items():
            assert got[key] == pytest.approx(v, abs=1e-12, nan_ok=True), key


def test_stain_arms_fit_on_training_images_and_evaluate_reapplies_them(two_datasets, tmp_path):
    train_ds, test_ds = two_datasets
    base = external_recipe(test_ds, in_pool=False).model_dump(by_alias=True)
    base["arms"] = [{"name": "real", "kind": "real"},
                    {"name": "reinhard", "kind": "real", "params": {"stain": "reinhard"}},
                    {"name": "jitter", "kind": "real", "params": {"hed_jitter": 0.05}}]
    out = tmp_path / "run"
    run = run_benchmark(Recipe.model_validate(base), train_ds, out, progress=False, write_back=False)
    info = {c.arm: r.info for c, r in run.results.items()}
    train_ids = set(fo.load_dataset(train_ds).values("id"))
    st = info["reinhard"]["stain"]
    assert st["config"]["kind"] == "reinhard" and st["dataset"] == train_ds
    assert 0 < len(st["target_ids"]) <= 16 and set(st["target_ids"]) <= train_ids  # never a test image
    assert info["jitter"]["n_hed_jitter"] == 4 * N_GROUPS and info["jitter"]["n_train"] == 8 * N_GROUPS
    assert "stain" not in info["real"]
    # the saved model carries its normaliser: evaluate normalises the new images alike
    mdir = out / "models" / "arm=reinhard/model=knn/fold=external/seed=0"
    assert json.loads((mdir / "alldata_model.json").read_text())["stain"]["target_ids"] == st["target_ids"]
    r = runner.invoke(app, ["evaluate", str(mdir), "--dataset", test_ds, "--n-boot", "20", "--no-write-back",
                            "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "ev" / "evaluation.json").read_text())[0]["metrics"]["accuracy"]["pooled"]
    want = next(a for a in run.summary.external.arms if a.arm == "reinhard").metrics["accuracy"].pooled
    assert got == pytest.approx(want)
    with pytest.raises(ValueError, match=r"hed_jitter: 2; give the jitter strength"):
        Recipe.model_validate(dict(base, arms=[{"name": "real", "kind": "real", "params": {"hed_jitter": 2}}]))
    with pytest.raises(ValueError, match="params.stain: 'macenco'"):
        Recipe.model_validate(dict(base, arms=[{"name": "real", "kind": "real", "params": {"stain": "macenco"}}]))


def test_gradcam_on_the_external_predictions_of_a_cnn(two_datasets, tmp_path):
    import torch

    torch.set_num_threads(1)
    train_ds, test_ds = two_datasets
    base = external_recipe(test_ds, in_pool=False, gradcam=True).model_dump(by_alias=True)
    base.update(arms=[{"name": "real", "kind": "real"}], models=[{"name": "resnet18", "params": {"epochs": 1}}])
    run = run_benchmark(Recipe.model_validate(base), train_ds, tmp_path / "run", progress=False)
    field = run.summary.external.heatmap_fields["real"]
    ds = fo.load_dataset(test_ds)
    maps = ds.values(f"{field}.map_path")
    assert len(maps) == 4 * N_GROUPS and all(m and (tmp_path / "run" / "heatmaps") in Path(m).parents for m in maps)
    assert "mistakes with heatmaps" in ds.list_saved_views()
    assert field in (tmp_path / "run" / "report.md").read_text()


def test_scale_arm_resamples_to_a_common_red_cell_size_and_evaluate_reapplies_it(two_datasets, tmp_path, monkeypatch):
    from alldata.generators import overlap

    from alldata.benchmark.classification import ClassificationTask, Scale

    train_ds, test_ds = two_datasets
    # the fixtures' source: a red cell 8 px across; at rbc_px 4 every 32 px image becomes 16 px
    monkeypatch.setitem(overlap.RBC_PX, "folder", 8.0)
    task = ClassificationTask()
    ids = fo.load_dataset(train_ds).values("id")[:2]
    plain = task.images(train_ds, ids, 32)
    half = task.images(train_ds, ids, 32, scale=Scale.from_params({"rbc_px": 4}, "test"))
    for a, b in zip(plain, half):
        assert a.shape == b.shape == (32, 32, 3)
        # the centre 16 x 16 is the whole image at half scale; the rest is padded with its median colour
        small = np.asarray(Image.fromarray(a).resize((16, 16), Image.BILINEAR)).astype(int)
        assert np.abs(b[8:24, 8:24].astype(int) - small).mean() < 4
        assert (b[:8] == b[0, 0]).all() and (b[24:] == b[0, 0]).all()
    same = task.images(train_ds, ids, 32, scale=Scale.from_params({"rbc_px": 16, "source_rbc_px": {"folder": 16}}, "t"))
    assert all(np.array_equal(a, b) for a, b in zip(plain, same))  # scale 1: the centre crop of the stored image
    with pytest.raises(Exception, match="no red-cell diameter known for source 'folder'"):
        monkeypatch.delitem(overlap.RBC_PX, "folder")
        ClassificationTask().images(train_ds, ids, 32, scale=Scale.from_params({"rbc_px": 4}, "test"))
    monkeypatch.setitem(overlap.RBC_PX, "folder", 8.0)

    base = external_recipe(test_ds, in_pool=False).model_dump(by_alias=True)
    base["arms"] = [{"name": "real", "kind": "real"}, {"name": "scale", "kind": "real", "params": {"rbc_px": 4}}]
    out = tmp_path / "run"
    run = run_benchmark(Recipe.model_validate(base), train_ds, out, progress=False, write_back=False)
    info = {c.arm: r.info for c, r in run.results.items()}
    assert info["scale"]["scale"]["rbc_px"] == 4 and info["scale"]["scale"]["sources_used"] == ["folder"]
    assert "scale" not in info["real"]
    mdir = out / "models" / "arm=scale/model=knn/fold=external/seed=0"
    saved = json.loads((mdir / "alldata_model.json").read_text())["scale"]
    assert saved["rbc_px"] == 4 and saved["source_rbc_px"]["folder"] == 8.0
    # evaluate rescales the new images from the saved table, even after the live table changes
    monkeypatch.setitem(overlap.RBC_PX, "folder", 2.0)
    r = runner.invoke(app, ["evaluate", str(mdir), "--dataset", test_ds, "--n-boot", "20", "--no-write-back",
                            "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    got = json.loads((tmp_path / "ev" / "evaluation.json").read_text())[0]["metrics"]["accuracy"]["pooled"]
    cell = json.loads((out / "cells/arm=scale/model=knn/fold=external/seed=0.json").read_text())
    assert got == pytest.approx(np.mean([r["true"] == r["pred"] for r in cell["rows"]]))
    with pytest.raises(ValueError, match=r"params.rbc_px: 0"):
        Recipe.model_validate(dict(base, arms=[{"name": "real", "kind": "real", "params": {"rbc_px": 0}}]))
    with pytest.raises(ValueError, match=r"source_rbc_px needs rbc_px"):
        Recipe.model_validate(dict(base, arms=[{"name": "real", "kind": "real", "params": {"source_rbc_px": {"a": 1}}}]))
