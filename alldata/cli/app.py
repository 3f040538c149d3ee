"""``alldata app``: open a dataset in the FiftyOne App, with alldata's saved views."""

from __future__ import annotations

import ipaddress
import signal
import subprocess
import sys
from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app", "is_loopback", "serve"]

app = typer.Typer()


def is_loopback(address: str) -> bool:
    """Whether binding ``address`` keeps the server on this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


@app.command("app")
@handle_errors
def app_(
    name: Annotated[str, typer.Argument(help="FiftyOne dataset name")] = "alldata",
    port: Annotated[int, typer.Option(help="port to serve on")] = 5151,
    address: Annotated[str, typer.Option(help="address to bind (default: localhost only)")] = "127.0.0.1",
    views: Annotated[bool, typer.Option(help="(re)build alldata's saved views first")] = True,
    previews: Annotated[bool, typer.Option(help="write PNG previews of TIFFs (browsers cannot show TIFF) first")] = True,
) -> None:
    """Serve the FiftyOne App for NAME until Ctrl+C, with alldata's saved views (alldata-...).

    Runs FiftyOne's App server in the foreground (rather than ``fo.launch_app``, whose
    background server outlives a killed script), so Ctrl+C, `kill PID` and closing the
    terminal all stop it cleanly. Tag a sample
    ``reject`` or correct its label in the App: mix, benchmark, card and publish respect it.
    """
    from alldata.store import load_dataset

    ds = load_dataset(name)  # fail early, listing the datasets that exist
    if not is_loopback(address):
        err_console.print(
            f"[bold yellow]warning:[/] binding {address}: anyone who can reach this machine on port {port} can "
            "browse and edit the dataset (the App has no login); use --address 127.0.0.1 to keep it local",
            highlight=False, soft_wrap=True,
        )
    if previews:
        from alldata.cli.previews import print_previews
        from alldata.previews import ensure_previews

        print_previews(name, ensure_previews(ds, progress=True))
    if views:
        from alldata.cli.views import print_views
        from alldata.views import build_views

        print_views(name, build_views(ds))
    from alldata.app_plugin.install import install_plugin

    console.print(f"alldata App plugin: {install_plugin()} (operators: press ` in the App)", highlight=False)
    cmd = [sys.executable, "-m", "fiftyone.server.main", "--port", str(port), "--address", address]
    console.print(f"FiftyOne App: http://{address}:{port}/datasets/{name}  (Ctrl+C to stop)", highlight=False)
    serve(cmd)


class _Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP reached ``alldata app``."""


def serve(cmd: list[str], stop_timeout: float = 60.0) -> int:
    """Run the App server ``cmd`` in the foreground; stop it with us on Ctrl+C, SIGTERM or SIGHUP.

    ``kill PID`` (SIGTERM) or a closed terminal (SIGHUP) would otherwise leave the server
    child running, reparented and still serving the port. The child gets SIGTERM, then
    SIGKILL after ``stop_timeout`` seconds. Returns the server's exit code.

    A signal that lands while ``Popen`` is still starting the child only sets a flag (raising
    there would lose the child's handle and orphan it); the flag is checked once the handle
    is held.
    """
    signals = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    proc: subprocess.Popen | None = None
    stopped: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped.append(signum)
        if proc is not None:
            raise _Stop(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        proc = subprocess.Popen(cmd)
        if stopped:
            raise _Stop(signal.Signals(stopped[0]).name)
        return proc.wait()
    except (KeyboardInterrupt, _Stop):
        for sig in signals:  # a second signal must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        if proc is None:
            return 1
        proc.terminate()
        try:
            proc.wait(stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        return proc.returncode
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
