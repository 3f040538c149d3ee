"""A warm worker for quick commands: fiftyone imported once, each command run in a fork of it.

With the database service running (``alldata db start``), what is left of a quick command
like ``alldata info`` is importing fiftyone: 7-10 s of a 2-core machine's CPU, every time.
``alldata db start`` therefore also starts this worker (:func:`start_worker`): a process that
imports fiftyone and alldata's store once, then listens on a Unix socket in
``$ALLDATA_HOME`` (mode 0600, same-user peers only). The ``alldata`` entry point hands the
commands in :data:`WARM_COMMANDS` to it (:func:`forward`): the worker forks, the fork takes
the caller's stdin/stdout/stderr (passed over the socket), working directory, environment
and arguments, runs the command and reports its exit code; Ctrl+C, SIGTERM and SIGHUP are
passed on to it. The worker answers only while its interpreter and fiftyone settings (``FIFTYONE_*``) are the
caller's and none of the alldata modules it imported has changed on disk; otherwise the
command runs in the caller as usual (after a code change the worker restarts itself). ``ALLDATA_NO_WARM=1`` turns it off.
This is the fork-server pattern of :mod:`multiprocessing`'s ``forkserver``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from alldata.config import home

__all__ = ["WARM_COMMANDS", "WorkerStatus", "forward", "main", "start_worker", "stop_worker", "worker_status"]

#: commands handed to the warm worker: quick ones that read or tag a dataset
WARM_COMMANDS = frozenset({"info", "views", "split", "previews"})
#: the worker's record in :func:`alldata.config.home`
RECORD_NAME = "warm.json"
_MAX_REQUEST = 1 << 20


# --- what must match between caller and worker ---------------------------------------------
def _loaded_code() -> dict[str, int]:
    """Each imported alldata module's file and its modification time (a changed file makes the worker stale)."""
    out = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if path and (name == "alldata" or name.startswith("alldata.")):
            try:
                out[path] = os.stat(path).st_mtime_ns
            except OSError:
                out[path] = -1
    return out


def _settings(env: dict[str, str] | os._Environ) -> dict[str, str]:
    """The environment fiftyone reads when it is imported."""
    return {k: v for k, v in env.items() if k.startswith("FIFTYONE_")}


# --- the record -----------------------------------------------------------------------------
class WorkerStatus:
    """The worker's pid and socket from its record, and whether it is running."""

    def __init__(self, pid: int | None = None, socket_path: Path | None = None, log: Path | None = None) -> None:
        self.pid, self.socket_path, self.log = pid, socket_path, log

    @property
    def running(self) -> bool:
        """The recorded pid is still this module's worker for the recorded socket."""
        if self.pid is None or self.socket_path is None:
            return False
        try:
            args = Path(f"/proc/{self.pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return any(b"alldata.cli._warm" in a for a in args) and os.fsencode(str(self.socket_path)) in args


def _record_path() -> Path:
    return home() / RECORD_NAME


def worker_status() -> WorkerStatus:
    """The worker named by ``$ALLDATA_HOME/warm.json`` (not running when there is none)."""
    try:
        rec = json.loads(_record_path().read_text(encoding="utf-8"))
        return WorkerStatus(int(rec["pid"]), Path(rec["socket"]), Path(rec["log"]))
    except (OSError, ValueError, KeyError, TypeError):
        return WorkerStatus()


def _socket_path() -> Path:
    path = home() / "warm.sock"
    if len(os.fsencode(str(path))) > 100:  # AF_UNIX paths are limited to ~107 bytes
        path = Path(tempfile.mkdtemp(prefix="alldata-warm-")) / "warm.sock"
    return path


def start_worker(timeout: float = 180.0) -> WorkerStatus:
    """Start the worker (or return the running one) with this process's environment; wait until it answers.

    Call after :func:`alldata.dbservice.apply_service_env`, so the worker's fiftyone uses the
    service. A worker that is not ready within ``timeout`` keeps starting; commands run in
    their own process until it is.
    """
    now = worker_status()
    if now.running:
        return now
    sock, log = _socket_path(), home() / "warm.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from alldata.cli._warm import main; main()", str(sock)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True, cwd=str(home()),
        )
    status = WorkerStatus(proc.pid, sock, log)
    _record_path().write_text(json.dumps({"pid": proc.pid, "socket": str(sock), "log": str(log)}), encoding="utf-8")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline and not _answers(sock):
        time.sleep(0.2)
    return status


