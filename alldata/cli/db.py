"""``alldata db start|stop|status``: the bundled MongoDB as a local service every command uses."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from alldata.cli._common import console, err_console, handle_errors

__all__ = ["app"]

app = typer.Typer()


class Action(str, enum.Enum):
    start = "start"
    stop = "stop"
    status = "status"


def _print_status(status: object) -> None:
    from alldata.cli._warm import worker_status

    s, w = status, worker_status()  # alldata.dbservice.ServiceStatus, the warm worker
    state = "[bold green]running[/]" if s.running else "[bold]not running[/]"  # type: ignore[attr-defined]
    console.print(f"database service: {state}", highlight=False)
    if s.running:  # type: ignore[attr-defined]
        for key in ("pid", "port", "uri", "dbpath", "log"):
            console.print(f"  {'data dir' if key == 'dbpath' else key:9}{getattr(s, key)}", highlight=False)
    console.print(f"  {'record':9}{s.record}", highlight=False)  # type: ignore[attr-defined]
    if w.running:
        console.print(f"  {'worker':9}pid {w.pid}, fiftyone imported: runs info, views, split, previews in a fork "
                      f"(log {w.log}; ALLDATA_NO_WARM=1 runs them here)", highlight=False, soft_wrap=True)
    if s.user_uri:  # type: ignore[attr-defined]
        console.print(f"  [yellow]note[/]: your own database URI {s.user_uri} is set (FIFTYONE_DATABASE_URI or "  # type: ignore[attr-defined]
                      "~/.fiftyone/config.json); alldata commands use it, not this service", highlight=False, soft_wrap=True)


@app.command()
@handle_errors
def db(
    action: Annotated[Action, typer.Argument(help="start | stop | status")] = Action.status,
    dbpath: Annotated[Path | None, typer.Option(help="start: data dir (default: FiftyOne's database dir)")] = None,
    port: Annotated[int | None, typer.Option(help="start: 127.0.0.1 port (default: a free one)")] = None,
    uri: Annotated[bool, typer.Option("--uri", help="status: print only the URI (exit 1 if not running)")] = False,
    warm: Annotated[bool, typer.Option(help="start: also a warm worker (fiftyone imported once) for quick commands")] = True,
) -> None:
    """Run FiftyOne's bundled MongoDB as a service on 127.0.0.1, so commands answer in seconds.

    `start` launches it (it outlives the terminal), records it in $ALLDATA_HOME/db.json, and starts a warm worker.

    Every later alldata command uses it unless you set FIFTYONE_DATABASE_URI yourself.

    Your own scripts: export FIFTYONE_DATABASE_URI=$(alldata db status --uri)

    `stop` stops only what `start` started.
    """
    from alldata.cli._warm import start_worker, stop_worker, worker_status
    from alldata.dbservice import apply_service_env, service_status, start_service, stop_service

    if action is Action.start:
        was = service_status()
        s = start_service(dbpath, port=port)
        console.print("already running" if was.running else "started", highlight=False)
        # the worker's fiftyone must use the service (not a database URI of your own)
        if warm and apply_service_env() is not None and not worker_status().running:
            console.print("starting the warm worker (imports fiftyone once: ~10 s on 2 cores) ...", highlight=False)
            start_worker()
        _print_status(s)
        console.print(f"scripts: export FIFTYONE_DATABASE_URI={s.uri}   stop: alldata db stop", highlight=False, soft_wrap=True)
    elif action is Action.stop:
        worker = stop_worker()
        if worker is not None:
            console.print(f"stopped the warm worker pid {worker.pid}", highlight=False)
        stopped = stop_service()
        console.print(f"stopped mongod pid {stopped.pid} ({stopped.dbpath})" if stopped else "not running",
                      highlight=False)
    elif uri:
        s = service_status()
        if not s.running:
            err_console.print("database service not running: start it with `alldata db start`")
            raise typer.Exit(code=1)
        print(s.uri)
    else:
        _print_status(service_status())
