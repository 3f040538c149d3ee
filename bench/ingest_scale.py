"""Benchmark: ingest at scale. Throughput and peak memory of a first ingest, and a re-run, at 1k/10k/100k.

The bench writes trees of small cell-like images (a pale background, a stained nucleus at a
random place, noise; alternately PNG and JPEG; every file unique) in class folders into a
temp dir, one tree per size, and ingests each with the ``folder`` source
(``alldata.ingest.ingest``, every check on: sha256, full-stream decode, pydantic validation,
duplicate tagging) into a fresh dataset on a private ``mongod``. Each ingest runs in a fresh
subprocess (modules imported and the database connected before the clock starts). The
re-run is a second process ingesting the same, unchanged tree into the same dataset.

Reported per size: seconds, samples/s, peak RSS of the run's process (``ru_maxrss``), the
RSS before the run, and the re-run's seconds and speed-up over the first ingest.

Usage::

    .venv/bin/python bench/ingest_scale.py                          # 1k, 10k, 100k
    .venv/bin/python bench/ingest_scale.py --sizes 1000 10000       # smaller
    OMP_NUM_THREADS=1 nohup .venv/bin/python bench/ingest_scale.py --output /tmp/scale.md &   # in the background
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from _machine import cpu_model, display_path, loadavg, version

from alldata.mongod import start_mongod

MARKER = "@@SCALE_RESULT@@ "
CLASSES = ("lymphoblast", "lymphocyte", "monocyte", "neutrophil")


# --------------------------------------------------------------------------------------
# the data: a tree of small unique cell-like images
# --------------------------------------------------------------------------------------
def write_tree(root: Path, n: int, size: int = 48, seed: int = 0) -> Path:
    """``n`` images in ``len(CLASSES)`` class folders under ``root`` (PNG and JPEG alternately)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    background = np.array([232, 205, 214], np.float32)  # pale pink smear
    stain = np.array([92, 52, 140], np.float32)  # purple nucleus
    cytoplasm = np.array([176, 160, 206], np.float32)  # pale blue-violet cytoplasm
    for c in CLASSES:
        (root / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cx, cy = rng.uniform(size * 0.3, size * 0.7, 2)
        r = rng.uniform(size * 0.15, size * 0.3)
        d2 = ((xx - cx) ** 2 + (yy - cy) ** 2)[..., None]
        img = np.where(d2 < r * r, stain, np.where(d2 < (1.6 * r) ** 2, cytoplasm, background))
        img = img + rng.normal(0, 6, (size, size, 3))
        arr = np.clip(img, 0, 255).astype(np.uint8)
        suffix = ".png" if i % 2 else ".jpg"
        Image.fromarray(arr).save(root / CLASSES[i % len(CLASSES)] / f"cell_{i:07d}{suffix}", quality=90)
    return root


# --------------------------------------------------------------------------------------
# worker side: one ingest in a fresh process
# --------------------------------------------------------------------------------------
def _worker(spec: dict) -> dict:
    import resource

    import fiftyone as fo
    import tqdm  # noqa: F401 - imported inside ingest(); import it before the clock starts

    import alldata.sources  # noqa: F401 - registers the sources
    from alldata.ingest import ingest

    fo.list_datasets()  # connect before timing
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    rep = ingest("folder", spec["dataset"], root=spec["root"], workers=spec["workers"], progress=False)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"found": rep.found, "added": rep.added, "unchanged": rep.unchanged, "skipped": len(rep.skipped),
            "seconds": seconds, "peak_rss_mib": peak, "base_rss_mib": base, "worker_peak_rss_mib": children}


