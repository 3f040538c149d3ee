"""What the App's "alldata sample" panel shows for one sample, computed without the App.

:func:`sample_card` gathers a sample's provenance, its quality scores (Brain uniqueness and
representativeness, the score job's nearest-real distance, copy flag and report gates),
its nearest real neighbours by alldata's embeddings (thumbnails as data URIs, shown side
by side) and, when the sample was made for a benchmark recipe whose run is known, the
paired gains with their confidence intervals as a Plotly figure.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alldata.app_plugin.actions import BENCHMARK_RUNS, SCORE_REPORT
from alldata.curation import REJECT_TAG
from alldata.embeddings import EMBEDDING_FIELD, NEAR_DUPLICATE_DISTANCE
from alldata.schema import F

__all__ = ["SampleCard", "benchmark_dir", "gain_figure", "pick_sample", "sample_card", "thumbnail"]

_PROVENANCE = (F.SOURCE, F.GENERATOR, F.CHECKPOINT_SHA256, F.SEED, F.CONDITION, F.SAMPLER, F.NUM_INFERENCE_STEPS,
               F.RECIPE, F.ALLDATA_VERSION)
_QUALITY = ("uniqueness", "representativeness", "nn_distance", "nn_ratio", "copy_flag", NEAR_DUPLICATE_DISTANCE)


@dataclass
class SampleCard:
    """One sample as the panel shows it."""

    id: str
    key: str | None
    is_synthetic: bool
    label: str | None
    image: str | None  # data URI
    tags: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] | None = None
    neighbours: list[dict[str, Any]] = field(default_factory=list)
    benchmark: dict[str, Any] | None = None  # {"recipe", "dir", "figure", "rows"}
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """Provenance, quality and score as compact Markdown (the panel's text)."""
        kind = "synthetic" if self.is_synthetic else "real"
        lines = [f"**{self.key or self.id}** ({kind}{', ' + self.label if self.label else ''})"]
        if REJECT_TAG in self.tags:
            lines.append(f"**tagged `{REJECT_TAG}`**: left out of mixes, benchmarks, cards and exports")
        if self.provenance:
            lines.append("**provenance** " + " · ".join(f"{k} `{v}`" for k, v in self.provenance.items()))
        if self.quality:
            lines.append("**quality** " + " · ".join(f"{k} {_fmt(v)}" for k, v in self.quality.items()))
        if self.score:
            s = self.score
            verdict = "PASSED" if s["passed"] else "FAILED"
            gates = " · ".join(f"{g['name']} {_fmt(g['value'])} ({'pass' if g['passed'] else 'FAIL' if g['passed'] is False else 'n/a'})"
                               for g in s["gates"])
            lines.append(f"**score** {verdict} vs real [{s['real_view']}]: {gates}")
        if self.neighbours:
            lines.append("**nearest real cells** (cosine distance of alldata's embeddings): "
                         + ", ".join(f"{n['key']} ({n['distance']:.3f})" for n in self.neighbours))
        if self.benchmark:
            b = self.benchmark
            lines.append(f"**benchmark {b['recipe']}**, paired gain over {b['baseline']} ({b['confidence']:.0%} CI): "
                         + "; ".join(b["rows"]))
        lines += [f"_{n}_" for n in self.notes]
        return "\n\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "n/a" if v is None else str(v)


def _short(v: Any, n: int = 80) -> Any:
    return v[: n - 1] + "…" if isinstance(v, str) and len(v) > n else v


def thumbnail(path: str, size: int = 96) -> str | None:
    """A PNG data URI of the image at ``path``, at most ``size`` px a side (None when unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            if min(im.size) < size // 2:  # small cells: enlarge so the panel shows them
                scale = size / max(im.size)
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.NEAREST)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def pick_sample(ds: Any, view: Any, current: str | None, selected: list[str] | None) -> str | None:
    """The sample the panel describes: the modal's sample, else the first selected one, else the
    view's first synthetic sample, else its first sample."""
    if current:
        return current
    if selected:
        return selected[0]
    first = view.match({F.IS_SYNTHETIC: True}).first() if len(view) else None
    if first is None and len(view):
        first = view.first()
    return first.id if first is not None else None


def benchmark_dir(ds: Any, recipe: str | None) -> Path | None:
    """The results folder of a run of ``recipe`` (the App's record, else ``runs/<recipe>[-quick]``)."""
    if not recipe:
        return None
    known = (ds.info or {}).get(BENCHMARK_RUNS, {})
    candidates = [Path(known[recipe])] if recipe in known else []
    candidates += [Path("runs") / recipe, Path("runs") / f"{recipe}-quick"]
    return next((c for c in candidates if (c / "metrics.json").is_file()), None)


def gain_figure(summary: Any, metrics: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    """A Plotly figure (dict) of the paired gains with CIs of ``metrics`` (default: the primary one), and text rows."""
    metrics = metrics or [summary.primary_metric]
    gains = [g for g in summary.gains if g.metric in metrics]
    ys = [f"{g.arm} / {g.model} ({g.metric})" for g in gains]
    means = [float(g.mean) for g in gains]
    lo = [float(g.mean - g.ci_low) for g in gains]
    hi = [float(g.ci_high - g.mean) for g in gains]
    fig = {
        "data": [{"type": "scatter", "mode": "markers", "x": means, "y": ys, "marker": {"size": 10},
                  "error_x": {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo}}],
        "layout": {"title": {"text": f"gain over {summary.baseline} ({summary.confidence:.0%} CI)", "font": {"size": 13}},
                   "xaxis": {"title": {"text": "paired gain"}, "zeroline": True},
                   "yaxis": {"type": "category", "automargin": True},
                   "margin": {"t": 32, "b": 40, "r": 16}, "height": 110 + 36 * len(gains)},
    }
    rows = [f"{y}: {m:+.3f} [{g.ci_low:+.3f}, {g.ci_high:+.3f}], {g.n_pairs} pairs" for y, m, g in zip(ys, means, gains)]
    return fig, rows


def _score(path: str | None) -> dict[str, Any] | None:
    if not path or not Path(path).is_file():
        return None
    r = json.loads(Path(path).read_text())
    return {"passed": r.get("passed"), "synthetic_view": r.get("synthetic_view"), "real_view": r.get("real_view"),
            "gates": [{k: g.get(k) for k in ("name", "value", "threshold", "passed")} for g in r.get("gates", [])]}


def _neighbours(ds: Any, sample: Any, k: int, size: int) -> list[dict[str, Any]]:
    x = sample[EMBEDDING_FIELD] if sample.has_field(EMBEDDING_FIELD) else None
    if x is None:
        return []
    real = ds.match({F.IS_SYNTHETIC: {"$ne": True}}).exists(EMBEDDING_FIELD).match({"_id": {"$ne": sample._id}})
    ids, keys, paths, emb = real.values(["id", F.KEY, "filepath", EMBEDDING_FIELD])
    labels = real.values(f"{F.CELL_TYPE}.label") if ds.has_field(F.CELL_TYPE) else [None] * len(ids)
    if not ids:
        return []
    m = np.stack([np.asarray(e, np.float64) for e in emb])
    q = np.asarray(x, np.float64)
    d = 1 - (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q) + 1e-12)
    order = np.argsort(d, kind="stable")[:k]
    return [{"id": ids[i], "key": keys[i], "label": labels[i], "distance": float(d[i]), "image": thumbnail(paths[i], size)}
            for i in order]


def sample_card(ds: Any, sample_id: str, *, k: int = 3, size: int = 96) -> SampleCard:
    """Everything the panel shows for sample ``sample_id`` of ``ds``."""
    from alldata.reports import load_benchmark_summary

    s = ds[sample_id]
    label = next((s[f].label for f in (F.CELL_TYPE, F.SUBTYPE, F.DIAGNOSIS) if s.has_field(f) and s[f] is not None), None)
    card = SampleCard(id=s.id, key=s[F.KEY] if s.has_field(F.KEY) else None, is_synthetic=bool(s[F.IS_SYNTHETIC]) if s.has_field(F.IS_SYNTHETIC) else False,
                      label=label, image=thumbnail(s.filepath, 2 * size), tags=list(s.tags))
    for f in _PROVENANCE:
        v = s[f] if s.has_field(f) else None
        if v is not None:
            card.provenance[f] = v[:16] + "…" if f == F.CHECKPOINT_SHA256 else _short(v)
    for f in _QUALITY:
        v = s[f] if s.has_field(f) else None
        if v is not None:
            card.quality[f] = v
    if "memorised" in s.tags:
        card.quality["memorised"] = True
    card.score = _score(s[SCORE_REPORT] if s.has_field(SCORE_REPORT) else None)
    card.neighbours = _neighbours(ds, s, k, size)
    if not card.neighbours:
        card.notes.append("no embeddings: run `alldata embed` (then `alldata brain`) to see the nearest real cells")
    recipe = s[F.RECIPE] if s.has_field(F.RECIPE) else None
    if isinstance(recipe, str) and recipe.lstrip().startswith("{"):  # an overlap composite's own recipe (JSON)
        recipe = None
    run = benchmark_dir(ds, recipe)
    if run is not None:
        summary = load_benchmark_summary(run)
        focus = [summary.primary_metric] + [m for m in summary.metrics if m.startswith("sensitivity:")][:1]
        fig, rows = gain_figure(summary, focus)
        card.benchmark = {"recipe": recipe, "dir": str(run), "figure": fig, "rows": rows, "baseline": summary.baseline,
                          "confidence": summary.confidence}
    elif recipe:
        card.notes.append(f"made for recipe {recipe!r}, whose results folder is unknown (run it from the App or runs/{recipe})")
    return card
