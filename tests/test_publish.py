"""Publishing: the licence gate, dry runs, and the upload path against a local fake Hub that records requests."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard
from typer.testing import CliRunner

from alldata.card import Selection
from alldata.cli import app
from alldata.licences import LicenceError, check_redistribution, licence_for, sample_status
from alldata.publish import PublishError, check_repo_id, publish
from tests.test_card import make_card_dataset

runner = CliRunner()
FAKE_TOKEN = "hf_FAKEtoken0123456789abcdefghijklmnop"


class FakeHub:
    """Just enough of the Hub API for create_repo + upload_folder (huggingface_hub 1.x/2.x):
    repo creation, README YAML validation, preupload (every file "regular") and the ndjson commit."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                path = self.path.split("?")[0]
                if path == "/api/repos/create":
                    req = json.loads(body)
                    out = {"url": f"{hub.url}/datasets/{req['organization']}/{req['name']}"}
                elif path == "/api/validate-yaml":
                    out = {"errors": [], "warnings": []}
                elif "/preupload/" in path:
                    files = json.loads(body)["files"]
                    out = {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
                elif "/commit/" in path:
                    repo = path.split("/api/datasets/")[1].split("/commit/")[0]
                    out = {"commitUrl": f"{hub.url}/datasets/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                hub.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": b""})
                self.send_response(404)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def committed_files(self) -> dict[str, bytes]:
        files = {}
        for r in self.requests:
            if "/commit/" in r["path"]:
                for line in r["body"].splitlines():
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
        return files


@pytest.fixture
def hub(monkeypatch, tmp_path):
    h = FakeHub()
    h.thread.start()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login of the machine
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    yield h
    h.server.shutdown()
    h.server.server_close()


@pytest.fixture
def card_ds(dataset_name, tmp_path):
    make_card_dataset(dataset_name, tmp_path / "img")
    return dataset_name


def test_upload_sends_exactly_the_staged_folder_and_never_the_token(card_ds, hub, tmp_path):
    stage = tmp_path / "stage"
    r = publish(card_ds, "my-lab/cells", private=True, selection=Selection(sources=("bccd", "pbc")), out_dir=stage,
                endpoint=hub.url)
    paths = [q["path"].split("?")[0] for q in hub.requests]
    assert paths[0] == "/api/repos/create"
    assert json.loads(hub.requests[0]["body"]) == {"name": "cells", "organization": "my-lab", "visibility": "private",
                                                   "type": "dataset"}
    assert "/api/datasets/my-lab/cells/preupload/main" in paths and paths[-1] == "/api/datasets/my-lab/cells/commit/main"
    committed = hub.committed_files()
    staged = {p.relative_to(stage).as_posix(): p.read_bytes() for p in stage.rglob("*") if p.is_file()}
    assert committed == staged and set(committed) == set(r.files)
    assert {"README.md", "LICENSE.md", "alldata-export.json"} <= set(committed)
    assert any(f.startswith("data/train-") and f.endswith(".parquet") for f in committed)
    card = DatasetCard(committed["README.md"].decode())
    assert card.data.license == ["cc-by-4.0", "mit"] and card.data.configs[0]["data_files"][0]["path"].startswith("data/")
    for q in hub.requests:  # the token is sent only as the auth header
        assert q["headers"]["authorization"] == f"Bearer {FAKE_TOKEN}"
        assert FAKE_TOKEN.encode() not in q["body"] and FAKE_TOKEN not in q["path"]
    for data in staged.values():
        assert FAKE_TOKEN.encode() not in data
    assert r.url.endswith("/datasets/my-lab/cells") and "commit" in r.commit_url and FAKE_TOKEN not in json.dumps(r.to_dict())


