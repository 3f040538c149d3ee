"""The classification task: train a registered classifier on one arm's training set.

Arms (:func:`alldata.recipes.arm_kinds` ``("classification")``): ``real`` (rare class cut),
``oracle`` (no cut), ``oversample``, ``augment`` (albumentations copies) and any trainable
generator family, trained on the fold's training cells only, fine-tuned on the kept rare
cells and sampled by :func:`alldata.generate.run_generator_job` (cached per (arm, fold,
seed); samples added to the dataset with provenance and ``recipe``). Every filling arm adds
the same number of samples (:func:`fill_counts`: the rare class up to the largest other
class, capped by ``mix.max_synthetic_ratio``). Classic models see
:func:`alldata.models.extract_features`; CNNs see the image.

Each arm in detail: docs/benchmark.md#classification-task.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from alldata.benchmark.tasks import TASKS, CellContext, CellResult
from alldata.errors import AlldataError
from alldata.recipes import Recipe, arm_kinds, is_generator_kind
from alldata.schema import F

__all__ = ["ClassificationTask", "fill_counts"]


def fill_counts(train_labels: list[str], recipe: Recipe) -> dict[str, int]:
    """How many samples a filling arm adds per class (see the module docstring).

    Examples:
        >>> from alldata.recipes import Recipe
        >>> r = Recipe.model_validate({"name": "x", "task": "classification", "baseline": "real",
        ...     "data": {"sources": ["s"], "label_field": "diagnosis", "classes": ["ALL", "healthy"]},
        ...     "rare": {"class": "ALL", "keep_fraction": 0.1}, "arms": [{"name": "real", "kind": "real"}],
        ...     "models": [{"name": "knn"}], "metrics": ["accuracy"], "primary_metric": "accuracy"})
        >>> fill_counts(["ALL"] * 2 + ["healthy"] * 10, r)
        {'ALL': 8}
    """
    counts: dict[str, int] = {}
    for lab in train_labels:
        counts[lab] = counts.get(lab, 0) + 1
    n = len(train_labels)
    ratio = recipe.mix.max_synthetic_ratio
    cap = math.floor(ratio / (1 - ratio) * n + 1e-9)
    if recipe.rare is not None:
        rare = recipe.rare.class_
        others = [v for k, v in counts.items() if k != rare]
        need = max(0, (max(others) if others else 0) - counts.get(rare, 0))
        return {rare: min(need, cap)}
    share = ratio / (1 - ratio)
    return {k: math.floor(v * share + 1e-9) for k, v in sorted(counts.items())}


def _load_image(path: str, size: int) -> np.ndarray:
    from PIL import Image

    from alldata.generators.data import square_resize

    try:
        with Image.open(path) as img:
            return square_resize(img, size)
    except OSError as e:
        raise AlldataError(f"cannot read image {path} ({e}); re-ingest it or tag the sample 'reject'") from None


class ClassificationTask:
    """The ``classification`` benchmark task (one instance serves a whole run; it caches
    images and features by sample id)."""

    name = "classification"

    @property
    def arm_kinds(self) -> frozenset[str]:
        """Its own arm kinds plus every trainable generator family registered now."""
        return arm_kinds("classification")

    def __init__(self) -> None:
        self._images: dict[tuple[str, int], np.ndarray] = {}
        self._features: dict[tuple[str, int], np.ndarray] = {}
        self._paths: dict[str, str] = {}

    # --- data -----------------------------------------------------------------------------------------

    def _filepaths(self, dataset: str, ids: list[str]) -> list[str]:
        missing = [i for i in ids if i not in self._paths]
        if missing:
            from alldata.store import load_dataset

            ds = load_dataset(dataset)
            got_ids, paths = ds.select(missing).values(["id", "filepath"])
            self._paths.update(zip(got_ids, paths))
        return [self._paths[i] for i in ids]

    def images(self, dataset: str, ids: list[str], size: int) -> list[np.ndarray]:
        """The samples' images, squared and resized to ``size`` (cached)."""
        paths = self._filepaths(dataset, ids)
        out = []
        for i, p in zip(ids, paths):
            if (i, size) not in self._images:
                self._images[(i, size)] = _load_image(p, size)
            out.append(self._images[(i, size)])
        return out

    def features(self, dataset: str, ids: list[str], size: int) -> np.ndarray:
        """Hand-crafted features of the samples' images (cached)."""
        from alldata.models import extract_features

        todo = [i for i in ids if (i, size) not in self._features]
        if todo:
            X, _ = extract_features(self.images(dataset, todo, size))
            for i, row in zip(todo, X):
                self._features[(i, size)] = row
        return np.stack([self._features[(i, size)] for i in ids])

    # --- arms -----------------------------------------------------------------------------------------

    def _extra(self, ctx: CellContext, kind: str, params: dict[str, Any], size: int) -> tuple[list, list[str], list[str], dict]:
        """Images (or sample ids) the arm adds: (in-memory images, their labels, synthetic ids, info)."""
        if kind in ("real", "oracle"):
            return [], [], [], {}
        recipe, cell = ctx.recipe, ctx.cell
        train_labels = [ctx.labels[i] for i in ctx.train_ids]
        need = {k: v for k, v in fill_counts(train_labels, recipe).items() if v > 0}
        if not need:
            return [], [], [], {"fill": {}}
        seed = 1000 * cell.seed + cell.fold
        images: list[np.ndarray] = []
        labels: list[str] = []
        if kind in ("oversample", "augment"):
            for cls, n in need.items():
                src_ids = ctx.rare_kept if recipe.rare is not None else [i for i in ctx.train_ids if ctx.labels[i] == cls]
                if not src_ids:
                    continue
                src = self.images(ctx.dataset, src_ids, size)
                if kind == "oversample":
                    images += [src[j % len(src)] for j in range(n)]
                else:
                    from alldata.models.augment import augment_images

                    images += list(augment_images(np.stack(src), n, seed=seed, image_size=size,
                                                  **({"strength": params["strength"]} if "strength" in params else {})))
                labels += [cls] * n
            return images, labels, [], {"fill": need}
        if is_generator_kind(kind):
            syn_ids, info = _synthesise(ctx, kind, params, need, seed)
            return [], [], syn_ids, {"fill": need, **info}
        raise AlldataError(f"arm kind {kind!r} is not a classification arm; allowed: {sorted(self.arm_kinds)}")

    # --- the contract -----------------------------------------------------------------------------------

    def run(self, ctx: CellContext) -> CellResult:
        """Train the cell's model on its arm's training set and predict the test samples."""
        from alldata.models import CLASSIFIERS

        t0 = time.time()
        recipe, cell = ctx.recipe, ctx.cell
        arm = recipe.arm(cell.arm)
        spec = next(m for m in recipe.models if m.name == cell.model)
        size = recipe.data.image_size
        extra_images, extra_labels, syn_ids, info = self._extra(ctx, arm.kind, dict(arm.params), size)
        syn_labels = [ctx.labels[i] for i in syn_ids]  # set by _synthesise
        y_train = [ctx.labels[i] for i in ctx.train_ids] + extra_labels + syn_labels
        cls = CLASSIFIERS.get(cell.model)
        kind = getattr(cls, "input_kind", "features")
        if kind == "image":
            clf = cls(seed=cell.seed, image_size=size, progress=False, **spec.params)
            X_train = (self.images(ctx.dataset, ctx.train_ids, size) + list(extra_images)
                       + self.images(ctx.dataset, syn_ids, size))
            X_test = self.images(ctx.dataset, ctx.test_ids, size)
        else:
            from alldata.models import extract_features

            clf = cls(seed=cell.seed, **spec.params)
            parts = [self.features(ctx.dataset, ctx.train_ids, size)]
            if extra_images:
                parts.append(extract_features(extra_images)[0])
            if syn_ids:
                parts.append(self.features(ctx.dataset, syn_ids, size))
            X_train = np.concatenate(parts)
            X_test = self.features(ctx.dataset, ctx.test_ids, size)
        clf.fit(X_train, y_train)
        proba = np.asarray(clf.predict_proba(X_test), dtype=float)
        fitted = [str(c) for c in clf.classes_]
        classes = recipe.data.class_names() or sorted(set(ctx.labels.values()))
        col = {c: j for j, c in enumerate(fitted)}
        rows = []
        for n, sid in enumerate(ctx.test_ids):
            p = {c: float(proba[n, col[c]]) if c in col else 0.0 for c in classes}
            rows.append({"id": sid, "group": ctx.groups[sid], "true": ctx.labels[sid],
                         "pred": max(p, key=lambda c: (p[c], -classes.index(c))), "proba": p,
                         "truth_field": recipe.data.label_field})
        info.update(n_train=len(y_train), n_real=len(ctx.train_ids), n_synthetic=len(extra_labels) + len(syn_ids),
                    n_rare_kept=len(ctx.rare_kept), input_kind=kind, seconds=round(time.time() - t0, 2))
        return CellResult(rows=rows, metrics=self.score(rows), info=info)

    def score(self, rows: list[dict]) -> dict[str, float]:
        """Accuracy, balanced accuracy, macro/weighted F1, macro AUC and per-class metrics
        (``sensitivity:<class>``, ``specificity:``, ``precision:``, ``f1:``, ``auc:``)."""
        from alldata.metrics import classification_metrics

        if not rows:
            return {}
        labels = sorted(set(rows[0]["proba"]) | {r["true"] for r in rows} | {r["pred"] for r in rows})
        scores = np.array([[r["proba"].get(c, 0.0) for c in labels] for r in rows])
        rep = classification_metrics([r["true"] for r in rows], [r["pred"] for r in rows], labels=labels, scores=scores)
        out = {"accuracy": rep.accuracy, "balanced_accuracy": rep.balanced_accuracy, "macro_f1": rep.macro["f1"],
               "weighted_f1": rep.weighted["f1"], "macro_auc": rep.macro.get("auc", math.nan)}
        for c in labels:
            for m in ("sensitivity", "specificity", "precision", "f1", "auc"):
                out[f"{m}:{c}"] = float(rep.per_class[c].get(m, math.nan))
        return {k: float(v) for k, v in out.items()}

    def write_predictions(self, dataset: str, field: str, rows: list[dict]) -> None:
        """Write ``fo.Classification(label=pred, confidence)`` with ``truth_field`` / ``truth``
        attributes to ``field`` of the rows' samples (the field is cleared first)."""
        import fiftyone as fo

        from alldata.store import load_dataset

        ds = load_dataset(dataset)
        if ds.has_sample_field(field):
            ds.clear_sample_field(field)
        if not rows:
            return
        values = {}
        for r in rows:
            values[r["id"]] = fo.Classification(
                label=r["pred"], confidence=float(max(r["proba"].values())) if r["proba"] else None,
                truth_field=r.get("truth_field"), truth=r["true"], correct=r["pred"] == r["true"],
            )
        ds.set_values(field, values, key_field="id")

    def plots(self, rows_by_arm: dict[str, list[dict]], out_dir: Path, model: str, focus: str | None) -> list[Path]:
        """ROC curves (of ``focus``, else of each class) across arms and a confusion matrix per arm."""
        from alldata.benchmark.plots import plot_confusion, plot_roc
        from alldata.metrics import auc as area
        from alldata.metrics import confusion_matrix, roc_curve

        paths: list[Path] = []
        any_rows = next((r for r in rows_by_arm.values() if r), None)
        if not any_rows:
            return paths
        labels = sorted(any_rows[0]["proba"])
        for c in [focus] if focus else labels:
            curves = {}
            for arm, rows in rows_by_arm.items():
                y = [r["true"] for r in rows]
                if c not in y or len(set(y)) < 2:
                    continue
                fpr, tpr, _ = roc_curve(y, [r["proba"].get(c, 0.0) for r in rows], pos_label=c)
                curves[arm] = (fpr, tpr, area(fpr, tpr))
            if curves:
                paths.append(plot_roc(curves, out_dir / f"roc_{model}_{c}.png", title=f"ROC, {c} vs rest ({model})"))
        for arm, rows in rows_by_arm.items():
            cm = confusion_matrix([r["true"] for r in rows], [r["pred"] for r in rows], labels)
            paths.append(plot_confusion(cm, labels, out_dir / f"confusion_{model}_{arm}.png", normalize=True,
                                        title=f"{arm} ({model})"))
        return paths


