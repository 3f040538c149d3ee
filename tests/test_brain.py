"""`alldata brain`: the FiftyOne Brain on alldata's embeddings and predictions (no model download)."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest
from typer.testing import CliRunner

from alldata.brain import LEAK_EXACT, LEAK_NEAR, BrainError, exact_leaks, run_brain
from alldata.cli import app
from alldata.embeddings import EMBEDDING_FIELD
from alldata.schema import F
from alldata.store import open_dataset

N = 24


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_dataset(name: str, *, logits: bool = True) -> fo.Dataset:
    """24 cells, 12 per split; cell 23 (test) is a near copy of cell 0 (train); group g0 (cells 1, 13) is in both
    splits (an exact leak); the predictions of cells 3 and 15 are confidently wrong."""
    rng = np.random.default_rng(0)
    ds = open_dataset(name)
    centres = _unit(rng.normal(size=(2, 8)))
    emb = _unit(centres[np.arange(N) % 2] + 0.5 * rng.normal(size=(N, 8)))
    emb[N - 1] = _unit(emb[0] + 1e-4)
    labels = ["lymphoblast" if i % 2 else "lymphocyte" for i in range(N)]
    samples = []
    for i in range(N):
        split = "train" if i < N // 2 else "test"
        group = "g0" if i in (1, 13) else f"c{i}"  # g0 is in train and test: an exact leak
        pred = labels[i] if i not in (3, 15) else ("lymphocyte" if labels[i] == "lymphoblast" else "lymphoblast")
        conf = 0.95 if i in (3, 15) else 0.6
        p = np.array([conf, 1 - conf]) if pred == "lymphocyte" else np.array([1 - conf, conf])
        samples.append(fo.Sample(
            filepath=f"/nonexistent/{i}.png", key=f"t/{i}", split=split, group_id=group, sha256=f"h{i}",
            cell_type=fo.Classification(label=labels[i]), embedding=emb[i],
            pred_cell_type_svm=fo.Classification(label=pred, confidence=float(conf), truth_field="cell_type",
                                                 logits=np.log(p) if logits else None),
        ))
    ds.add_samples(samples, progress=False)
    return ds


def test_run_brain_writes_fields_and_views(dataset_name):
    ds = make_dataset(dataset_name)
    r = run_brain(ds, leak_threshold=0.01)
    assert r.n_embedded == N
    for f in ("uniqueness", "representativeness", "mistakenness_pred_cell_type_svm", "hardness_pred_cell_type_svm"):
        assert r.fields[f] == N, r.skipped
        vals = ds.values(f)
        assert all(v is not None for v in vals)
    # the two confidently wrong predictions are the most likely label mistakes
    top2 = set(ds.load_saved_view("brain-mistaken-pred_cell_type_svm").limit(2).values(F.KEY))
    assert top2 == {"t/3", "t/15"}
    # the near copy across splits is a Brain leak; the shared group is alldata's exact leak
    near = set(ds.match({LEAK_NEAR: True}).values(F.KEY))
    assert near == {"t/0", "t/23"}
    exact = set(ds.load_saved_view("brain-leaks-exact").values(F.KEY))
    assert exact == {"t/1", "t/13"}
    assert "'g0' is in both" in r.exact_leak
    assert ds.values(LEAK_EXACT).count(True) == 2
    assert r.views["brain-unique"] == N and r.views["brain-leaks-near"] == 2
    assert ds.info["brain"]["fields"]["uniqueness"] == N


def test_hardness_is_skipped_without_logits(dataset_name):
    ds = make_dataset(dataset_name, logits=False)
    r = run_brain(ds, leak_threshold=0.01)
    assert "hardness_pred_cell_type_svm" not in r.fields
    assert "logits" in r.skipped["hardness_pred_cell_type_svm"]
    assert r.fields["mistakenness_pred_cell_type_svm"] == N


def test_exact_leaks_none_on_a_clean_split(dataset_name):
    ds = make_dataset(dataset_name)
    ds.match({F.GROUP_ID: "g0", F.SPLIT: "test"}).set_field(F.GROUP_ID, "c13").save()
    ids, message = exact_leaks(ds)
    assert ids == [] and message is None


def test_errors_name_the_fix(dataset_name):
    ds = make_dataset(dataset_name)
    with pytest.raises(BrainError, match="not pred_"):
        run_brain(ds, predictions=["pred_nope"])
    ds.set_field(EMBEDDING_FIELD, None).save()
    with pytest.raises(BrainError, match="alldata embed"):
        run_brain(ds)


def test_cli_brain(dataset_name):
    make_dataset(dataset_name)
    res = CliRunner().invoke(app, ["brain", dataset_name, "--leak-threshold", "0.01"])
    assert res.exit_code == 0, res.output
    assert "brain-unique" in res.output and "leak_exact" in res.output
    res = CliRunner().invoke(app, ["brain", dataset_name, "--predictions", "pred_nope"])
    assert res.exit_code == 1 and "not pred_" in res.output


def test_run_brain_twice_replaces_its_results(dataset_name):
    ds = make_dataset(dataset_name)
    run_brain(ds, leak_threshold=0.01)
    ds.match({F.KEY: "t/13"}).set_field(F.SPLIT, "train").save()  # the exact leak is fixed
    r = run_brain(ds, leak_threshold=0.01)
    assert r.exact_leak is None and ds.values(LEAK_EXACT).count(True) == 0 and r.views["brain-leaks-exact"] == 0
    assert r.fields["uniqueness"] == N


def test_benchmark_predictions_carry_logits_for_hardness(dataset_name):
    from alldata.benchmark.classification import ClassificationTask

    ds = make_dataset(dataset_name, logits=False)
    ids = ds.values("id")
    classes = ["lymphoblast", "lymphocyte"]  # the recipe's class order (proba dicts are built in it)
    rows = []
    for i, sid in enumerate(ids):
        p = [0.0, 1.0] if i == 0 else [0.2 + 0.6 * (i % 2), 0.8 - 0.6 * (i % 2)]
        rows.append({"id": sid, "true": classes[i % 2 == 0], "pred": classes[int(np.argmax(p))],
                     "proba": dict(zip(classes, p)), "truth_field": "cell_type"})
    ClassificationTask().write_predictions(ds.name, "pred_cell_type_bench", rows)
    logits = ds.values("pred_cell_type_bench.logits")
    assert ds.classes["pred_cell_type_bench"] == classes
    assert np.allclose(np.exp(logits[1]), [0.8, 0.2]) and np.allclose(logits[0], [np.log(1e-12), 0.0])  # zero clipped
    r = run_brain(ds, leak_threshold=0.01)
    assert r.fields["hardness_pred_cell_type_bench"] == N, r.skipped
    hard = dict(zip(ds.values("id"), ds.values("hardness_pred_cell_type_bench")))
    assert hard[ids[1]] > hard[ids[0]]  # a 0.8/0.2 call is harder than a certain one
