"""Plots write PNGs; CI formatting and Markdown tables."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alldata.benchmark.plots import markdown_table, plot_confusion, plot_gains, plot_roc
from alldata.metrics import (
    CI,
    GainResult,
    MetricError,
    classification_metrics,
    format_ci,
    paired_gain,
    roc_curve,
    roc_ovr,
)

approx = pytest.approx


Y_TRUE = list("aaaabbbccc")
Y_PRED = list("aabaabcccc")
PAIRS = [(s, f) for s in range(3) for f in range(5)]


def _base(offset=0.0):
    return {k: 0.6 + 0.02 * k[1] - 0.01 * k[0] + offset for k in PAIRS}


# --- plots and text ---------------------------------------------------------------------------

PNG = b"\x89PNG\r\n\x1a\n"


def test_plots_write_png_files(tmp_path):
    pytest.importorskip("matplotlib")
    r = classification_metrics(Y_TRUE, Y_PRED)
    curves = {"perfect": roc_ovr([0, 0, 1, 1], np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]]), [0, 1])[1]}
    fpr, tpr, _ = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    curves["mixed"] = (fpr, tpr, 0.75)
    gains = {
        "real+ddpm": paired_gain(_base(), _base(0.05), n_boot=50),
        "real+gan": GainResult(-0.01, -0.04, 0.02, 15, {}),
        "no pairs": GainResult(math.nan, math.nan, math.nan, 0, {}),
    }
    paths = [
        plot_roc(curves, tmp_path / "roc.png"),
        plot_confusion(r.confusion, r.labels, tmp_path / "sub" / "cm.png"),
        plot_confusion(r.confusion, r.labels, tmp_path / "cm_norm.png", normalize=True),
        plot_gains(gains, tmp_path / "gains.png", "macro F1"),
    ]
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, path
    with pytest.raises(MetricError, match="square"):
        plot_confusion(r.confusion, ["a", "b"], tmp_path / "bad.png")


def test_format_ci_and_markdown_table():
    assert format_ci(0.8123, 0.7741, 0.8449) == "0.812 [0.774, 0.845]"
    assert format_ci(0.05, -0.01, 0.1, signed=True) == "+0.050 [-0.010, +0.100]"
    assert format_ci(math.nan, math.nan, math.nan) == "n/a [n/a, n/a]"
    assert format_ci(0.5, digits=1) == "0.5"
    table = markdown_table(
        [{"arm": "real", "f1": 0.81234, "ci": CI(0.8, 0.7, 0.9)}, {"arm": "a|b", "f1": math.nan}],
        {"arm": "Arm", "f1": "macro F1", "ci": "95 % CI"},
    )
    assert table.splitlines() == [
        "| Arm | macro F1 | 95 % CI |",
        "| --- | --- | --- |",
        "| real | 0.812 | 0.800 [0.700, 0.900] |",
        "| a\\|b | n/a |  |",
    ]
    rows = classification_metrics(Y_TRUE, Y_PRED).rows()
    assert markdown_table(rows).splitlines()[0].startswith("| class | support | sensitivity")
