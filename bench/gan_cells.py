"""GAN on real cells: train (time-bounded, resumable) and/or measure a checkpoint against held-out cells.

    python bench/cells_npz.py taleqani --size 32 --out runs/cells/taleqani-32.npz
    OMP_NUM_THREADS=1 python bench/gan_cells.py runs/cells/taleqani-32.npz --out runs/gan/taleqani-32 \
        --train-minutes 15 --preset cpu

Writes ``OUT/gan_cells.json`` (training steps and time; for unconditional samples and samples of
the rarest class: mean RGB, pixel std, high-frequency energy (mean |neighbour difference|) and
median nearest-training-image RMS, beside the same figures for held-out real cells) and
``OUT/gan_cells.png`` (first row held-out real cells, then unconditional samples, then samples
of the rarest class), and the pixel gates of ``alldata score`` on the unconditional samples. The statistics are those of bench/diagnose.py (diffusion), so the two
families compare line by line. Needs torch only (no FiftyOne).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from _cells import load_npz
from alldata.generators import GENERATORS, Generator
from alldata.generators.data import CellSet
from alldata.generators.diagnostics import nearest_rms

from alldata.metrics.generative import pixel_statistics


def train_gan_for(cells: CellSet, out: Path, seconds: float, chunk: int, clock: str = "wall",
                  **train_kwargs: Any) -> dict[str, Any]:
    """``GAN.train`` in resumable chunks of ``chunk`` steps until the next chunk would overrun ``seconds``
    of ``clock`` time: ``wall``, or ``cpu`` (this process's CPU time, for a shared, loaded machine)."""
    family, state = GENERATORS.get("gan"), out / "train_state" / "state.json"
    steps = json.loads(state.read_text())["step"] if state.is_file() else 0
    now = time.process_time if clock == "cpu" else time.perf_counter
    t0, w0, chunks = now(), time.perf_counter(), 0
    while True:
        steps, chunks = steps + chunk, chunks + 1
        family.train(cells, out, steps=steps, resume=True, sample_every=chunk, save_every=chunk, **train_kwargs)
        spent = now() - t0
        if spent + spent / chunks > seconds:
            break
    return {"steps": steps, "clock": clock, "seconds": round(now() - t0, 1),
            "wall_seconds": round(time.perf_counter() - w0, 1)}


def stats(x: np.ndarray, train: np.ndarray) -> dict[str, Any]:
    """Mean RGB, std, HF energy, median nearest-training RMS and the spread of uint8 images ``x``:
    the median RMS between two of them (a collapsed generator has ~0 however real each sample looks)."""
    st = pixel_statistics(x)
    a = x.reshape(len(x), -1).astype(np.float64)
    pair = np.sqrt(np.maximum((a**2).mean(1)[:, None] + (a**2).mean(1)[None] - 2 * a @ a.T / a.shape[1], 0))
    return {"mean_rgb": [round(v, 1) for v in st.mean], "std": round(float(np.mean(st.std)), 1),
            "hf_energy": round(st.hf_energy, 2), "nn_rms_median": round(float(np.median(nearest_rms(x, train))), 1),
            "spread_rms_median": round(float(np.median(pair[~np.eye(len(a), dtype=bool)])), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help=".npz from bench/cells_npz.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-minutes", type=float, default=0.0, help="0: measure the checkpoint in --out as it is")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--label-field", default="subtype")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr-g", type=float, default=None, help="default: GAN.train's")
    ap.add_argument("--lr-d", type=float, default=None, help="default: GAN.train's")
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="what --train-minutes counts")
    ap.add_argument("--n", type=int, default=64, help="samples per condition (the grid shows 16)")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    out = Path(args.out)
    cells, test, test_labels = load_npz(args.cells, args.label_field)
    report: dict[str, Any] = {"cells": args.cells, "n_train": len(cells), "n_test": len(test)}
    if args.train_minutes:
        family = GENERATORS.get("gan")
        report["train"] = train_gan_for(cells, out, args.train_minutes * 60, args.chunk, args.clock, batch_size=args.batch_size,
                                        progress=True, device=args.device, **family.preset(args.preset),
                                        **{k: v for k, v in (("lr_g", args.lr_g), ("lr_d", args.lr_d)) if v is not None})
    gen = Generator.from_pretrained(out, device=args.device)
    report["config"] = gen.config
    report["real_test"] = stats(test[: args.n], cells.images)
    report["real_test"].update({k: v for k, v in stats(test, cells.images).items() if k != "nn_rms_median"})
    vocab = gen.config["conditions"].get(args.label_field, [])
    labels = cells.labels[args.label_field]
    rare = min(vocab, key=labels.count) if vocab else None
    rows = [test[:16]]
    report["samples"] = {}
    for cond in [{}] + ([{args.label_field: rare}] if rare else []):
        x = gen.sample(args.n, cond, seed=1)
        train = cells.images if not cond else cells.images[[v == rare for v in labels]]
        row = stats(x, cells.images)
        row["nn_rms_median_to_class"] = round(float(np.median(nearest_rms(x, train))), 1)
        report["samples"][json.dumps(cond)] = row
        rows.append(x[:16])
        if not cond:  # the pixel gates of `alldata score` (no encoder), against all held-out cells
            from alldata.score import score_images

            gates = score_images(test, x).gates
            report["pixel_gates"] = [g.model_dump(exclude_none=True) for g in gates if g.passed is not None]
    if rare:
        report["real_test_rare"] = stats(test[test_labels == rare], cells.images)
    from PIL import Image

    pad = 2
    h = test.shape[1]
    grid = np.full((len(rows) * (h + pad) + pad, 16 * (h + pad) + pad, 3), 255, np.uint8)
    for r, imgs in enumerate(rows):
        for c, img in enumerate(imgs):
            grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (h + pad): pad + c * (h + pad) + h] = img
    Image.fromarray(grid).save(out / "gan_cells.png")
    (out / "gan_cells.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=1))


if __name__ == "__main__":
    main()
