"""What every command shares: error handling and the console."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console

from alldata.errors import AlldataError

__all__ = ["console", "handle_errors"]

console = Console()
err_console = Console(stderr=True)
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
if "FIFTYONE_DATABASE_URI" not in os.environ:
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
