"""Classical classifiers: separate two clusters, determinism, NaN rows, pickle-free save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from alldata.models import CLASSIFIERS, ModelError, get_classifier, load_classifier
from alldata.models.classify_classic import CONFIG_NAME, DATA_NAME, FORMAT, KNN, SVM, RandomForest
from alldata.schema import Diagnosis

NAMES = [n for n in CLASSIFIERS.names() if CLASSIFIERS.get(n).input_kind == "features"]
FAST = {"random_forest": {"n_estimators": 60}}  # fewer trees: same behaviour, quicker tests


def _clusters(n: int = 80, d: int = 6, gap: float = 4.0, seed: int = 0):
    """Two Gaussian clusters (unit variance) ``gap`` apart along every axis; labels 'ALL' / 'healthy'."""
    rng = np.random.default_rng(seed)
    X = np.r_[rng.normal(0.0, 1.0, (n, d)), rng.normal(gap / np.sqrt(d), 1.0, (n, d))]
    X[:, 0] *= 1000.0  # wildly different scales: the StandardScaler must handle them
    y = np.array(["ALL"] * n + ["healthy"] * n)
    return X, y


def _make(name: str, seed: int = 0):
    return get_classifier(name, seed=seed, **FAST.get(name, {}))


@pytest.mark.parametrize("name", NAMES)
def test_separates_two_clusters(name):
    X, y = _clusters(seed=0)
    Xt, yt = _clusters(seed=1)
    clf = _make(name).fit(X, y)
    pred = clf.predict(Xt)
    assert (pred == yt).mean() > 0.9
    proba = clf.predict_proba(Xt)
    assert proba.shape == (len(Xt), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert clf.classes_.tolist() == ["ALL", "healthy"]
    # the probability columns follow classes_
    assert (clf.classes_[proba.argmax(axis=1)] == yt).mean() > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_the_seed(name):
    X, y = _clusters(gap=1.5)  # overlapping, so the model has choices to make
    a = _make(name, seed=7).fit(X, y).predict_proba(X)
    b = _make(name, seed=7).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("name", ["svm", "random_forest"])
def test_the_seed_is_used(name):
    X, y = _clusters(gap=1.5)
    a = _make(name, seed=0).fit(X, y).predict_proba(X)
    b = _make(name, seed=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.filterwarnings("ignore:Skipping features without any observed values")
def test_nan_features_are_imputed(name):
    X, y = _clusters()
    Xt, yt = _clusters(seed=1)
    X[::7, 2] = np.nan  # as extract_features leaves where a segmentation failed
    X[:, 5] = np.nan  # a column that is never defined
    Xt[::5, 3] = np.nan
    clf = _make(name).fit(X, y)
    assert (clf.predict(Xt) == yt).mean() > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_without_pickle(name, tmp_path):
    X, y = _clusters(gap=2.0)
    names = [f"f{i}" for i in range(X.shape[1])]
    clf = _make(name, seed=3).fit(X, y, feature_names=names)
    out = clf.save(tmp_path / name)
    assert sorted(p.name for p in out.iterdir()) == sorted([CONFIG_NAME, DATA_NAME])
    config = json.loads((out / CONFIG_NAME).read_text())
    assert config["format"] == FORMAT and config["name"] == name and config["seed"] == 3
    assert config["classes"] == ["ALL", "healthy"] and config["feature_names"] == names
    for loaded in (type(clf).load(out), load_classifier(out)):
        assert type(loaded) is type(clf) and loaded.params == clf.params
        np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
        assert loaded.feature_names_ == names


def test_load_detects_a_model_that_does_not_reproduce(tmp_path):
    X, y = _clusters()
    out = SVM(seed=0).fit(X, y).save(tmp_path / "svm")
    tensors = load_file(str(out / DATA_NAME))
    tensors["check_proba"] = np.ascontiguousarray(tensors["check_proba"][:, ::-1])
    save_file(tensors, str(out / DATA_NAME))
    with pytest.raises(ModelError, match="does not reproduce"):
        load_classifier(out)


def test_load_refuses_foreign_or_missing_files(tmp_path):
    X, y = _clusters()
    out = KNN().fit(X, y).save(tmp_path / "knn")
    with pytest.raises(ModelError, match="holds a 'knn' classifier, not 'svm'"):
        SVM.load(out)
    with pytest.raises(ModelError, match="is not a saved classifier"):
        load_classifier(tmp_path / "nothing")
    config = json.loads((out / CONFIG_NAME).read_text())
    config["format"] = "pickle"
    (out / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ModelError, match="format 'pickle'"):
        load_classifier(out)


def test_integer_and_enum_labels():
    X, _ = _clusters()
    y_int = np.array([0] * 80 + [1] * 80)
    assert KNN().fit(X, y_int).predict(X[:1]).tolist() == [0]
    y_enum = [Diagnosis.ALL] * 80 + [Diagnosis.healthy] * 80
    clf = RandomForest(n_estimators=20).fit(X, y_enum)
    assert clf.classes_.tolist() == ["ALL", "healthy"]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: SVM(gamma_typo=1), r"unknown parameter\(s\) \['gamma_typo'\]"),
        (lambda: SVM().fit(np.ones((4, 2)), ["a"] * 4), "at least two classes"),
        (lambda: SVM().fit(np.ones((4, 2)), ["a", "a", "a", "b"]), "at least 2 training samples"),
        (lambda: SVM().fit(np.ones((4, 2)), ["a", "b"]), "4 feature rows but 2 labels"),
        (lambda: SVM().fit(np.ones(4), ["a", "b"] * 2), "2-D"),
        (lambda: SVM().fit(np.full((4, 2), np.inf), ["a", "b"] * 2), "inf"),
        (lambda: SVM().fit(np.ones((4, 2)), [1.5, 2.5] * 2), "strings or integers"),
        (lambda: KNN(n_neighbors=9).fit(np.ones((4, 2)), ["a", "b"] * 2), "n_neighbors=9"),
        (lambda: KNN().predict(np.ones((1, 2))), "not fitted"),
        (lambda: KNN(n_neighbors=1).fit(np.eye(2), ["a", "b"]).predict(np.ones((1, 3))), "3 columns"),
    ],
)
def test_bad_calls_are_refused(call, match):
    with pytest.raises(ModelError, match=match):
        call()
