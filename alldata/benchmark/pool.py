"""The real pool a recipe benchmarks on: which samples, under which labels, and the rare-class cut.

``select_pool`` reads a dataset's curated real samples through the recipe's label map;
``build_pool`` is the recipe's own (training) pool; ``_rare_cut`` keeps ``keep_fraction`` of the
rare class's training groups. The engine (:mod:`alldata.benchmark.engine`) folds and runs it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alldata.errors import AlldataError
from alldata.recipes import Recipe
from alldata.schema import F

__all__ = ["ALPHA", "BenchmarkError", "LabelMapError", "Pool", "build_pool", "select_pool"]

_LABEL_LIKE = {F.DIAGNOSIS, F.CELL_TYPE, F.SUBTYPE, F.GROUND_TRUTH}
#: 1 − the confidence level of every interval the benchmark reports.
ALPHA = 0.05


class BenchmarkError(AlldataError, ValueError):
    """A benchmark that cannot run as asked: empty pool, too few groups, missing results."""


class LabelMapError(BenchmarkError):
    """An external pool holds labels the recipe's label map does not cover (names them and the fix)."""


@dataclass
class Pool:
    """The real samples a recipe benchmarks on, one entry per sample (parallel lists)."""

    ids: list[str]
    keys: list[str]
    groups: list[str]
    labels: list[str]
    sources: list[str]
    hashes: list[str | None]
    dropped: dict[str, int] = field(default_factory=dict)
    #: what the folds balance, one entry per sample (None: the labels). Segmentation pools
    #: stratify on the annotated evaluation images so every fold gets some.
    strata: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def composition(self) -> dict[str, int]:
        """Samples per class."""
        return dict(sorted(Counter(self.labels).items()))


def _label_key(field_: str) -> str:
    return f"{field_}.label" if field_ in _LABEL_LIKE else field_


def select_pool(
    recipe: Recipe,
    dataset: str,
    sources: list[str],
    where: dict[str, Any] | None,
    *,
    strict: bool = False,
    what: str = "pool",
) -> tuple[Pool, list[Any]]:
    """The real samples of ``sources`` in ``dataset`` matching ``where``, curated, no kept-copy
    duplicates, no synthetic samples, labels mapped through the recipe's label map
    (``data.classes`` and per-source ``data.source_labels``).

    Returns:
        (the pool, the number of cell detections per sample: segmentation strata).

    Raises:
        LabelMapError: ``strict`` (an external pool) and some samples carry a label the map
            does not cover; the message names the labels per source and how to map them.
    """
    from alldata.curation import curated
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    d = recipe.data
    view = ds.match({F.SOURCE: {"$in": list(sources)}, F.IS_SYNTHETIC: {"$ne": True}, F.DUPLICATE_OF: None})
    for k, v in (where or {}).items():
        view = view.match({_label_key(k): {"$in": v if isinstance(v, list) else [v]}})
    n_matched = len(view)
    view = curated(view)
    n_curated = len(view)
    fields = d.label_fields()
    got = view.values(["id", F.KEY, F.GROUP_ID, F.SOURCE, F.SHA256, *[f"{f}.label" for f in fields]])
    ids, keys, groups, srcs, hashes = got[:5]
    raw_by_field = dict(zip(fields, got[5:]))
    n_cells = view.values(f"{F.CELLS}.detections.label") if view.has_field(F.CELLS) else [None] * len(ids)
    keep: list[int] = []
    labels: list[str] = []
    unmapped: Counter[tuple[str, str, Any]] = Counter()
    for i, src in enumerate(srcs):
        field_ = d.field_for(src)
        r = raw_by_field[field_][i]
        cmap = d.map_for(src)
        if cmap is None:
            if r is None and (recipe.task == "classification" or strict):
                unmapped[(src, field_, r)] += 1
                continue
            labels.append("" if r is None else str(r))
        elif r in cmap:
            labels.append(cmap[r])
        else:
            unmapped[(src, field_, r)] += 1
            continue
        keep.append(i)
    unmapped = Counter({k: n for k, n in unmapped.items() if not d.leaves_out(k[0])})
    if strict and unmapped:
        raise LabelMapError(_unmapped_message(recipe, dataset, what, unmapped))
    pool = Pool(
        ids=[ids[i] for i in keep],
        keys=[keys[i] for i in keep],
        groups=[groups[i] or keys[i] for i in keep],
        labels=labels,
        sources=[srcs[i] for i in keep],
        hashes=[hashes[i] for i in keep],
        dropped={"rejected": n_matched - n_curated, "label_not_in_classes": n_curated - len(keep)},
    )
    return pool, [n_cells[i] for i in keep]