def stop_worker(timeout: float = 30.0) -> WorkerStatus | None:
    """Stop the recorded worker if it is still ours; remove its record. Returns it, or ``None`` if none ran."""
    status = worker_status()
    was_running = status.running
    if was_running and status.pid is not None:
        os.kill(status.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while status.running and time.monotonic() < deadline:
            time.sleep(0.1)
        if status.running:
            os.kill(status.pid, signal.SIGKILL)
    _record_path().unlink(missing_ok=True)
    return status if was_running else None


def _answers(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(sock))
            _send(s, {"ping": True})
            return _recv_line(s.makefile("rb")) == {"pong": True}
    except OSError:
        return False


# --- wire: length-prefixed JSON, the caller's stdio as SCM_RIGHTS -----------------------------
def _send(s: socket.socket, msg: dict, fds: list[int] | None = None) -> None:
    body = json.dumps(msg).encode()
    data = struct.pack("!I", len(body)) + body
    sent = socket.send_fds(s, [data], fds) if fds else 0  # the descriptors travel with the first bytes
    s.sendall(data[sent:])


def _recv_request(conn: socket.socket) -> tuple[dict, list[int]]:
    # close-on-exec: a worker that restarts (execv) must not keep a caller's stdout open (its reader would wait)
    data, fds, _flags, _addr = socket.recv_fds(conn, _MAX_REQUEST, 3, socket.MSG_CMSG_CLOEXEC)
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        more = conn.recv(_MAX_REQUEST)
        if not more:
            raise ConnectionError("request cut short")
        data += more
    (n,) = struct.unpack("!I", data[:4])
    return json.loads(data[4:4 + n]), list(fds)


def _recv_line(f) -> dict | None:
    line = f.readline()
    return json.loads(line) if line else None


def _reply(conn: socket.socket, msg: dict) -> None:
    conn.sendall(json.dumps(msg).encode() + b"\n")


# --- the caller's side ----------------------------------------------------------------------
def forward(argv: list[str]) -> int | None:
    """Run ``alldata ARGV`` in the warm worker; its exit code, or ``None`` to run it here instead.

    ``None`` when: ``ALLDATA_NO_WARM`` is set, the command is not in :data:`WARM_COMMANDS`, no
    worker is running or answering, or its interpreter, fiftyone settings or code differ from ours.
    """
    if os.environ.get("ALLDATA_NO_WARM") or not argv or argv[0] not in WARM_COMMANDS:
        return None
    status = worker_status()
    if status.socket_path is None or not status.socket_path.exists():
        return None
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(status.socket_path))
        _send(s, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "python": sys.executable}, [0, 1, 2])
        replies = s.makefile("rb")
        first = _recv_line(replies)
    except (OSError, ValueError):
        return None
    if not first or "pid" not in first:
        s.close()
        return None  # refused: it restarts itself if our code is newer
    child = int(first["pid"])

    def pass_on(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, pass_on)
    try:
        last = _recv_line(replies)
    except (OSError, ValueError):
        last = None
    return int(last["exit"]) if last and "exit" in last else 1


# --- the worker's side ----------------------------------------------------------------------
def _loaded_code_changed(loaded: dict[str, int]) -> bool:
    for path, mtime in loaded.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def _peer_is_us(conn: socket.socket) -> bool:
    """The caller runs as our user (Linux ``SO_PEERCRED``; elsewhere the socket's mode 0600 is the guard)."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _run_child(conn: socket.socket, listener: socket.socket, req: dict, fds: list[int]) -> None:
    """In the fork: become the caller's command, report its pid, run it, report its exit code."""
    listener.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = ["alldata", *req["argv"]]
    from alldata.cli import _common, app

    _common.reset_consoles()  # the caller's terminal (or pipe), width and colours
    _reply(conn, {"pid": os.getpid()})
    code = 0
    try:
        app(args=req["argv"], prog_name="alldata")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001  (what an uncaught exception would print, then exit 1)
        traceback.print_exc()
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    try:
        _reply(conn, {"exit": code})
    except OSError:
        pass
    os._exit(code)


def main() -> None:
    """The worker: ``python -c 'from alldata.cli._warm import main; main()' SOCKET``."""
    sock_path = Path(sys.argv[1])
    if sys.path and sys.path[0] in ("", os.getcwd()):
        sys.path[0] = os.path.dirname(sys.executable)  # as the console script has it, not the caller's cwd
    settings = _settings(os.environ)
    t0 = time.perf_counter()
    import fiftyone  # noqa: F401  (the seconds every command would spend)

    import alldata.info
    import alldata.split
    import alldata.store
    import alldata.views  # noqa: F401
    from alldata.cli import app  # noqa: F401

    loaded = _loaded_code()
    print(f"warm worker pid {os.getpid()}: imports took {time.perf_counter() - t0:.1f} s; listening on {sock_path}",
          flush=True)
    sock_path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(sock_path))
    finally:
        os.umask(old)
    listener.listen(16)

    def stop(_signum: int, _frame: object) -> None:
        sock_path.unlink(missing_ok=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    while True:
        conn, _ = listener.accept()
        fds: list[int] = []
        try:
            if not _peer_is_us(conn):
                continue
            req, fds = _recv_request(conn)
            if req.get("ping"):
                _reply(conn, {"pong": True})
                continue
            if _loaded_code_changed(loaded):
                _reply(conn, {"refused": "alldata's code changed: restarting"})
                for fd in fds:
                    os.close(fd)
                fds = []
                conn.close()
                listener.close()
                sock_path.unlink(missing_ok=True)
                os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
            if _settings(req.get("env", {})) != settings or req.get("python") != sys.executable or len(fds) != 3:
                _reply(conn, {"refused": "other FIFTYONE_* settings than the worker's"})
                continue
            child = os.fork()
            if child == 0:
                try:
                    _run_child(conn, listener, req, fds)
                finally:
                    os._exit(1)  # a fork never returns to the accept loop
            print(f"{time.strftime('%H:%M:%S')} pid {child}: alldata {' '.join(req['argv'])}", flush=True)
        except (OSError, ValueError, KeyError, ConnectionError) as e:
            print(f"request failed: {e!r}", flush=True)
        finally:
            for fd in fds:
                os.close(fd)
            conn.close()
