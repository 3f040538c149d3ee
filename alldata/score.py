"""Quality gates for synthetic cells: ``alldata score`` measures, judges and reports.

:func:`score_images` measures synthetic images against real ones, on arrays: simple pixel
statistics that need no encoder, distribution and memorisation metrics on the features of
a :class:`~alldata.features.FeatureExtractor` (FD and KID beside their real-vs-real floor),
and CAS against TRS. It judges them against :class:`Gates` (the documented thresholds) into
a typed :class:`ScoreReport` with a pass/fail verdict. :func:`score_dataset` does the same
for the cells of a FiftyOne dataset, tags likely copies and writes the report as JSON, also
to ``<checkpoint>/score.json`` when the checkpoint is named, which :func:`last_score` reads.
The metrics themselves live in :mod:`alldata.metrics.generative`, the report's models in
:mod:`alldata.score_report` (importable from here too).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from alldata.config import home
from alldata.errors import AlldataError
from alldata.metrics import MetricError
from alldata.schema import F
from alldata.score_report import GateResult, Gates, PixelReport, ScoreMetrics, ScoreParams, ScoreReport

if TYPE_CHECKING:
    import fiftyone as fo

    from alldata.encoder import Encoder
    from alldata.features import FeatureExtractor
    from alldata.metrics.generative import Memorisation

__all__ = [
    "COPY_FLAG",
    "NN_DISTANCE",
    "NN_RATIO",
    "NN_REAL_KEY",
    "SCORE_NAME",
    "TAG_MEMORISED",
    "GateResult",
    "Gates",
    "PixelReport",
    "ScoreError",
    "ScoreMetrics",
    "ScoreParams",
    "ScoreReport",
    "default_report_path",
    "get_encoder",
    "judge",
    "last_score",
    "parse_view",
    "real_view",
    "score_dataset",
    "score_images",
    "synthetic_view",
]

#: Per-sample fields written on scored synthetic samples, and the tag of likely copies.
NN_REAL_KEY = "nn_real_key"
NN_DISTANCE = "nn_distance"
NN_RATIO = "nn_ratio"
COPY_FLAG = "copy_flag"
TAG_MEMORISED = "memorised"
#: The report's file name inside a checkpoint folder (read by :func:`last_score`).
SCORE_NAME = "score.json"

#: Keys a ``--synthetic-view`` / ``--real-view`` string may use.
SYNTHETIC_KEYS = ("generator", "tag")
REAL_KEYS = ("split", "source")
#: Label fields CAS may classify, in order of preference.
CAS_FIELDS = (F.CELL_TYPE, F.SUBTYPE, F.DIAGNOSIS)


class ScoreError(MetricError):
    """Bad scoring arguments, or too few samples for a metric."""


# --- measuring and judging ----------------------------------------------------------------------


def _gate(name: str, value: float | None, threshold: float | None, rule: str, note: str | None = None) -> GateResult:
    """A gate ``value <= threshold`` (``rule`` holds ``<=``) or ``value >= threshold``; not measured when either is None."""
    if value is None or threshold is None or not np.isfinite(value):
        return GateResult(name=name, value=value, threshold=threshold, rule=rule, passed=None, note=note or "not measured")
    ok = value <= threshold if "<=" in rule else value >= threshold
    return GateResult(name=name, value=float(value), threshold=float(threshold), rule=rule, passed=bool(ok))


def judge(real: PixelReport, syn: PixelReport, m: ScoreMetrics, gates: Gates,
          skipped: dict[str, str] | None = None) -> list[GateResult]:
    """Each gate of ``gates`` on the measured statistics (see :class:`Gates`), in a fixed order."""
    why = {k: v for names, v in (skipped or {}).items() for k in names.split(",")}
    dstd = max(abs(a / b - 1) if b > 0 else float(a > 0) for a, b in zip(syn.std, real.std))
    dhf = abs(syn.hf_energy / real.hf_energy - 1) if real.hf_energy > 0 else float(syn.hf_energy > 0)
    fd_t = None if m.fd_floor is None else gates.fd_ratio * max(m.fd_floor, 0.0)
    kid_t = None if m.kid_floor is None else gates.kid_ratio * (abs(m.kid_floor) + (m.kid_floor_std or 0.0))
    return [
        _gate("mean_colour", max(abs(a - b) for a, b in zip(syn.mean, real.mean)), gates.mean_levels,
              "max |Δ mean| per channel <= mean_levels"),
        _gate("std", dstd, gates.std_rel, "max |std_syn / std_real - 1| per channel <= std_rel"),
        _gate("hf_energy", dhf, gates.hf_rel, "|hf_syn / hf_real - 1| <= hf_rel"),
        _gate("fd", m.fd_half, fd_t, "FD(real half, syn) <= fd_ratio × FD(real half, other half)", why.get("fd_half")),
        _gate("kid", m.kid_half, kid_t, "KID(real half, syn) <= kid_ratio × (|KID floor| + std)", why.get("kid_half")),
        _gate("precision", m.precision, gates.precision_min, "precision >= precision_min", why.get("precision")),
        _gate("recall", m.recall, gates.recall_min, "recall >= recall_min", why.get("recall")),
        _gate("copy_rate", m.copy_rate, gates.copy_rate_max, "copy rate <= copy_rate_max", why.get("copy_rate")),
        _gate("cas", m.cas, None if m.trs is None else gates.cas_ratio * m.trs, "CAS >= cas_ratio × TRS",
              why.get("cas")),
    ]


def _pixels(images: np.ndarray) -> PixelReport:
    from alldata.metrics.generative import pixel_statistics

    return PixelReport(**vars(pixel_statistics(images)))


def _cas_labels(real: dict[str, list], syn: dict[str, list], held: dict[str, list],
                label_field: str | None) -> tuple[str, list[int], list[int], list[int]] | str:
    """The label field CAS classifies and the labelled rows of each set, or why there is none."""
    for f in [label_field] if label_field else CAS_FIELDS:
        rows = [[i for i, v in enumerate(d.get(f) or []) if v] for d in (real, syn, held)]
        classes = [{d[f][i] for i in r} for d, r in zip((real, syn, held), rows)]
        if len(classes[0]) >= 2 and len(classes[1]) >= 2 and classes[2]:
            return f, *rows  # type: ignore[return-value]
    fields = label_field or ", ".join(CAS_FIELDS)
    return f"no label field ({fields}) has 2+ classes in both the real and synthetic cells and labelled held-out cells"


def _measure(
    real: np.ndarray, synthetic: np.ndarray, extractor: FeatureExtractor | None, *,
    heldout: np.ndarray | None, labels: tuple[dict, dict, dict] | None, label_field: str | None,
    params: ScoreParams,
) -> tuple[ScoreMetrics, dict[str, str], Memorisation | None]:
    from alldata.features import extract
    from alldata.metrics import generative as gm

    values: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    if extractor is None:
        return ScoreMetrics(), {"encoder": "no feature extractor given: only the pixel gates were measured"}, None

    def attempt(names: tuple[str, ...], fn: Any) -> None:
        try:
            vals = fn()
        except MetricError as e:
            skipped[",".join(names)] = str(e)
            return
        values.update(zip(names, vals if isinstance(vals, tuple) else (vals,)))

    fr, ff = extract(extractor, real), extract(extractor, synthetic)
    seed = params.seed
    half = np.random.default_rng(seed).permutation(len(fr))
    a, b = fr[half[: len(fr) // 2]], fr[half[len(fr) // 2 :]]
    kid_args = (params.kid_subsets, params.kid_subset_size, seed)
    attempt(("fd",), lambda: gm.frechet_distance(fr, ff))
    attempt(("kid_mean", "kid_std"), lambda: gm.kid(fr, ff, *kid_args))
    attempt(("fd_half", "fd_floor"), lambda: (gm.frechet_distance(a, ff), gm.frechet_distance(a, b)))
    attempt(("kid_half", "kid_floor", "kid_floor_std"), lambda: (gm.kid(a, ff, *kid_args)[0], *gm.kid(a, b, *kid_args)))
    attempt(("precision", "recall"), lambda: gm.precision_recall(fr, ff, params.k_pr))
    attempt(("density", "coverage"), lambda: gm.density_coverage(fr, ff, params.k_dc))
    mem = None
    try:
        mem = gm.memorisation(fr, ff, params.percentile)
    except MetricError as e:
        skipped["copy_rate"] = str(e)
    if mem is not None:
        finite = mem.ratio[np.isfinite(mem.ratio)]
        values.update(copy_rate=mem.copy_rate, copy_threshold=mem.threshold,
                      nn_distance_median=float(np.median(mem.nn_distance)),
                      nn_ratio_median=float(np.median(finite)) if len(finite) else None)
    if heldout is None or labels is None:
        skipped["cas"] = "no labelled real held-out cells to test CAS on"
    else:
        found = _cas_labels(*labels, label_field)
        if isinstance(found, str):
            skipped["cas"] = found
        else:
            field, ir, isy, ih = found
            fh = extract(extractor, heldout[ih])
            yr, ys, yh = ([d[field][i] for i in rows] for d, rows in zip(labels, (ir, isy, ih)))
            values["cas_label_field"] = field
            attempt(("cas", "trs"), lambda: (gm.cas(ff[isy], ys, fh, yh, seed=seed), gm.cas(fr[ir], yr, fh, yh, seed=seed)))
    return ScoreMetrics(**values), skipped, mem


def score_images(
    real: np.ndarray,
    synthetic: np.ndarray,
    extractor: FeatureExtractor | None = None,
    *,
    heldout: np.ndarray | None = None,
    real_labels: dict[str, Sequence[Hashable | None]] | None = None,
    synthetic_labels: dict[str, Sequence[Hashable | None]] | None = None,
    heldout_labels: dict[str, Sequence[Hashable | None]] | None = None,
    label_field: str | None = None,
    gates: Gates | None = None,
    params: ScoreParams | None = None,
) -> ScoreReport:
    """Measure uint8 ``(N, H, W, 3)`` synthetic images against real ones and judge them by ``gates``.

    Args:
        real: real cells, the reference (and the memorisation reference: the training cells).
        synthetic: the cells to score.
        extractor: features for FD/KID/PR/copies/CAS (e.g. the encoder); None measures
            the pixel gates only.
        heldout: real cells not in ``real``, the test set of CAS and TRS.
        real_labels, synthetic_labels, heldout_labels: ``{field: label per image}``; CAS
            uses ``label_field`` (default the first of cell_type, subtype, diagnosis with
            2+ classes in ``real`` and ``synthetic``).
        gates: the thresholds (default :class:`Gates`).
        params: the metrics' settings (default :class:`ScoreParams`).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> noise = rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
        >>> score_images(np.full((8, 16, 16, 3), 200, np.uint8), noise).passed
        False
    """
    labels = None
    if real_labels is not None and synthetic_labels is not None and heldout_labels is not None:
        labels = (dict(real_labels), dict(synthetic_labels), dict(heldout_labels))
    report, _ = _score(real, synthetic, extractor, heldout=heldout, labels=labels, label_field=label_field,
                       gates=gates or Gates(), params=params or ScoreParams())
    return report


def _score(real: np.ndarray, synthetic: np.ndarray, extractor: FeatureExtractor | None, *,
           gates: Gates, params: ScoreParams, heldout: np.ndarray | None = None,
           labels: tuple[dict, dict, dict] | None = None, label_field: str | None = None,
           pixels: tuple[np.ndarray, np.ndarray] | None = None,
           **fields: Any) -> tuple[ScoreReport, Memorisation | None]:
    metrics, skipped, mem = _measure(real, synthetic, extractor, heldout=heldout, labels=labels,
                                     label_field=label_field, params=params)
    pr, ps = (_pixels(p) for p in (pixels or (real, synthetic)))
    results = judge(pr, ps, metrics, gates, skipped)
    report = ScoreReport(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), n_real=len(real), n_fake=len(synthetic),
        n_heldout=0 if heldout is None else len(heldout), params=params, gates_config=gates, pixels_real=pr,
        pixels_synthetic=ps, metrics=metrics, gates=results, passed=all(g.passed is not False for g in results),
        skipped=skipped, image_size=int(real.shape[1]), **fields,
    )
    return report, mem


# --- views of a dataset -------------------------------------------------------------------------


def parse_view(text: str, kind: str) -> dict[str, str]:
    """``"generator=diffusion"`` / ``"split=train,source=bccd"`` / ``"all"`` -> a filter dict.

    ``kind`` is ``"synthetic"`` (keys ``generator``, ``tag``) or ``"real"`` (keys
    ``split``, ``source``). Each key at most once; ``all`` (or empty) means no filter.
    """
    allowed = SYNTHETIC_KEYS if kind == "synthetic" else REAL_KEYS
    example = "generator=diffusion" if kind == "synthetic" else "split=train,source=bccd"
    opt = f"--{kind}-view"
    out: dict[str, str] = {}
    text = text.strip()
    if text.lower() in ("", "all"):
        return out
    for part in (p.strip() for p in text.split(",")):
        k, sep, v = (x.strip() for x in part.partition("="))
        keys = f"allowed keys: {', '.join(allowed)}, or 'all'"
        problem = (f"{part!r} is not key=value; {keys}" if not sep or not k or not v
                   else f"unknown key {k!r}; {keys}" if k not in allowed
                   else f"key {k!r} given twice; give each key once" if k in out else None)
        if problem:
            raise ScoreError(f"{opt} {text!r}: {problem}. Fix: e.g. {opt} {example}")
        out[k] = v
    return out


def _view_text(flt: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in flt.items()) or "all"


def synthetic_view(ds: fo.Dataset, flt: dict[str, str]) -> fo.DatasetView:
    """``is_synthetic == True``, optionally of one ``generator`` and/or with one ``tag``."""
    view = ds.match({F.IS_SYNTHETIC: True})
    if "generator" in flt:
        view = view.match({F.GENERATOR: flt["generator"]})
    if "tag" in flt:
        view = view.match_tags(flt["tag"])
    return view


def real_view(ds: fo.Dataset, flt: dict[str, str]) -> fo.DatasetView:
    """``is_synthetic != True``, optionally of one ``split`` and/or one ``source``."""
    view = ds.match({F.IS_SYNTHETIC: {"$ne": True}})
    for key, field in (("split", F.SPLIT), ("source", F.SOURCE)):
        if key in flt:
            view = view.match({field: flt[key]})
    return view


def default_report_path(dataset: str) -> Path:
    """``<alldata home>/datasets/<dataset>/score-<UTC timestamp>.json``."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return home() / "datasets" / dataset / f"score-{stamp}.json"


