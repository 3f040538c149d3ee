"""alldata app: `kill PID` (SIGTERM) or a closed terminal (SIGHUP) stops the App server child with it."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from alldata.mongod import free_port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return predicate()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_serve_stops_its_child_on_each_signal(sig):
    code = ("import sys; from alldata.cli.app import serve; "
            "sys.exit(serve([sys.executable, '-c', 'import time; time.sleep(600)']))")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert _wait(lambda: psutil.Process(parent.pid).children(), 60), "serve() started no child"
        (child,) = psutil.Process(parent.pid).children()
        parent.send_signal(sig)
        parent.wait(60)
        assert _wait(lambda: _gone(child.pid), 10), f"child {child.pid} survived {sig.name}"
    finally:
        parent.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_child_starts_does_not_orphan_it(sig, tmp_path):
    """The signal lands inside Popen (child forked, handle not yet returned): the child still stops."""
    pidfile = tmp_path / "child.pid"
    code = (
        "import os, signal, subprocess, sys\n"
        "import alldata.cli.app\n"
        "app = sys.modules['alldata.cli.app']\n"
        "class Racing(subprocess.Popen):\n"
        "    def __init__(self, *a, **k):\n"
        "        super().__init__(*a, **k)\n"
        f"        open({str(pidfile)!r}, 'w').write(str(self.pid))\n"
        f"        os.kill(os.getpid(), {int(sig)})\n"
        "app.subprocess.Popen = Racing\n"
        "sys.exit(app.serve([sys.executable, '-c', 'import time; time.sleep(600)']))\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code])
    child_pid = None
    try:
        parent.wait(60)
        child_pid = int(pidfile.read_text())
        assert _wait(lambda: _gone(child_pid), 10), f"child {child_pid} orphaned by {sig.name} during Popen"
    finally:
        parent.kill()
        if child_pid is not None and not _gone(child_pid):
            psutil.Process(child_pid).kill()


def test_alldata_app_stops_its_server_on_sigterm(dataset_name):
    import fiftyone as fo

    fo.Dataset(dataset_name, persistent=True)
    port = free_port()
    cmd = [sys.executable, "-c", "from alldata.cli import app; app()", "app", dataset_name, "--port", str(port),
           "--no-views", "--no-previews"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # env: the test mongod
    try:
        assert _wait(lambda: _listening(port) or proc.poll() is not None, 300), "the App never listened"
        assert proc.poll() is None, proc.communicate()[0]
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "alldata app has no server child"
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
        assert _wait(lambda: not _listening(port), 30), f"port {port} still served after SIGTERM"
        survivors = [c.pid for c in children if not _gone(c.pid)]
        assert not survivors, f"server processes {survivors} outlived alldata app"
    finally:
        for c in psutil.Process(proc.pid).children(recursive=True) if proc.poll() is None else []:
            c.kill()
        proc.kill()
