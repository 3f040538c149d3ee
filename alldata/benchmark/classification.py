"""The classification task: train a registered classifier on one arm's training set.

Arms (:func:`alldata.recipes.arm_kinds` ``("classification")``): ``real`` (rare class cut),
``oracle`` (no cut), ``oversample``, ``augment`` (albumentations copies) and any trainable
generator family, trained on the fold's training cells only, fine-tuned on the kept rare
cells and sampled by :func:`alldata.generate.run_generator_job` (cached per (arm, fold,
seed); samples added, with provenance and ``recipe``, to the run-scoped dataset
``<dataset>-bench-<recipe>``, never the user's). Every filling arm adds the same number of
samples (:func:`fill_counts`: the rare class up to the largest other class, capped by
``mix.max_synthetic_ratio``). Classic models see :func:`alldata.models.extract_features`;
CNNs see the image. Arm params ``stain`` / ``hed_jitter`` / ``rbc_px`` harmonise stain and
scale (:class:`Stain`, :class:`Scale`).

Each arm in detail: docs/benchmark.md#classification-task.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alldata.benchmark.tasks import TASKS, CellContext, CellResult
from alldata.errors import AlldataError
from alldata.recipes import Recipe, arm_kinds, is_generator_kind
from alldata.schema import F

__all__ = ["ClassificationTask", "Scale", "Stain", "fast_scores", "fill_counts"]


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


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.shape(den), np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _mean(values: np.ndarray, weights: np.ndarray | None = None) -> float:
    ok = ~np.isnan(values)
    if weights is None:
        return float(values[ok].mean()) if ok.any() else math.nan
    w = weights[ok]
    return float(np.dot(values[ok], w) / w.sum()) if w.sum() > 0 else math.nan


def fast_scores(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray, labels: list[str]) -> dict[str, float]:
    """The classification task's metrics from class codes and ``(N, C)`` scores, in numpy.

    Same values as :func:`alldata.metrics.classification_metrics` (one-vs-rest counts; NaN on
    zero division; F1 = 2TP / (2TP + FP + FN); AUC = the Mann-Whitney statistic with ties
    counted one half, the area under the tied ROC curve; macro = mean of the defined
    classes, weighted by support) — ``tests/test_external.py`` checks them against it.
    """
    from scipy.stats import rankdata

    k, n = len(labels), len(y_true)
    if not np.isfinite(scores).all():
        raise AlldataError("scores hold NaN or infinite values; pass finite scores (probabilities or logits)")
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k).astype(float)
    tp = np.diag(cm)
    fp, fn = cm.sum(axis=0) - tp, cm.sum(axis=1) - tp
    tn = n - tp - fp - fn
    support = tp + fn
    values = {"sensitivity": _div(tp, tp + fn), "specificity": _div(tn, tn + fp), "precision": _div(tp, tp + fp),
              "f1": _div(2 * tp, 2 * tp + fp + fn)}
    aucs = np.full(k, np.nan)
    for j in range(k):
        pos = y_true == j
        n_pos = int(pos.sum())
        if 0 < n_pos < n:
            ranks = rankdata(scores[:, j])
            aucs[j] = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos))
    values["auc"] = aucs
    out = {"accuracy": float(tp.sum() / n), "balanced_accuracy": _mean(values["sensitivity"]),
           "macro_f1": _mean(values["f1"]), "weighted_f1": _mean(values["f1"], support), "macro_auc": _mean(aucs)}
    for j, c in enumerate(labels):
        for m in ("sensitivity", "specificity", "precision", "f1", "auc"):
            out[f"{m}:{c}"] = float(values[m][j])
    return out


def centre_square(image: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` x ``size`` of ``image``, without resizing; a side shorter than ``size`` is
    padded (evenly) with the image's per-channel median colour (the plasma background of a smear).

    Examples:
        >>> centre_square(np.zeros((10, 30, 3), np.uint8), 16).shape
        (16, 16, 3)
    """
    a = np.asarray(image)
    h, w = a.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    a = a[top:top + size, left:left + size]
    if a.shape[0] == size and a.shape[1] == size:
        return np.ascontiguousarray(a)
    fill = np.median(a.reshape(-1, a.shape[2]), axis=0).astype(a.dtype)
    out = np.empty((size, size, a.shape[2]), a.dtype)
    out[:] = fill
    y, x = (size - a.shape[0]) // 2, (size - a.shape[1]) // 2
    out[y:y + a.shape[0], x:x + a.shape[1]] = a
    return out


