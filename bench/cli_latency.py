"""Benchmark: how long `alldata info` takes on a small dataset, without and with `alldata db start`.

Everything runs in a temp dir: its own ``ALLDATA_HOME``, FiftyOne database dir and port, no
FiftyOne config file, so neither your datasets nor another user's database service are
touched. Each command is a fresh ``alldata`` process (the console script), timed wall-clock:

- **cold**: no service; FiftyOne starts (and stops) its own database service for the command,
  as before ``alldata db start``. Skipped when another FiftyOne database service runs on this
  machine: FiftyOne would attach to it whatever its database dir.
- **service only**: ``alldata db start`` running, ``ALLDATA_NO_WARM=1`` (the command imports
  fiftyone itself).
- **warm**: ``alldata db start`` running with its warm worker (the default).

It also times ``alldata --help`` / ``alldata sources`` and checks in a subprocess that they
import neither fiftyone nor torch, and splits where a cold import goes (``python -X importtime``).

Usage::

    .venv/bin/python bench/cli_latency.py              # 5 warm, 2 service-only, 2 cold runs
    .venv/bin/python bench/cli_latency.py --repeats 3 --json bench/out/cli_latency.json
    .venv/bin/python bench/cli_latency.py --shared-data   # also ingest the data root and time info/views on it
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from _machine import cpu_model, loadavg

from alldata.mongod import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests._fixtures import make_bccd

EXE = Path(sys.executable).with_name("alldata")
HEAVY = ("fiftyone", "torch", "diffusers", "sklearn", "timm")


def _run(args: list[str], env: dict[str, str], check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run([str(EXE), *args], check=False, env=env, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if check and done.returncode != 0:
        raise SystemExit(f"alldata {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return seconds, done


def _times(args: list[str], env: dict[str, str], n: int) -> list[float]:
    return [round(_run(args, env)[0], 2) for _ in range(n)]


def _warm_times(args: list[str], env: dict[str, str], n: int, log: Path) -> tuple[list[float], int]:
    """``n`` timed runs that the warm worker answered (its log names each fork), and how many it did not.

    A run it did not answer (it restarts after an alldata module it imported changed on disk,
    as happens in a working tree others edit) ran in the caller and is not counted as warm.
    """
    times, missed = [], 0
    while len(times) < n and missed < 3 * n:
        before = log.read_text().count(f"alldata {' '.join(args)}")
        seconds = _run(args, env)[0]
        if log.read_text().count(f"alldata {' '.join(args)}") > before:
            times.append(round(seconds, 2))
        else:
            missed += 1
            time.sleep(15)  # let the restarted worker import fiftyone again
    return times, missed


def _fiftyone_services() -> list[int]:
    """Pids of FiftyOne database services of this user (FiftyOne attaches to any of them)."""
    me, found = psutil.Process().username(), []
    for p in psutil.process_iter(["cmdline", "username"]):
        cmd = p.info["cmdline"] or []
        if p.info["username"] == me and "--51-service" in cmd and "db" in cmd:
            found.append(p.pid)
    return found


def _imports(args: list[str]) -> list[str]:
    """The heavy modules imported by ``alldata ARGS`` (run through typer's CliRunner in a fresh interpreter)."""
    code = ("import sys; from typer.testing import CliRunner; from alldata.cli import app; "
            f"r = CliRunner().invoke(app, {args!r}); assert r.exit_code == 0, r.output; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1].replace("'", '"'))


def _import_seconds(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter (``-X importtime``), in seconds."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                         text=True, check=True).stderr
    for line in err.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[2].strip() == module:
            return int(parts[1]) / 1e6
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="warm runs (service-only and cold: min(2, repeats))")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--shared-data", action="store_true",
                    help="also ingest every source under the data root (the demo's data) and time info/views on it")
    a = ap.parse_args()
    if not EXE.is_file():
        raise SystemExit(f"{EXE} not found: pip install -e . first")
    tmp = Path(tempfile.mkdtemp(prefix="alldata-cli-latency-"))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FIFTYONE_") and k not in ("ALLDATA_HOME", "ALLDATA_NO_WARM", "ALLDATA_SERVICE_URI")}
    env.update(ALLDATA_HOME=str(tmp / "home"), FIFTYONE_DATABASE_DIR=str(tmp / "db"), FIFTYONE_DO_NOT_TRACK="true",
               FIFTYONE_CONFIG_PATH=str(tmp / "no-config.json"), OMP_NUM_THREADS="1")
    data = make_bccd(tmp / "data", n=6)
    res: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "load_before": loadavg()}}
    few = min(2, a.repeats)
    try:
        res["help_s"] = _times(["--help"], env, few)
        res["sources_s"] = _times(["sources"], env, few)
        res["imports"] = {" ".join(c): _imports(c) for c in (["--help"], ["sources"], ["db", "status"])}
        res["import_fiftyone_s"] = round(_import_seconds("fiftyone"), 2)
        res["import_alldata_cli_s"] = round(_import_seconds("alldata.cli"), 2)
        res["import_alldata_s"] = round(_import_seconds("alldata"), 2)

        port = free_port()
        res["db_start_s"] = round(_run(["db", "start", "--dbpath", str(tmp / "db"), "--port", str(port)], env)[0], 1)
        _run(["ingest", "bccd", str(data), "--dataset", "small"], env)
        info = ["info", "small"]
        _run(info, env)  # the worker's first fork
        log = tmp / "home" / "warm.log"
        res["warm_s"], res["warm_missed"] = _warm_times(info, env, a.repeats, log)
        res["views_warm_s"], _ = _warm_times(["views", "small"], env, few, log)
        res["split_warm_s"], _ = _warm_times(["split", "--dataset", "small", "--ratios", "0.5,0.5,0"], env, few, log)
        res["service_only_s"] = _times(info, {**env, "ALLDATA_NO_WARM": "1"}, few)
        if a.shared_data:  # the demo's data: every source under the data root
            res["ingest_all_s"] = round(_run(["ingest", "--all", "--dataset", "demo"], env)[0], 1)
            res["split_demo_s"] = round(_run(["split", "--dataset", "demo", "--seed", "0"], env)[0], 1)
            res["info_demo_warm_s"], _ = _warm_times(["info", "demo"], env, few, log)
            res["views_demo_warm_s"], _ = _warm_times(["views", "demo"], env, few, log)
        _run(["db", "stop"], env)

        others = _fiftyone_services()
        if others:
            res["cold_s"] = None
            res["cold_skipped"] = f"FiftyOne database services of this user already run (pids {others})"
        else:
            res["cold_s"] = _times(info, env, few)  # FiftyOne starts its own service on tmp/db each time
        res["machine"]["load_after"] = loadavg()
    finally:
        subprocess.run([str(EXE), "db", "stop"], env=env, capture_output=True, check=False)
        deadline = time.monotonic() + 60
        while _fiftyone_services() and time.monotonic() < deadline and not res.get("cold_skipped"):
            time.sleep(1)  # FiftyOne's own service (cold runs) stops once its last client is gone
        shutil.rmtree(tmp, ignore_errors=True)

    med = {k: statistics.median(v) for k, v in res.items() if k.endswith("_s") and isinstance(v, list) and v}
    print(json.dumps(res, indent=1))
    print("\n| `alldata info` on a 6-sample dataset | runs | median s | all runs s |\n|---|---|---|---|")
    for key, what in (("cold_s", "cold: no service (FiftyOne starts its own database)"),
                      ("service_only_s", "`alldata db start`, `ALLDATA_NO_WARM=1` (imports fiftyone)"),
                      ("warm_s", "`alldata db start` (warm worker)"),
                      ("views_warm_s", "`alldata views` warm"), ("split_warm_s", "`alldata split` warm"),
                      ("info_demo_warm_s", "`alldata info` warm, the demo's data"),
                      ("views_demo_warm_s", "`alldata views` warm, the demo's data"),
                      ("help_s", "`alldata --help`"), ("sources_s", "`alldata sources`")):
        if res.get(key):
            print(f"| {what} | {len(res[key])} | {med[key]:.2f} | {', '.join(f'{x:.2f}' for x in res[key])} |")
    if "cold_s" in med and "warm_s" in med:
        print(f"\ncold / warm: {med['cold_s'] / med['warm_s']:.1f}x")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
