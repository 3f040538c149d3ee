"""Grouped splits: deterministic, leak-free (groups and identical files), close to the ratios."""

from __future__ import annotations

from collections import Counter, defaultdict

import fiftyone as fo
import numpy as np
import pytest

from alldata.errors import SplitError
from alldata.ingest import ingest
from alldata.schema import F
from alldata.split import (
    assign_splits,
    check_folds,
    check_no_leak,
    grouped_kfold,
    parse_ratios,
    split_dataset,
)
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


# --- folds --------------------------------------------------------------------------------------


def _groups(n_groups=40, seed=0):
    rng = np.random.default_rng(seed)
    groups, strata, hashes = [], [], []
    for g in range(n_groups):
        for i in range(int(rng.integers(1, 6))):
            groups.append(f"p{g}")
            strata.append("ALL" if g % 3 else "healthy")
            hashes.append(f"h{g}-{i}")
    hashes[0] = hashes[-1] = "same-bytes"  # an identical file in the first and the last group
    return groups, strata, hashes


def test_grouped_kfold_leaks_nothing():
    groups, strata, hashes = _groups()
    folds = grouped_kfold(groups, strata, k=5, seed=3, hashes=hashes)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(groups)))  # a partition
    fold_of_group = defaultdict(set)
    for f, (train, test) in enumerate(folds):
        assert not set(train) & set(test) and len(train) + len(test) == len(groups)
        for i in test:
            fold_of_group[groups[i]].add(f)
        assert {strata[i] for i in test} == {"ALL", "healthy"}  # both strata in every fold
    assert all(len(v) == 1 for v in fold_of_group.values())
    assert fold_of_group["p0"] == fold_of_group[groups[-1]]  # tied by the identical file
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 6


def test_grouped_kfold_deterministic_and_order_free():
    groups, strata, _ = _groups()
    a = grouped_kfold(groups, strata, k=4, seed=1)
    b = grouped_kfold(groups, strata, k=4, seed=1)
    assert all(np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    c = grouped_kfold(groups, strata, k=4, seed=2)
    assert any(not np.array_equal(x[1], y[1]) for x, y in zip(a, c))
    n = len(groups)
    rev = grouped_kfold(groups[::-1], strata[::-1], k=4, seed=1)
    assert all(np.array_equal(np.sort(n - 1 - x[1]), y[1]) for x, y in zip(rev, a))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_kfold_balances_each_stratum(seed):
    # stratum A: one big group (10 samples) and 4 singles; stratum B: 10 singles.
    # Balancing totals alone would pile B into the fold without the big group.
    groups = ["big"] * 10 + [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(10)]
    strata = ["A"] * 14 + ["B"] * 10
    folds = grouped_kfold(groups, strata, k=2, seed=seed)
    assert sorted(sum(strata[i] == "B" for i in te) for _, te in folds) == [5, 5]


def test_grouped_kfold_bad_k_and_leak_check():
    groups = ["a", "a", "b", "c"]
    with pytest.raises(SplitError, match="k <= 3"):
        grouped_kfold(groups, None, k=4, seed=0)
    with pytest.raises(SplitError, match=">= 2"):
        grouped_kfold(groups, None, k=1, seed=0)
    bad = [
        (np.array([1, 2, 3]), np.array([0])),
        (np.array([0, 3]), np.array([1, 2])),
        (np.array([0, 1, 2]), np.array([3])),
    ]
    with pytest.raises(SplitError, match="'a' is in test folds 0 and 1"):
        check_folds(groups, bad)
