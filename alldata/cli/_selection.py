"""The options and helpers shared by ``alldata card``, ``export`` and ``publish``: which samples, which reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from alldata.cli._common import console

__all__ = ["Benchmark", "Exclude", "Override", "ScoreReport", "Sources", "Splits", "Synthetic", "TrainedOn",
           "names", "print_export", "selection"]

Sources = Annotated[list[str] | None, typer.Option("--sources", help="keep only these sources (comma-joined or repeated)")]
Exclude = Annotated[list[str] | None, typer.Option("--exclude-sources", help="drop these sources (comma-joined or repeated)")]
Splits = Annotated[list[str] | None, typer.Option("--splits", help="keep only these splits: train,val,test")]
Synthetic = Annotated[bool, typer.Option("--synthetic/--real-only", help="include synthetic samples")]
Override = Annotated[
    list[str] | None,
    typer.Option("--override-licence", help="SOURCE to pass the licence gate although its terms forbid it or are unknown "
                 "(only if you hold the right; recorded on the card; repeatable)"),
]
TrainedOn = Annotated[
    list[str] | None, typer.Option("--trained-on", help="declare a generator's training sources: GEN=SRC[,SRC] (repeatable)")
]
Benchmark = Annotated[list[Path] | None, typer.Option("--benchmark", help="a benchmark --out folder with metrics.json (repeatable)")]
ScoreReport = Annotated[
    list[Path] | None, typer.Option("--score-report", help="`alldata score` JSON reports (default: latest per view)")
]


def names(values: list[str] | None) -> tuple[str, ...]:
    """``["a,b", "c"]`` -> ``("a", "b", "c")``: repeated and comma-joined option values."""
    return tuple(x.strip() for v in values or [] for x in v.split(",") if x.strip())


def selection(sources: list[str] | None, exclude: list[str] | None, splits: list[str] | None, synthetic: bool) -> Any:
    """The :class:`alldata.card.Selection` the options describe."""
    from alldata.card import Selection

    return Selection(names(sources), names(exclude), names(splits), synthetic)


def print_export(rep: Any) -> None:
    """Print an :class:`alldata.export.ExportReport`: what went out per source, what was held back."""
    console.print(f"{rep.n_samples} samples ({rep.selection}) -> {rep.out_dir} [{rep.format}]", highlight=False, soft_wrap=True)
    for src, d in rep.by_source.items():
        flag = " (override)" if src in rep.overrides else ""
        console.print(f"  {src}: {d['n']} samples, {d['license']}, redistribution {d['redistribution']}{flag}", highlight=False)
    for why, n in rep.skipped.items():
        console.print(f"  [yellow]not exported[/]: {n} samples ({why})", highlight=False)
