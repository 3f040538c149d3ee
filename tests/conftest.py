"""Shared fixtures: a private MongoDB for the whole session, the shared-data switch.

Before fiftyone is imported, the suite starts its own ``mongod`` in a temp dir
(:func:`alldata.mongod.start_mongod`) and points ``FIFTYONE_DATABASE_URI`` at it, so tests
never touch a user's datasets. ``ALLDATA_TEST_DATABASE_URI`` points them at a server instead.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

from alldata.mongod import start_mongod

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"
os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"  # MongoDB 6.0 "oldest supported" notice
os.environ["ALLDATA_HOME"] = tempfile.mkdtemp(prefix="alldata-test-home-")
# `alldata app` links the App plugin into the plugins dir: never the user's ~/fiftyone/__plugins__
os.environ["FIFTYONE_PLUGINS_DIR"] = tempfile.mkdtemp(prefix="alldata-test-plugins-")
if os.environ.get("ALLDATA_TEST_DATABASE_URI"):  # a team may point tests at their own server
    os.environ["FIFTYONE_DATABASE_URI"] = os.environ["ALLDATA_TEST_DATABASE_URI"]
else:
    start_mongod(timeout=60)  # stopped, and its temp dir removed, at exit


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
