"""``alldata sources``: every source alldata can load, with its folder and on-disk layout."""

from __future__ import annotations

import typer

from alldata.cli._common import console

app = typer.Typer()


@app.command()
def sources() -> None:
    """Every registered source with its folder and expected layout."""
    from alldata.config import data_root
    from alldata.sources import SOURCES

    root = data_root()
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        here = (root / cls.dirname).is_dir()
        console.print(f"[bold]{name}[/] - {cls.title}  [dim]({root / cls.dirname}: {'found' if here else 'not found'})[/]")
        console.print(cls.layout(), highlight=False, markup=False, soft_wrap=True)
        console.print(f"  obtain: {cls.obtain}\n", highlight=False)
