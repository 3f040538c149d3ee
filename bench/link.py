"""Benchmark: ``alldata link-crops``'s search, coarse to fine, against the exhaustive search it replaced.

Both run in this one process on the same files: every ALL-IDB2 crop (or every ``--every``-th)
against the ALL-IDB1 smears of its diagnosis, as ``alldata.link.link_crops`` pairs them. The
reference is the previous ``match_crops`` (one :func:`skimage.feature.match_template` per crop
and smear at 1/4 resolution), kept here only. The figures are wall-clock seconds of the whole
call (smear decoding included), summed over ``--chunks`` slices of the crops, each slice run by
every variant in turn so a busy machine slows them alike (best of ``--repeats``); the table says
whether every crop got the same parent and position.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python bench/link.py                       # all 260 crops
    OMP_NUM_THREADS=1 .venv/bin/python bench/link.py --every 5 --repeats 2 # a quick subset
    .venv/bin/python bench/link.py --out /tmp/RESULTS.md --baseline /tmp/link-baseline/baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _machine import cpu_model, display_path, loadavg, version

from alldata.config import data_root
from alldata.link import CropMatch, _grey, match_crops

Item = tuple[str, str, str | None]


def reference_match_crops(crops: Sequence[Item], parents: Sequence[Item], *, scale: int = 4,
                          threshold: float = 0.95) -> list[CropMatch]:
    """The exhaustive search ``alldata.link.match_crops`` ran before (git 5dd4720), unchanged."""
    from skimage.feature import match_template

    smears = [(k, _grey(p, scale), d) for k, p, d in parents]
    out = []
    for key, path, diag in crops:
        crop = _grey(path, scale)
        best = (-1.0, None, 0, 0)
        for pkey, smear, pdiag in smears:
            if diag and pdiag and diag != pdiag:
                continue
            if crop.shape[0] > smear.shape[0] or crop.shape[1] > smear.shape[1]:
                continue
            ncc = match_template(smear, crop)
            y, x = np.unravel_index(int(np.argmax(ncc)), ncc.shape)
            if ncc[y, x] > best[0]:
                best = (float(ncc[y, x]), pkey, int(x) * scale, int(y) * scale)
        score, pkey, x, y = best
        out.append(CropMatch(key, pkey if score >= threshold else None, score, x, y))
    return out


def items(folder: Path, source: str) -> list[Item]:
    """``(key, path, diagnosis)`` of the ALL-IDB images in ``folder``, as link_crops builds them from the store."""
    return [(f"{source}/{p.stem}", str(p), "ALL" if p.stem.endswith("_1") else "healthy")
            for p in sorted(folder.iterdir()) if p.suffix.lower() in (".tif", ".jpg")]


def timed(fn, repeats: int) -> tuple[float, list[CropMatch]]:
    best, out = float("inf"), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def compare(new: list[CropMatch], ref: list[dict]) -> dict:
    """How ``new`` agrees with reference matches (dicts of CropMatch fields)."""
    same = [(m.parent, m.x, m.y) == (r["parent"], r["x"], r["y"]) for m, r in zip(new, ref, strict=True)]
    matched = [i for i, r in enumerate(ref) if r["parent"]]
    return {
        "crops": len(ref),
        "matched_ref": len(matched),
        "matched_new": sum(m.parent is not None for m in new),
        "same_parent": sum(m.parent == r["parent"] for m, r in zip(new, ref)),
        "same_parent_and_xy": sum(same),
        "matched_same": sum(same[i] for i in matched),
        "max_score_diff_matched": max((abs(new[i].score - ref[i]["score"]) for i in matched), default=0.0),
        "max_score_diff_unmatched": max((abs(m.score - r["score"]) for m, r in zip(new, ref) if not r["parent"]),
                                        default=0.0),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--every", type=int, default=1, help="time every N-th crop (1 = all 260)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--chunks", type=int, default=4, help="crops are timed in this many interleaved chunks; "
                    "each call decodes the smears again (a fixed cost that favours the exhaustive search)")
    ap.add_argument("--baseline", type=Path, help="JSON of matches recorded with the old code on all crops")
    ap.add_argument("--out", type=Path, help="write the Markdown table here (default: print it)")
    args = ap.parse_args(argv)
    root = data_root()
    crops = items(root / "ALL-IDB2" / "ALL_IDB2" / "img", "all_idb2")[:: args.every]
    parents = items(root / "ALL-IDB1" / "ALL_IDB1" / "im", "all_idb1")
    load0 = loadavg()
    variants = {
        "exhaustive (previous match_crops, skimage)": lambda part: reference_match_crops(part, parents),
        "coarse to fine, 1 thread": lambda part: match_crops(part, parents, workers=1, progress=False),
        f"coarse to fine, workers=-1 ({os.cpu_count()} threads)":
            lambda part: match_crops(part, parents, workers=-1, progress=False),
    }
    chunks = [crops[i :: args.chunks] for i in range(args.chunks)]
    order = [c for i in range(args.chunks) for c in crops[i :: args.chunks]]
    runs = {}
    for _ in range(args.repeats):
        totals = dict.fromkeys(variants, 0.0)
        outs: dict[str, list[CropMatch]] = {name: [] for name in variants}
        for part in chunks:  # every variant on each chunk in turn: a load spike hits them alike
            for name, fn in variants.items():
                sec, out = timed(lambda fn=fn, part=part: fn(part), 1)
                totals[name] += sec
                outs[name] += out
        for name in variants:
            if name not in runs or totals[name] < runs[name][0]:
                by_crop = {m.crop: m for m in outs[name]}
                runs[name] = (totals[name], [by_crop[c[0]] for c in order])
    ref_name = next(iter(runs))
    ref = [m.__dict__ for m in runs[ref_name][1]]
    rows = []
    for name, (sec, out) in runs.items():
        c = compare(out, ref)
        rows.append(f"| {name} | {sec:.1f} | {1000 * sec / len(crops):.0f} | {runs[ref_name][0] / sec:.1f}x | "
                    f"{c['matched_new']} | {c['same_parent_and_xy']}/{c['crops']} | {c['max_score_diff_matched']:.1e} | "
                    f"{c['max_score_diff_unmatched']:.1e} |")
    cmd = f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '(unset)')} {display_path(sys.executable)} bench/link.py " \
          + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "## Crop -> smear linking (bench/link.py)",
        "",
        (f"`{cmd}` — {len(crops)} ALL-IDB2 crops against {len(parents)} ALL-IDB1 smears, {args.chunks} interleaved "
         f"chunks, best of {args.repeats}, {cpu_model()} ({os.cpu_count()} cores), load {load0} -> {loadavg()}, "
         f"scikit-image {version('scikit-image')}, scipy {version('scipy')}."),
        "",
        ("| search | seconds | ms / crop | speed-up | matched | same parent and x, y as exhaustive | "
         "max score diff, matched | max score diff, unmatched |"),
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    if args.baseline:
        base = json.loads(args.baseline.read_text())
        by_key = {m["crop"]: m for m in base["matches"]}
        new = runs["coarse to fine, 1 thread"][1]
        c = compare(new, [by_key[m.crop] for m in new])
        lines += ["", (f"Against the matches recorded before the change ({args.baseline.name}: {base['what']}; "
                       f"{base['seconds']:.0f} s for {base['crops']} crops then): {c['matched_same']}/{c['matched_ref']} "
                       f"matched crops have the same parent and x, y (score diff <= {c['max_score_diff_matched']:.1e}), "
                       f"{c['same_parent_and_xy']}/{c['crops']} crops in all; unmatched crops' best score differs by "
                       f"<= {c['max_score_diff_unmatched']:.3f} (the fine search only looks near coarse peaks).")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
