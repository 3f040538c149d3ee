"""The ``alldata`` command line: one file per command, named after it, assembled here.

Command modules import only typer, rich and pydantic at module level (the library is
imported inside each command), so ``alldata --help`` imports neither torch nor fiftyone.
"""

from __future__ import annotations

import typer

from alldata.cli import app as _app
from alldata.cli import (
    benchmark,
    brain,
    card,
    compose_overlaps,
    db,
    embed,
    evaluate,
    export,
    finetune_generator,
    generate,
    info,
    ingest,
    link_crops,
    mix,
    plugin,
    previews,
    publish,
    score,
    sources,
    split,
    train_encoder,
    train_generator,
    views,
)

__all__ = ["app"]

app = typer.Typer(
    name="alldata",
    help="Synthetic-data and dataset engineering for acute lymphoblastic leukemia microscopy.",
    no_args_is_help=True,
    add_completion=False,
)
#: in the order ``alldata --help`` lists them
_COMMANDS = (ingest, split, link_crops, info, sources, db, _app, plugin, train_generator, finetune_generator, generate,
             compose_overlaps, score, train_encoder, views, embed, brain, card, export, publish, mix, benchmark, evaluate, previews)
for _module in _COMMANDS:
    app.registered_commands += _module.app.registered_commands