def _load_image(path: str, size: int, stain: Stain | None = None, sid: str = "",
                scale: tuple[Scale, str] | None = None) -> np.ndarray:
    """The image at ``path`` squared and resized to ``size``; stain-normalised first (at its own
    resolution) when ``stain`` is given: an image the normaliser cannot use stays as it is and
    is counted in ``stain.skipped``. With ``scale`` (the arm's :class:`Scale` and the image's
    source) the image is resampled so a red cell is ``scale.rbc_px`` pixels across and its centre
    ``size`` x ``size`` is kept (:func:`centre_square`; no resize: every source ends at one scale)."""
    from PIL import Image

    from alldata.generators.data import square_resize

    try:
        with Image.open(path) as img:
            if stain is None and scale is None:
                return square_resize(img, size)
            native = np.asarray(img.convert("RGB"))
    except OSError as e:
        raise AlldataError(f"cannot read image {path} ({e}); re-ingest it or tag the sample 'reject'") from None
    from alldata.models.stain import StainError, resample_to_rbc

    if stain is not None:
        try:
            native = stain.fn(native, name=path)
        except StainError:
            stain.skipped.add(sid or path)
    if scale is None:
        return square_resize(Image.fromarray(native), size)
    sc, source = scale
    return centre_square(resample_to_rbc(native, sc.source_px(source, path), rbc_px=sc.rbc_px), size)


@dataclass
class Scale:
    """An arm's scale harmonisation (arm param ``rbc_px``): every image is resampled from its
    source's red-cell diameter (:data:`alldata.generators.overlap.RBC_PX`, overridden per source by
    the arm param ``source_rbc_px``) to ``rbc_px`` pixels, then centre-cropped to the image size."""

    rbc_px: float
    sources: dict[str, float]

    @classmethod
    def from_params(cls, params: dict[str, Any], where: str) -> Scale | None:
        """The arm's scale, or None when its params have no ``rbc_px``."""
        if params.get("rbc_px") is None:
            if params.get("source_rbc_px") is not None:
                raise AlldataError(f"{where}: source_rbc_px needs rbc_px (the common red-cell diameter, e.g. 16)")
            return None
        from alldata.generators.overlap import RBC_PX as SOURCE_RBC

        try:
            rbc = float(params["rbc_px"])
            table = {**SOURCE_RBC, **{str(k): float(v) for k, v in dict(params.get("source_rbc_px") or {}).items()}}
        except (TypeError, ValueError):
            raise AlldataError(f"{where}: rbc_px must be a number of pixels (e.g. 16) and source_rbc_px a mapping "
                               f"{{source: pixels}}, got {params.get('rbc_px')!r} / {params.get('source_rbc_px')!r}") from None
        bad = {k: v for k, v in {"rbc_px": rbc, **table}.items() if not v > 0}
        if bad:
            raise AlldataError(f"{where}: red-cell diameters must be > 0 pixels, got {bad}")
        return cls(rbc, table)

    def source_px(self, source: str, name: str = "") -> float:
        """The red-cell diameter of ``source``'s images, in their pixels."""
        if source not in self.sources:
            raise AlldataError(
                f"scale harmonisation (rbc_px: {self.rbc_px:g}): no red-cell diameter known for source {source!r}"
                f"{f' ({name})' if name else ''}; known: {sorted(self.sources)}; add it to the arm's params as "
                f"source_rbc_px: {{{source}: <pixels>}} or leave the source out")
        return self.sources[source]

    @property
    def tag(self) -> str:
        """A short hash of the setting (part of the image cache key)."""
        text = json.dumps({"rbc_px": self.rbc_px, "sources": self.sources}, sort_keys=True)
        return "rbc" + hashlib.sha1(text.encode()).hexdigest()[:10]

    def describe(self, used: set[str] | None = None) -> dict[str, Any]:
        """What a saved model needs to rescale new images alike (``alldata_model.json``): the common
        diameter and the per-source table (the ``used`` sources first-class, every known one kept)."""
        return {"rbc_px": self.rbc_px, "source_rbc_px": dict(sorted(self.sources.items())),
                **({"sources_used": sorted(used)} if used is not None else {})}


