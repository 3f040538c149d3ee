"""Deterministic grouped splits that cannot leak.

The unit of assignment is a *component*: samples sharing a group (``subject_id`` with
``by="subject"`` where present, else ``group_id``) are one unit, and units whose files are
byte-identical (same ``sha256``) are merged, so a duplicate can never sit on both sides.
Within each stratum (the component's majority label) components are shuffled with the seed
and handed greedily to the split furthest below its target share. :func:`grouped_kfold`
makes cross-validation folds from the same components (:func:`connected_components`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alldata.errors import SplitError
from alldata.schema import F, Split

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = [
    "BY",
    "assign_splits",
    "check_folds",
    "check_no_leak",
    "connected_components",
    "grouped_kfold",
    "parse_ratios",
    "split_dataset",
]

SPLITS = [s.value for s in Split]
#: Allowed values of ``by``.
BY = ("subject", "group")


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> train/val/test shares (non-negative, summing to 1)."""
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise SplitError(f"ratios {text!r} are not numbers; write three shares such as 0.7,0.15,0.15") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise SplitError(f"ratios {text!r} must be three non-negative shares (train,val,test) summing to 1, e.g. 0.7,0.15,0.15")
    return parts  # type: ignore[return-value]


class UnionFind:
    """Disjoint sets of keys; the smallest key names each set (deterministic)."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def connected_components(groups: Sequence[str], hashes: Sequence[str | None] | None = None) -> list[str]:
    """The component of each sample: its group, merged with every group holding a file of the same hash.

    Returns one component name per sample (the smallest group name in it), so samples
    with the same name must stay on the same side of any split. ``None``/empty hashes
    merge nothing.

    Examples:
        >>> connected_components(["a", "b", "c"], ["h1", "h2", "h1"])
        ['a', 'b', 'a']
    """
    uf = UnionFind()
    first_with_hash: dict[str, str] = {}
    for g, h in zip(groups, hashes if hashes is not None else [None] * len(groups)):
        uf.find(g)
        if h:
            uf.union(g, first_with_hash.setdefault(h, g))
    return [uf.find(g) for g in groups]


def _by_stratum(comp_of: Sequence[str], strata: Sequence[str | None]) -> dict[str, list[str]]:
    """Components (sorted) per majority stratum; ``None`` strata do not vote, an all-None component gets ``""``."""
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for c, s in zip(comp_of, strata):
        votes[c]  # a component whose strata are all None still gets an entry
        if s is not None:
            votes[c][str(s)] += 1
    stratum_of = {c: min((v or Counter({"": 1})).items(), key=lambda kv: (-kv[1], kv[0]))[0] for c, v in votes.items()}
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for c in sorted(stratum_of):
        by_stratum[stratum_of[c]].append(c)
    return by_stratum


def assign_splits(
    groups: Sequence[str],
    hashes: Sequence[str | None],
    strata: Sequence[str | None],
    ratios: tuple[float, float, float],
    seed: int,
) -> list[str]:
    """Assign each sample (given its group, file hash and stratum) to train/val/test.

    Deterministic for the same inputs and seed, whatever their order.
    """
    comp_of = connected_components(groups, hashes)
    size: Counter[str] = Counter(comp_of)
    by_stratum = _by_stratum(comp_of, [s or "" for s in strata])
    rng = np.random.default_rng(seed)
    target = np.asarray(ratios, float)
    split_of: dict[str, str] = {}
    for stratum in sorted(by_stratum):
        comps = by_stratum[stratum]
        order = rng.permutation(len(comps))
        counts = np.zeros(3)
        for idx in order:
            c = comps[idx]
            n = size[c]
            deficit = target * (counts.sum() + n) - counts
            deficit[target == 0] = -np.inf
            k = int(np.argmax(deficit))
            counts[k] += n
            split_of[c] = SPLITS[k]
    return [split_of[c] for c in comp_of]


@dataclass
class SplitSummary:
    counts: dict[str, int]
    groups: dict[str, int]


def _units(ds: fo.Dataset | fo.DatasetView, by: str) -> tuple[list[str], list[str], list[str | None]]:
    if by not in BY:
        raise SplitError(f"by={by!r} is not one of {BY}; use 'subject' (patients) or 'group' (source image)")
    ids, groups, subjects, hashes = ds.values(["id", F.GROUP_ID, F.SUBJECT_ID, F.SHA256])
    if by == "subject":
        groups = [f"subject/{s}" if s else g for s, g in zip(subjects, groups)]
    return ids, groups, hashes


def split_dataset(
    ds: fo.Dataset | fo.DatasetView,
    *,
    by: str = "group",
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    stratify: str | None = F.DIAGNOSIS,
) -> SplitSummary:
    """Write a grouped train/val/test split into the ``split`` field of ``ds`` and check it.

    Args:
        ds: the dataset or view to split (other samples are left as they are).
        by: ``"subject"`` (subject_id where the source has one, else group_id) or ``"group"``.
        ratios: train/val/test shares.
        seed: the shuffle seed; the same seed gives the same split.
        stratify: a Classification field whose label balances the splits (None: no strata).

    Raises:
        SplitError: bad arguments, or (never expected) a group found in two splits.
    """
    ids, groups, hashes = _units(ds, by)
    strata = ds.values(f"{stratify}.label") if stratify else [None] * len(ids)
    splits = assign_splits(groups, hashes, strata, ratios, seed)
    ds.set_values(F.SPLIT, dict(zip(ids, splits)), key_field="id")
    check_no_leak(ds, by=by)
    per_split: dict[str, set[str]] = defaultdict(set)
    for g, s in zip(groups, splits):
        per_split[s].add(g)
    return SplitSummary(counts=dict(Counter(splits)), groups={s: len(v) for s, v in per_split.items()})


def check_no_leak(ds: fo.Dataset | fo.DatasetView, *, by: str = "group") -> None:
    """Raise :class:`SplitError` if any group, or any file hash, appears in two splits."""
    _, groups, hashes = _units(ds, by)
    splits = ds.values(F.SPLIT)
    for name, keys in (("group", groups), ("file sha256", hashes)):
        seen: dict[str, str] = {}
        for k, s in zip(keys, splits):
            if k is None or s is None:
                continue
            if seen.setdefault(k, s) != s:
                raise SplitError(f"{name} {k!r} is in both {seen[k]!r} and {s!r}: the split leaks")


# --- k folds for cross-validation ----------------------------------------------------------


def grouped_kfold(
    groups: Sequence[Hashable],
    strata: Sequence[Hashable | None] | None = None,
    k: int = 5,
    seed: int = 0,
    *,
    hashes: Sequence[str | None] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split samples into ``k`` folds so that no group (and no identical file) spans two folds.

    The unit is a *component*, as in :func:`alldata.split.assign_splits`: all samples of a
    group, merged with any other group holding a byte-identical file (same entry in
    ``hashes``). Each component's stratum is its majority stratum (ties: the smallest
    name; ``None`` entries do not vote, so one marked sample can stratify a component of
    unmarked ones, e.g. the one annotated smear among its crops). Within each stratum, in sorted order, components are shuffled with
    ``np.random.default_rng(seed)`` and each goes to the fold holding the fewest samples
    of that stratum, then the fewest samples overall, then a seeded random fold order.
    So every fold gets a share of every stratum with enough components, fold sizes stay
    close, and the same inputs and seed give the same folds whatever the sample order.

    Args:
        groups: one group id per sample (patient / source image).
        strata: one stratum per sample (the class to balance), or None for no strata.
        k: number of folds, at least 2 and at most the number of components.
        seed: shuffle seed; repeat the benchmark over several seeds for several fold draws.
        hashes: optional file hash per sample (None entries are ignored); samples with the
            same hash are kept in the same fold.

    Returns:
        ``k`` pairs ``(train_idx, test_idx)`` of sorted integer index arrays; the test
        parts partition ``range(len(groups))`` and each train part is the complement.

    Raises:
        SplitError: bad ``k`` or mismatched lengths (or, never expected, a leak).
    """
    groups_s = [str(g) for g in groups]
    n = len(groups_s)
    if n == 0:
        raise SplitError("groups is empty; pass one group id per sample")
    strata_l = list(strata) if strata is not None else [None] * n
    hashes_l = list(hashes) if hashes is not None else [None] * n
    if len(strata_l) != n or len(hashes_l) != n:
        raise SplitError(
            f"groups ({n}), strata ({len(strata_l)}) and hashes ({len(hashes_l)}) must have one entry per sample"
        )
    if int(k) != k or k < 2:
        raise SplitError(f"k={k!r} must be an integer >= 2; use 5 or 10 folds")
    comp_of = connected_components(groups_s, hashes_l)
    size: Counter[str] = Counter(comp_of)
    if k > len(size):
        raise SplitError(
            f"k={k} folds but only {len(size)} independent groups; use k <= {len(size)} or collect more groups"
        )
    by_stratum = _by_stratum(comp_of, strata_l)

    rng = np.random.default_rng(seed)
    priority = rng.permutation(k)
    total = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for stratum in sorted(by_stratum):
        comps = by_stratum[stratum]
        in_stratum = np.zeros(k, dtype=np.int64)
        for idx in rng.permutation(len(comps)):
            c = comps[idx]
            f = min(range(k), key=lambda j: (in_stratum[j], total[j], priority[j]))
            fold_of[c] = f
            in_stratum[f] += size[c]
            total[f] += size[c]
    sample_fold = np.array([fold_of[c] for c in comp_of])
    everything = np.arange(n)
    folds = [(everything[sample_fold != f], everything[sample_fold == f]) for f in range(k)]
    check_folds(groups_s, folds, hashes=hashes_l)
    return folds