TASKS.register("classification")(ClassificationTask)


# --- generator arms -----------------------------------------------------------------------------------------


def _cells_for(ctx: CellContext, ids: list[str], size: int):
    """A :class:`CellSet` of ``ids`` conditioned on the recipe's (mapped) class labels."""
    from alldata.generators.data import load_cells
    from alldata.store import load_dataset

    view = load_dataset(ctx.dataset).select(ids)
    key_to_id = dict(zip(*view.values([F.KEY, "id"])))
    cells = load_cells(view, size, label_fields=[ctx.recipe.data.label_field], progress=ctx.progress)
    cells.labels = {ctx.recipe.data.label_field: [ctx.labels[key_to_id[k]] for k in cells.keys]}
    return cells


def _synthesise(ctx: CellContext, kind: str, params: dict[str, Any], need: dict[str, int], seed: int) -> tuple[list[str], dict]:
    """Train (or reuse) the arm's generator on the fold's train cells, fine-tune it on the kept
    rare cells, and add ``need`` samples per class to the dataset; returns their sample ids."""
    from alldata.generate import run_generator_job, trainable_family
    from alldata.store import load_dataset

    recipe = ctx.recipe
    shared = ctx.shared_dir or ctx.work_dir
    # the cache is valid only for these settings and this training set (the shared dir is keyed by
    # arm name, fold and seed; an arm whose params changed must not reuse an old generator)
    size = trainable_family(kind).arm_settings(params, recipe.data.image_size)["image_size"]
    spec = {"kind": kind, "params": params, "image_size": size, "train_ids": sorted(ctx.train_ids),
            "rare_kept": sorted(ctx.rare_kept)}
    spec_sha = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    few = ctx.rare_kept if recipe.rare is not None and ctx.rare_kept else None
    job = run_generator_job(
        kind, params, ctx.dataset, shared, train_cells=lambda s: _cells_for(ctx, ctx.train_ids, s),
        finetune_cells=(lambda s: _cells_for(ctx, few, s)) if few else None,
        requests=[({recipe.data.label_field: cls}, n) for cls, n in need.items()],  # label values: checked by the recipe
        image_size=recipe.data.image_size, seed=seed, recipe=recipe.name, cache_key=spec_sha, progress=ctx.progress,
    )
    ds = load_dataset(ctx.dataset)
    ids: list[str] = []
    for cls, keys in zip(need, job.keys):
        key_to_id = dict(zip(*ds.match({F.KEY: {"$in": keys}}).values([F.KEY, "id"])))
        new = [key_to_id[k] for k in keys]
        for sid in new:
            ctx.labels[sid] = cls
        ids += new
    return ids, {"generator": kind, "checkpoint_sha256": job.checkpoint_sha256, "generator_train_seconds": job.train_seconds,
                 "generate_seconds": job.generate_seconds, "generator_image_size": job.image_size}
