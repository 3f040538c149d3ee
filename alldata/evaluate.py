"""Score a saved classifier, or every model of a benchmark run, on any dataset.

``alldata evaluate MODEL_OR_RUN --dataset NAME`` is the external test after the fact: a model
trained by a recipe with a ``test:`` pool is saved under ``<run>/models/<cell key>/`` as
``config.json`` + safetensors with ``alldata_model.json`` beside it (the recipe, the cell, the
training dataset and the sha256 of every training file). This job

1. finds the models (a model folder, or every ``models/**/alldata_model.json`` of a run);
2. selects the evaluation pool of ``dataset`` (``sources`` / ``where``; default: every source
   the dataset holds) with the recipe's label map: a label the map does not cover is an error
   naming it and the fix (:class:`~alldata.benchmark.engine.LabelMapError`);
3. refuses a test file the model was trained on (same sha256);
4. prepares the images as the model's arm did (its stain normaliser and its scale harmonisation,
   both read from ``alldata_model.json``), predicts, scores with the recipe's metrics and a bootstrap CI over the pool's groups, and
   writes the predictions to ``eval_<run>_<arm>_<model>`` (or ``field``) of ``dataset``.

A bare saved model (no ``alldata_model.json``) is scored too: say which label field it
predicts (``label_field``) and at what size it saw images (``image_size``); its training
files are unknown, so the duplicate check is skipped and the result says so.

Examples:
    >>> results = evaluate("runs/xsource-taleqani-pbc-to-allidb2", "alldata")  # doctest: +SKIP
    >>> results[0].metrics["balanced_accuracy"].pooled  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from alldata.benchmark.engine import MODEL_INFO
from alldata.errors import AlldataError
from alldata.recipes import CLASSIFICATION_METRICS, Recipe, recipe_slug
from alldata.reports import MetricSummary, PoolSummary

__all__ = ["EvaluateError", "EvaluationResult", "evaluate", "find_models"]

_DEFAULT_METRICS = ["balanced_accuracy", "accuracy", "macro_f1", "macro_auc"]


class EvaluateError(AlldataError, ValueError):
    """A model folder or run that cannot be evaluated as asked."""


class EvaluationResult(BaseModel):
    """One model scored on one dataset (``evaluation.json`` holds a list of these)."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="null")

    model_dir: str
    model: str
    arm: str | None = None
    seed: int | None = None
    recipe: str | None = None
    trained_on: str | None = Field(default=None, description="the training dataset, when known")
    dataset: str
    sources: list[str]
    where: dict[str, Any] | None = None
    label_field: str
    pool: PoolSummary
    metrics: dict[str, MetricSummary]
    confidence: float
    n_boot: int
    duplicates_checked: bool
    prediction_field: str | None = None


def find_models(path: str | Path) -> list[Path]:
    """The saved model folders under ``path``: itself (a model folder) or a run's ``models/**``.

    Raises:
        EvaluateError: ``path`` holds no saved model.
    """
    p = Path(path)
    if (p / "config.json").is_file():
        return [p]
    found = sorted(f.parent for f in p.glob(f"models/**/{MODEL_INFO}")) if p.is_dir() else []
    if not found:
        raise EvaluateError(
            f"{p} is neither a saved model (config.json + safetensors) nor a benchmark run with saved models "
            "(models/**/alldata_model.json, written by a recipe with a test: pool); pass one of those"
        )
    return found


def _load_model(d: Path) -> Any:
    config = json.loads((d / "config.json").read_text())
    fmt = str(config.get("format", ""))
    if fmt.startswith("alldata.models.cnn"):
        from alldata.models import load_cnn

        return load_cnn(d, progress=False)
    if fmt.startswith("alldata.models.classify_classic"):
        from alldata.models import load_classifier

        return load_classifier(d)
    raise EvaluateError(f"{d}/config.json: format {fmt!r} is not a saved alldata classifier")