def _unmapped_message(recipe: Recipe, dataset: str, what: str, unmapped: Counter) -> str:
    d = recipe.data
    found = "; ".join(f"{src} {f}={r!r} ({n} samples)" for (src, f, r), n in sorted(unmapped.items(), key=str))
    src, f, r = min(unmapped, key=str)
    classes = d.class_names() or "the labels as they are"
    example = (f"data.source_labels: {{{src}: {{label_field: {f}, classes: {{{r if r is not None else 'null'}: "
               f"<one of {classes}>}}}}}}")
    return (f"recipe {recipe.name!r}: the {what} in dataset {dataset!r} holds labels outside the recipe's label map "
            f"(classes {classes}): {found}. Map them in data.classes (label field {d.label_field!r}) or per source "
            f"with {example} (add unmapped: leave_out there to leave the source's other labels out), or leave "
            "those samples out with a where: filter")


def build_pool(recipe: Recipe, dataset: str) -> Pool:
    """The real pool of ``recipe`` in ``dataset`` (see the module docstring and :func:`select_pool`).

    Raises:
        BenchmarkError: the pool is empty or holds fewer than two classes.
    """
    d = recipe.data
    pool, n_cells = select_pool(recipe, dataset, list(d.sources), d.where)
    if recipe.task == "segmentation":
        pool.strata = [
            f"eval:{src}:{'annotated' if n else 'unannotated'}"
            if recipe.eval_sources is None or src in recipe.eval_sources
            else None
            for src, n in zip(pool.sources, n_cells)
        ]
    if recipe.max_per_class:
        pool = _limit_per_class(pool, recipe.max_per_class)
    if len(pool) == 0:
        raise BenchmarkError(
            f"recipe {recipe.name!r}: no real samples of sources {d.sources} with {d.label_field} in "
            f"{d.class_names()} in dataset {dataset!r}; ingest them first (alldata ingest ...)"
        )
    if recipe.task == "classification" and len(set(pool.labels)) < 2:
        raise BenchmarkError(f"recipe {recipe.name!r}: the pool holds one class only ({pool.composition()})")
    return pool


def _limit_per_class(pool: Pool, n: int) -> Pool:
    """At most ``n`` samples per class, the same ones every time (ordered by a hash of the key)."""
    order = sorted(range(len(pool)), key=lambda i: hashlib.sha1(pool.keys[i].encode()).hexdigest())
    taken: Counter[str] = Counter()
    keep = []
    for i in order:
        if taken[pool.labels[i]] < n:
            taken[pool.labels[i]] += 1
            keep.append(i)
    keep.sort()
    pick = lambda xs: [xs[i] for i in keep]
    dropped = dict(pool.dropped, max_per_class=len(pool) - len(keep))
    return Pool(pick(pool.ids), pick(pool.keys), pick(pool.groups), pick(pool.labels), pick(pool.sources),
                pick(pool.hashes), dropped, None if pool.strata is None else pick(pool.strata))


def _rare_cut(pool: Pool, recipe: Recipe, train: np.ndarray, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices after the cut, kept rare indices): keep ``keep_fraction`` of the rare groups."""
    rare = recipe.rare
    if rare is None:
        return train, np.array([], dtype=np.int64)
    is_rare = np.array([pool.labels[i] == rare.class_ for i in train], dtype=bool)
    rare_groups = sorted({pool.groups[i] for i in train[is_rare]})
    if not rare_groups:
        return train, np.array([], dtype=np.int64)
    n_keep = min(len(rare_groups), max(rare.min_keep, round(rare.keep_fraction * len(rare_groups))))
    rng = np.random.default_rng([seed, fold, 20240])
    kept = {rare_groups[j] for j in rng.permutation(len(rare_groups))[:n_keep]}
    mask = ~is_rare | np.array([pool.groups[i] in kept for i in train])
    cut = train[mask]
    return cut, cut[np.array([pool.labels[i] == rare.class_ for i in cut], dtype=bool)]
