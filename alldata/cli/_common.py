"""What every command shares: error handling, the console, and the database to use.

Imported by every command module, so this runs before any command imports fiftyone: when
``alldata db start`` runs a database service and you have not chosen a database yourself
(``FIFTYONE_DATABASE_URI`` or FiftyOne's ``config.json``), ``FIFTYONE_DATABASE_URI`` is
pointed at it (:func:`alldata.dbservice.apply_service_env`).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from alldata.cli._warm import forward
from alldata.dbservice import apply_service_env
from alldata.errors import AlldataError

__all__ = ["LOG_WIDTH", "console", "err_console", "handle_errors", "metric_columns", "reset_consoles"]

#: the width of output that is not a terminal (a log, a pipe, CI): wide enough that tables are not squeezed
LOG_WIDTH = 400  # a recipe's arm, model and ~15 metric columns


def _console(stderr: bool = False) -> Console:
    """A rich console; one writing to a file or pipe gets :data:`LOG_WIDTH` columns (rich's default: 80)."""
    c = Console(stderr=stderr)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c = Console(stderr=stderr, width=LOG_WIDTH)
    return c


console = _console()
err_console = _console(stderr=True)


def reset_consoles() -> None:
    """Set :data:`console` and :data:`err_console` up again for the current stdout/stderr (a warm worker's fork)."""
    console.__dict__.update(_console().__dict__)
    err_console.__dict__.update(_console(stderr=True).__dict__)


os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
if apply_service_env() is None and "FIFTYONE_DATABASE_URI" not in os.environ:
    # the offline bundled database is MongoDB 6.0, which FiftyOne flags on every start
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

C = TypeVar("C", bound=Callable[..., Any])


def handle_errors(fn: C) -> C:
    """Print alldata and validation errors plainly and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (AlldataError, ValidationError) as e:
            err_console.print(f"[bold red]error:[/] {e}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


def metric_columns(metrics: list[str], primary: str, *, width: int | None = None) -> tuple[list[str], list[str]]:
    """The metric columns a value table shows, primary first: all of them in a log, as many as fit a terminal.

    Args:
        metrics: the recipe's metrics, in its order.
        primary: its primary metric (always shown).
        width: the terminal width (default: :data:`console`'s; when that is not a terminal, all are shown).

    Returns:
        ``(shown, left_out)``: a value cell (``0.812 [0.790, 0.834]``) takes ~24 columns, the arm
        and model columns ~30.
    """
    ordered = list(dict.fromkeys([primary, *metrics]))
    if width is None and not console.is_terminal:
        return ordered, []
    fit = max(1, ((width or console.width) - 30) // 24)
    return ordered[:fit], ordered[fit:]


if os.path.basename(sys.argv[0]) == "alldata" and (_code := forward(sys.argv[1:])) is not None:
    # the `alldata` entry point, a quick command and a warm worker that answered (alldata.cli._warm):
    # it ran there, in a fork with fiftyone already imported
    sys.exit(_code)
