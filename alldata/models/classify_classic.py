"""Classical classifiers on hand-crafted features: SVM, random forest, k-NN (scikit-learn).

Each is a pipeline ``SimpleImputer(median) -> StandardScaler -> model`` (the imputer fills
the NaN that :func:`alldata.models.features.extract_features` leaves); randomness comes only
from ``seed`` and every model runs on one thread, so the same features, labels and seed give
the same model. Labels may be strings, integers or enums; ``classes_`` is their sorted
unique values and the columns of ``predict_proba`` follow it.

Saving without pickle: ``save(dir)`` writes ``config.json`` and ``training.safetensors``
(training features, label indices, training-set probabilities); ``load(dir)`` refits with
the same seed and checks that the probabilities come back (to 1e-6), else :class:`ModelError`.
Why refit rather than joblib or skops: docs/models.md#classical-classifiers.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from alldata.models.base import CLASSIFIERS, ModelError, read_saved_config

__all__ = ["CONFIG_NAME", "DATA_NAME", "FORMAT", "KNN", "SVM", "RandomForest", "load_classifier"]

CONFIG_NAME = "config.json"
DATA_NAME = "training.safetensors"
#: Written into every config; ``load`` refuses any other value.
FORMAT = "alldata.models.classify_classic/refit-v1"


def _as_features(features: Any, n_features: int | None = None) -> np.ndarray:
    try:
        X = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ModelError(f"features must be a numeric 2-D array ({e})") from None
    if X.ndim != 2 or X.shape[0] == 0:
        raise ModelError(f"features must be a non-empty 2-D array (samples, features); got shape {X.shape}")
    if np.isinf(X).any():
        raise ModelError("features contain +/-inf; only NaN (a missing feature) is allowed")
    if n_features is not None and X.shape[1] != n_features:
        raise ModelError(f"features have {X.shape[1]} columns but the model was fitted on {n_features}")
    return X


def _as_labels(labels: Any) -> np.ndarray:
    values = [v.value if isinstance(v, Enum) else v for v in labels]
    y = np.asarray(values)
    if y.dtype.kind not in "iuU":
        raise ModelError(f"labels must be strings or integers, got {y.dtype} (e.g. {values[:1]!r})")
    return y


class _SklearnClassifier:
    """The shared fit / predict / save / load of the classical classifiers."""

    name: ClassVar[str]
    input_kind: ClassVar[str] = "features"
    #: The model's parameters and their defaults (anything else is refused).
    defaults: ClassVar[dict[str, Any]]

    def __init__(self, *, seed: int = 0, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ModelError(
                f"{self.name}: unknown parameter(s) {unknown}; allowed: seed, {', '.join(sorted(self.defaults))}"
            )
        self.seed = int(seed)
        self.params: dict[str, Any] = {**self.defaults, **params}
        self.pipeline_ = None
        self.classes_: np.ndarray | None = None
        self.feature_names_: list[str] | None = None
        self.n_features_in_: int | None = None
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"seed": self.seed, **self.params}.items())
        return f"{type(self).__name__}({args})"

    def _model(self, class_counts: np.ndarray):  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def _pipeline(self, class_counts: np.ndarray):
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler

        return Pipeline(
            [
                ("impute", SimpleImputer(strategy="median", keep_empty_features=False)),
                ("scale", StandardScaler()),
                ("model", self._model(class_counts)),
            ]
        )

    def _check_fit_args(self, X: np.ndarray, classes: np.ndarray) -> None:
        """Subclasses add checks that need the data (e.g. k-NN's neighbour count)."""

    # --- the API ----------------------------------------------------------------------
    def fit(self, features: Any, labels: Any, feature_names: list[str] | None = None) -> _SklearnClassifier:
        """Fit on ``features`` (samples x features, NaN allowed) and ``labels``; returns ``self``."""
        from threadpoolctl import threadpool_limits

        X = _as_features(features)
        y = _as_labels(labels)
        if len(y) != len(X):
            raise ModelError(f"{len(X)} feature rows but {len(y)} labels")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ModelError(f"need at least two classes to fit, got only {classes.tolist()}")
        if feature_names is not None and len(feature_names) != X.shape[1]:
            raise ModelError(f"{len(feature_names)} feature names for {X.shape[1]} feature columns")
        self._check_fit_args(X, classes)
        y_idx = np.searchsorted(classes, y).astype(np.int64)
        pipeline = self._pipeline(np.bincount(y_idx))
        with threadpool_limits(1):
            pipeline.fit(X, y_idx)
        self.pipeline_, self.classes_ = pipeline, classes
        self.feature_names_ = list(feature_names) if feature_names is not None else None
        self.n_features_in_ = int(X.shape[1])
        self._train = (X.copy(), y_idx)
        return self

    def _fitted(self):
        if self.pipeline_ is None:
            raise ModelError(f"{self.name} is not fitted yet; call fit(features, labels) or load(dir) first")
        return self.pipeline_

    def predict(self, features: Any) -> np.ndarray:
        """The predicted label of each row (values from ``classes_``)."""
        pipeline = self._fitted()
        X = _as_features(features, self.n_features_in_)
        return self.classes_[pipeline.predict(X)]

    def predict_proba(self, features: Any) -> np.ndarray:
        """Class probabilities, shape (samples, classes), columns in ``classes_`` order."""
        pipeline = self._fitted()
        X = _as_features(features, self.n_features_in_)
        return pipeline.predict_proba(X)

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``training.safetensors`` into ``directory``; returns it."""
        from safetensors.numpy import save_file
        from sklearn import __version__ as sklearn_version

        from alldata import __version__ as alldata_version

        self._fitted()
        X, y_idx = self._train
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = {
            "format": FORMAT,
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "classes": [c.item() for c in self.classes_],
            "feature_names": self.feature_names_,
            "n_features": int(X.shape[1]),
            "sklearn_version": sklearn_version,
            "alldata_version": alldata_version,
        }
        try:
            text = json.dumps(config, indent=2)
        except TypeError as e:
            raise ModelError(f"{self.name}: parameters {self.params!r} cannot be written as JSON ({e})") from None
        tensors = {
            "features": np.ascontiguousarray(X),
            "labels": np.ascontiguousarray(y_idx),
            "check_proba": np.ascontiguousarray(self.predict_proba(X)),
        }
        save_file(tensors, str(out / DATA_NAME))
        (out / CONFIG_NAME).write_text(text + "\n", encoding="utf-8")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> _SklearnClassifier:
        """Refit the classifier saved in ``directory`` and check it matches (see the module doc)."""
        config, tensors = _read(directory)
        if config["name"] != cls.name:
            raise ModelError(
                f"{directory} holds a {config['name']!r} classifier, not {cls.name!r}; use load_classifier(dir)"
            )
        return cls._from_saved(directory, config, tensors)

    @classmethod
    def _from_saved(cls, directory: str | Path, config: dict, tensors: dict) -> _SklearnClassifier:
        obj = cls(seed=config["seed"], **config["params"])
        classes = np.asarray(config["classes"])
        labels = tensors["labels"]
        if labels.size and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ModelError(f"{directory}: label indices do not fit the {len(classes)} classes in {CONFIG_NAME}")
        obj.fit(tensors["features"], classes[labels], feature_names=config.get("feature_names"))
        if not np.array_equal(obj.classes_, classes):
            raise ModelError(f"{directory}: refitted classes {obj.classes_.tolist()} != saved {classes.tolist()}")
        proba = obj.predict_proba(tensors["features"])
        if proba.shape != tensors["check_proba"].shape or not np.allclose(proba, tensors["check_proba"], atol=1e-6):
            raise ModelError(
                f"{directory}: the refitted {cls.name} does not reproduce the saved probabilities "
                f"(saved with scikit-learn {config.get('sklearn_version')}); refit it from your features"
            )
        return obj


def _read(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    config = read_saved_config(directory, CONFIG_NAME, DATA_NAME, FORMAT, "classifier")
    cfg, data = Path(directory) / CONFIG_NAME, Path(directory) / DATA_NAME
    missing = {"name", "seed", "params", "classes"} - set(config)
    if missing:
        raise ModelError(f"{cfg}: missing keys {sorted(missing)}")
    try:
        tensors = load_file(str(data))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ModelError(f"{data}: cannot read ({e})") from None
    if {"features", "labels", "check_proba"} - set(tensors):
        raise ModelError(f"{data}: needs the tensors features, labels and check_proba")
    return config, tensors


def load_classifier(directory: str | Path) -> _SklearnClassifier:
    """Load whichever registered classifier ``directory`` holds (named in its config.json).

    Examples:
        >>> import numpy as np, tempfile
        >>> X = np.r_[np.zeros((5, 2)), np.ones((5, 2))]
        >>> clf = KNN(n_neighbors=3).fit(X, ["a"] * 5 + ["b"] * 5)
        >>> d = clf.save(tempfile.mkdtemp())
        >>> load_classifier(d).predict([[0.9, 1.0]]).tolist()
        ['b']
    """
    config, tensors = _read(directory)
    return CLASSIFIERS.get(config["name"])._from_saved(directory, config, tensors)


# --- the three models ---------------------------------------------------------------------
@CLASSIFIERS.register("svm")
class SVM(_SklearnClassifier):
    """Support-vector machine, RBF kernel, ``class_weight="balanced"`` (sklearn ``SVC``).

    Probabilities come from Platt (sigmoid) scaling fitted on out-of-fold decision values:
    ``CalibratedClassifierCV(SVC(...), method="sigmoid", ensemble=False)`` with a
    stratified k-fold (k = 5, or the size of the smallest class if smaller; shuffled with
    ``seed``), the form scikit-learn recommends since ``SVC(probability=True)`` was
    deprecated in 1.9. The SVM itself is fitted on all the data; ``predict`` is the argmax
    of ``predict_proba``. Every class needs at least two training samples.

    Examples:
        >>> import numpy as np
        >>> X = np.r_[np.zeros((10, 2)), np.ones((10, 2))]
        >>> SVM(seed=0).fit(X, [0] * 10 + [1] * 10).predict([[1.0, 0.9]]).tolist()
        [1]
    """

    name = "svm"
    defaults = {"C": 1.0, "kernel": "rbf", "gamma": "scale", "class_weight": "balanced"}

    def _model(self, class_counts: np.ndarray):
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.model_selection import StratifiedKFold
        from sklearn.svm import SVC

        folds = int(min(5, class_counts.min()))
        if folds < 2:
            raise ModelError(
                f"svm: every class needs at least 2 training samples for calibration; counts {class_counts.tolist()}"
            )
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        return CalibratedClassifierCV(SVC(**self.params), method="sigmoid", cv=cv, ensemble=False)


@CLASSIFIERS.register("random_forest")
class RandomForest(_SklearnClassifier):
    """Random forest (sklearn ``RandomForestClassifier``), ``class_weight="balanced"``, one job.

    Examples:
        >>> import numpy as np
        >>> X = np.r_[np.zeros((10, 2)), np.ones((10, 2))]
        >>> RandomForest(seed=0, n_estimators=10).fit(X, ["a"] * 10 + ["b"] * 10).predict([[1, 1]]).tolist()
        ['b']
    """

    name = "random_forest"
    defaults = {"n_estimators": 300, "max_depth": None, "min_samples_leaf": 1, "class_weight": "balanced"}

    def _model(self, class_counts: np.ndarray):
        from sklearn.ensemble import RandomForestClassifier

        return RandomForestClassifier(random_state=self.seed, n_jobs=1, **self.params)


@CLASSIFIERS.register("knn")
class KNN(_SklearnClassifier):
    """k-nearest neighbours on standardised features (sklearn ``KNeighborsClassifier``).

    Deterministic without a seed (``seed`` is accepted and saved, for a uniform API).

    Examples:
        >>> import numpy as np
        >>> X = np.r_[np.zeros((10, 2)), np.ones((10, 2))]
        >>> KNN(n_neighbors=3).fit(X, ["a"] * 10 + ["b"] * 10).predict([[0.1, 0]]).tolist()
        ['a']
    """

    name = "knn"
    defaults = {"n_neighbors": 5, "weights": "uniform", "metric": "minkowski", "p": 2}

    def _model(self, class_counts: np.ndarray):
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_jobs=1, **self.params)

    def _check_fit_args(self, X: np.ndarray, classes: np.ndarray) -> None:
        k = self.params["n_neighbors"]
        if k > len(X):
            raise ModelError(f"knn: n_neighbors={k} is more than the {len(X)} training samples")
