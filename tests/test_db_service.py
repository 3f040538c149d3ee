"""alldata db: the bundled mongod as a local service; started once, found by every command, stopped only if ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alldata.cli import app
from alldata.dbservice import (
    RECORD_NAME,
    apply_service_env,
    service_status,
    start_service,
    stop_service,
    user_database_uri,
)
from alldata.mongod import STATE_NAME, MongodError, free_port, start_mongod

runner = CliRunner()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A private ALLDATA_HOME, no FiftyOne config file, and no database URI of the user's own."""
    monkeypatch.setenv("ALLDATA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FIFTYONE_CONFIG_PATH", str(tmp_path / "no-config.json"))
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)
    monkeypatch.delenv("ALLDATA_SERVICE_URI", raising=False)
    yield tmp_path / "home"
    stop_service()  # whatever a failed test left running under this home


def _pid_alive(pid: int) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("mongod") and "zombie" not in open(f"/proc/{pid}/status").read()
    except OSError:
        return False


def test_start_status_env_stop(home, tmp_path, monkeypatch):
    port = free_port()
    s = start_service(tmp_path / "db", port=port)
    assert s.running and s.port == port and s.uri == f"mongodb://127.0.0.1:{port}" and s.dbpath == (tmp_path / "db").resolve()
    assert json.loads((home / RECORD_NAME).read_text()) == {
        "pid": s.pid, "port": port, "uri": s.uri, "dbpath": str(s.dbpath), "log": str(s.dbpath / "mongod.log")}
    assert os.getsid(s.pid) == s.pid  # its own session: it outlives the terminal that started it
    again = start_service()  # already running: the same service, not a second one
    assert (again.pid, again.port) == (s.pid, port)
    with pytest.raises(MongodError, match="already runs on"):
        start_service(tmp_path / "other")

    # a command's setup points FiftyOne at it (before fiftyone is imported) ...
    assert apply_service_env() == s.uri and os.environ["FIFTYONE_DATABASE_URI"] == s.uri
    assert user_database_uri() is None  # ... and knows that URI is the service's, not the user's
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", "mongodb://127.0.0.1:1")  # the user's own choice wins
    assert apply_service_env() is None and os.environ["FIFTYONE_DATABASE_URI"] == "mongodb://127.0.0.1:1"
    assert service_status().user_uri == "mongodb://127.0.0.1:1"

    stopped = stop_service()
    assert stopped is not None and stopped.pid == s.pid
    assert not _pid_alive(s.pid) and not (home / RECORD_NAME).exists() and not service_status().running
    assert stop_service() is None  # idempotent


