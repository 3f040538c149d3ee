"""Deterministic balanced mixes of real and synthetic samples, from a recipe.

:func:`mix` saves one arm of a recipe as a FiftyOne view: the recipe's real pool with
``split == "train"`` (no folds apply here) and the rare-class cut of every arm but the
oracle, plus stored synthetic samples of the arm's generator family for the classes the arm
fills, as many as :func:`alldata.benchmark.classification.fill_counts` allows (balance,
capped by ``mix.max_synthetic_ratio``). Rejected samples are never included; synthetic
samples are taken in key order, this recipe's first, so the same store gives the same mix.
Arms whose extra images only exist in memory (``augment``, ``oversample``) cannot be saved.

Examples:
    >>> result = mix(load_recipe("recipes/rare-class-recovery.yaml"), "alldata", arm="gan")  # doctest: +SKIP
    >>> result.view_name
    'mix-rare_class_recovery-gan'
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from alldata.errors import AlldataError
from alldata.recipes import Recipe, is_generator_kind, recipe_slug
from alldata.schema import F

__all__ = ["MixError", "MixResult", "mix", "mix_view_name"]


#: The "fold" the rare-class cut of a mix is drawn for: no benchmark fold has this index.
_MIX_FOLD = 65535


class MixError(AlldataError, ValueError):
    """A mix that cannot be built as asked (unknown arm, in-memory arm, no train split)."""


@dataclass
class MixResult:
    """What :func:`mix` saved: the view name and its composition ``{class: {"real", "synthetic"}}``."""

    view_name: str
    arm: str
    composition: dict[str, dict[str, int]] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)

    @property
    def n_real(self) -> int:
        return sum(c["real"] for c in self.composition.values())

    @property
    def n_synthetic(self) -> int:
        return sum(c["synthetic"] for c in self.composition.values())


def mix_view_name(recipe: Recipe, arm: str) -> str:
    """``mix-<recipe slug>-<arm>``: the saved view's name."""
    return f"mix-{recipe_slug(recipe.name)}-{arm}"


def _default_arm(recipe: Recipe) -> str:
    for a in recipe.arms:
        if is_generator_kind(a.kind):
            return a.name
    return recipe.baseline


def mix(recipe: Recipe, dataset: str, arm: str | None = None, *, seed: int = 0) -> MixResult:
    """Save the training mix of ``arm`` (default: the first generator arm) as a view of ``dataset``.

    Args:
        recipe: the validated recipe.
        dataset: the FiftyOne dataset (split with ``alldata split`` first).
        arm: the arm's name.
        seed: the seed of the rare-class cut (the same seed, the same kept groups).

    Raises:
        MixError: unknown or in-memory arm, or no ``train`` samples in the pool.
    """
    from alldata.benchmark.classification import fill_counts
    from alldata.benchmark.pool import _rare_cut, build_pool
    from alldata.curation import curated
    from alldata.store import load_dataset

    arm = arm or _default_arm(recipe)
    spec = recipe.arm(arm)
    if spec.kind in {"augment", "oversample"}:
        raise MixError(f"arm {arm!r} (kind {spec.kind}) makes its extra images in memory during the benchmark; "
                       "mix materialises stored samples only: pick a real, oracle, gan or diffusion arm")
    if recipe.task != "classification":
        raise MixError(f"mix builds classification training sets; recipe {recipe.name!r} is a {recipe.task} recipe")
    ds = load_dataset(dataset)
    pool = build_pool(recipe, dataset)
    split_of = dict(zip(*ds.select(pool.ids).values(["id", F.SPLIT])))
    train = np.array([i for i, sid in enumerate(pool.ids) if split_of.get(sid) == "train"], dtype=np.int64)
    if len(train) == 0:
        raise MixError(f"no samples of recipe {recipe.name!r}'s pool have split == 'train' in {dataset!r}; "
                       "run `alldata split` first")
    if spec.kind != "oracle":
        train, _ = _rare_cut(pool, recipe, train, fold=_MIX_FOLD, seed=seed)
    ids = [pool.ids[i] for i in train]
    labels = [pool.labels[i] for i in train]
    composition = {c: {"real": labels.count(c), "synthetic": 0} for c in sorted(set(pool.labels))}
    shortfall: dict[str, int] = {}
    if is_generator_kind(spec.kind):
        field_ = f"{recipe.data.label_field}.label"
        for cls, n in fill_counts(labels, recipe).items():
            if n <= 0:
                continue
            cand = curated(ds.match({F.IS_SYNTHETIC: True, F.GENERATOR: spec.kind, field_: cls}))
            keys, sids, recipes = cand.values([F.KEY, "id", F.RECIPE])
            order = sorted(range(len(keys)), key=lambda j: (recipes[j] != recipe.name, keys[j]))
            take = [sids[j] for j in order[:n]]
            ids += take
            composition.setdefault(cls, {"real": 0, "synthetic": 0})["synthetic"] = len(take)
            if len(take) < n:
                shortfall[cls] = n - len(take)
    name = mix_view_name(recipe, arm)
    ds.save_view(name, ds.select(ids, ordered=True), overwrite=True)
    return MixResult(name, arm, composition, shortfall)
