"""``alldata app``: open a dataset in the FiftyOne App."""

from __future__ import annotations

import subprocess
import sys
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
    """Serve the FiftyOne App for NAME on localhost until Ctrl+C.

    Runs FiftyOne's App server in the foreground (rather than ``fo.launch_app``, whose
    background server outlives a killed script), so Ctrl+C stops it cleanly.
    """
    from alldata.store import load_dataset

    load_dataset(name)  # fail early, listing the datasets that exist
    cmd = [sys.executable, "-m", "fiftyone.server.main", "--port", str(port), "--address", address]
    console.print(f"FiftyOne App: http://{address}:{port}/datasets/{name}  (Ctrl+C to stop)")
    proc = subprocess.Popen(cmd)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(60)
