"""``alldata info``: what is in a dataset (counts per source, split and label)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from alldata.cli._common import console, handle_errors

app = typer.Typer()


@app.command()
@handle_errors
def info(name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata") -> None:
    """Counts per source, split and label."""
    from alldata.info import dataset_counts
    from alldata.store import load_dataset

    c = dataset_counts(load_dataset(name))
    # the summary as its own line: a table title wraps at the (narrow) table's width
    console.print(f"[bold]{name}[/]: {c['total']} samples ({c['duplicates']} tagged duplicate, {c['synthetic']} synthetic)",
                  highlight=False)
    for bench, n in c.get("benchmark", {}).items():
        console.print(f"benchmark samples: {n} in [bold]{bench}[/] (made by generator arms, kept out of {name}; "
                      f"`alldata info {bench}`)", highlight=False)
    t = Table()
    cols = ["total", "train", "val", "test", "unsplit"]
    t.add_column("source")
    for col in cols:
        t.add_column(col, justify="right")
    for src, counts in c["by_source"].items():
        t.add_row(src, *(str(counts.get(col, 0)) for col in cols))
    console.print(t)
    for field, counts in c["labels"].items():
        console.print(f"[bold]{field}[/]: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    o = c["objects"]
    console.print(
        "[bold]objects[/]: "
        + ", ".join(f"{k} {v}" for k, v in sorted(o["cells"].items()))
        + f"; blasts {o['blasts']}; other WBC points {o['other_wbcs']}; segmentation masks {o['segmentation masks']}"
    )
