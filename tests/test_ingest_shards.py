"""Beyond one machine: `alldata ingest` processes sharing one external MongoDB at the same time.

The test starts its own ``mongod`` (:func:`alldata.mongod.start_mongod`, not the suite's),
runs ``alldata ingest ... --shard i/2`` for both shards as concurrent subprocesses pointed
at it through ``FIFTYONE_DATABASE_URI`` (as two machines would be), then two unsharded
ingests of one source at once, and reads the result straight from the database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from alldata.mongod import start_mongod
from alldata.schema import F
from tests._fixtures import write_image

N_PER_CLASS = 15


def _tree(root):
    for cls in ("lymphoblast", "neutrophil"):
        for i in range(N_PER_CLASS):
            write_image(root / cls / f"{cls[:3]}_{i:03d}.png", (12, 10), seed=i + (100 if cls == "neutrophil" else 0))
    # one byte-identical pair inside a class and one across classes: tagged, never dropped
    (root / "lymphoblast" / "copy.png").write_bytes((root / "lymphoblast" / "lym_000.png").read_bytes())
    (root / "neutrophil" / "cross.png").write_bytes((root / "lymphoblast" / "lym_001.png").read_bytes())
    return 2 * N_PER_CLASS + 2


def _run_together(argvs, env):
    procs = [subprocess.Popen([sys.executable, "-m", "alldata.cli", *a], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for a in argvs]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    return outs


def _samples(db, name):
    """(key, tags) of every sample of dataset ``name``, read with pymongo from the test's own mongod."""
    from pymongo import MongoClient

    client = MongoClient(db.uri)
    try:
        conn = client["fiftyone"]
        doc = conn.datasets.find_one({"name": name})
        return [(d[F.KEY], d.get("tags", [])) for d in conn[doc["sample_collection_name"]].find({}, {F.KEY: 1, "tags": 1})]
    finally:
        client.close()


def test_two_shards_and_a_racing_full_ingest_lose_nothing_and_duplicate_nothing(tmp_path):
    n = _tree(tmp_path / "cells")
    db = start_mongod(tmp_path / "db", set_env=False, timeout=60)
    try:
        env = {**os.environ, "FIFTYONE_DATABASE_URI": db.uri, "ALLDATA_HOME": str(tmp_path / "home"),
               "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DO_NOT_TRACK": "true"}
        root = str(tmp_path / "cells")
        shards = [["ingest", "folder", root, "-d", "team", "--shard", f"{i}/2", "--workers", "1"] for i in (0, 1)]
        # a third process ingests the whole source into the same dataset at the same time: every
        # record it races the shards for is refused by the database's unique key index
        _run_together([*shards, ["ingest", "folder", root, "-d", "team", "--workers", "1"]], env)
        rows = _samples(db, "team")
        keys = [k for k, _ in rows]
        assert len(keys) == n and len(set(keys)) == n  # nothing lost, nothing twice
        dup = sorted(k for k, tags in rows if F.TAG_DUPLICATE in tags)
        assert dup == ["folder/lymphoblast/copy.png", "folder/lymphoblast/lym_000.png",
                       "folder/lymphoblast/lym_001.png", "folder/neutrophil/cross.png"]
        home = tmp_path / "home" / "datasets" / "team"
        reports = [json.loads((home / name).read_text())
                   for name in ("ingest-folder-shard0of2.json", "ingest-folder-shard1of2.json", "ingest-folder.json")]
        assert reports[0]["found"] + reports[1]["found"] == n and 0 < reports[0]["found"] < n
        assert reports[2]["found"] == n
        assert sum(r["added"] for r in reports) == n  # each record added by exactly one process
    finally:
        db.stop()