def _as_filter(flt: dict[str, str] | str, kind: str) -> dict[str, str]:
    if isinstance(flt, str):
        return parse_view(flt, kind)
    allowed = SYNTHETIC_KEYS if kind == "synthetic" else REAL_KEYS
    bad = sorted(set(flt) - set(allowed))
    if bad:
        raise ScoreError(f"{kind} view filter has unknown keys {bad}; allowed keys: {', '.join(allowed)}")
    return dict(flt)


def _load(view: fo.DatasetView, what: str, flt: dict[str, str], image_size: int, progress: bool) -> Any:
    from alldata.generators.data import load_cells

    try:
        return load_cells(view, image_size, progress=progress)
    except AlldataError:
        raise _no_cells(what, flt) from None


def _own_size(view: fo.DatasetView) -> int | None:
    """The side of the first synthetic image when all of them are square and one size, else None."""
    from PIL import Image

    sizes = set()
    for path in view.match({F.IMAGE_KIND: "cell"}).limit(64).values("filepath"):
        with Image.open(path) as im:
            sizes.add(im.size)
    if len(sizes) != 1:
        return None
    w, h = sizes.pop()
    return w if w == h else None


def _no_cells(what: str, flt: dict[str, str]) -> ScoreError:
    hint = " or run `alldata split` first" if what == "real" and "split" in flt else ""
    return ScoreError(
        f"the {what} view {_view_text(flt)!r} holds no cell images (image_kind == 'cell'); check --{what}-view{hint}"
    )