@dataclass
class Stain:
    """A fitted stain normaliser of one arm: its config, the training images it was fitted on,
    and the images it could not normalise (left as they are)."""

    config: dict[str, Any]
    dataset: str
    target_ids: list[str]
    fn: Any
    skipped: set[str] = field(default_factory=set)

    @property
    def tag(self) -> str:
        """A short hash of the config and the targets (the image cache key)."""
        text = json.dumps({"config": self.config, "targets": self.target_ids}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def describe(self) -> dict[str, Any]:
        """What a saved model needs to normalise new images the same way (``alldata_model.json``)."""
        return {"config": self.config, "dataset": self.dataset, "target_ids": self.target_ids}


#: How many training images a stain normaliser is fitted on (pooled pixels).
N_STAIN_TARGETS = 16


class ClassificationTask:
    """The ``classification`` benchmark task (one instance serves a whole run; it caches
    images and features by sample id)."""

    name = "classification"

    @property
    def arm_kinds(self) -> frozenset[str]:
        """Its own arm kinds plus every trainable generator family registered now."""
        return arm_kinds("classification")

    def __init__(self) -> None:
        self._images: dict[tuple[str, int, str], np.ndarray] = {}
        self._features: dict[tuple[str, int, str], np.ndarray] = {}
        self._paths: dict[str, str] = {}
        self._sources: dict[str, str] = {}
        self._stains: dict[str, Stain] = {}

    # --- data -----------------------------------------------------------------------------------------

    def _filepaths(self, dataset: str, ids: list[str]) -> list[str]:
        missing = [i for i in ids if i not in self._paths]
        if missing:
            from alldata.store import load_dataset

            ds = load_dataset(dataset)
            got_ids, paths, sources = ds.select(missing).values(["id", "filepath", F.SOURCE])
            self._paths.update(zip(got_ids, paths))
            self._sources.update(zip(got_ids, sources))
        return [self._paths[i] for i in ids]

    @staticmethod
    def _tag(stain: Stain | None, scale: Scale | None) -> str:
        # no scale: the tag of before scale arms existed (a cache key only, never persisted)
        return (stain.tag if stain is not None else "") + (f"+{scale.tag}" if scale is not None else "")

    def images(self, dataset: str, ids: list[str], size: int, stain: Stain | None = None,
               scale: Scale | None = None) -> list[np.ndarray]:
        """The samples' images, squared and resized to ``size``, stain-normalised when ``stain``,
        brought to a common red-cell size when ``scale`` (cached)."""
        paths = self._filepaths(dataset, ids)
        tag = self._tag(stain, scale)
        out = []
        for i, p in zip(ids, paths):
            if (i, size, tag) not in self._images:
                sc = (scale, str(self._sources.get(i))) if scale is not None else None
                self._images[(i, size, tag)] = _load_image(p, size, stain, i, sc)
            out.append(self._images[(i, size, tag)])
        return out

    def features(self, dataset: str, ids: list[str], size: int, stain: Stain | None = None,
                 scale: Scale | None = None) -> np.ndarray:
        """Hand-crafted features of the samples' images (cached)."""
        from alldata.models import extract_features

        tag = self._tag(stain, scale)
        todo = [i for i in ids if (i, size, tag) not in self._features]
        if todo:
            X, _ = extract_features(self.images(dataset, todo, size, stain, scale))
            for i, row in zip(todo, X):
                self._features[(i, size, tag)] = row
        return np.stack([self._features[(i, size, tag)] for i in ids])

    def stain(self, config: dict[str, Any], dataset: str, target_ids: list[str]) -> Stain:
        """The normaliser of ``config`` (:class:`alldata.models.stain.StainTransform` fields) fitted
        on the images ``target_ids`` of ``dataset`` (cached)."""
        from PIL import Image

        from alldata.models.stain import StainTransform, build_stain_transform

        cfg = StainTransform(**config)
        probe = Stain(cfg.model_dump(), dataset, list(target_ids), None)
        if probe.tag not in self._stains:
            paths = self._filepaths(dataset, list(target_ids))
            targets = []
            for p in paths:
                with Image.open(p) as img:
                    targets.append(np.asarray(img.convert("RGB")))
            probe.fn = build_stain_transform(cfg, targets, paths)
            self._stains[probe.tag] = probe
        return self._stains[probe.tag]

    def _content_order(self, dataset: str, ids: list[str]) -> list[str]:
        """``ids`` in the order of their files' sha256: the same targets after a re-ingest (new sample ids)."""
        from alldata.store import load_dataset

        got_ids, hashes = load_dataset(dataset).select(ids).values(["id", F.SHA256])
        by_id = dict(zip(got_ids, hashes))
        return sorted(ids, key=lambda i: (by_id.get(i) or "", hashlib.sha1(i.encode()).hexdigest()))

    def _arm_stain(self, ctx: CellContext, params: dict[str, Any]) -> Stain | None:
        """The arm's ``stain:`` normaliser (``macenko`` / ``reinhard`` or a StainTransform mapping),
        fitted on up to :data:`N_STAIN_TARGETS` of the cell's training images (in the order of their files'
        sha256, so a re-ingest picks the same ones;
        Macenko takes only images with enough stained pixels). Never a test image."""
        from PIL import Image

        from alldata.models.stain import StainTransform, stained_fraction

        spec = params.get("stain")
        if spec is None:
            return None
        config = {"kind": spec} if isinstance(spec, str) else dict(spec)
        cfg = StainTransform(**config)
        if cfg.kind in ("none", "hed_jitter"):
            if cfg.kind == "hed_jitter":
                raise AlldataError(f"arm {ctx.cell.arm!r}: stain: hed_jitter is an augmentation; use the arm "
                                   "param hed_jitter: <strength> (e.g. 0.05) instead")
            return None
        order = self._content_order(ctx.dataset, list(ctx.train_ids))
        targets: list[str] = []
        for sid, path in zip(order, self._filepaths(ctx.dataset, order)):
            if cfg.kind == "macenko":
                with Image.open(path) as img:
                    n, _ = stained_fraction(np.asarray(img.convert("RGB")), transmitted=cfg.transmitted, beta=cfg.beta)
                if n < cfg.min_stained:
                    continue
            targets.append(sid)
            if len(targets) == N_STAIN_TARGETS:
                break
        if not targets:
            raise AlldataError(f"arm {ctx.cell.arm!r}: no training image has enough stained pixels to fit "
                               f"{cfg.kind}; use stain: reinhard or lower beta")
        return self.stain(cfg.model_dump(), ctx.dataset, targets)

    # --- arms -----------------------------------------------------------------------------------------

    def _extra(self, ctx: CellContext, kind: str, params: dict[str, Any], size: int,
               stain: Stain | None = None, scale: Scale | None = None) -> tuple[list, list[str], list[str], dict]:
        """Images (or sample ids) the arm adds: (in-memory images, their labels, synthetic ids, info)."""
        images, labels, syn, info = self._fill(ctx, kind, params, size, stain, scale)
        if params.get("hed_jitter"):
            from alldata.models.stain import HedJitter

            jitter = HedJitter(float(params["hed_jitter"]), seed=1000 * ctx.cell.seed + max(ctx.cell.fold, 0))
            images = list(images) + [jitter(im) for im in self.images(ctx.dataset, ctx.train_ids, size, stain, scale)]
            labels = list(labels) + [ctx.labels[i] for i in ctx.train_ids]
            info = {**info, "n_hed_jitter": len(ctx.train_ids)}
        return images, labels, syn, info

    def _fill(self, ctx: CellContext, kind: str, params: dict[str, Any], size: int,
              stain: Stain | None, scale: Scale | None = None) -> tuple[list, list[str], list[str], dict]:
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
                src = self.images(ctx.dataset, src_ids, size, stain, scale)
                if kind == "oversample":
                    images += [src[j % len(src)] for j in range(n)]
                else:
                    from alldata.models.augment import augment_images

                    images += list(augment_images(np.stack(src), n, seed=seed, image_size=size,
                                                  **({"strength": params["strength"]} if "strength" in params else {})))
                labels += [cls] * n
            return images, labels, [], {"fill": need}
        if is_generator_kind(kind):
            if scale is not None:
                raise AlldataError(f"arm {cell.arm!r}: rbc_px (scale harmonisation) cannot be combined with a generator "
                                   "arm (generated images have no source red-cell size); use it on real/augment arms")
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
        stain = self._arm_stain(ctx, dict(arm.params))
        scale = Scale.from_params(dict(arm.params), f"arm {cell.arm!r} of recipe {recipe.name!r}")
        extra_images, extra_labels, syn_ids, info = self._extra(ctx, arm.kind, dict(arm.params), size, stain, scale)
        syn_labels = [ctx.labels[i] for i in syn_ids]  # set by _synthesise
        syn_ds = info.get("synthetic_dataset", ctx.dataset)
        y_train = [ctx.labels[i] for i in ctx.train_ids] + extra_labels + syn_labels
        cls = CLASSIFIERS.get(cell.model)
        kind = getattr(cls, "input_kind", "features")
        test_ds = ctx.test_dataset or ctx.dataset
        if kind == "image":
            clf = cls(seed=cell.seed, image_size=size, progress=False, **spec.params)
            X_train = (self.images(ctx.dataset, ctx.train_ids, size, stain, scale) + list(extra_images)
                       + self.images(syn_ds, syn_ids, size, stain))
            X_test = self.images(test_ds, ctx.test_ids, size, stain, scale)
        else:
            from alldata.models import extract_features

            clf = cls(seed=cell.seed, **spec.params)
            parts = [self.features(ctx.dataset, ctx.train_ids, size, stain, scale)]
            if extra_images:
                parts.append(extract_features(extra_images)[0])
            if syn_ids:
                parts.append(self.features(syn_ds, syn_ids, size, stain))
            X_train = np.concatenate(parts)
            X_test = self.features(test_ds, ctx.test_ids, size, stain, scale)
        clf.fit(X_train, y_train)
        if ctx.model_dir is not None:
            clf.save(ctx.model_dir)
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
        if stain is not None:
            used = set(ctx.train_ids) | set(ctx.test_ids)
            info["stain"] = {**stain.describe(), "n_skipped_train_test": len(stain.skipped & used)}
        if scale is not None:
            info["scale"] = scale.describe({self._sources[i] for i in [*ctx.train_ids, *ctx.test_ids]})
        info.update(n_train=len(y_train), n_real=len(ctx.train_ids), n_synthetic=len(extra_labels) + len(syn_ids),
                    n_rare_kept=len(ctx.rare_kept), input_kind=kind, seconds=round(time.time() - t0, 2))
        return CellResult(rows=rows, metrics=self.score(rows), info=info)

    def score(self, rows: list[dict]) -> dict[str, float]:
        """Accuracy, balanced accuracy, macro/weighted F1, macro AUC and per-class metrics
        (``sensitivity:<class>``, ``specificity:``, ``precision:``, ``f1:``, ``auc:``).

        The definitions (and NaN rules) of :func:`alldata.metrics.classification_metrics`,
        computed with numpy alone: the group bootstrap calls this thousands of times."""
        if not rows:
            return {}
        labels = sorted(set(rows[0]["proba"]) | {r["true"] for r in rows} | {r["pred"] for r in rows})
        code = {c: j for j, c in enumerate(labels)}
        yt = np.fromiter((code[r["true"]] for r in rows), dtype=np.int64, count=len(rows))
        yp = np.fromiter((code[r["pred"]] for r in rows), dtype=np.int64, count=len(rows))
        scores = np.array([[r["proba"].get(c, 0.0) for c in labels] for r in rows], dtype=float)
        return fast_scores(yt, yp, scores, labels)

    def write_predictions(self, dataset: str, field: str, rows: list[dict]) -> None:
        """Write ``fo.Classification(label=pred, confidence, logits)`` with ``truth_field`` / ``truth``
        attributes to ``field`` of the rows' samples (the field is cleared first).

        ``logits`` are ``log(clip(proba, 1e-12, 1))`` over one fixed class order, the first row's
        (the recipe's classes; every row has the same keys), so the FiftyOne Brain's hardness works
        (:mod:`alldata.brain`); the order is saved as the dataset's ``classes[field]``."""
        import fiftyone as fo

        from alldata.store import load_dataset

        ds = load_dataset(dataset)
        if ds.has_sample_field(field):
            ds.clear_sample_field(field)
        if not rows:
            return
        order = list(rows[0]["proba"])
        values = {}
        for r in rows:
            p = np.array([r["proba"].get(c, 0.0) for c in order], dtype=float)
            values[r["id"]] = fo.Classification(
                label=r["pred"], confidence=float(p.max()) if len(p) else None,
                logits=np.log(np.clip(p, 1e-12, 1.0)) if len(p) else None,
                truth_field=r.get("truth_field"), truth=r["true"], correct=r["pred"] == r["true"],
            )
        if order:
            ds.classes = {**ds.classes, field: order}
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
    rare cells, and add ``need`` samples per class to the run's synthetic dataset
    (:func:`alldata.synthetic.benchmark_dataset`, never the user's); returns their sample ids."""
    from alldata.generate import run_generator_job, trainable_family
    from alldata.store import load_dataset
    from alldata.synthetic import benchmark_dataset

    recipe = ctx.recipe
    shared = ctx.shared_dir or ctx.work_dir
    # the cache is valid only for these settings and this training set (the shared dir is keyed by
    # arm name, fold and seed; an arm whose params changed must not reuse an old generator)
    size = trainable_family(kind).arm_settings(params, recipe.data.image_size)["image_size"]
    spec = {"kind": kind, "params": params, "image_size": size, "train_ids": sorted(ctx.train_ids),
            "rare_kept": sorted(ctx.rare_kept)}
    spec_sha = hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    few = ctx.rare_kept if recipe.rare is not None and ctx.rare_kept else None
    target = benchmark_dataset(ctx.dataset, recipe.name)
    job = run_generator_job(
        kind, params, target, shared, train_cells=lambda s: _cells_for(ctx, ctx.train_ids, s),
        finetune_cells=(lambda s: _cells_for(ctx, few, s)) if few else None,
        requests=[({recipe.data.label_field: cls}, n) for cls, n in need.items()],  # label values: checked by the recipe
        image_size=recipe.data.image_size, seed=seed, recipe=recipe.name, cache_key=spec_sha, progress=ctx.progress,
    )
    ds = load_dataset(target)
    ids: list[str] = []
    for cls, keys in zip(need, job.keys):
        key_to_id = dict(zip(*ds.match({F.KEY: {"$in": keys}}).values([F.KEY, "id"])))
        new = [key_to_id[k] for k in keys]
        for sid in new:
            ctx.labels[sid] = cls
        ids += new
    return ids, {"synthetic_dataset": target, "generator": kind, "checkpoint_sha256": job.checkpoint_sha256, "generator_train_seconds": job.train_seconds,
                 "generate_seconds": job.generate_seconds, "generator_image_size": job.image_size}
