"""``alldata app``: open a dataset in the FiftyOne App."""

from __future__ import annotations

from typing import Annotated

import typer

from alldata.cli._common import console, handle_errors

app = typer.Typer()


@app.command("app")
@handle_errors
def app_(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    port: Annotated[int, typer.Option(help="port on localhost")] = 5151,
    address: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
) -> None:
    """Serve the FiftyOne App for NAME on localhost until Ctrl+C."""
    import fiftyone as fo

    from alldata.store import load_dataset

    ds = load_dataset(name)
    session = fo.launch_app(ds, port=port, address=address, auto=False)
    console.print(f"FiftyOne App: http://{address}:{port}/datasets/{name}  (Ctrl+C to stop)")
    session.wait(-1)