def _run(spec: dict, env: dict) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)],
                          env=env, capture_output=True, text=True, check=False)
    results = [ln[len(MARKER):] for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not results:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
        raise RuntimeError(f"ingest of {spec['root']} failed (exit {proc.returncode})")
    return json.loads(results[-1])


# --------------------------------------------------------------------------------------
# parent side
# --------------------------------------------------------------------------------------
def _table(rows: list[dict]) -> str:
    lines = [
        ("| samples | first ingest s | samples/s | peak RSS MiB | RSS before MiB | marginal KiB/sample "
         "| worker peak RSS MiB | re-run s | re-run samples/s | re-run speed-up |"),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    small = rows[0]["first"]
    for r in rows:
        f, a = r["first"], r["again"]
        # the marginal memory per sample: what the larger tree costs over the smallest one (fixed costs cancel)
        extra = f["found"] - small["found"]
        growth = ((f["peak_rss_mib"] - f["base_rss_mib"]) - (small["peak_rss_mib"] - small["base_rss_mib"])) * 1024 / extra \
            if extra else None
        lines.append(
            f"| {f['found']:,} | {f['seconds']:.2f} | {f['found'] / f['seconds']:.0f} | {f['peak_rss_mib']:.0f} | "
            f"{f['base_rss_mib']:.0f} | {'—' if growth is None else f'{growth:.2f}'} | {f['worker_peak_rss_mib']:.0f} | "
            f"{a['seconds']:.2f} | "
            f"{a['found'] / a['seconds']:.0f} | {f['seconds'] / a['seconds']:.1f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000], help="tree sizes (samples)")
    p.add_argument("--workers", type=int, default=2, help="ingest worker processes (default 2, as `alldata ingest`)")
    p.add_argument("--image-size", type=int, default=48, help="side of the square images, px (default 48)")
    p.add_argument("--tmp", type=Path, default=None, help="where to write the trees and the database (default: a temp dir)")
    p.add_argument("--keep-trees", action="store_true", help="do not delete the generated trees")
    p.add_argument("--output", type=Path, default=None, help="also write the Markdown section to this file")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        print(MARKER + json.dumps(_worker(json.loads(args._worker))), flush=True)
        return 0
    command = " ".join(shlex.quote(a) for a in [display_path(sys.executable), *sys.argv])
    started = datetime.now(timezone.utc)
    load_before = loadavg()
    if args.tmp is not None:
        args.tmp.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="alldata-scale-", dir=args.tmp))
    db = start_mongod(tmp / "db", set_env=False)
    env = {**os.environ, "FIFTYONE_DATABASE_URI": db.uri, "FIFTYONE_DATABASE_VALIDATION": "false",
           "FIFTYONE_DO_NOT_TRACK": "true", "ALLDATA_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1"}
    rows = []
    try:
        for n in args.sizes:
            t = time.perf_counter()
            root = write_tree(tmp / f"tree-{n}", n, args.image_size)
            print(f"{n:,} images written in {time.perf_counter() - t:.0f} s", flush=True)
            spec = {"root": str(root), "dataset": f"scale-{n}", "workers": args.workers}
            first = _run(spec, env)
            again = _run(spec, env)
            if (first["added"], again["unchanged"], first["skipped"]) != (n, n, 0):
                raise RuntimeError(f"size {n}: first added {first['added']}, re-run unchanged {again['unchanged']}, "
                                   f"skipped {first['skipped']} (expected {n}, {n}, 0)")
            rows.append({"first": first, "again": again})
            print(f"  first {first['seconds']:.1f} s ({n / first['seconds']:.0f}/s, peak {first['peak_rss_mib']:.0f} MiB); "
                  f"re-run {again['seconds']:.1f} s ({first['seconds'] / again['seconds']:.1f}x)", flush=True)
            if not args.keep_trees:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        db.stop()
        if not args.keep_trees:
            shutil.rmtree(tmp, ignore_errors=True)
    table = _table(rows)
    section = "\n".join([
        "## Ingest at scale (bench/ingest_scale.py)",
        "",
        f"Command: `{command}` (from the repository root)  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}  ",
        (f"Machine: {os.cpu_count()} CPU cores ({cpu_model()}), {platform.system()} {platform.release()}; "
         f"load average before {load_before}, after {loadavg()} (shared machine)  "),
        f"Python {platform.python_version()}; fiftyone {version('fiftyone')}; pillow {version('pillow')}  ",
        "",
        (f"Trees of {args.image_size}x{args.image_size} cell-like images (PNG and JPEG alternately, every file unique) "
         f"in {len(CLASSES)} class folders, ingested with the `folder` source, `workers={args.workers}`, every check on. "
         "Each row is a fresh dataset and a fresh process; the re-run is a second process on the unchanged tree. "
         "Peak RSS is the ingest process's `ru_maxrss` (imports included); marginal KiB/sample is the growth of "
         "(peak - before) over the smallest tree's, per extra sample (flat memory: ~0); worker peak is the largest "
         "worker process."),
        "",
        table,
        "",
    ])
    print()
    print(section)
    if args.output:
        args.output.write_text(section)
        print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