def test_gated_source_is_refused_before_any_request(card_ds, hub, tmp_path):
    with pytest.raises(LicenceError, match="all_idb2"):
        publish(card_ds, "my-lab/cells", selection=Selection(sources=("bccd", "all_idb2")), endpoint=hub.url)
    assert hub.requests == []
    r = runner.invoke(app, ["publish", card_ds, "--repo", "my-lab/cells", "--dry-run", "--out", str(tmp_path / "d"),
                            "--sources", "pbc,synthetic/overlap"])
    assert r.exit_code == 1 and "synthetic/overlap" in r.output and "forbidden" in r.output
    # with the explicit override it goes through, and the card says so
    r = publish(card_ds, "my-lab/cells", selection=Selection(sources=("bccd", "all_idb2")), overrides=["all_idb2"],
                endpoint=hub.url)
    readme = hub.committed_files()["README.md"].decode()
    assert "**Licence overrides:** the user passed `--override-licence` for `all_idb2` (forbidden)" in readme
    assert r.export["overrides"] == {"all_idb2": "forbidden"}


def test_dry_run_writes_the_folder_and_sends_nothing(card_ds, hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "dry"
    r = runner.invoke(app, ["publish", card_ds, "--repo", "my-lab/cells", "--dry-run", "--out", str(out),
                            "--sources", "bccd"])
    assert r.exit_code == 0, r.output
    assert "nothing uploaded" in r.output and hub.requests == []
    assert (out / "README.md").is_file() and list((out / "data").glob("*.parquet"))
    with pytest.raises(PublishError, match="--dry-run needs --out"):
        publish(card_ds, "my-lab/cells", dry_run=True)


def test_no_token_bad_repo_and_hub_errors_are_clear(card_ds, hub, tmp_path, monkeypatch):
    with pytest.raises(PublishError, match="ORG/NAME"):
        check_repo_id("just-a-name")
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(PublishError, match="no Hugging Face token"):
        publish(card_ds, "my-lab/cells", selection=Selection(sources=("bccd",)), endpoint=hub.url)
    assert hub.requests == []
    with pytest.raises(PublishError, match="HTTP 404"):  # a Hub that does not know the API
        publish(card_ds, "my-lab/cells", selection=Selection(sources=("bccd",)), endpoint=hub.url + "/nowhere",
                token=FAKE_TOKEN)


def test_licence_statuses_and_gate():
    assert licence_for("all_idb1").redistribution == licence_for("all_idb2").redistribution == "forbidden"
    assert licence_for("taleqani").redistribution == "unknown" and licence_for("bccd").spdx == "mit"
    assert licence_for("somebody_elses").redistribution == "unknown"
    rec = json.dumps({"background": {"key": "bccd/B1"}, "cells": [{"donor": "pbc/ly/1.jpg"}, {"donor": "taleqani/Pro/x.jpg"}]})
    t = sample_status("synthetic/overlap", generator="overlap", recipe=rec)
    assert t.status == "unknown" and t.inputs == ("bccd", "pbc", "taleqani") and t.basis == "recipe"
    assert check_redistribution({"bccd": ("allowed", 3)}) == {}
    assert check_redistribution({"bccd": ("allowed", 3), "taleqani": ("unknown", 2)}, ["taleqani"]) == {"taleqani": "unknown"}
    with pytest.raises(LicenceError, match=r"taleqani \(2 samples\): redistribution unknown"):
        check_redistribution({"bccd": ("allowed", 3), "taleqani": ("unknown", 2)})


def test_every_registered_source_has_licence_facts():
    from alldata.licences import LICENCES, STATUSES
    from alldata.sources import SOURCES

    assert set(SOURCES.names()) <= set(LICENCES)
    for lic in LICENCES.values():
        assert lic.redistribution in STATUSES and lic.spdx and lic.citation
        assert (lic.spdx == "other") == (lic.license_name is not None)


def test_template_is_found(tmp_path):
    from alldata.card import default_template

    assert default_template() == Path(__file__).resolve().parents[1] / "cards" / "dataset_card.md"
