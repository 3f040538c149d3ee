"""alldata's FiftyOne App plugin without a browser: the operators' actions called directly, the
panel's content, and the operators run through FiftyOne's own executor (at once and delegated).

The browser test (tests/test_app_browser.py) runs the same operators from the App itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import yaml

from alldata.app_plugin import actions
from alldata.app_plugin.actions import BENCHMARK_RUNS, CORRECTED_FROM, SCORE_REPORT, PluginError
from alldata.app_plugin.install import PLUGIN_NAME, PluginInstallError, install_plugin, installed_at, uninstall_plugin
from alldata.app_plugin.sample_panel import gain_figure, pick_sample, sample_card
from alldata.curation import REJECT_TAG, curated
from alldata.schema import F
from tests import test_benchmark as tb


def _progress_log():
    seen: list[tuple[float, str]] = []
    return seen, lambda fraction, label: seen.append((fraction, label))


@pytest.fixture(scope="module")
def cells(tmp_path_factory):
    """Drawn lymphoblasts and lymphocytes, split by group, and a tiny GAN checkpoint trained on them."""
    from alldata.generate import train_generator

    name = f"test-plugin-{np.random.default_rng().integers(1 << 30):x}"
    root = tmp_path_factory.mktemp("plugin")
    tb.make_cells_dataset(root / "cells", name)
    ckpt = root / "gan"
    train_generator("gan", name, ckpt, image_size=16, preset="tiny", steps=2, batch_size=4, sample_every=0, save_every=2,
                    progress=False)
    yield name, ckpt
    if fo.dataset_exists(name):
        fo.delete_dataset(name)


@pytest.fixture
def plugins_dir(tmp_path):
    """FiftyOne's plugins directory pointed at a temp folder holding alldata's plugin link."""
    old = fo.config.plugins_dir
    fo.config.plugins_dir = str(tmp_path / "plugins")
    install_plugin()
    yield tmp_path / "plugins"
    fo.config.plugins_dir = old


# --- curation ------------------------------------------------------------------------------------


def _small(name: str) -> fo.Dataset:
    ds = fo.Dataset(name)
    ds.add_samples([fo.Sample(filepath=f"/nonexistent/{i}.png", key=f"t/{i}",
                              cell_type=fo.Classification(label="lymphoblast" if i % 2 else "lymphocyte")) for i in range(4)])
    return ds


def test_tag_reject_and_undo(dataset_name):
    ds = _small(dataset_name)
    ids = ds.values("id")[:2]
    r = actions.tag_reject(ds, ids)
    assert r.view == "app-rejected" and ds.count_sample_tags() == {REJECT_TAG: 2}
    assert len(curated(ds)) == 2 and len(ds.load_saved_view("app-rejected")) == 2
    actions.tag_reject(ds, ids[:1], undo=True)
    assert ds.count_sample_tags() == {REJECT_TAG: 1}
    with pytest.raises(PluginError, match="select samples"):
        actions.tag_reject(ds, [])


def test_correct_label_keeps_the_old_value(dataset_name):
    ds = _small(dataset_name)
    ids = ds.values("id")
    r = actions.correct_label(ds, ids[:2], F.CELL_TYPE, "lymphoblast")
    assert r.ids == [ids[0]]  # sample 1 already was a lymphoblast
    s = ds[ids[0]]
    assert s[F.CELL_TYPE].label == "lymphoblast" and s[F.CELL_TYPE][CORRECTED_FROM] == "lymphocyte"
    assert len(ds.load_saved_view(r.view)) == 1
    with pytest.raises(PluginError, match="not a cell_type value"):
        actions.correct_label(ds, ids, F.CELL_TYPE, "lymphoblst")
    with pytest.raises(PluginError, match="not a label"):
        actions.correct_label(ds, ids, "nope", "lymphoblast")


# --- generate, score --------------------------------------------------------------------------------


def test_generate_like_takes_the_views_labels(cells, tmp_path):
    name, ckpt = cells
    ds = fo.load_dataset(name)
    blasts = ds.match({F.IS_SYNTHETIC: {"$ne": True}, f"{F.CELL_TYPE}.label": "lymphoblast"})
    seen, progress = _progress_log()
    r = actions.generate_like(ds, blasts, ckpt, 5, batch_size=2, out_dir=tmp_path / "gen", progress=progress)
    made = ds.select(r.ids)
    assert len(made) == 5 and set(made.values(f"{F.CELL_TYPE}.label")) == {"lymphoblast"}
    assert set(made.values(F.GENERATOR)) == {"gan"} and set(made.values(F.SEED)) == {0, 1, 2}
    assert r.view == "app-generated-gan-cell_type=lymphoblast" and len(ds.load_saved_view(r.view)) == 5
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[0] == 0 and fractions[-1] == 1.0 and len(fractions) == 4
    again = actions.generate_like(ds, blasts, ckpt, 5, batch_size=2, out_dir=tmp_path / "gen")
    assert sorted(again.ids) == sorted(r.ids) and "added 0" in again.message  # resumable: nothing twice
    other = actions.generate_like(ds, blasts, ckpt, 2, condition="cell_type=lymphocyte", out_dir=tmp_path / "gen")
    assert set(ds.select(other.ids).values(f"{F.CELL_TYPE}.label")) == {"lymphocyte"}
    with pytest.raises(PluginError, match="train-generator"):
        actions.generate_like(ds, blasts, tmp_path / "nothing", 2)


def test_score_view_records_the_report(cells, tmp_path):
    name, ckpt = cells
    ds = fo.load_dataset(name)
    syn = ds.match({F.IS_SYNTHETIC: True})
    if not len(syn):
        actions.generate_like(ds, ds.match({F.IS_SYNTHETIC: {"$ne": True}}), ckpt, 4, out_dir=tmp_path / "gen")
        syn = ds.match({F.IS_SYNTHETIC: True})
    real_ids = ds.match({F.IS_SYNTHETIC: {"$ne": True}}).limit(2).values("id")
    r = actions.score_view(ds, syn.values("id") + real_ids, heldout="")
    assert len(r.ids) == len(syn)  # only the synthetic samples are scored
    report = json.loads(Path(r.extra["report"]).read_text())
    assert report["n_fake"] == len(syn) and isinstance(r.extra["passed"], bool)
    assert set(syn.values(SCORE_REPORT)) == {r.extra["report"]}
    assert all(d is not None for d in syn.values("nn_distance"))
    assert not ds.select(real_ids).exists(SCORE_REPORT)  # real cells untouched
    assert not any(t.startswith("app-score-") for t in ds.distinct("tags"))  # the temporary tag is gone
    with pytest.raises(PluginError, match="no synthetic"):
        actions.score_view(ds, real_ids)


# --- benchmark and the panel ------------------------------------------------------------------------


def test_benchmark_then_the_sample_panel(tmp_path, dataset_name):
    import torch

    from alldata.embeddings import embed_dataset

    torch.set_num_threads(1)
    tb.make_cells_dataset(tmp_path / "cells", dataset_name)
    recipe = tb.tiny_recipe(arms=("real", "oracle", "gan"), seeds=[0])
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude_none=True)))
    ds = fo.load_dataset(dataset_name)
    seen, progress = _progress_log()
    r = actions.run_benchmark_recipe(ds, path, quick=False, out_dir=tmp_path / "run", progress=progress)
    assert (tmp_path / "run" / "metrics.json").is_file() and seen[-1][0] == 1.0
    assert ds.info[BENCHMARK_RUNS] == {"tiny-rare": str((tmp_path / "run").resolve())}
    # the GAN arm's samples are in the run-scoped dataset, which holds the view; the user's dataset has none
    assert len(ds.match_tags(F.TAG_SYNTHETIC)) == 0 and r.extra["dataset"] == f"{dataset_name}-bench-tiny-rare"
    bench = fo.load_dataset(r.extra["dataset"])
    gan = bench.load_saved_view(r.view)
    assert len(gan) > 0 and set(gan.values(F.RECIPE)) == {"tiny-rare"}
    assert bench.info[BENCHMARK_RUNS] == ds.info[BENCHMARK_RUNS]
    # the panel on one of them, from the user's dataset (where the real cells are): a user who wants
    # benchmark samples beside real ones merges them on purpose
    ds.merge_samples(bench, key_field="filepath")
    bench.delete()

    embed_dataset(ds, features="handcrafted", method="pca")
    sid = pick_sample(ds, ds.view(), None, None)
    assert ds[sid][F.IS_SYNTHETIC]  # the view's first synthetic sample
    card = sample_card(ds, sid)
    assert card.is_synthetic and card.provenance[F.GENERATOR] == "gan" and card.provenance[F.RECIPE] == "tiny-rare"
    assert card.image.startswith("data:image/png;base64,")
    assert len(card.neighbours) == 3
    real = set(ds.match({F.IS_SYNTHETIC: {"$ne": True}}).values("id"))
    assert all(n["id"] in real and n["image"].startswith("data:image/png") for n in card.neighbours)
    dists = [n["distance"] for n in card.neighbours]
    assert dists == sorted(dists)
    b = card.benchmark
    assert b["recipe"] == "tiny-rare" and b["baseline"] == "real"
    trace = b["figure"]["data"][0]
    assert len(trace["x"]) == len(trace["y"]) == len(b["rows"]) == 4  # oracle and gan x (primary, rare sensitivity)
    assert all(lo >= 0 and hi >= 0 for lo, hi in zip(trace["error_x"]["arrayminus"], trace["error_x"]["array"]))
    text = card.markdown()
    assert "provenance" in text and "tiny-rare" in text and "nearest real cells" in text
    assert pick_sample(ds, ds.view(), None, [card.neighbours[0]["id"]]) == card.neighbours[0]["id"]


def test_gain_figure_error_bars_match_the_cis():
    from alldata.reports import Gain

    class S:
        recipe, baseline, confidence, primary_metric = "r", "real", 0.95, "balanced_accuracy"
        gains = [Gain(arm="gan", model="rf", metric="balanced_accuracy", baseline="real", mean=0.1, ci_low=-0.05,
                      ci_high=0.3, n_pairs=4, confidence=0.95)]

    fig, rows = gain_figure(S())
    e = fig["data"][0]["error_x"]
    assert fig["data"][0]["x"] == [0.1] and e["arrayminus"] == [pytest.approx(0.15)] and e["array"] == [pytest.approx(0.2)]
    assert rows == ["gan / rf (balanced_accuracy): +0.100 [-0.050, +0.300], 4 pairs"]


# --- install and FiftyOne's executor ---------------------------------------------------------------


def test_install_is_idempotent_and_safe(tmp_path):
    link = install_plugin(tmp_path)
    assert installed_at(tmp_path) == link and install_plugin(tmp_path) == link
    assert (link / "fiftyone.yml").is_file()
    assert uninstall_plugin(tmp_path) == link and installed_at(tmp_path) is None
    (tmp_path / "alldata").mkdir()
    with pytest.raises(PluginInstallError, match="not alldata's link"):
        install_plugin(tmp_path)


def test_operators_run_through_fiftyone(plugins_dir, cells, tmp_path):
    import fiftyone.operators as foo
    from fiftyone.operators.delegated import DelegatedOperationService
    from fiftyone.operators.registry import OperatorRegistry

    name, ckpt = cells
    uris = {o.uri for o in OperatorRegistry().list_operators() if o.uri.startswith(PLUGIN_NAME)}
    assert uris == {f"{PLUGIN_NAME}/{n}" for n in ("generate_like", "compose_overlaps", "score_view", "tag_reject",
                                                   "correct_label", "run_benchmark", "run_brain", "alldata_sample")}
    ds = fo.load_dataset(name)
    one = ds.match({F.IS_SYNTHETIC: {"$ne": True}}).first()
    r = foo.execute_operator(f"{PLUGIN_NAME}/tag_reject", dataset=ds, selected=[one.id], params={})
    assert r.result["count"] == 1 and ds[one.id].tags.count(REJECT_TAG) == 1
    foo.execute_operator(f"{PLUGIN_NAME}/tag_reject", dataset=ds, selected=[one.id], params={"undo": True})
    assert REJECT_TAG not in ds[one.id].tags

    # delegated: queued from the "App", run by the delegated-operations service, with progress
    before = len(ds)
    view = ds.match({f"{F.CELL_TYPE}.label": "lymphocyte", F.IS_SYNTHETIC: {"$ne": True}})
    foo.execute_operator(f"{PLUGIN_NAME}/generate_like", view=view, request_delegation=True,
                         params={"checkpoint": str(ckpt), "num_samples": 3, "batch_size": 2, "seed": 7})
    svc = DelegatedOperationService()
    queued = svc.get_queued_operations(dataset_name=name)
    assert len(queued) == 1 and len(ds) == before  # scheduled, nothing made yet
    svc.execute_queued_operations(dataset_name=name)
    doc = svc.get(queued[0].id)
    assert doc.run_state == "completed", doc.status
    assert doc.status.progress == 1.0 and "added 3" in doc.status.label
    assert doc.result.result["count"] == 3 and len(ds) == before + 3
    assert set(ds.match({F.SEED: {"$in": [7, 8]}}).values(f"{F.CELL_TYPE}.label")) == {"lymphocyte"}


def test_compose_from_selected_uses_only_those_donors(tmp_path, dataset_name):
    from alldata.ingest import ingest
    from alldata.sources.all_idb2 import ALLIDB2
    from alldata.sources.bccd import BCCD
    from tests.generators import test_overlap as to

    roots = to.make_fixtures(tmp_path / "src")
    for src in (ALLIDB2(roots["all_idb2"]), BCCD(roots["bccd"])):
        ingest(src, dataset_name, progress=False, workers=1)
    ds = fo.load_dataset(dataset_name)
    donors = ds.match({F.KEY: {"$in": ["all_idb2/Im001_1", "all_idb2/Im002_1"]}})
    seen, progress = _progress_log()
    r = actions.compose_from_selected(ds, donors.values("id"), 2, seed=5, out_dir=tmp_path / "out", progress=progress,
                                      background_sources=["bccd"], **to.CFG)
    made = ds.select(r.ids)
    assert len(made) == 2 and set(made.values(F.GENERATOR)) == {"overlap"} and r.view == "app-composed-seed5"
    used = {d["donor_key"] for dets in made.values(f"{F.CELLS}.detections") for d in dets}
    assert used and used <= {"all_idb2/Im001_1", "all_idb2/Im002_1"}
    assert set(ds.load_saved_view("app-compose-donors").values(F.KEY)) == {"all_idb2/Im001_1", "all_idb2/Im002_1"}
    assert seen[-1][0] == 1.0
    card = sample_card(ds, r.ids[0])
    assert card.benchmark is None and not any("recipe" in n for n in card.notes)
    with pytest.raises(PluginError, match="select the cells"):
        actions.compose_from_selected(ds, [], 2)


def test_cli_plugin_install_check_uninstall(tmp_path):
    from typer.testing import CliRunner

    from alldata.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["plugin", "--plugins-dir", str(tmp_path), "--check"])
    assert r.exit_code == 1 and "not installed" in r.output
    r = runner.invoke(app, ["plugin", "--plugins-dir", str(tmp_path)])
    assert r.exit_code == 0 and f"{PLUGIN_NAME} installed" in r.output and installed_at(tmp_path) is not None
    r = runner.invoke(app, ["plugin", "--plugins-dir", str(tmp_path), "--check"])
    assert r.exit_code == 0 and "installed at" in r.output
    r = runner.invoke(app, ["plugin", "--plugins-dir", str(tmp_path), "--uninstall"])
    assert r.exit_code == 0 and installed_at(tmp_path) is None
    (tmp_path / "alldata").write_text("someone else's")
    r = runner.invoke(app, ["plugin", "--plugins-dir", str(tmp_path)])
    assert r.exit_code == 1 and "not alldata's link" in r.output