def get_encoder(
    dataset: str,
    real_filter: dict[str, str] | str,
    *,
    encoder_dir: str | Path | None = None,
    inception_weights: str | Path | None = None,
    train: bool = False,
    encoder_out: str | Path | None = None,
    epochs: int = 10,
    image_size: int = 64,
    label_field: str | None = None,
    seed: int = 0,
    device: str | None = None,
) -> Encoder:
    """The encoder to score with: a trained one, Inception, or (``train``) a new CNN trained on the real view.

    A newly trained encoder is saved to ``encoder_out`` (default
    ``<alldata home>/datasets/<dataset>/encoder``).
    """
    from alldata.encoder import load_encoder, train_encoder_on_view
    from alldata.store import load_dataset

    given = [n for n, v in (("--encoder", encoder_dir), ("--inception-weights", inception_weights),
                            ("--train-encoder", train or None)) if v is not None]
    if len(given) != 1:
        raise ScoreError(
            f"choose exactly one encoder (got {', '.join(given) or 'none'}): --encoder DIR (train one with "
            "`alldata train-encoder`), --train-encoder (trains on the real view), or --inception-weights FILE"
        )
    if not train:
        return load_encoder(encoder_dir, inception_weights, device)
    flt = _as_filter(real_filter, "real")
    view = real_view(load_dataset(dataset), flt)
    if not len(view.match({F.IMAGE_KIND: "cell"})):
        raise _no_cells("real", flt)
    out = Path(encoder_out) if encoder_out else home() / "datasets" / dataset / "encoder"
    return train_encoder_on_view(view, out, label_field=label_field, image_size=image_size, epochs=epochs,
                                 seed=seed, device=device)


