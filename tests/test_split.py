"""Grouped splits: deterministic, leak-free (groups and identical files), close to the ratios."""

from __future__ import annotations

from collections import Counter, defaultdict

import fiftyone as fo
import pytest

from alldata.errors import SplitError
from alldata.ingest import ingest
from alldata.schema import F
from alldata.split import assign_splits, check_no_leak, parse_ratios, split_dataset
from tests._fixtures import write_image


def _synthetic_groups(n_groups=60, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    groups, hashes, strata = [], [], []
    for g in range(n_groups):
        for i in range(int(rng.integers(1, 8))):
            groups.append(f"g{g}")
            hashes.append(f"h{g}-{i}")
            strata.append("ALL" if g % 3 else "healthy")
    hashes[0] = hashes[-1] = "same-bytes"  # a duplicate across groups g0 and the last
    return groups, hashes, strata


def test_no_group_or_file_spans_two_splits():
    groups, hashes, strata = _synthetic_groups()
    splits = assign_splits(groups, hashes, strata, (0.7, 0.15, 0.15), seed=3)
    where = defaultdict(set)
    for g, s in zip(groups, splits):
        where[g].add(s)
    assert all(len(v) == 1 for v in where.values())
    assert where["g0"] == where[groups[-1]]  # tied together by the identical file
    counts = Counter(splits)
    assert abs(counts["train"] / len(splits) - 0.7) < 0.1 and counts["val"] > 0 and counts["test"] > 0


def test_deterministic_for_seed_and_order_free():
    groups, hashes, strata = _synthetic_groups()
    a = assign_splits(groups, hashes, strata, (0.7, 0.15, 0.15), seed=1)
    assert a == assign_splits(groups, hashes, strata, (0.7, 0.15, 0.15), seed=1)
    assert a != assign_splits(groups, hashes, strata, (0.7, 0.15, 0.15), seed=2)
    rev = assign_splits(groups[::-1], hashes[::-1], strata[::-1], (0.7, 0.15, 0.15), seed=1)
    assert rev[::-1] == a


def test_zero_share_gets_nothing():
    groups, hashes, strata = _synthetic_groups()
    assert "val" not in assign_splits(groups, hashes, strata, (0.8, 0.0, 0.2), seed=0)


@pytest.mark.parametrize("bad", ["0.7,0.2", "a,b,c", "0.5,0.5,0.5", "-0.1,0.6,0.5"])
def test_bad_ratios_explain_the_fix(bad):
    with pytest.raises(SplitError, match="0.7,0.15,0.15"):
        parse_ratios(bad)


def test_split_dataset_by_subject_and_leak_check(tmp_path, dataset_name):
    root = tmp_path / "cells"
    for subject in range(12):
        for i in range(3):
            write_image(root / "lymphoblast" / f"s{subject}_{i}.png", (8, 8), seed=subject * 10 + i)
    ingest("folder", dataset_name, root=root, progress=False)
    ds = fo.load_dataset(dataset_name)
    # give the samples subjects: 3 images per subject
    ds.set_values(F.SUBJECT_ID, [k.split("/")[-1].split("_")[0] for k in ds.values(F.KEY)])
    summary = split_dataset(ds, by="subject", ratios=(0.5, 0.25, 0.25), seed=0)
    assert sum(summary.counts.values()) == 36 and sum(summary.groups.values()) == 12
    per_subject = defaultdict(set)
    for sub, sp in zip(*ds.values([F.SUBJECT_ID, F.SPLIT])):
        per_subject[sub].add(sp)
    assert all(len(v) == 1 for v in per_subject.values())
    # a hand-made leak is caught
    first = ds.first()
    first[F.SPLIT] = "test" if first[F.SPLIT] != "test" else "train"
    first.save()
    with pytest.raises(SplitError, match="leaks"):
        check_no_leak(ds, by="subject")
    with pytest.raises(SplitError, match="'subject'"):
        split_dataset(ds, by="patient")