def check_folds(
    groups: Sequence[Hashable],
    folds: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    hashes: Sequence[str | None] | None = None,
) -> None:
    """Raise :class:`SplitError` unless ``folds`` are leak-free k-fold splits of the samples.

    Checks that the test parts partition all samples, each train part is exactly the
    complement of its test part, and no group (and no non-None file hash) has samples in
    two test parts.
    """
    n = len(groups)
    seen = np.zeros(n, dtype=np.int64)
    for i, (train, test) in enumerate(folds):
        train, test = np.asarray(train), np.asarray(test)
        seen[test] += 1
        if len(np.intersect1d(train, test)) or len(train) + len(test) != n:
            raise SplitError(f"fold {i}: train and test overlap or do not cover all {n} samples; the folds are broken")
    if not (seen == 1).all():
        bad = np.nonzero(seen != 1)[0][:5].tolist()
        raise SplitError(f"samples {bad} are in {seen[bad].tolist()} test folds, not exactly one; the folds are broken")
    keyed = [("group", [str(g) for g in groups])]
    if hashes is not None:
        keyed.append(("file sha256", list(hashes)))
    for name, keys in keyed:
        where: dict[str, int] = {}
        for i, (_, test) in enumerate(folds):
            for j in np.asarray(test):
                key = keys[j]
                if key is None or key == "":
                    continue
                if where.setdefault(key, i) != i:
                    raise SplitError(f"{name} {key!r} is in test folds {where[key]} and {i}: the folds leak")