def test_a_new_process_uses_the_service_unless_the_user_chose_a_database(home, tmp_path):
    s = start_service(tmp_path / "db", port=free_port())
    code = "import os, alldata.cli._common; print(os.environ.get('FIFTYONE_DATABASE_URI'))"
    env = {k: v for k, v in os.environ.items() if k not in ("FIFTYONE_DATABASE_URI", "ALLDATA_SERVICE_URI")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == s.uri
    out = subprocess.run([sys.executable, "-c", code], env={**env, "FIFTYONE_DATABASE_URI": "mongodb://mine:27017"},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "mongodb://mine:27017"
    (tmp_path / "no-config.json").write_text(json.dumps({"database_uri": "mongodb://configured:27017"}))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "None"  # FiftyOne's config.json names a database: fiftyone uses it, we set nothing


def test_a_record_naming_another_process_is_never_acted_on(home, tmp_path):
    home.mkdir(parents=True)
    (home / RECORD_NAME).write_text(json.dumps({"pid": os.getpid(), "port": 1, "uri": "mongodb://127.0.0.1:1",
                                                "dbpath": str(tmp_path), "log": str(tmp_path / "mongod.log")}))
    assert not service_status().running  # the pid is pytest, not a mongod serving that dir
    assert apply_service_env() is None and "FIFTYONE_DATABASE_URI" not in os.environ
    assert stop_service() is None  # must not signal pytest; the stale record is removed
    assert not (home / RECORD_NAME).exists()
    (home / RECORD_NAME).write_text("not json")
    assert not service_status().running and stop_service() is None


def test_a_data_dir_locked_by_a_mongod_we_did_not_record_is_named(tmp_path):
    db = start_mongod(tmp_path / "db", stop_at_exit=False, set_env=False)
    try:
        (db.dbpath / STATE_NAME).unlink()  # as FiftyOne's own service would run it: no record of ours
        with pytest.raises(MongodError, match=rf"in use by another mongod \(pid {db.pid}"):
            start_mongod(db.dbpath, stop_at_exit=False, set_env=False)
    finally:
        db.stop()


def test_cli_db_start_status_stop(home, tmp_path):
    port = free_port()
    r = runner.invoke(app, ["db", "start", "--dbpath", str(tmp_path / "db"), "--port", str(port), "--no-warm"])
    assert r.exit_code == 0, r.output
    assert "started" in r.output and "worker" not in r.output and f"mongodb://127.0.0.1:{port}" in r.output and str(tmp_path / "db") in r.output
    r = runner.invoke(app, ["db", "status"])
    assert r.exit_code == 0 and "running" in r.output and "not running" not in r.output and f"port     {port}" in r.output
    r = runner.invoke(app, ["db", "status", "--uri"])
    assert r.exit_code == 0 and r.output.strip() == f"mongodb://127.0.0.1:{port}"
    pid = service_status().pid
    r = runner.invoke(app, ["db", "stop"])
    assert r.exit_code == 0 and f"stopped mongod pid {pid}" in r.output and not _pid_alive(pid)
    r = runner.invoke(app, ["db", "status"])
    assert r.exit_code == 0 and "not running" in r.output
    r = runner.invoke(app, ["db", "status", "--uri"])
    assert r.exit_code == 1 and "alldata db start" in r.output
    r = runner.invoke(app, ["db", "stop"])
    assert r.exit_code == 0 and "not running" in r.output


def test_quick_commands_run_in_the_warm_worker(home, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "alldata")
    if not os.path.isfile(exe):
        pytest.skip(f"no `alldata` entry point beside {sys.executable} (pip install -e .)")
    r = runner.invoke(app, ["db", "start", "--dbpath", str(tmp_path / "db"), "--port", str(free_port())])
    assert r.exit_code == 0 and "worker   pid" in r.output, r.output
    from alldata.cli._warm import worker_status

    w = worker_status()
    assert w.running and oct(w.socket_path.stat().st_mode & 0o777) == "0o600"
    env = {k: v for k, v in os.environ.items() if k not in ("FIFTYONE_DATABASE_URI", "ALLDATA_SERVICE_URI")}
    done = subprocess.run([exe, "info", "no-such-dataset"], env=env, capture_output=True, text=True, timeout=120, check=False)
    # it reached the service's (empty) database, printed on our stderr and handed back the exit code
    assert done.returncode == 1 and "No dataset 'no-such-dataset'" in done.stderr and "Existing: (none)" in done.stderr
    done = subprocess.run([exe, "views", "--help"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and "Usage: alldata views" in done.stdout
    log = w.log.read_text()
    assert "alldata info no-such-dataset" in log and "alldata views --help" in log  # both ran in a fork
    # a module the worker imported changes: it refuses (the command runs here), lets go of our stdout and
    # stderr (or this run would wait for their EOF until the timeout) and restarts with the new code
    db_module = Path(__file__).resolve().parents[1] / "alldata" / "cli" / "db.py"
    os.utime(db_module)  # same content, a new modification time
    done = subprocess.run([exe, "info", "no-such-dataset"], env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1 and "Existing: (none)" in done.stderr  # the same answer, computed here
    assert w.log.read_text().count("alldata info") == 1
    deadline = time.monotonic() + 300
    while w.log.read_text().count("imports took") < 2 and time.monotonic() < deadline:
        time.sleep(1)
    assert w.log.read_text().count("imports took") == 2 and worker_status().running  # restarted, same pid
    r = runner.invoke(app, ["db", "stop"])
    assert r.exit_code == 0 and f"stopped the warm worker pid {w.pid}" in r.output and not w.running
    assert not w.socket_path.exists()
