"""What the App's alldata operators do, as plain functions (tested without a browser).

Each function takes a dataset (and, where it acts on a selection, sample ids), calls the
same library function as the matching command (``alldata generate``, ``compose-overlaps``,
``score``, ``benchmark``, ``brain``) and returns an :class:`ActionResult`: the ids of the
samples it added or changed and the saved view that shows them (prefix :data:`VIEW_PREFIX`).
``progress(fraction, label)`` is called as the work advances (the operators pass
``ctx.set_progress``, which a delegated run shows in the App's Runs list).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alldata.curation import REJECT_TAG
from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "BENCHMARK_RUNS",
    "CORRECTED_FROM",
    "SCORE_REPORT",
    "VIEW_PREFIX",
    "ActionResult",
    "PluginError",
    "compose_from_selected",
    "condition_of_view",
    "correct_label",
    "generate_like",
    "run_benchmark_recipe",
    "score_view",
    "tag_reject",
]

#: Saved views made by the App's operators start with this (``alldata-`` views are rebuilt by ``alldata views``).
VIEW_PREFIX = "app-"
#: The attribute that keeps a corrected label's previous value.
CORRECTED_FROM = "corrected_from"
#: Sample field: the score report (JSON) a synthetic sample was last scored in.
SCORE_REPORT = "score_report"
#: ``dataset.info`` key: recipe name -> results folder of the benchmark runs started from the App.
BENCHMARK_RUNS = "alldata_benchmark_runs"

Progress = Callable[[float, str], None]


class PluginError(AlldataError, ValueError):
    """An operator got an empty selection, an unusable checkpoint or a label it cannot set."""


@dataclass
class ActionResult:
    """What an action did: the samples it added or changed, the saved view showing them, a message."""

    ids: list[str] = field(default_factory=list)
    view: str | None = None
    message: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _noop(fraction: float, label: str) -> None:
    pass


def _save_view(ds: fo.Dataset, name: str, view: Any, description: str) -> str:
    import re

    name = VIEW_PREFIX + re.sub(r"[^A-Za-z0-9_=.-]+", "-", name).strip("-")
    ds.save_view(name, view, description=description, overwrite=True)
    return name


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


# --- curation: reject / correct ---------------------------------------------------------------


def tag_reject(ds: fo.Dataset, ids: Sequence[str], *, undo: bool = False) -> ActionResult:
    """Tag the samples ``ids`` :data:`~alldata.curation.REJECT_TAG` (``undo``: remove the tag).

    Rejected samples leave everything alldata builds (:func:`alldata.curation.curated`); the
    saved view ``app-rejected`` lists them.
    """
    if not ids:
        raise PluginError("no samples to tag: select samples in the grid (or choose a view) first")
    view = ds.select(list(ids))
    if undo:
        view.untag_samples(REJECT_TAG)
    else:
        view.tag_samples(REJECT_TAG)
    name = _save_view(ds, "rejected", ds.match_tags(REJECT_TAG), f"samples tagged {REJECT_TAG!r} (left out of mixes, benchmarks, cards, exports)")
    verb = "untagged" if undo else "tagged"
    return ActionResult(list(ids), name, f"{verb} {len(ids)} samples {REJECT_TAG!r}; {len(ds.match_tags(REJECT_TAG))} rejected in all")


def correct_label(ds: fo.Dataset, ids: Sequence[str], label_field: str, label: str) -> ActionResult:
    """Set ``label_field`` of the samples ``ids`` to ``label``, keeping the old label in ``corrected_from``.

    The label must be one the field already uses or a member of the schema's vocabulary for
    it (:class:`~alldata.schema.CellType`, ``Diagnosis``, ``Subtype``), so a typo cannot
    create a new class.
    """
    import fiftyone as fo

    from alldata.schema import CellType, Diagnosis, Subtype

    if not ids:
        raise PluginError("no samples to correct: select samples in the grid (or choose a view) first")
    schema = ds.get_field_schema(embedded_doc_type=fo.Classification)
    if label_field not in schema:
        raise PluginError(f"{label_field!r} is not a label (Classification) field of {ds.name!r}; choose one of {sorted(schema)}")
    vocab = {F.CELL_TYPE: CellType, F.DIAGNOSIS: Diagnosis, F.SUBTYPE: Subtype}.get(label_field)
    allowed = set(ds.distinct(f"{label_field}.label")) | ({m.value for m in vocab} if vocab else set())
    if label not in allowed:
        raise PluginError(f"label {label!r} is not a {label_field} value; choose one of {sorted(allowed)}")
    changed = []
    for sample in ds.select(list(ids)).iter_samples(autosave=True):
        old = sample[label_field]
        if old is not None and old.label == label:
            continue
        new = fo.Classification(label=label)
        new[CORRECTED_FROM] = old.label if old is not None else None
        sample[label_field] = new
        changed.append(sample.id)
    name = _save_view(ds, f"corrected-{label_field}", ds.exists(f"{label_field}.{CORRECTED_FROM}"),
                      f"samples whose {label_field} was corrected in the App (old value in {label_field}.{CORRECTED_FROM})")
    return ActionResult(changed, name, f"set {label_field} = {label!r} on {len(changed)} samples ({len(ids) - len(changed)} already had it)")


# --- generate -----------------------------------------------------------------------------------


def condition_of_view(view: Any, conditions: dict[str, list[str]]) -> dict[str, str]:
    """The most common value in ``view`` of each label field the checkpoint is conditioned on.

    Only values the checkpoint knows (``conditions``) count; fields with none in the view are left out.
    """
    out = {}
    for fld, known in conditions.items():
        if not view.has_field(fld):
            continue
        counts = Counter(v for v in view.values(f"{fld}.label") if v in known)
        if counts:
            out[fld] = counts.most_common(1)[0][0]
    return out


def generate_like(
    ds: fo.Dataset,
    view: Any,
    checkpoint: str | Path,
    num_samples: int,
    *,
    condition: str = "",
    seed: int = 0,
    batch_size: int = 16,
    options: dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    progress: Progress = _noop,
) -> ActionResult:
    """``num_samples`` more like ``view``: its most common labels (or ``condition``) sampled from ``checkpoint``.

    Runs :func:`alldata.generate.generate_to_dataset` (what ``alldata generate`` runs) one
    batch at a time so ``progress`` advances; the result is the same as one call (batch
    ``k`` uses seed ``seed + k`` and finished batches are skipped). New samples go to
    ``out_dir`` (default ``CHECKPOINT/generated``) and the view ``app-generated-<condition>``.
    """
    from alldata.generate import generate_to_dataset, plan_generation
    from alldata.generators.base import CONFIG_NAME, GENERATORS, parse_condition
    from alldata.synthetic import synthetic_source

    ckpt = Path(checkpoint).expanduser()
    if not (ckpt / CONFIG_NAME).is_file():
        raise PluginError(f"checkpoint {str(ckpt)!r} has no {CONFIG_NAME}; give a folder written by `alldata train-generator`")
    if num_samples <= 0 or batch_size <= 0:
        raise PluginError(f"num_samples={num_samples} and batch_size={batch_size} must be positive")
    config = json.loads((ckpt / CONFIG_NAME).read_text())
    cond: dict[str, Any] = parse_condition(condition) if condition.strip() else condition_of_view(view, config.get("conditions", {}))
    if not cond and config.get("conditions"):
        raise PluginError(f"the view has no label the checkpoint knows ({config['conditions']}); give a condition, "
                          "e.g. cell_type=lymphoblast")
    family = config.get("family", "?")
    kwargs = GENERATORS.get(family).sample_options(options or {})
    out = Path(out_dir) if out_dir else ckpt / "generated"
    added = 0
    for done in range(batch_size, num_samples + batch_size, batch_size):
        n = min(done, num_samples)
        progress((n - min(batch_size, n)) / num_samples, f"sampling {n} of {num_samples} ({family}, {cond})")
        _, k = generate_to_dataset(ckpt, cond, n, ds.name, out, seed=seed, batch_size=batch_size, progress=False, **kwargs)
        added += k
    plan = plan_generation(ckpt, cond, num_samples, ds.name, seed=seed, batch_size=batch_size)
    src = synthetic_source(plan.family)
    keys = [f"{src}/{plan.source_id(b, i)}" for b, (_, m) in enumerate(plan.batches) for i in range(m)]
    made = ds.match({F.KEY: {"$in": keys}})
    slug = ",".join(f"{k}={v}" for k, v in sorted(cond.items())) or "unconditional"
    name = _save_view(ds, f"generated-{family}-{slug}", made,
                      f"{num_samples} {family} samples of {slug} from checkpoint {plan.checkpoint_sha256[:12]} (seed {seed})")
    progress(1.0, f"added {added} samples")
    return ActionResult(made.values("id"), name, f"added {added} {family} samples of {slug} ({num_samples - added} were already there)",
                        {"condition": cond, "checkpoint_sha256": plan.checkpoint_sha256})


# --- compose, score, benchmark --------------------------------------------------------------------


def compose_from_selected(
    ds: fo.Dataset,
    ids: Sequence[str],
    num_samples: int,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: Progress = _noop,
    **config: Any,
) -> ActionResult:
    """Overlap composites whose donors are the selected cells (``alldata compose-overlaps --donors-view``).

    The selection is saved as the view ``app-compose-donors`` and handed to
    :func:`alldata.compose.run_compose`; backgrounds are the dataset's smears.
    """
    from alldata.compose import SOURCE, run_compose, source_id
    from alldata.config import home

    if not ids:
        raise PluginError("no donor cells: select the cells to paste in the grid first")
    donors = _save_view(ds, "compose-donors", ds.select(list(ids)), "the cells the last App compose used as donors")
    out = Path(out_dir) if out_dir else home() / "datasets" / ds.name / "overlap"
    progress(0.0, f"composing {num_samples} images from {len(ids)} donor cells")
    r = run_compose(ds.name, num_samples, out, seed, donor_sources=None, donors_view=donors, progress=False, **config)
    keys = [f"{SOURCE}/{source_id(seed, i)}" for i in range(num_samples)]
    made = ds.match({F.KEY: {"$in": keys}})
    name = _save_view(ds, f"composed-seed{seed}", made, f"overlap composites of seed {seed} (donors: {donors})")
    progress(1.0, f"added {r.added} composites")
    return ActionResult(made.values("id"), name, f"added {r.added} composites ({r.skipped_existing} already there); files in {r.out_dir}",
                        {"mean_overlap": r.mean_overlap, "rejected_donors": len(r.rejected_donors)})


def score_view(
    ds: fo.Dataset,
    ids: Sequence[str],
    *,
    real: str = "split=train",
    heldout: str = "split=test",
    encoder_dir: str | Path | None = None,
    progress: Progress = _noop,
) -> ActionResult:
    """Score the synthetic samples among ``ids`` against the real ``real`` view (``alldata score``).

    Features: the encoder in ``encoder_dir`` (``alldata train-encoder``), else the hand-crafted
    colour/shape/texture features (nothing to train or download). Each scored sample gets
    ``nn_distance`` / ``copy_flag`` (from :func:`alldata.score.score_dataset`) and
    :data:`SCORE_REPORT` (the report's path, which the panel reads).
    """
    from alldata.score import parse_view, score_dataset

    syn = ds.select(list(ids)).match({F.IS_SYNTHETIC: True})
    if not len(syn):
        raise PluginError("no synthetic sample in the view or selection; choose the alldata-synthetic view or select generated samples")
    tag = f"app-score-{_stamp()}"
    syn.tag_samples(tag)
    try:
        if encoder_dir:
            from alldata.encoder import load_encoder

            encoder = load_encoder(encoder_dir, None, None)
        else:
            from alldata.models.features import HandcraftedFeatures

            encoder = HandcraftedFeatures()
        progress(0.1, f"scoring {len(syn)} synthetic samples against real [{real}]")
        held = parse_view(heldout, "real") if heldout.strip() else None
        report = score_dataset(ds, {"tag": tag}, parse_view(real, "real"), encoder, heldout_filter=held, progress=False)
        if not ds.has_field(SCORE_REPORT):
            import fiftyone as fo

            ds.add_sample_field(SCORE_REPORT, fo.StringField)
        ds.match_tags(tag).set_field(SCORE_REPORT, report.report_path).save()
    finally:
        ds.untag_samples(tag)
    name = _save_view(ds, "scored", ds.exists(SCORE_REPORT).sort_by("nn_distance"),
                      "synthetic samples scored from the App, nearest to a real cell first")
    failed = ", ".join(g.name for g in report.failed())
    progress(1.0, "scored")
    return ActionResult(syn.values("id"), name,
                        f"{'PASSED' if report.passed else 'FAILED (' + failed + ')'}: {len(syn)} samples; report {report.report_path}",
                        {"report": report.report_path, "passed": report.passed})


def run_benchmark_recipe(
    ds: fo.Dataset, recipe_path: str | Path, *, quick: bool = True, out_dir: str | Path | None = None,
    progress: Progress = _noop,
) -> ActionResult:
    """Run a benchmark recipe on ``ds`` (``alldata benchmark``), recording its results folder for the panel.

    The folder goes to ``dataset.info[BENCHMARK_RUNS][recipe name]``. The samples of the recipe's
    generator arms are not in ``ds``: they live in the run-scoped dataset ``<ds>-bench-<recipe>``
    (:func:`alldata.synthetic.benchmark_dataset`), which records the run too and holds the saved view
    ``app-benchmark-<recipe>``; the result names that dataset.
    """
    import fiftyone as fo

    from alldata.benchmark.engine import run_benchmark
    from alldata.config import home
    from alldata.recipes import load_recipe
    from alldata.synthetic import benchmark_dataset

    recipe = load_recipe(recipe_path)
    out = Path(out_dir) if out_dir else home() / "datasets" / ds.name / "runs" / f"{recipe.name}{'-quick' if quick else ''}"
    progress(0.0, f"benchmark {recipe.name} -> {out}")
    run = run_benchmark(recipe, ds.name, out, quick=quick, progress=False, command=f"App: run benchmark {recipe_path}")
    ds.reload()
    bench_name = benchmark_dataset(ds.name, recipe.name)
    bench = fo.load_dataset(bench_name) if fo.dataset_exists(bench_name) else None
    for target in (ds, bench):
        if target is not None:
            info = dict(target.info)
            info[BENCHMARK_RUNS] = {**info.get(BENCHMARK_RUNS, {}), recipe.name: str(out.resolve())}
            target.info = info
            target.save()
    ids: list[str] = []
    name = None
    where = "no generator arm: no samples made"
    if bench is not None:
        made = bench.match({F.RECIPE: recipe.name})
        name = _save_view(bench, f"benchmark-{recipe.name}", made, f"samples generated for benchmark recipe {recipe.name}")
        ids, where = made.values("id"), f"{len(made)} generated samples in dataset {bench_name} (view {name})"
    progress(1.0, f"{run.ran} cells run, {run.skipped} reused")
    s = run.summary
    return ActionResult(ids, name, f"{recipe.name}: {run.ran} cells run, {run.skipped} reused; {where}; metrics {out / 'metrics.json'}",
                        {"out_dir": str(out), "primary_metric": s.primary_metric, "dataset": bench_name if bench else None})