def _recipe_for(d: Path, info: dict | None, model: Any, label_field: str | None, image_size: int | None) -> Recipe:
    """The recipe the model was trained by, or a minimal one for a bare model (its classes as they are)."""
    if info is not None:
        recipe = Recipe.model_validate(info["recipe"])
        data = recipe.data
        if label_field is not None and label_field != data.label_field:
            raise EvaluateError(f"{d} predicts {data.label_field!r} (its recipe says so), not {label_field!r}")
        if image_size is not None and image_size != data.image_size:
            raise EvaluateError(f"{d} was trained on {data.image_size} px images; drop --image-size {image_size}")
        return recipe
    if label_field is None:
        raise EvaluateError(f"{d} has no {MODEL_INFO} (not saved by a benchmark run): pass the label field it "
                            "predicts (--label-field diagnosis|cell_type|subtype) and its --image-size")
    classes = [str(c) for c in model.classes_]
    return Recipe.model_validate({
        "name": f"evaluate-{d.name}", "task": "classification", "baseline": "real",
        "data": {"sources": ["*"], "label_field": label_field, "classes": classes, "image_size": image_size or 64},
        "arms": [{"name": "real", "kind": "real"}], "models": [{"name": getattr(model, "name", "model")}],
        "metrics": _DEFAULT_METRICS, "primary_metric": "balanced_accuracy",
    })


