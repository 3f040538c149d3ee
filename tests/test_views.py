"""alldata's saved views: what each holds, idempotent rebuilds, user views kept, App edits followed."""

from __future__ import annotations

import json

import fiftyone as fo
import pytest
from typer.testing import CliRunner

from alldata.cli import app as cli
from alldata.curation import REJECT_TAG
from alldata.ingest import tag_duplicates
from alldata.schema import F
from alldata.store import open_dataset
from alldata.views import ViewError, build_views, parse_truth, truth_of, view_slug
from tests._fixtures import write_image

runner = CliRunner()

# key, sha256, group, split, cell_type; sources are the key's prefix
REAL = [
    ("bccd/1", "h1", "g1", "train", "lymphocyte"),
    ("pbc/1", "h1", "g2", "test", "lymphocyte"),  # same file as bccd/1: cross-source duplicate, hash leak
    ("pbc/2", "h3", "g3", "train", "neutrophil"),
    ("pbc/3", "h4", "g3", "val", "neutrophil"),  # group g3 in train and val: leak
    ("pbc/4", "h5", "g5", "train", "monocyte"),
    ("pbc/5", "h5", "g5", "train", "monocyte"),  # same-source duplicate, same split: no leak
]
# key, condition, memorised?, nearest real
SYN = [
    ("synthetic/gan/a", {"batch_index": 0, "cell_type": "lymphoblast"}, True, "pbc/2"),
    ("synthetic/gan/b", {"batch_index": 1, "cell_type": "lymphoblast"}, False, "pbc/1"),
    ("synthetic/gan/c", {"batch_index": 0, "cell_type": "lymphocyte"}, True, "bccd/1"),
]


def _sample(tmp_path, key, i, **fields):
    path = write_image(tmp_path / f"{i}.png", (8, 8), seed=i)
    source, _, sid = key.rpartition("/")
    return fo.Sample(filepath=str(path), key=key, source=source, source_id=sid, image_kind="cell", **fields)


@pytest.fixture
def ds(tmp_path, dataset_name):
    ds = open_dataset(dataset_name)
    samples = [
        _sample(tmp_path, k, i, sha256=h, group_id=g, split=s, is_synthetic=False,
                cell_type=fo.Classification(label=c))
        for i, (k, h, g, s, c) in enumerate(REAL)
    ]
    for i, (k, cond, mem, nn) in enumerate(SYN):
        samples.append(_sample(
            tmp_path, k, 100 + i, sha256=f"s{i}", group_id=k, is_synthetic=True, generator="gan",
            condition=json.dumps(cond, sort_keys=True), nn_real_key=nn, tags=["synthetic"] + (["memorised"] if mem else []),
            cell_type=fo.Classification(label=cond["cell_type"]),
        ))
    ds.add_samples(samples, progress=False)
    tag_duplicates(ds)
    return ds


def _keys(ds, name):
    return ds.load_saved_view(name).values(F.KEY)


def test_views_hold_what_they_say(ds):
    r = build_views(ds)
    assert r.views["alldata-real"] == 6 and r.views["alldata-synthetic"] == 3
    assert r.views["alldata-source-pbc"] == 5 and r.views["alldata-source-synthetic-gan"] == 3
    assert r.views["alldata-generator-gan"] == 3
    assert r.views["alldata-generator-gan-cell_type=lymphoblast"] == 2  # batch_index is not a condition
    assert r.views["alldata-generator-gan-cell_type=lymphocyte"] == 1
    assert _keys(ds, "alldata-duplicates") == ["bccd/1", "pbc/1", "pbc/4", "pbc/5"]  # copies adjacent
    assert _keys(ds, "alldata-cross-source-duplicates") == ["bccd/1", "pbc/1"]
    assert sorted(_keys(ds, "alldata-split-leaks")) == ["bccd/1", "pbc/1", "pbc/2", "pbc/3"]
    # each flagged synthetic sample right after its nearest real sample
    assert _keys(ds, "alldata-likely-copies") == ["bccd/1", "synthetic/gan/c", "pbc/2", "synthetic/gan/a"]
    assert r.views["alldata-near-duplicates"] == 0 and r.views["alldata-rejected"] == 0
    assert r.slugs["alldata-source-synthetic-gan"] == view_slug("alldata-source-synthetic-gan")
    assert not [n for n in r.views if n.startswith("alldata-mistakes")]  # no predictions yet