def score_dataset(
    dataset: str | fo.Dataset,
    synthetic_filter: dict[str, str] | str,
    real_filter: dict[str, str] | str,
    encoder: Encoder | FeatureExtractor | None,
    image_size: int | None = None,
    *,
    heldout_filter: dict[str, str] | str | None = "split=test",
    checkpoint: str | Path | None = None,
    label_field: str | None = None,
    gates: Gates | None = None,
    params: ScoreParams | None = None,
    report_path: str | Path | None = None,
    progress: bool = False,
) -> ScoreReport:
    """Score the synthetic cells of ``dataset`` against its real cells; returns (and writes) the report.

    The real view is also the memorisation reference (default in the CLI: ``split=train``);
    the held-out view (real cells not in it, default ``split=test``; None for none) is the
    test set of CAS and TRS, which is skipped when it holds no labelled cells. With
    ``checkpoint`` only the samples made by that checkpoint (its sha256) are scored and the
    report is also written to ``<checkpoint>/score.json``. Images are read at
    ``image_size`` (default: the encoder's input size, else 64). On the scored synthetic
    samples it writes ``nn_real_key``, ``nn_distance``, ``nn_ratio`` (None when infinite)
    and ``copy_flag``, and re-tags ``memorised`` (stale tags in the view removed first).
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    syn_f, real_f = _as_filter(synthetic_filter, "synthetic"), _as_filter(real_filter, "real")
    sha = None
    view = synthetic_view(ds, syn_f)
    if checkpoint is not None:
        from alldata.generators.base import checkpoint_sha256

        sha = checkpoint_sha256(checkpoint)
        view = view.match({F.CHECKPOINT_SHA256: sha})
    size = image_size or getattr(encoder, "image_size", 64)
    syn = _load(view, "synthetic", syn_f, size, progress)
    real = _load(real_view(ds, real_f), "real", real_f, size, progress)
    pixels, native = None, _own_size(view)
    if native is not None and native != size:  # pixel gates at the generator's size, not the encoder's
        pixels = (_load(real_view(ds, real_f), "real", real_f, native, progress).images,
                  _load(view, "synthetic", syn_f, native, progress).images)
    held, held_text = None, None
    if heldout_filter is not None:
        held_f = _as_filter(heldout_filter, "real")
        held_text = _view_text(held_f)
        hv = real_view(ds, held_f).match({F.KEY: {"$nin": list(real.keys)}})
        held = _load(hv, "held-out", held_f, size, progress) if len(hv.match({F.IMAGE_KIND: "cell"})) else None
    path = Path(report_path) if report_path else default_report_path(ds.name)
    describe = getattr(encoder, "describe", None)
    report, mem = _score(
        real.images, syn.images, encoder, gates=gates or Gates(), params=params or ScoreParams(),
        heldout=None if held is None else held.images,
        labels=None if held is None else (real.labels, syn.labels, held.labels), label_field=label_field,
        pixels=pixels, pixel_size=native if pixels is not None else None, dataset=ds.name, synthetic_view=_view_text(syn_f), real_view=_view_text(real_f), heldout_view=held_text,
        checkpoint=None if checkpoint is None else str(Path(checkpoint).resolve()), checkpoint_sha256=sha,
        encoder=describe() if describe else ({"kind": encoder.name} if encoder is not None else None),
        report_path=str(path),
    )
    if mem is not None:
        report = report.model_copy(update={"memorised": _tag_copies(ds, syn.keys, real.keys, mem)})
    text = report.model_dump_json(indent=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if checkpoint is not None:
        (Path(checkpoint) / SCORE_NAME).write_text(text)
    return report


def _tag_copies(ds: fo.Dataset, syn_keys: list[str], real_keys: list[str], mem: Memorisation) -> list[dict[str, Any]]:
    """Write the per-sample memorisation fields, re-tag ``memorised``; the flagged copies."""
    nn_keys = [real_keys[i] for i in mem.nn_index]
    scored = ds.match({F.KEY: {"$in": list(syn_keys)}})
    scored.untag_samples(TAG_MEMORISED)
    for field, vals in (
        (NN_REAL_KEY, nn_keys),
        (NN_DISTANCE, [float(v) for v in mem.nn_distance]),
        (NN_RATIO, [float(v) if np.isfinite(v) else None for v in mem.ratio]),
        (COPY_FLAG, [bool(v) for v in mem.copy_flag]),
    ):
        scored.set_values(field, dict(zip(syn_keys, vals)), key_field=F.KEY)
    flagged = [k for k, c in zip(syn_keys, mem.copy_flag) if c]
    if flagged:
        ds.match({F.KEY: {"$in": flagged}}).tag_samples(TAG_MEMORISED)
    return [{"key": k, "nn_real_key": n, "nn_distance": float(d)}
            for k, n, d, c in zip(syn_keys, nn_keys, mem.nn_distance, mem.copy_flag) if c]


def last_score(checkpoint_dir: str | Path) -> ScoreReport | None:
    """The last ``alldata score --checkpoint`` report of a checkpoint, or None.

    None when the folder has no ``score.json`` or when that report scored other weights
    (the checkpoint was retrained since). ``report.passed`` is the verdict and
    ``report.failed()`` the gates that failed.

    Raises:
        ScoreError: ``score.json`` is there but is not a score report (the message names it).
    """
    p = Path(checkpoint_dir) / SCORE_NAME
    if not p.is_file():
        return None
    try:
        report = ScoreReport.model_validate_json(p.read_text())
    except (ValidationError, OSError) as e:
        raise ScoreError(f"{p} is not an `alldata score` report ({str(e).splitlines()[0]}); "
                         f"delete it or score again with `alldata score --checkpoint {checkpoint_dir}`") from None
    from alldata.generators.base import checkpoint_sha256

    try:
        current = checkpoint_sha256(checkpoint_dir)
    except AlldataError:
        return None
    return report if report.checkpoint_sha256 in (None, current) else None