def evaluate(
    model_or_run: str | Path,
    dataset: str,
    *,
    sources: list[str] | None = None,
    where: dict[str, Any] | None = None,
    label_field: str | None = None,
    image_size: int | None = None,
    n_boot: int = 1000,
    write_back: bool = True,
    field: str | None = None,
    out_dir: str | Path | None = None,
) -> list[EvaluationResult]:
    """Score each saved model of ``model_or_run`` on ``dataset`` (see the module docstring).

    Args:
        model_or_run: a saved model folder or a benchmark run folder.
        dataset: the FiftyOne dataset to score on.
        sources: the sources to score (default: every source in ``dataset``).
        where: extra filters ``{field: value | [values]}``.
        label_field: for a bare model: the label field it predicts.
        image_size: for a bare model: the image size it was trained at (default 64).
        n_boot: bootstrap replicates of the CIs (over the pool's groups).
        write_back: write predictions to ``field`` (default ``eval_<recipe>_<arm>_<model>``).
        field: the prediction field (one model only).
        out_dir: also write ``evaluation.json`` and ``evaluation.md`` there.

    Raises:
        EvaluateError: no model, a bad folder, classes the model cannot predict.
        LabelMapError: labels outside the recipe's label map.
        DuplicateAcrossPoolsError: a test file the model was trained on.
    """
    from alldata.benchmark.aggregate import _pooled_cis
    from alldata.benchmark.classification import ClassificationTask, Scale
    from alldata.benchmark.external import DuplicateAcrossPoolsError
    from alldata.benchmark.pool import ALPHA, select_pool
    from alldata.store import load_dataset

    dirs = find_models(model_or_run)
    if field is not None and len(dirs) > 1:
        raise EvaluateError(f"--field names one field, but {model_or_run} holds {len(dirs)} models; leave it out")
    if sources is None:
        sources = sorted(set(load_dataset(dataset).distinct("source")))
    task = ClassificationTask()
    results = []
    for d in dirs:
        info = json.loads((d / MODEL_INFO).read_text()) if (d / MODEL_INFO).is_file() else None
        model = _load_model(d)
        recipe = _recipe_for(d, info, model, label_field, image_size)
        pool, _ = select_pool(recipe, dataset, list(sources), where, strict=True, what="evaluation pool")
        if len(pool) == 0:
            raise EvaluateError(f"dataset {dataset!r} has no samples of sources {sources} (where {where}) to score")
        known = [str(c) for c in model.classes_]
        unknown = sorted(set(pool.labels) - set(known))
        if unknown:
            raise EvaluateError(f"{d}: the pool holds classes {unknown} the model never learnt (it knows {known}); "
                                "map them in the recipe's label map or leave them out with --where")
        if info is not None:
            trained = set(info.get("train_sha256", []))
            dup = [k for k, h in zip(pool.keys, pool.hashes) if h and h in trained]
            if dup:
                raise DuplicateAcrossPoolsError(
                    f"{d} was trained on {len(dup)} file(s) of the evaluation pool (same sha256), e.g. "
                    f"{', '.join(f'{dataset}:{k}' for k in dup[:5])}; leave them out (--sources / --where)"
                )
        size = recipe.data.image_size
        st = (info or {}).get("stain")
        stain = task.stain(st["config"], st["dataset"], st["target_ids"]) if st else None
        sc = (info or {}).get("scale")
        scale = Scale(float(sc["rbc_px"]), {str(k): float(v) for k, v in sc["source_rbc_px"].items()}) if sc else None
        if getattr(model, "input_kind", "features") == "image":
            X = task.images(dataset, pool.ids, size, stain, scale)
        else:
            X = task.features(dataset, pool.ids, size, stain, scale)
        proba = np.asarray(model.predict_proba(X), dtype=float)
        col = {c: j for j, c in enumerate(known)}
        classes = recipe.data.class_names() or known
        rows = []
        for n, (sid, grp, true) in enumerate(zip(pool.ids, pool.groups, pool.labels)):
            p = {c: float(proba[n, col[c]]) if c in col else 0.0 for c in classes}
            rows.append({"id": sid, "group": grp, "true": true, "pred": max(p, key=lambda c: (p[c], -classes.index(c))),
                         "proba": p, "truth_field": recipe.data.label_field})
        metrics = list(recipe.metrics) if info is not None else _DEFAULT_METRICS
        metrics = [m for m in metrics if m in CLASSIFICATION_METRICS or m.split(":", 1)[-1] in classes]
        cis = _pooled_cis(task, {0: rows}, metrics, n_boot)
        name = field
        if write_back:
            tag = "_".join(recipe_slug(str(x)) for x in (info["recipe"]["name"], info["arm"], info["model"])) \
                if info is not None else recipe_slug(d.name)
            name = name or f"eval_{tag}"
            task.write_predictions(dataset, name, rows)
        results.append(EvaluationResult(
            model_dir=str(d), model=(info or {}).get("model") or str(getattr(model, "name", d.name)),
            arm=(info or {}).get("arm"), seed=(info or {}).get("seed"), recipe=(info or {}).get("recipe", {}).get("name"),
            trained_on=(info or {}).get("dataset"), dataset=dataset, sources=list(sources), where=where,
            label_field=recipe.data.label_field,
            pool=PoolSummary(n=len(pool), n_groups=len(set(pool.groups)), per_class=pool.composition(),
                             sources=dict(Counter(pool.sources)),
                             left_out=pool.dropped),
            metrics={m: MetricSummary(mean=cis[m].point, sd=float("nan"), pooled=cis[m].point, ci_low=cis[m].low,
                                      ci_high=cis[m].high) for m in metrics},
            confidence=round(1 - ALPHA, 6), n_boot=n_boot, duplicates_checked=info is not None,
            prediction_field=name if write_back else None,
        ))
    if out_dir is not None:
        _write(results, Path(out_dir))
    return results


def _write(results: list[EvaluationResult], out: Path) -> None:
    from alldata.benchmark.plots import markdown_table
    from alldata.metrics import format_ci

    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps([json.loads(r.model_dump_json()) for r in results], indent=1))
    rows = [{"model": r.model, "arm": r.arm or "", "seed": r.seed if r.seed is not None else "",
             "trained on": r.trained_on or "?", "n": r.pool.n,
             **{m: format_ci(s.pooled, s.ci_low, s.ci_high) for m, s in r.metrics.items()}} for r in results]
    r0 = results[0]
    text = [f"# Evaluation on `{r0.dataset}` (sources {r0.sources})", "",
            (f"{r0.pool.n} samples in {r0.pool.n_groups} groups, per class {r0.pool.per_class}. Values with "
             f"{r0.confidence:.0%} bootstrap intervals over groups ({r0.n_boot} replicates)."), "",
            markdown_table(rows), ""]
    (out / "evaluation.md").write_text("\n".join(text))
