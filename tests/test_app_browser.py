"""The FiftyOne App in a real headless browser: a saved view of alldata's opens and shows its samples.

Starts FiftyOne's App server (the process ``alldata app`` runs) on a free port against the
test database, drives Debian's ``chromium`` over the DevTools protocol (a small stdlib
WebSocket client below: no extra packages) and keeps a screenshot of what a user sees.
The screenshot is written under ``$ALLDATA_TEST_ARTIFACTS`` when set, else pytest's tmp dir;
its path is printed. The second test drives the same chromium with Playwright's Python API
(no browser download) to run alldata's plugin from the App: an operator on a selected sample,
then the ``alldata sample`` panel (its screenshot: bench/figures/app-panel.png).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import fiftyone as fo
import pytest
from PIL import Image

from alldata.schema import F
from alldata.store import open_dataset
from alldata.views import build_views, view_slug
from tests.models._synthetic import cell_image

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium); the App browser test needs one"
)


# --- a minimal DevTools-protocol client (RFC 6455 text frames, stdlib only) ---------------------


class DevTools:
    """One page of a headless chromium, driven over its DevTools WebSocket."""

    def __init__(self, ws_url: str, timeout: float = 60.0) -> None:
        m = re.match(r"ws://([^:/]+):(\d+)(/.*)", ws_url)
        if not m:
            raise ValueError(f"not a DevTools websocket URL: {ws_url}")
        host, port, path = m.group(1), int(m.group(2)), m.group(3)
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the websocket: {head[:200]!r}")
        self._buf = head.split(b"\r\n\r\n", 1)[1]
        self._id = 0

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _send(self, text: str) -> None:
        data = text.encode()
        n = len(data)
        header = bytes([0x81]) + (
            bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536
            else bytes([0x80 | 127]) + struct.pack(">Q", n)
        )
        mask = os.urandom(4)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _recv(self) -> dict:
        parts = []
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the websocket")
            if opcode in (0x9, 0xA):  # ping / pong: nothing to do for a short session
                continue
            parts.append(payload)
            if b0 & 0x80:
                return json.loads(b"".join(parts))

    def call(self, method: str, **params) -> dict:
        """Send a command and return its result (events arriving meanwhile are dropped)."""
        self._id += 1
        self._send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = self._recv()
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"].get("value")

    def text(self) -> str:
        """The page's visible text ("" while the page is still (re)loading)."""
        try:
            return self.evaluate("document.body ? document.body.innerText : ''") or ""
        except RuntimeError:  # no execution context yet: the page is navigating
            return ""

    def wait_for(self, expression: str, timeout: float):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = self.evaluate(expression)
            except RuntimeError:  # no execution context yet: the page is navigating
                value = None
            if value:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{expression!r} still falsy after {timeout:.0f} s")

    def wait_for_text(self, pattern: str, timeout: float) -> str:
        """Poll the page's visible text until ``pattern`` (a regex) is in it; returns the text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if re.search(pattern, text):
                return text
            time.sleep(0.5)
        raise AssertionError(f"{pattern!r} not on the page after {timeout:.0f} s; the page shows: {text[:1500]!r}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.sock.close()


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, proc: subprocess.Popen, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            out = check()
        except OSError:
            out = None
        if out:
            return out
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def open_page(url: str, user_dir: Path, size: tuple[int, int] = (1400, 900)):
    """Start headless chromium on ``url``; returns ``(process, DevTools)`` of its page."""
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-dev-shm-usage", f"--window-size={size[0]},{size[1]}",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1", f"--user-data-dir={user_dir}", url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    port_file = user_dir / "DevToolsActivePort"
    port = _wait("chromium", proc, lambda: port_file.is_file() and port_file.read_text().split("\n")[0].strip(), 60)
    pages = _wait("chromium's page", proc, lambda: [t for t in json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
                                                   if t.get("type") == "page"], 30)
    page = DevTools(pages[0]["webSocketDebuggerUrl"])
    page.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False)
    return proc, page


#: Click away the App's "FiftyOne Enterprise" pop-up (it covers the sample count).
DISMISS_PROMO = "Array.from(document.querySelectorAll('button, div')).filter(e => e.children.length == 0 && e.textContent.trim() == 'Dismiss').forEach(e => e.click())"


def artifact_dir(default: Path) -> Path:
    d = Path(os.environ.get("ALLDATA_TEST_ARTIFACTS", default))
    d.mkdir(parents=True, exist_ok=True)
    return d


# --- the test ---------------------------------------------------------------------------------


def _cell_png(path: Path, i: int) -> Path:
    img, _ = cell_image(64, ((32 + 4 * (i % 3) - 4, 32),), r_cell=22 - i, r_nuc=14 - i // 2, rbcs=((8, 54, 7),), seed=i)
    Image.fromarray(img).save(path)
    return path


@pytest.fixture
def app_server():
    """FiftyOne's App server on a free localhost port, on the test database (inherited env)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiftyone.server.main", "--port", str(port), "--address", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ),
    )
    try:
        _wait("the FiftyOne App server", proc, lambda: _get(f"http://127.0.0.1:{port}/", 2), 240)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


