"""Shared fixtures: a private FiftyOne database, the shared-data switch, fixture writers."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

# A private database for the whole test session, set before fiftyone is imported anywhere.
_DB_DIR = tempfile.mkdtemp(prefix="alldata-test-db-")
os.environ["FIFTYONE_DATABASE_DIR"] = _DB_DIR
os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
os.environ["ALLDATA_HOME"] = tempfile.mkdtemp(prefix="alldata-test-home-")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# Registered before fiftyone is imported, so it runs after fiftyone's own exit hook stops the database.
atexit.register(shutil.rmtree, _DB_DIR, True)


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
