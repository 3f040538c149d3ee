"""``alldata views``: (re)build alldata's saved views, what the FiftyOne App shows a curator."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app", "print_views"]

app = typer.Typer()


def print_views(name: str, report: object) -> None:
    """Print a :class:`alldata.views.ViewsReport` as a table (plus deleted and skipped views)."""
    t = Table(title=f"{name}: alldata's saved views (open with `alldata app {name}`)")
    t.add_column("view")
    t.add_column("samples", justify="right")
    for view, n in report.views.items():  # type: ignore[attr-defined]
        t.add_row(view, str(n))
    console.print(t)
    console.print(f"App URL of a view: /datasets/{name}?view=SLUG, e.g. ?view={report.slugs.get('alldata-real')}",  # type: ignore[attr-defined]
                  highlight=False, soft_wrap=True)
    for view in report.deleted:  # type: ignore[attr-defined]
        console.print(f"deleted stale view {view}", highlight=False)
    for view, why in report.skipped.items():  # type: ignore[attr-defined]
        err_console.print(f"[yellow]skipped[/] {view}: {why}", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def views(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    truth: Annotated[
        list[str] | None,
        typer.Option(help="PRED_FIELD=TRUTH_FIELD for a pred_* field whose truth field is not recorded (repeatable)"),
    ] = None,
) -> None:
    """(Re)build alldata's saved views (named alldata-...); views you saved yourself are kept."""
    from alldata.views import build_views, parse_truth

    print_views(name, build_views(name, parse_truth(truth)))
