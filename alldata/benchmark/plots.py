"""Plots and Markdown tables of benchmark results (matplotlib imported when drawing).

Plots draw on a bare :class:`matplotlib.figure.Figure` (Agg canvas) and never touch
pyplot's global state; each is written as a PNG and its path returned.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alldata.metrics._common import MetricError, _div
from alldata.metrics.stats import CI, GainResult, format_ci

__all__ = ["figure", "format_ci", "markdown_table", "plot_confusion", "plot_external", "plot_gains", "plot_roc",
           "save_figure"]


def figure(figsize: tuple[float, float]) -> Any:
    """A bare matplotlib Figure (constrained layout) of ``figsize`` inches."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("alldata's plots need matplotlib: pip install matplotlib") from e
    return Figure(figsize=figsize, layout="constrained")


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (120 dpi) at ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, *, title: str = "ROC"
) -> Path:
    """Draw ROC curves ``{name: (fpr, tpr, auc)}`` (e.g. :class:`RocCurve`) into a PNG at ``path``."""
    fig = figure((5, 5))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="chance")
    for name, (fpr, tpr, area) in curves.items():
        ax.step(fpr, tpr, where="post", label=f"{name} (AUC {format_ci(area)})")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false-positive rate (1 − specificity)",
        ylabel="true-positive rate (sensitivity)",
        title=title,
        aspect="equal",
    )
    ax.legend(loc="lower right", fontsize="small")
    return save_figure(fig, path)


def plot_confusion(
    cm: np.ndarray,
    labels: Sequence[Hashable],
    path: str | Path,
    *,
    normalize: bool = False,
    title: str = "Confusion matrix",
) -> Path:
    """Draw a confusion matrix (rows true, columns predicted) with its counts into a PNG.

    ``normalize=True`` colours and prints each row's share (the per-class recall on the
    diagonal); rows with no samples stay empty.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(labels):
        raise MetricError(
            f"cm has shape {cm.shape} for {len(labels)} labels; pass a square (C, C) matrix and C labels"
        )
    shown = _div(cm, cm.sum(axis=1, keepdims=True)) if normalize else cm.astype(float)
    side = 1.5 + 0.6 * len(labels)
    fig = figure((side + 1, side))
    ax = fig.add_subplot()
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else max(float(np.nanmax(shown)), 1.0))
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = np.arange(len(labels))
    names = [str(lab) for lab in labels]
    ax.set_xticks(ticks, names, rotation=45, ha="right")
    ax.set_yticks(ticks, names)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = np.nanmax(shown) if np.isfinite(shown).any() else 1.0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            v = shown[i, j]
            text = "" if np.isnan(v) else (f"{v:.2f}" if normalize else str(int(cm[i, j])))
            ax.text(j, i, text, ha="center", va="center", color="white" if v > 0.5 * top else "black", fontsize="small")
    return save_figure(fig, path)


def plot_gains(
    gains: Mapping[str, GainResult], path: str | Path, metric_name: str, *, title: str | None = None
) -> Path:
    """Draw each arm's paired gain as a point with its CI bar and a zero line into a PNG.

    An interval that crosses the zero line is a gain the data cannot tell from none.
    """
    names = list(gains)
    fig = figure((6.5, 1.2 + 0.5 * max(len(names), 1)))
    ax = fig.add_subplot()
    ax.axvline(0.0, color="black", linewidth=1)
    ys = np.arange(len(names))[::-1]
    for y, name in zip(ys, names):
        g = gains[name]
        err = np.nan_to_num(np.array([[g.mean - g.low], [g.high - g.mean]]), nan=0.0)
        colour = "tab:green" if g.low > 0 else "tab:red" if g.high < 0 else "tab:grey"
        ax.errorbar([g.mean], [y], xerr=err, fmt="o", color=colour, capsize=4)
        ax.annotate(str(g), (g.mean, y), xytext=(0, 7), textcoords="offset points", ha="center", fontsize="small")
    ax.set_yticks(ys, [f"{n} (n={gains[n].n_pairs})" for n in names])
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set(xlabel=f"paired gain in {metric_name} (mean, 95 % CI)", title=title or f"Gain over baseline: {metric_name}")
    return save_figure(fig, path)


def plot_external(
    pairs: Mapping[str, tuple[CI, CI]], path: str | Path, metric_name: str, *, title: str | None = None
) -> Path:
    """Draw each row's in-pool and external value ``{name: (in_pool CI, external CI)}`` as two
    points with their CI bars into a PNG: the gap between them is what a new site costs."""
    names = list(pairs)
    fig = figure((6.5, 1.4 + 0.55 * max(len(names), 1)))
    ax = fig.add_subplot()
    ys = np.arange(len(names))[::-1]
    for k, (label, colour, dy) in enumerate((("in-pool (CV)", "tab:blue", 0.12), ("external", "tab:orange", -0.12))):
        for y, name in zip(ys, names):
            c = pairs[name][k]
            err = np.nan_to_num(np.array([[c.point - c.low], [c.high - c.point]]), nan=0.0)
            ax.errorbar([c.point], [y + dy], xerr=err, fmt="o", color=colour, capsize=4,
                        label=label if y == ys[0] else None)
            ax.annotate(format_ci(c.point), (c.point, y + dy), xytext=(0, 5), textcoords="offset points",
                        ha="center", fontsize="x-small")
    ax.set_yticks(ys, names)
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set(xlabel=f"{metric_name} (pooled, 95 % CI over test groups)", title=title or f"In-pool vs external: {metric_name}")
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


# --- text ----------------------------------------------------------------------------------


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return format_ci(float(v), digits=digits)
    if isinstance(v, (CI, GainResult)):
        return format_ci(v[0], v[1], v[2], digits=digits) if isinstance(v, CI) else str(v)
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | Mapping[str, str] | None = None, *, digits: int = 3
) -> str:
    """A GitHub-flavoured Markdown table of ``rows``.

    Args:
        rows: one mapping per row.
        columns: keys to show, in order, or ``{key: header}``; default every key in the
            order first seen. A key missing from a row leaves the cell empty.
        digits: decimals for floats (NaN prints ``n/a``); :class:`CI` and
            :class:`GainResult` values print with :func:`format_ci`.

    Examples:
        >>> print(markdown_table([{"arm": "real", "f1": 0.81234}], ["arm", "f1"]))
        | arm | f1 |
        | --- | --- |
        | real | 0.812 |
    """
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
    if not headers:
        raise MetricError("markdown_table has no columns; pass columns=[...] or rows with keys")
    lines = [
        "| " + " | ".join(_cell(h, digits) for h in headers.values()) + " |",
        "| " + " | ".join("---" for _ in headers) + " |",
    ]
    lines += ["| " + " | ".join(_cell(r.get(k), digits) for k in headers) + " |" for r in rows]
    return "\n".join(lines)