def test_a_saved_view_opens_in_the_app(app_server, dataset_name, tmp_path):
    ds = open_dataset(dataset_name)
    samples = [
        fo.Sample(filepath=str(_cell_png(tmp_path / f"{i}.png", i)), key=f"pbc/{i}", source="pbc", image_kind="cell",
                  is_synthetic=i >= 4, tags=["synthetic"] if i >= 4 else [])
        for i in range(7)
    ]
    ds.add_samples(samples, progress=False)
    report = build_views(ds)
    assert report.views["alldata-synthetic"] == 3

    url = f"{app_server}/datasets/{dataset_name}?view={view_slug('alldata-synthetic')}"
    user_dir = Path(tempfile.mkdtemp(prefix="alldata-chromium-"))
    proc, page = open_page(url, user_dir)
    try:
        text = page.wait_for_text(r"\b3\s+samples\b", timeout=180)
        page.evaluate(DISMISS_PROMO)
        page.wait_for("document.querySelectorAll('canvas').length >= 3", timeout=60)  # a canvas per sample tile
        time.sleep(1)  # let the tiles paint before the screenshot (nothing is asserted on timing)
        tiles = page.evaluate("document.querySelectorAll('canvas').length")
        shot = page.screenshot(artifact_dir(tmp_path) / "app-saved-view.png")
    finally:
        page.close()
        _stop(proc)
        shutil.rmtree(user_dir, ignore_errors=True)
    print(f"screenshot of the App: {shot}")
    assert tiles == 3  # the grid shows the view's 3 samples
    assert "alldata-synthetic" in text  # the saved view is the one selected
    assert not re.search(r"\b7\s+samples\b", text)  # not the whole dataset
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(ds) == 7 and len(ds.match({F.IS_SYNTHETIC: True})) == 3  # viewing changed nothing


# --- alldata's plugin in the App, driven by Playwright on the system chromium -------------------------------

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - the skip below names the fix
    sync_playwright = None

#: The panel screenshot's name; ``ALLDATA_TEST_ARTIFACTS=bench/figures`` keeps it where the README shows it.
PANEL_SHOT = "app-panel.png"
TILE_COUNT = "document.querySelectorAll('[title^=\"Click to select sample\"]').length"
SELECT_TILE = "document.querySelectorAll('[title^=\"Click to select sample\"]')[0].click()"


def _overlapping_cells(root: Path, name: str) -> None:
    """Like tests/test_benchmark.py's drawn cells, with close nucleus sizes and strong noise, so a classifier
    errs and the benchmark's gains have intervals worth plotting."""
    from typer.testing import CliRunner

    from alldata.cli import app
    from tests.test_benchmark import N_GROUPS

    for cls, r_nuc in (("lymphoblast", 10), ("lymphocyte", 8)):
        for g in range(N_GROUPS):
            for j in range(2):
                img, _ = cell_image(32, ((16, 16),), r_cell=14, r_nuc=r_nuc, noise=40.0, seed=100 * g + j + r_nuc)
                (root / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / cls / f"{cls}_{g}_{j}.png")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "folder", str(root), "--dataset", name]).exit_code == 0
    ds = open_dataset(name)
    ds.set_values(F.GROUP_ID, [k.rsplit("_", 1)[0] for k in ds.values(F.KEY)])
    r = runner.invoke(app, ["split", "--dataset", name, "--ratios", "0.6,0.2,0.2", "--stratify", "cell_type"])
    assert r.exit_code == 0, r.output


