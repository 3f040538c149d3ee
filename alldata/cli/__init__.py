"""The ``alldata`` command line: one file per command group, assembled here."""

from __future__ import annotations

import typer

from alldata.cli import app as _app
from alldata.cli import benchmark, compose, curate, generate, info, ingest, previews, publish, score, split

__all__ = ["app"]

app = typer.Typer(
    name="alldata",
    help="Synthetic-data and dataset engineering for acute lymphoblastic leukemia microscopy.",
    no_args_is_help=True,
    add_completion=False,
)
for _group in (ingest, split, info, _app, generate, compose, score, curate, publish, benchmark, previews):
    app.registered_commands += _group.app.registered_commands