def test_rebuild_is_idempotent_keeps_user_views_and_drops_stale_ones(ds):
    ds.save_view("my blasts", ds.match({F.SOURCE: "pbc"}))
    ds.save_view("alldata-source-gone", ds.limit(1))  # e.g. of a source since deleted
    first = build_views(ds)
    assert first.deleted == ["alldata-source-gone"]
    second = build_views(ds)
    assert second.views == first.views and second.deleted == []
    assert "my blasts" in ds.list_saved_views() and len(ds.load_saved_view("my blasts")) == 5
    assert sorted(n for n in ds.list_saved_views() if n.startswith("alldata-")) == sorted(first.views)
    ds.delete_saved_view("alldata-real")
    ds.save_view("alldata real", ds.limit(2))  # a user's view whose URL slug alldata needs
    with pytest.raises(ViewError, match="alldata real"):
        build_views(ds)


def test_mistakes_views_and_app_edits_round_trip(ds):
    pred = {"bccd/1": "lymphocyte", "pbc/2": "monocyte", "pbc/4": "neutrophil", "pbc/5": "monocyte"}
    ds.set_values("pred_cnn", {k: fo.Classification(label=v, truth_field="cell_type") for k, v in pred.items()},
                  key_field=F.KEY)
    ds.set_values("pred_cell_type_svm", {k: fo.Classification(label=v) for k, v in pred.items()}, key_field=F.KEY)
    ds.set_values("pred_other", {k: fo.Classification(label=v) for k, v in pred.items()}, key_field=F.KEY)
    assert truth_of(ds, "pred_cnn") == ["cell_type"]  # from the attribute
    assert truth_of(ds, "pred_cell_type_svm") == ["cell_type"]  # from the name
    assert truth_of(ds, "pred_other") == []
    r = build_views(ds)
    assert sorted(_keys(ds, "alldata-mistakes-pred_cnn")) == ["pbc/2", "pbc/4"]
    assert r.views["alldata-mistakes-pred_cell_type_svm"] == 2
    assert "alldata-mistakes-pred_other" in r.skipped and "--truth pred_other=FIELD" in r.skipped["alldata-mistakes-pred_other"]
    r = build_views(ds, truth=parse_truth(["pred_other=cell_type"]))
    assert r.views["alldata-mistakes-pred_other"] == 2 and not r.skipped

    # edits made in the App (a tag, a corrected label) show in the saved views without a rebuild
    s = ds.match({F.KEY: "pbc/4"}).first()
    s[F.CELL_TYPE] = fo.Classification(label="neutrophil")  # the curator agrees with the model
    s.tags.append(REJECT_TAG)
    s.save()
    assert _keys(ds, "alldata-mistakes-pred_cnn") == ["pbc/2"]
    assert _keys(ds, "alldata-rejected") == ["pbc/4"]


def test_parse_truth_and_the_views_command(ds):
    with pytest.raises(ViewError, match="PRED_FIELD=TRUTH_FIELD"):
        parse_truth(["pred_svm"])
    r = runner.invoke(cli, ["views", ds.name, "--truth", "pred_nothing=cell_type"])
    assert r.exit_code == 0, r.output
    assert "alldata-likely-copies" in r.output and f"/datasets/{ds.name}?view=SLUG" in r.output
    assert "pred_nothing" in r.output  # reported as skipped
    r = runner.invoke(cli, ["views", ds.name, "--truth", "oops"])
    assert r.exit_code == 1 and "PRED_FIELD=TRUTH_FIELD" in r.output
    r = runner.invoke(cli, ["views", "no-such-dataset"])
    assert r.exit_code == 1 and "no-such-dataset" in r.output


def test_app_command_builds_views_and_warns_beyond_localhost(ds, monkeypatch):
    import importlib

    app_module = importlib.import_module("alldata.cli.app")  # the module (alldata.cli.app is the Typer app)
    started = []

    class FakeServer:
        def __init__(self, cmd):
            started.append(cmd)

        def wait(self, timeout=None):
            return 0

    monkeypatch.setattr(app_module.subprocess, "Popen", FakeServer)
    assert app_module.is_loopback("127.0.0.1") and app_module.is_loopback("localhost") and app_module.is_loopback("::1")
    assert not app_module.is_loopback("0.0.0.0") and not app_module.is_loopback("lab-server")
    r = runner.invoke(cli, ["app", ds.name, "--port", "5252"])
    assert r.exit_code == 0, r.output
    assert "warning" not in r.output and "alldata-split-leaks" in r.output
    assert started[-1][-4:] == ["--port", "5252", "--address", "127.0.0.1"]
    assert "alldata-rejected" in ds.list_saved_views()
    r = runner.invoke(cli, ["app", ds.name, "--address", "0.0.0.0", "--no-views"])
    assert r.exit_code == 0 and "warning" in r.output and "0.0.0.0" in r.output
    assert started[-1][-2:] == ["--address", "0.0.0.0"]
