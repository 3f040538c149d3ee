"""Counts of a dataset by source, split and label (what ``alldata info`` prints)."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["dataset_counts"]


def dataset_counts(ds: fo.Dataset | fo.DatasetView) -> dict[str, dict]:
    """Per-source totals and splits, label counts, box/point counts, duplicates and synthetic samples,
    and ``benchmark``: the samples benchmark generator arms made from this dataset, kept apart in
    their own datasets (``{dataset name: count}``, see :func:`alldata.synthetic.benchmark_dataset`)."""
    from alldata.synthetic import benchmark_datasets

    sources, splits = ds.values([F.SOURCE, F.SPLIT])
    by_source: dict[str, Counter] = defaultdict(Counter)
    for src, split in zip(sources, splits):
        by_source[src]["total"] += 1
        by_source[src][split or "unsplit"] += 1
    labels = {}
    for field in (F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE):
        labels[field] = {k: v for k, v in sorted(ds.count_values(f"{field}.label").items(), key=lambda kv: str(kv[0])) if k}
    objects = {
        "cells": ds.count_values(f"{F.CELLS}.detections.label"),
        "blasts": ds.count(f"{F.BLASTS}.keypoints"),
        "other_wbcs": ds.count(f"{F.OTHER_WBCS}.keypoints"),
        "segmentation masks": ds.count(F.SEGMENTATION),
    }
    return {
        "total": len(ds),
        "by_source": {s: dict(c) for s, c in sorted(by_source.items())},
        "labels": labels,
        "objects": objects,
        "duplicates": len(ds.match_tags(F.TAG_DUPLICATE)),
        "synthetic": len(ds.match_tags(F.TAG_SYNTHETIC)),
        "benchmark": benchmark_datasets(getattr(ds, "dataset_name", None) or ds.name),
    }
