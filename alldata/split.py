"""Deterministic grouped splits that cannot leak.

The unit of assignment is a *component*: samples sharing a group (``subject_id`` with
``by="subject"`` where present, else ``group_id``) are one unit, and units whose files are
byte-identical (same ``sha256``) are merged, so a duplicate can never sit on both sides.
Within each stratum (the component's majority label) components are shuffled with the seed
and handed greedily to the split furthest below its target share.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from alldata.errors import SplitError
from alldata.schema import F, Split

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["BY", "assign_splits", "check_no_leak", "parse_ratios", "split_dataset"]

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
    uf = UnionFind()
    first_with_hash: dict[str, str] = {}
    for g, h in zip(groups, hashes):
        uf.find(g)
        if h:
            uf.union(g, first_with_hash.setdefault(h, g))
    comp_of = [uf.find(g) for g in groups]
    size: Counter[str] = Counter(comp_of)
    votes: dict[str, Counter[str]] = defaultdict(Counter)
    for c, s in zip(comp_of, strata):
        votes[c][s or ""] += 1
    stratum_of = {c: min(v.items(), key=lambda kv: (-kv[1], kv[0]))[0] for c, v in votes.items()}
    by_stratum: dict[str, list[str]] = defaultdict(list)
    for c in sorted(size):
        by_stratum[stratum_of[c]].append(c)
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
