"""alldata.mongod: a private mongod that is found again, refused twice, and only ever stops itself."""

from __future__ import annotations

import json
import os
import socket

import pytest

from alldata.mongod import STATE_NAME, Mongod, MongodError, start_mongod


def test_start_find_refuse_twice_stop(tmp_path, monkeypatch):
    monkeypatch.delenv("FIFTYONE_DATABASE_URI", raising=False)
    db = start_mongod(tmp_path / "db", stop_at_exit=False, set_env=False)
    try:
        assert "FIFTYONE_DATABASE_URI" not in os.environ
        assert db.running() and db.uri == f"mongodb://127.0.0.1:{db.port}" and db.start_seconds > 0
        socket.create_connection(("127.0.0.1", db.port), timeout=2).close()
        state = json.loads((db.dbpath / STATE_NAME).read_text())
        assert state == {"pid": db.pid, "port": db.port, "uri": db.uri}
        found = Mongod.find(db.dbpath)
        assert found is not None and (found.pid, found.port) == (db.pid, db.port) and found.running()
        with pytest.raises(MongodError, match="already served by mongod"):
            start_mongod(db.dbpath, stop_at_exit=False, set_env=False)
    finally:
        db.stop()
    assert not db.running() and Mongod.find(db.dbpath) is None
    assert (tmp_path / "db" / "mongod.log").is_file()  # a dbpath we were given is kept
    db.stop()  # idempotent


def test_a_state_file_naming_another_process_is_never_acted_on(tmp_path):
    (tmp_path / STATE_NAME).write_text(json.dumps({"pid": os.getpid(), "port": 1, "uri": "mongodb://127.0.0.1:1"}))
    assert Mongod.find(tmp_path) is None  # this pid is pytest, not a mongod serving tmp_path
    stranger = Mongod(tmp_path, 1, os.getpid())
    assert not stranger.running()
    stranger.stop()  # must not signal pytest
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / STATE_NAME).write_text("not json")
    assert Mongod.find(tmp_path / "garbage") is None


def test_temp_dbpath_is_removed_and_env_is_set(monkeypatch):
    monkeypatch.setenv("FIFTYONE_DATABASE_URI", "unchanged")
    with start_mongod(stop_at_exit=False) as db:
        assert os.environ["FIFTYONE_DATABASE_URI"] == db.uri and db.dbpath.is_dir()
    assert not db.dbpath.exists()
