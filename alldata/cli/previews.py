"""``alldata previews``: PNG previews of TIFFs (which browsers cannot show) for the FiftyOne App."""

from __future__ import annotations

from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app", "print_previews"]

app = typer.Typer()


def print_previews(name: str, report: object) -> None:
    """Print a :class:`alldata.previews.PreviewReport` (failures on stderr, the first 20)."""
    r = report
    console.print(
        f"{name}: {r.converted} of {r.samples} samples need a preview: {r.written} written, {r.reused} reused, "  # type: ignore[attr-defined]
        f"{len(r.failures)} failed; preview_path changed on {r.updated} samples"  # type: ignore[attr-defined]
        + ("; App set to show preview_path" if r.app_config_changed else ""),  # type: ignore[attr-defined]
        highlight=False, soft_wrap=True,
    )
    failures = list(r.failures.items())  # type: ignore[attr-defined]
    for path, why in failures[:20]:
        err_console.print(f"[yellow]no preview[/] {path}: {why}", highlight=False, soft_wrap=True)
    if len(failures) > 20:
        err_console.print(f"... and {len(failures) - 20} more (they show their original file)", highlight=False)


@app.command()
@handle_errors
def previews(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    formats: Annotated[str, typer.Option(help="comma-separated file suffixes that get a PNG preview")] = ".tif,.tiff",
) -> None:
    """Write PNG previews of TIFF images (same pixel size) and make the App show them.

    Previews go to $ALLDATA_HOME/cache/previews/<sha256>.png and are reused on every run;
    `filepath` keeps the original file. `alldata app` runs this before serving.
    """
    from alldata.previews import ensure_previews

    print_previews(name, ensure_previews(name, formats=formats.split(","), progress=True))
