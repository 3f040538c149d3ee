"""Diffusion diagnostics on real cells: train (time-bounded, resumable) and/or diagnose a checkpoint.

    python bench/cells_npz.py taleqani --size 32 --out runs/cells/taleqani-32.npz
    python bench/diagnose.py runs/cells/taleqani-32.npz --out runs/diag/v --train-minutes 20 --preset cpu
    python bench/diagnose.py runs/cells/taleqani-32.npz --out runs/diag/eps --train-minutes 8 \
        --prediction-type epsilon        # the parameterisation of b5fa1ed, for the before/after table

Writes ``OUT/diagnose.json`` (x0 reconstruction of held-out cells at several t for the EMA
and the raw weights; the same seeds through DDPM-1000 / DDIM-20 / DDIM-100 / DPM-Solver++,
guidance 1 and 2, conditioned and not; pixel statistics against the held-out cells) and
``OUT/diagnose.png`` (one row per sampler run, the first row real held-out cells).
Needs torch and diffusers only (no FiftyOne), so it runs as is on a GPU machine.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from alldata.generators import GENERATORS, Generator
from alldata.generators.data import CellSet
from alldata.generators.diagnostics import nearest_rms, sampler_sweep, x0_reconstruction

from alldata.metrics.generative import pixel_statistics

TIMESTEPS = (10, 100, 300, 500, 700, 900, 999)


def load_npz(path: str, label_field: str) -> tuple[CellSet, np.ndarray, list[str]]:
    """Training cells (labelled with ``label_field``), held-out images and their labels."""
    z = np.load(path)
    train, labels = z["images_train"], [str(v) or None for v in z["labels_train"]]
    n = len(train)
    cells = CellSet(train, {label_field: labels}, np.full(n, np.nan), np.full(n, np.nan))
    return cells, z["images_test"], [str(v) for v in z["labels_test"]]


def train_for(cells: CellSet, out: Path, minutes: float, chunk: int, **kwargs) -> dict[str, float]:
    """Train in resumable chunks of ``chunk`` steps until ``minutes`` have passed."""
    family = GENERATORS.get("diffusion")
    t0, steps = time.perf_counter(), 0
    state = out / "train_state" / "state.json"
    if state.is_file():
        steps = json.loads(state.read_text())["step"]
    while time.perf_counter() - t0 < minutes * 60:
        steps += chunk
        family.train(cells, out, steps=steps, resume=True, sample_every=0, save_every=chunk, **kwargs)
    losses = json.loads(state.read_text())["losses"]
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "loss_first50": round(float(np.mean(losses[:50])), 4), "loss_last200": round(float(np.mean(losses[-200:])), 4)}


def raw_weights(out: Path, device: str) -> Generator | None:
    """The raw (non-EMA) weights of the last training state, as a generator."""
    from safetensors.torch import load_file

    f = out / "train_state" / "model.safetensors"
    if not f.is_file():
        return None
    gen = Generator.from_pretrained(out, device=device)
    gen.load_state_dict(load_file(str(f)))
    return gen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help=".npz from bench/cells_npz.py")
    ap.add_argument("--out", required=True)
    ap.add_argument("--train-minutes", type=float, default=0.0, help="0: diagnose the checkpoint in --out as it is")
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--prediction-type", default="v_prediction")
    ap.add_argument("--label-field", default="subtype")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--chunk", type=int, default=200)
    ap.add_argument("--n", type=int, default=16, help="samples per sampler run")
    ap.add_argument("--device", default=None)
    args = ap.parse_args()

    out = Path(args.out)
    cells, test, _ = load_npz(args.cells, args.label_field)
    report: dict = {"cells": args.cells, "n_train": len(cells), "n_test": len(test)}
    if args.train_minutes:
        family = GENERATORS.get("diffusion")
        report["train"] = train_for(cells, out, args.train_minutes, args.chunk, batch_size=args.batch_size, lr=args.lr,
                                    progress=True, device=args.device, prediction_type=args.prediction_type,
                                    **family.preset(args.preset))
    gen = Generator.from_pretrained(out, device=args.device)
    report["config"] = {k: gen.config[k] for k in ("image_size", "block_out_channels", "prediction_type", "beta_schedule")}
    real = pixel_statistics(test)
    report["real_test"] = {"mean_rgb": [round(v, 1) for v in real.mean], "std": round(float(np.mean(real.std)), 1),
                           "hf_energy": round(real.hf_energy, 2),
                           "nn_rms_median": round(float(np.median(nearest_rms(test[:args.n], cells.images))), 1)}
    held = test[:64]
    report["x0_ema"] = x0_reconstruction(gen, held, TIMESTEPS)
    raw = raw_weights(out, args.device)
    if raw is not None:
        report["x0_raw"] = x0_reconstruction(raw, held, TIMESTEPS)
    vocab = gen.config["conditions"].get(args.label_field, [])
    conds = [{}] + ([{args.label_field: min(vocab, key=lambda v: cells.labels[args.label_field].count(v))}] if vocab else [])
    rows = sampler_sweep(gen, cells.images, n=args.n, conditions=conds)
    from PIL import Image

    grid = [np.concatenate(list(test[:args.n]), 1)] + [np.concatenate(list(r.pop("samples")), 1) for r in rows]
    Image.fromarray(np.concatenate(grid, 0)).save(out / "diagnose.png")
    report["samplers"] = rows
    (out / "diagnose.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k not in ("x0_raw",)}, indent=1))


if __name__ == "__main__":
    main()