@pytest.fixture
def plugin_app(tmp_path):
    """FiftyOne's App server with alldata's plugin installed in a temp plugins directory."""
    from alldata.app_plugin.install import install_plugin

    plugins = tmp_path / "plugins"
    install_plugin(plugins)
    port = _free_port()
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(plugins))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fiftyone.server.main", "--port", str(port), "--address", "127.0.0.1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        _wait("the FiftyOne App server", proc, lambda: _get(f"http://127.0.0.1:{port}/", 2), 240)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(proc)


@pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed: pip install playwright "
                    "(it drives the system chromium; no browser download needed)")
def test_plugin_operator_and_panel_in_the_app(plugin_app, dataset_name, tmp_path):
    """Run `alldata: tag as reject` on a selected synthetic sample from the App's operator browser, see the tag in
    the grid, and open the `alldata sample` panel (provenance, scores, real neighbours, the benchmark's gains)."""
    import torch
    import yaml

    from alldata.app_plugin import actions
    from alldata.brain import run_brain
    from alldata.curation import REJECT_TAG
    from alldata.embeddings import embed_dataset
    from tests import test_benchmark as tb

    torch.set_num_threads(1)
    _overlapping_cells(tmp_path / "cells", dataset_name)
    recipe = tb.tiny_recipe(arms=("real", "oracle", "gan"), seeds=[0])
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude_none=True)))
    ds = open_dataset(dataset_name)
    run = actions.run_benchmark_recipe(ds, tmp_path / "tiny.yaml", quick=False, out_dir=tmp_path / "run")
    # the benchmark's samples live in its run-scoped dataset; bring them beside the real cells for the panel
    bench = open_dataset(run.extra["dataset"])
    ds.merge_samples(bench, key_field="filepath")
    bench.delete()
    ds.save_view(run.view, ds.match({"recipe": "tiny-rare"}), overwrite=True)
    syn_ids = ds.load_saved_view(run.view).values("id")
    n_syn = len(syn_ids)
    embed_dataset(ds, features="handcrafted", method="pca")
    run_brain(ds)
    actions.score_view(ds, syn_ids, heldout="")
    assert n_syn > 0 and not ds.match_tags(REJECT_TAG)

    url = f"{plugin_app}/datasets/{dataset_name}?view={view_slug(run.view)}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1050})
            page.goto(url)
            page.wait_for_selector(f"text=/\\b{n_syn} samples\\b/", timeout=180_000)
            page.evaluate(DISMISS_PROMO)
            page.wait_for_function(TILE_COUNT + " > 0", timeout=60_000)  # the grid's tiles are drawn
            page.mouse.move(400, 230)  # hovering a tile shows its checkbox
            page.evaluate(SELECT_TILE)
            # the operator browser: backtick, search, Enter opens the form, Execute runs it
            page.keyboard.press("`")
            page.keyboard.type("tag as reject")
            page.keyboard.press("Enter")
            page.get_by_role("button", name="Execute").click(timeout=60_000)
            page.wait_for_selector("text=tagged 1 samples 'reject'", timeout=120_000)
            page.get_by_role("button", name="Close").click()
            rejected = open_dataset(dataset_name).match_tags(REJECT_TAG)
            assert len(rejected) == 1 and rejected.first()[F.IS_SYNTHETIC]  # exactly the selected sample
            # the grid shows the new tag once the sidebar's sample tags are on
            page.get_by_text("sample tags", exact=True).click()
            page.wait_for_function(f"document.body.innerText.includes('{REJECT_TAG}')", timeout=60_000)
            # the panel, on the selected sample
            page.get_by_title("New panel").click()
            page.get_by_text("alldata sample", exact=True).click()
            page.wait_for_selector("text=nearest real cells", timeout=120_000)
            page.wait_for_selector(".js-plotly-plot", timeout=60_000)
            time.sleep(2)  # let the thumbnails and the plot paint
            text = page.evaluate("document.body.innerText")
            shot = artifact_dir(tmp_path) / PANEL_SHOT
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"screenshot of the panel: {shot}")
    assert rejected.first()[F.KEY] in text  # the panel describes the selected (and now rejected) sample
    for shown in ("provenance", "gan", "tiny-rare", "uniqueness", "nn_distance", "paired gain over real", "this sample"):
        assert shown in text, shown
    assert 20_000 < shot.stat().st_size < 400_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
