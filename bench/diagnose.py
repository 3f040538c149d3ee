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
from pathlib import Path

import numpy as np
from _cells import load_npz, train_for
from alldata.generators import GENERATORS, Generator
from alldata.generators.diagnostics import nearest_rms, sampler_sweep, x0_reconstruction

from alldata.metrics.generative import pixel_statistics

TIMESTEPS = (10, 100, 300, 500, 700, 900, 999)


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
        report["train"] = train_for(cells, out, args.train_minutes * 60, args.chunk, batch_size=args.batch_size, lr=args.lr,
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
