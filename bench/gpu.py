"""GPU figures for issue #9 in one call: training speed, a short quality run, sampling speed.

    python bench/cells_npz.py taleqani --size 64 --out runs/cells/taleqani-64.npz   # beforehand, where the data is
    python bench/gpu.py runs/cells/taleqani-64.npz --out runs/gpu                  # <= 8 min on one H200
    accelerate launch bench/gpu.py runs/cells/taleqani-64.npz --out runs/gpu-all   # every GPU (DDP in (a), (b))
    python bench/gpu.py runs/cells/taleqani-32.npz --out /tmp/gpu-smoke --size 32 --preset tiny \\
        --minutes-train 0.2 --batch-size 8 --tiny                                  # CPU smoke (a few minutes)

Writes ``OUT/gpu.json`` and ``OUT/samples.png`` (first row real held-out cells, then one row
per label of DDIM-20, guidance-2 samples from the quality run):

(a) ``train_speed``: images/s of ``Diffusion.train`` (through ``accelerate.Accelerator``)
    against a bare loop on the same UNet, batch and bf16 autocast (data resident on the
    device, fused AdamW on CUDA, foreach EMA; no augmentation, condition dropout, clipping,
    logging or accelerate), both timed over the same steps after a warm-up by a global
    optimizer step hook, interleaved twice, and their ratio (goal >= 0.9); see
    bench/train_speed.py, which also runs it alone (on the CPU with a tiny model);
(b) ``quality``: ``Diffusion.train`` for ``--minutes-train`` in resumable chunks, then
    samples per label and their pixel statistics (mean RGB, std, high-frequency energy)
    against the held-out real cells of the label, and the pixel gates of
    ``alldata.score.score_images`` (skipped with a note when pydantic is missing);
(c) ``sampling``: images/min of ``Diffusion.sample`` against the bare ``sample_loop``
    (noise and embeddings made before the clock), and of ``alldata.generate``'s writer
    path (``pipeline`` + ``write_pngs``: sampling overlapped with PNG writing in a thread,
    and the same in line), everything but the FiftyOne records.

Needs torch, diffusers, safetensors, numpy, Pillow, scikit-learn, pydantic (``import alldata``
needs it), accelerate and this checkout, installed or not (no FiftyOne). ``--tiny`` shrinks
every step count, for a CPU smoke test. Under ``accelerate launch`` every process trains in
(a) and (b) (per-process images/s; DDP averages the gradients) and the main process alone
samples, scores and writes.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cells import agree, load_npz, train_for  # first: it makes the project importable from this checkout
from alldata.generators._accel import distributed, process_device
from alldata.generators._torch import save_grid, select_device
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion, make_scheduler, sample_loop
from train_speed import config, sync
from train_speed import train_speed as measure_train_speed

from alldata.metrics.generative import pixel_statistics

LABEL_FIELD = "subtype"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cells", help=".npz from bench/cells_npz.py (images_train, labels_train, images_test, labels_test)")
    ap.add_argument("--out", required=True, help="folder for gpu.json and samples.png")
    ap.add_argument("--minutes-train", type=float, default=4.0, help="length of the quality run (b)")
    ap.add_argument("--preset", default="gpu", help="model size: tiny | cpu | gpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--size", type=int, default=64, help="pixels (the cells are resized when the .npz differs)")
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--device", default=None, help="default: cuda when available")
    ap.add_argument("--tiny", action="store_true", help="shrink every step count (a CPU smoke test)")
    args = ap.parse_args(argv)
    if args.batch_size <= 0 or args.size <= 0 or args.minutes_train < 0:
        raise ValueError("--batch-size and --size must be positive and --minutes-train not negative")
    return args


def train_speed(cells: CellSet, cfg: dict[str, Any], args: argparse.Namespace, device: str) -> dict[str, Any]:
    """(a) images/s of Diffusion.train (accelerate) and of the bare loop, interleaved (bench/train_speed.py)."""
    warmup, steps, rounds = (2, 6, 1) if args.tiny else (20, 150, 2)
    return measure_train_speed(cells, cfg, device, batch_size=args.batch_size, warmup=warmup, steps=steps,
                               rounds=rounds, lr=args.lr)


def train_chunked(cells: CellSet, cfg: dict[str, Any], args: argparse.Namespace, device: str, run: Path,
                  img_per_s: float) -> dict[str, Any]:
    """(b) Diffusion.train in resumable chunks of about a minute until --minutes-train have passed."""
    chunk = max(5 if args.tiny else 50, int((10 if args.tiny else 60) * img_per_s / args.batch_size))
    out = train_for(cells, run, args.minutes_train * 60, chunk, batch_size=args.batch_size, lr=args.lr,
                    progress=False, device=device, **cfg)
    return {**out, "chunk": chunk, "images_seen": out["steps"] * args.batch_size}


def stats(images: np.ndarray) -> dict[str, Any]:
    s = pixel_statistics(images)
    return {"n": len(images), "mean_rgb": [round(v, 1) for v in s.mean], "std": [round(v, 1) for v in s.std],
            "hf_energy": round(s.hf_energy, 2)}


def quality(gen: Diffusion, test: np.ndarray, test_labels: np.ndarray, args: argparse.Namespace,
            out: Path) -> tuple[dict[str, Any], list[str]]:
    """(b) samples per label (DDIM-20, guidance 2), pixel statistics vs held-out real, pixel gates."""
    notes: list[str] = []
    n = 4 if args.tiny else 64
    steps = 4 if args.tiny else 20
    labels = gen.config["conditions"].get(LABEL_FIELD, [])
    per_label, rows, syn_all = {}, [test[:8]], []
    for i, lab in enumerate(labels):
        syn = gen.sample(n, {LABEL_FIELD: lab}, seed=i, sampler="ddim", num_inference_steps=steps, guidance_scale=2.0,
                         batch_size=min(n, 256))
        syn_all.append(syn)
        rows.append(syn[:8])
        real = test[test_labels == lab]
        entry = {"synthetic": stats(syn)}
        if len(real):
            entry["real_heldout"] = stats(real)
            entry["hf_ratio"] = round(entry["synthetic"]["hf_energy"] / max(entry["real_heldout"]["hf_energy"], 1e-9), 3)
            entry["max_mean_diff"] = round(max(abs(a - b) for a, b in zip(entry["synthetic"]["mean_rgb"],
                                                                          entry["real_heldout"]["mean_rgb"])), 1)
        per_label[lab] = entry
    save_grid(rows, out / "samples.png", pad=2)
    syn = np.concatenate(syn_all) if syn_all else gen.sample(n, {}, seed=0, num_inference_steps=steps)
    result: dict[str, Any] = {"sampler": f"ddim-{steps}", "guidance_scale": 2.0, "per_label": per_label,
                              "all": {"synthetic": stats(syn), "real_heldout": stats(test)}}
    try:
        from alldata.score import score_images
    except ImportError as e:  # pydantic (or scikit-learn) missing on this machine
        notes.append(f"score gates skipped: {e}")
        return result, notes
    report = score_images(test, syn)
    result["gates"] = {"passed": report.passed, "note": "pixel gates only (no encoder in this script)",
                       "table": [{"gate": g.name, "value": g.value, "threshold": g.threshold, "passed": g.passed}
                                 for g in report.gates if g.passed is not None]}
    return result, notes


def per_min(n: int, seconds: float) -> float:
    return round(n * 60 / seconds, 1)


def sampling(gen: Diffusion, args: argparse.Namespace, device: str, out: Path) -> tuple[dict[str, Any], list[str]]:
    """(c) images/min: bare sample_loop, Diffusion.sample, and generate's writer path (threaded and in line)."""
    notes: list[str] = []
    bs, n = (8, 16) if args.tiny else (256, 1024)
    steps = 4 if args.tiny else 20
    labels = gen.config["conditions"].get(LABEL_FIELD, [])
    cond = {LABEL_FIELD: labels[0]} if labels else {}
    kw = {"sampler": "ddim", "num_inference_steps": steps, "guidance_scale": 2.0}
    gen.sample(min(bs, 4), cond, seed=99, batch_size=bs, **kw)  # warm-up
    s = gen.config["image_size"]
    c, u = gen.embed(cond, bs), gen.embed({}, bs)
    noises = [torch.randn((bs, 3, s, s), generator=torch.Generator().manual_seed(k)).to(device) for k in range(n // bs)]
    sync(device)
    t0 = time.perf_counter()
    for noise in noises:
        sample_loop(gen.unet, make_scheduler("ddim", gen.config), noise, c, u, num_inference_steps=steps, guidance_scale=2.0)
    sync(device)
    bare = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen.sample(n, cond, seed=0, batch_size=bs, **kw)
    smp = time.perf_counter() - t0
    res: dict[str, Any] = {"batch_size": bs, "n": n, "sampler": f"ddim-{steps}", "guidance_scale": 2.0,
                           "bare_img_per_min": per_min(n, bare), "sample_img_per_min": per_min(n, smp),
                           "sample_vs_bare": round(bare / smp, 3)}
    try:
        from alldata.generate import pipeline, write_pngs
    except ImportError as e:
        notes.append(f"generate writer path skipped: {e}")
        return res, notes
    for depth, key in ((2, "writer_thread"), (0, "writer_in_line")):
        d = out / f"_{key}"
        d.mkdir(parents=True, exist_ok=True)
        batches = ((k, gen.sample(bs, cond, seed=k, batch_size=bs, **kw)) for k in range(n // bs))

        def write(item: tuple[int, np.ndarray], d: Path = d) -> None:
            k, images = item
            write_pngs(images, [d / f"s{k}-{i:04d}.png" for i in range(len(images))])

        t0 = time.perf_counter()
        pipeline(batches, write, depth=depth)
        res[f"{key}_img_per_min"] = per_min(n, time.perf_counter() - t0)
        shutil.rmtree(d)
    res["writer_thread_vs_sample"] = round(res["writer_thread_img_per_min"] / res["sample_img_per_min"], 3)
    return res, notes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    t_start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = process_device(args.device) if distributed() else select_device(args.device)
    main_process = int(__import__("os").environ.get("RANK", "0")) == 0
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cells, test, test_labels = load_npz(args.cells, LABEL_FIELD, args.size)
    cfg = config(cells, args.size, args.preset)
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__, "args": vars(args), "n_train": len(cells), "n_test": len(test),
        "labels_train": {k: int(v) for k, v in zip(*np.unique([x or "" for x in cells.labels[LABEL_FIELD]], return_counts=True))},
        "notes": [],
    }

    def save() -> None:
        if not main_process:
            return
        report["seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "gpu.json").write_text(json.dumps(report, indent=1))

    report["train_speed"] = train_speed(cells, cfg, args, device)
    print("train speed:", report["train_speed"], flush=True)
    save()
    run = out / "quality_run"
    if main_process:
        shutil.rmtree(run, ignore_errors=True)  # a fresh run each call
    agree(None)  # the others wait for it
    report["quality_train"] = train_chunked(cells, cfg, args, device, run, report["train_speed"]["train_img_per_s"])
    print("quality run:", report["quality_train"], flush=True)
    if not main_process:  # the main process samples, scores and writes
        return report
    gen = Diffusion.from_pretrained(run, device=device)
    report["quality"], notes = quality(gen, test, test_labels, args, out)
    report["notes"] += notes
    print("quality:", json.dumps(report["quality"].get("gates", {}).get("passed")), flush=True)
    save()
    report["sampling"], notes = sampling(gen, args, device, out)
    report["notes"] += notes
    print("sampling:", report["sampling"], flush=True)
    save()
    print(f"wrote {out / 'gpu.json'} and {out / 'samples.png'} in {report['seconds']} s")
    return report


if __name__ == "__main__":
    main()
