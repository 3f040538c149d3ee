"""Benchmark: alldata's diffusion generator on real cells - end-to-end generation vs. the bare sampling
loop, the default sampler (DDIM 20 steps) and DPM-Solver++ vs. 1000-step DDPM, training throughput.

Each phase runs in a fresh subprocess, on a private ``mongod`` (:mod:`alldata.mongod`) and temp
folders; nothing is downloaded. What each phase does and how it is timed and scored: the
section "How bench/generate.py measures" of bench/RESULTS.md. Results go to its "Generate"
section and to stdout.

Usage::

    .venv/bin/python bench/generate.py                  # defaults: ~13 min on 2 busy cores (766 s measured)
    .venv/bin/python bench/generate.py --b-samples 24   # ~12 min: fewer images in the 1000-step DDPM row
    .venv/bin/python bench/generate.py --train-steps 50 --a-samples 32 --b-samples 8 \\
        --ddpm-steps 100 --no-write                     # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _machine import cpu_model, display_path, loadavg, sh, version

from alldata.config import data_root
from alldata.mongod import Mongod, start_mongod

HERE = Path(__file__).resolve().parent
SECTION = "## Generate (bench/generate.py)"
MARKER = "@@BENCH_RESULT@@ "

#: source name -> (folder under the data root, label field to condition on)
SOURCES = {"all_idb2": ("ALL-IDB2", "diagnosis"), "taleqani": ("ALL_Taleqani_Kaggle", "cell_type")}
H100_TARGET = "≥10,000 64-px cells/min end-to-end on one H100"


# ======================================================================================
# worker side: each phase in a fresh process
# ======================================================================================
def _log(*parts: Any) -> None:
    print(*parts, flush=True)


def _split_counts(n: int, k: int) -> list[int]:
    """``n`` items over ``k`` classes, as evenly as possible (the first classes get the remainder)."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _batches(n: int, batch: int, seed: int) -> list[tuple[int, int]]:
    """(seed, size) of each batch, exactly as ``plan_generation`` makes them (batch k uses seed + k)."""
    sizes = [min(batch, n - i) for i in range(0, n, batch)]
    return [(seed + k, s) for k, s in enumerate(sizes)]


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _phase_prepare(spec: dict) -> dict:
    """Ingest the real source and write the grouped split (no torch)."""
    import alldata.sources  # noqa: F401 - registers the sources
    from alldata.ingest import ingest
    from alldata.schema import F
    from alldata.split import split_dataset
    from alldata.store import load_dataset

    t0 = time.perf_counter()
    rep = ingest(spec["source"], spec["dataset"], root=spec["source_root"], workers=2, progress=False)
    t_ingest = time.perf_counter() - t0
    ds = load_dataset(spec["dataset"])
    summary = split_dataset(ds, by="group", seed=0, stratify=F.DIAGNOSIS)
    field = spec["label_field"]
    per_split = {}
    for s in ("train", "val", "test"):
        v = ds.match({F.SPLIT: s, F.IMAGE_KIND: "cell"})
        labels = v.values(f"{field}.label")
        per_split[s] = {str(k): labels.count(k) for k in sorted(set(labels), key=str)}
    return {
        "found": rep.found,
        "added": rep.added,
        "skipped": len(rep.skipped),
        "warnings": len(rep.warnings),
        "ingest_seconds": t_ingest,
        "split_counts": summary.counts,
        "labels_per_split": per_split,
    }


def _probe_threads(cfg: dict, batch: int, candidates: list[int], reps: int = 3) -> dict[int, float]:
    """Median seconds of one UNet forward+backward (the training step's bulk) per thread count,
    measured interleaved so load changes on a shared machine hit every candidate alike."""
    import torch
    from alldata.generators.diffusion import Diffusion

    gen = Diffusion.build(cfg, device="cpu")
    unet = gen.unet.train()
    s = cfg["image_size"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn((batch, 3, s, s), generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    c = torch.randn((batch, gen.conditioner.dim), generator=g)

    def step() -> None:
        unet.zero_grad(set_to_none=True)
        unet(x, t, class_labels=c).sample.square().mean().backward()

    times: dict[int, list[float]] = {n: [] for n in candidates}
    for n in candidates:  # warm-up (oneDNN primitives) at each thread count
        torch.set_num_threads(n)
        step()
    for _ in range(reps):
        best = min((min(v) for v in times.values() if v), default=None)
        for n in candidates:
            if best is not None and times[n] and min(times[n]) > 2 * best:
                continue  # clearly the slower one: no more repeats (on a busy machine it can be 10x slower)
            torch.set_num_threads(n)
            t0 = time.perf_counter()
            step()
            times[n].append(time.perf_counter() - t0)
    return {n: statistics.median(v) for n, v in times.items()}


def _phase_train(spec: dict) -> dict:
    """(c): load the train-split cells and time ``Diffusion.train``."""
    import torch
    from alldata.generators.data import load_cells
    from alldata.generators.diffusion import Diffusion

    from alldata.generate import training_view

    field, size, batch = spec["label_field"], spec["image_size"], spec["batch_size"]
    default_threads = torch.get_num_threads()
    t0 = time.perf_counter()
    cells = load_cells(training_view(spec["dataset"], split="train"), size, label_fields=(field,), progress=False)
    t_load = time.perf_counter() - t0
    preset = Diffusion.preset("cpu")
    cfg = Diffusion.check_config(
        {
            "image_size": size,
            "conditions": cells.vocabulary(),
            "continuous": [c for c in ("area", "nc_ratio") if (getattr(cells, c) == getattr(cells, c)).any()],
            **preset,
        }
    )
    probe = None
    if spec["threads"] == "auto":
        cands = sorted({1, os.cpu_count() or 1})
        probe = _probe_threads(cfg, batch, cands)
        threads = min(probe, key=probe.get)
        times = ", ".join(f"{n}: {v:.3f}" for n, v in probe.items())
        _log(f"  thread probe (s per UNet fwd+bwd, batch {batch}): {times} -> {threads}")
    else:
        threads = int(spec["threads"])
    torch.set_num_threads(threads)
    _log(f"  training {spec['train_steps']} steps, batch {batch}, {size} px, {len(cells)} cells, {threads} thread(s) ...")
    out = Path(spec["checkpoint"])
    t0 = time.perf_counter()
    gen = Diffusion.train(
        cells, out, steps=spec["train_steps"], batch_size=batch, seed=0, resume=False, sample_every=0,
        save_every=0, progress=False, device="cpu", **preset,
    )
    seconds = time.perf_counter() - t0
    losses = json.loads((out / "train_state" / "state.json").read_text())["losses"]
    return {
        "threads": threads,
        "default_threads": default_threads,
        "probe": {str(k): v for k, v in (probe or {}).items()},
        "n_train_cells": len(cells),
        "load_seconds": t_load,
        "seconds": seconds,
        "steps": spec["train_steps"],
        "batch_size": batch,
        "params": sum(p.numel() for p in gen.unet.parameters()) + sum(p.numel() for p in gen.conditioner.parameters()),
        "conditions": gen.config["conditions"],
        "continuous": gen.config["continuous"],
        "loss_first50": sum(losses[:50]) / max(1, len(losses[:50])),
        "loss_last50": sum(losses[-50:]) / max(1, len(losses[-50:])),
    }


class _Timers:
    """Wall time spent inside wrapped functions (the bench wraps alldata's; alldata is unchanged)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._undo: list[tuple[Any, str, Any]] = []

    def _wrap(self, name: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[name] += time.perf_counter() - t0
                self.calls[name] += 1

        return timed

    def patch(self, owner: Any, attr: str, name: str, kind: str = "function") -> None:
        raw = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
        self._undo.append((owner, attr, raw))
        if kind == "classmethod":
            setattr(owner, attr, classmethod(self._wrap(name, raw.__func__)))
        else:
            setattr(owner, attr, self._wrap(name, raw))

    def restore(self) -> None:
        for owner, attr, raw in reversed(self._undo):
            setattr(owner, attr, raw)
        self._undo.clear()


def _e2e_timers() -> _Timers:
    from alldata.generators.base import Generator
    from alldata.generators.diffusion import Diffusion
    from PIL import Image

    import alldata.generate as ag
    import alldata.synthetic as syn

    tm = _Timers()
    tm.patch(ag, "plan_generation", "plan_generation (checkpoint sha256 + existing-keys query)")
    tm.patch(Generator, "from_pretrained", "Generator.from_pretrained (load checkpoint)", kind="classmethod")
    tm.patch(Diffusion, "sample", "Diffusion.sample (sampling)")
    tm.patch(Image.Image, "save", "PIL PNG encode + write")
    tm.patch(syn, "make_synthetic_sample", "make_synthetic_sample (re-read, sha256, decode, validate)")
    tm.patch(syn, "add_synthetic", "add_synthetic (FiftyOne writes)")
    return tm


def _phase_sample(spec: dict) -> dict:
    """(a) end-to-end vs. bare loop and (b) sampler comparison; writes the (b) images to an npz."""
    import numpy as np
    import torch
    from alldata.generators.diffusion import Diffusion, _sample_seed, make_scheduler, sample_loop
    from PIL import Image

    from alldata.generate import generate_to_dataset
    from alldata.schema import F
    from alldata.store import load_dataset

    _set_threads(spec["threads"])
    # import FiftyOne and connect to the database before any clock starts: a once-per-process cost
    t0 = time.perf_counter()
    import fiftyone as fo

    fo.list_datasets()
    connect_seconds = time.perf_counter() - t0
    ckpt, field = spec["checkpoint"], spec["label_field"]
    gen = Diffusion.from_pretrained(ckpt, device="cpu")
    values = list(gen.config["conditions"][field])
    s = gen.config["image_size"]
    # alldata's default sampler (Diffusion.sample / `alldata generate`): DDIM, 20 steps, guidance 2.0
    default = {"sampler": "ddim", "num_inference_steps": 20, "guidance_scale": 2.0}

    def noise_for(seed: int, n: int) -> tuple[torch.Tensor, list[torch.Generator]]:
        gens = [torch.Generator().manual_seed(_sample_seed(seed, i)) for i in range(n)]
        return torch.cat([torch.randn((1, 3, s, s), generator=g) for g in gens]), gens

    def bare_loop(cond: dict, batches: list[tuple[int, int]], kw: dict) -> tuple[float, np.ndarray]:
        """Everything but the UNet loop made before the clock starts; returns (seconds, uint8 images)."""
        c = gen.embed(cond)
        u = gen.embed({}) if cond and kw["guidance_scale"] != 1.0 else None
        prepared = [(noise_for(seed, n), n) for seed, n in batches]
        xs, seconds = [], 0.0
        for (noise, gens), n in prepared:
            t0 = time.perf_counter()
            x = sample_loop(gen.unet, make_scheduler(kw["sampler"], gen.config), noise, c.expand(n, -1),
                            None if u is None else u.expand(n, -1), num_inference_steps=kw["num_inference_steps"],
                            guidance_scale=kw["guidance_scale"], generator=gens)
            seconds += time.perf_counter() - t0
            xs.append(x)
        x = torch.cat(xs)
        return seconds, ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    # warm-up (oneDNN primitive creation etc.), untimed, at the (a) batch size
    a_batch = spec["a_batch_size"]
    bare_loop({field: values[0]}, [(999_999, a_batch)], {**default, "num_inference_steps": 2})

    # ---- (a) ---------------------------------------------------------------------------
    _log(f"  (a) {spec['a_samples']} images, batch {a_batch}, DDIM 20 steps, guidance 2.0 (alldata default): "
         "bare sample_loop / Diffusion.sample / generate_to_dataset ...")
    a_out = Path(spec["work"]) / "generated_a"
    secs: dict[str, float] = defaultdict(float)
    imgs: dict[str, list[np.ndarray]] = defaultdict(list)
    brk_s: dict[str, float] = defaultdict(float)
    brk_n: dict[str, int] = defaultdict(int)
    e2e_added, e2e_calls = 0, []
    methods = ["sample_loop", "Diffusion.sample", "generate_to_dataset"]
    for ci, (value, n) in enumerate(zip(values, _split_counts(spec["a_samples"], len(values)))):
        if n == 0:
            continue
        cond, seed = {field: value}, 1000 * (ci + 1)
        batches = _batches(n, a_batch, seed)
        for m in methods if ci % 2 == 0 else methods[::-1]:  # alternate the order: load drift hits all alike
            if m == "sample_loop":
                dt, arr = bare_loop(cond, batches, default)
            elif m == "Diffusion.sample":
                t0 = time.perf_counter()
                arr = np.concatenate([gen.sample(bn, cond, bs, batch_size=a_batch, **default) for bs, bn in batches])
                dt = time.perf_counter() - t0
            else:
                tm = _e2e_timers()
                t0 = time.perf_counter()
                try:
                    plan, added = generate_to_dataset(ckpt, cond, n, spec["dataset"], a_out, seed=seed,
                                                      batch_size=a_batch, progress=False, **default)
                finally:
                    dt = time.perf_counter() - t0
                    tm.restore()
                for k, v in tm.seconds.items():
                    brk_s[k] += v
                    brk_n[k] += tm.calls[k]
                e2e_added += added
                e2e_calls.append(dt)
                paths = [a_out / f"{plan.source_id(k, i)}.png" for k, (_, bn) in enumerate(plan.batches) for i in range(bn)]
                arr = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
            secs[m] += dt
            imgs[m].append(arr)
            _log(f"    {field}={value}: {m:20s} {n} images {dt:7.2f} s  {n / dt:6.2f} img/s")
    cat = {m: np.concatenate(v) for m, v in imgs.items()}
    same = {m: bool(np.array_equal(cat[m], cat["Diffusion.sample"])) for m in methods}
    maxdiff = {m: int(np.abs(cat[m].astype(int) - cat["Diffusion.sample"].astype(int)).max()) for m in methods}
    ds = load_dataset(spec["dataset"])
    syn = ds.match({F.SOURCE: "synthetic/diffusion"})
    first = syn.first()
    prov = {k: first[k] for k in (F.GENERATOR, F.CHECKPOINT_SHA256, F.SEED, F.CONDITION, F.SAMPLER,
                                    F.NUM_INFERENCE_STEPS, F.ALLDATA_VERSION)}
    prov[F.CHECKPOINT_SHA256] = str(prov[F.CHECKPOINT_SHA256])[:12] + "..."
    png_bytes = sum(p.stat().st_size for p in a_out.glob("*.png"))
    a = {
        "n": int(sum(len(v) for v in imgs["generate_to_dataset"])),
        "batch_size": a_batch,
        "seconds": dict(secs),
        "e2e_calls": e2e_calls,
        "breakdown": dict(brk_s),
        "breakdown_calls": dict(brk_n),
        "identical_to_sample": same,
        "max_abs_diff": maxdiff,
        "added": e2e_added,
        "records": len(syn),
        "tagged_synthetic": len(syn.match_tags("synthetic")),
        "provenance_example": prov,
        "png_bytes_mean": png_bytes / max(1, len(list(a_out.glob("*.png")))),
        "connect_seconds": connect_seconds,
    }

    # ---- (b) ---------------------------------------------------------------------------
    configs = [
        ("DDIM 20 steps, guidance 2.0 (alldata default)", {**default}),
        ("DDIM 20 steps, guidance 1.0", {**default, "guidance_scale": 1.0}),
        ("DPM-Solver++ 20 steps, guidance 2.0 (lambda-clipped, dynamic thresholding)",
         {"sampler": "dpm++", "num_inference_steps": 20, "guidance_scale": 2.0}),
        (f"DDPM {spec['ddpm_steps']} steps ancestral, guidance 1.0 (DDPMPipeline-style)",
         {"sampler": "ddpm", "num_inference_steps": spec["ddpm_steps"], "guidance_scale": 1.0}),
    ]
    b_batch = spec["b_batch_size"]
    b_rows, arrays = [], {}
    counts = _split_counts(spec["b_samples"], len(values))
    for name, kw in configs:
        _log(f"  (b) {name}: {spec['b_samples']} images, batch {b_batch} ...")
        out, dt_total = [], 0.0
        for ci, (value, n) in enumerate(zip(values, counts)):
            if n == 0:
                continue
            t0 = time.perf_counter()
            arr = gen.sample(n, {field: value}, 5000 + ci, batch_size=b_batch, **kw)
            dt_total += time.perf_counter() - t0
            out.append(arr)
        key = f"b{len(b_rows)}"
        arrays[key] = np.concatenate(out)
        evals = kw["num_inference_steps"] * (2 if kw["guidance_scale"] != 1.0 else 1)
        b_rows.append({"name": name, "key": key, "n": len(arrays[key]), "seconds": dt_total, "unet_evals": evals, **kw})
        _log(f"    {dt_total:.1f} s, {len(arrays[key]) / dt_total:.3f} img/s")
    arrays["a_e2e"] = cat["generate_to_dataset"]
    np.savez(Path(spec["work"]) / "samples.npz", **arrays)
    return {"a": a, "b": b_rows, "values": values, "b_counts": counts,
            "a_counts": _split_counts(spec["a_samples"], len(values))}


def _phase_score(spec: dict) -> dict:
    """Train the encoder on the train-split cells; FD/KID of every set against held-out real cells."""
    import numpy as np
    import torch
    from alldata.generators.data import load_cells

    from alldata.encoder import train_encoder
    from alldata.generate import training_view
    from alldata.metrics import frechet_distance, kid
    from alldata.schema import F
    from alldata.store import load_dataset

    _set_threads(spec["threads"])
    field, size = spec["label_field"], spec["image_size"]
    train = load_cells(training_view(spec["dataset"], split="train"), size, label_fields=(field,), progress=False)
    held_view = load_dataset(spec["dataset"]).match(
        {F.IMAGE_KIND: "cell", F.IS_SYNTHETIC: {"$ne": True}, F.SPLIT: {"$in": ["val", "test"]}}
    )
    held = load_cells(held_view, size, label_fields=(field,), progress=False)
    keep = [i for i, v in enumerate(train.labels[field]) if v]
    t0 = time.perf_counter()
    enc = train_encoder(train.images[keep], [train.labels[field][i] for i in keep], label_field=field,
                        image_size=size, epochs=spec["encoder_epochs"], seed=0, device="cpu")
    t_enc = time.perf_counter() - t0
    f_ref = enc.encode(held.images)
    with torch.no_grad():
        pred = enc.model.head(torch.from_numpy(f_ref)).argmax(1).numpy()
    classes = enc.config["classes"]
    held_labels = held.labels[field]
    lab = [i for i, v in enumerate(held_labels) if v]
    held_acc = float(np.mean([classes[pred[i]] == held_labels[i] for i in lab])) if lab else float("nan")

    def metrics(feats: np.ndarray) -> dict:
        k_mean, k_std = kid(f_ref, feats, subsets=100, subset_size=1000, seed=0)
        return {"fd": frechet_distance(f_ref, feats), "kid_mean": k_mean, "kid_std": k_std, "n": len(feats)}

    data = np.load(Path(spec["work"]) / "samples.npz")
    sets = {k: metrics(enc.encode(data[k])) for k in data.files}
    # real-vs-real floor: train-split cells (what the generator learnt from), the same size and
    # class mix as each fake set, several seeded draws (median reported)
    values = spec["values"]
    by_class = {v: [i for i, x in enumerate(train.labels[field]) if x == v] for v in values}
    floors = {}
    for key, counts in (("b", spec["b_counts"]), ("a", spec["a_counts"])):
        draws = []
        for d in range(spec["floor_draws"]):
            rng = np.random.default_rng(d)
            idx = np.concatenate([rng.permutation(by_class[v])[:c] for v, c in zip(values, counts)]).astype(int)
            draws.append(metrics(enc.encode(train.images[idx])))
        floors[key] = {
            "n": draws[0]["n"],
            "fd": statistics.median(x["fd"] for x in draws),
            "fd_range": [min(x["fd"] for x in draws), max(x["fd"] for x in draws)],
            "kid_mean": statistics.median(x["kid_mean"] for x in draws),
            "kid_std": statistics.median(x["kid_std"] for x in draws),
            "draws": len(draws),
        }
    hist = enc.config["history"][-1]
    return {
        "n_ref": len(held),
        "ref_labels": {str(v): held_labels.count(v) for v in sorted(set(held_labels), key=str)},
        "n_train": len(keep),
        "encoder_seconds": t_enc,
        "encoder_train_acc": hist["accuracy"],
        "encoder_heldout_acc": held_acc,
        "feature_dim": enc.feature_dim,
        "sets": sets,
        "floors": floors,
    }


PHASES = {"prepare": _phase_prepare, "train": _phase_train, "sample": _phase_sample, "score": _phase_score}


# ======================================================================================
# parent side: private database, orchestration, report
# ======================================================================================
def _run_phase(phase: str, spec: dict, env: dict, log_dir: Path) -> dict:
    """Run one phase in a fresh interpreter; stream its lines, return its JSON result."""
    err = log_dir / f"{phase}.stderr"
    t0 = time.perf_counter()
    with open(err, "w") as ef:
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--_phase", phase, "--_spec", json.dumps(spec)],
            env=env, stdout=subprocess.PIPE, stderr=ef, text=True,
        )
        result = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(MARKER):
                result = json.loads(line[len(MARKER):])
            else:
                print(line, end="", flush=True)
        proc.wait()
    if proc.returncode != 0 or result is None:
        sys.stderr.write(err.read_text()[-6000:])
        raise RuntimeError(f"phase {phase} failed (exit {proc.returncode})")
    result["process_seconds"] = time.perf_counter() - t0
    return result







def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    except OSError:
        pass
    return "?"


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


def _fmt_kid(m: dict) -> str:
    return f"{m['kid_mean']:.4f} ± {m['kid_std']:.4f}"


def _tables(res: dict) -> tuple[str, str, str, str]:
    a, b, tr, sc = res["sample"]["a"], res["sample"]["b"], res["train"], res["score"]
    n = a["n"]
    loop = n / a["seconds"]["sample_loop"]
    rows = [
        "| (a) what is timed | images | batch | seconds | images/s | vs. bare `sample_loop` | pixels identical to `Diffusion.sample` |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    labels = {
        "sample_loop": "bare `sample_loop` (UNet + DDIM loop only, `make_scheduler(\"ddim\", cfg)`; noise, embeddings made beforehand; no uint8)",
        "Diffusion.sample": "`Diffusion.sample` (uint8 arrays in memory, nothing written)",
        "generate_to_dataset": "`generate_to_dataset` end-to-end (sampling + PNGs + FiftyOne records with provenance)",
    }
    for m in ("sample_loop", "Diffusion.sample", "generate_to_dataset"):
        sec = a["seconds"][m]
        ident = "yes" if a["identical_to_sample"][m] else f"no (max abs diff {a['max_abs_diff'][m]})"
        rows.append(f"| {labels[m]} | {n} | {a['batch_size']} | {sec:.2f} | {n / sec:.2f} | {n / sec / loop:.1%} | {ident} |")
    table_a = "\n".join(rows)

    total = a["seconds"]["generate_to_dataset"]
    brk = ["| (a) where the end-to-end time goes | calls | seconds | share |", "|---|---:|---:|---:|"]
    accounted = 0.0
    for k, v in sorted(a["breakdown"].items(), key=lambda kv: -kv[1]):
        brk.append(f"| {k} | {a['breakdown_calls'][k]} | {v:.2f} | {v / total:.1%} |")
        accounted += v
    brk.append(f"| other (tqdm, labels, Provenance objects, loop) | | {total - accounted:.2f} | {(total - accounted) / total:.1%} |")
    brk.append(f"| **total `generate_to_dataset`** | {len(a['e2e_calls'])} | {total:.2f} | 100% |")
    table_brk = "\n".join(brk)

    ddpm = b[-1]
    ddpm_rate = ddpm["n"] / ddpm["seconds"]
    rows = [
        "| (b) sampler (same UNet, same seeds) | UNet evals / image | images | batch | seconds | images/s | speed vs. DDPM | FD ↓ | KID ↓ (mean ± std) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in b:
        m = sc["sets"][r["key"]]
        rate = r["n"] / r["seconds"]
        rows.append(
            f"| {r['name']} | {r['unet_evals']} | {r['n']} | {res['args']['b_batch_size']} | {r['seconds']:.1f} | "
            f"{rate:.3f} | {rate / ddpm_rate:.1f}x | {m['fd']:.2f} | {_fmt_kid(m)} |"
        )
    fb = sc["floors"]["b"]
    rows.append(
        f"| real train-split cells, same size and class mix (real-vs-real floor; median of {fb['draws']} draws, "
        f"FD range {fb['fd_range'][0]:.2f}-{fb['fd_range'][1]:.2f}) | | {fb['n']} | | | | | {fb['fd']:.2f} | {_fmt_kid(fb)} |"
    )
    ma, fa = sc["sets"]["a_e2e"], sc["floors"]["a"]
    rows.append(f"| the (a) end-to-end set (DDIM 20, guidance 2.0; alldata default), larger N | 40 | {ma['n']} | {a['batch_size']} | | | | "
                f"{ma['fd']:.2f} | {_fmt_kid(ma)} |")
    rows.append(f"| real train-split cells, N = {fa['n']} (floor for the row above; FD range "
                f"{fa['fd_range'][0]:.2f}-{fa['fd_range'][1]:.2f}) | | {fa['n']} | | | | | {fa['fd']:.2f} | {_fmt_kid(fa)} |")
    table_b = "\n".join(rows)

    imgs = tr["steps"] * tr["batch_size"]
    table_c = "\n".join([
        "| (c) `Diffusion.train` | params | steps | batch | seconds | s/step | images/s | loss (first 50 → last 50 steps) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
        (f"| `cpu` preset, {res['args']['image_size']} px, EMA, cond. dropout, flips/rot90 | {tr['params']:,} | "
        f"{tr['steps']} | {tr['batch_size']} | {tr['seconds']:.1f} | {tr['seconds'] / tr['steps']:.3f} | "
        f"{imgs / tr['seconds']:.1f} | {tr['loss_first50']:.3f} → {tr['loss_last50']:.3f} |"),
    ])
    return table_a, table_brk, table_b, table_c


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=data_root(),
                   help="folder holding ALL-IDB2/ (or ALL_Taleqani_Kaggle/) (default: alldata's data root)")
    p.add_argument("--source", choices=sorted(SOURCES), default="all_idb2",
                   help="real cells to use: all_idb2 (conditioned on diagnosis) or taleqani (on cell_type)")
    p.add_argument("--image-size", type=int, default=32, help="pixels (default 32)")
    p.add_argument("--train-steps", type=int, default=350,
                   help="training steps (default 350: 0.33-0.57 s/step at batch 16 on 1 busy core here, 2-3.5 min)")
    p.add_argument("--batch-size", type=int, default=16, help="training batch (default 16)")
    p.add_argument("--a-samples", type=int, default=128, help="(a) images per method, split over the classes (default 128)")
    p.add_argument("--a-batch-size", type=int, default=32, help="(a) sampling batch (default 32)")
    p.add_argument("--b-samples", type=int, default=32, help="(b) images per sampler, split over the classes (default 32)")
    p.add_argument("--b-batch-size", type=int, default=16, help="(b) sampling batch (default 16)")
    p.add_argument("--ddpm-steps", type=int, default=1000, help="(b) DDPM steps (default 1000, the full chain)")
    p.add_argument("--encoder-epochs", type=int, default=10, help="epochs of the scoring encoder (default 10)")
    p.add_argument("--floor-draws", type=int, default=5, help="seeded draws of the real-vs-real floor (default 5)")
    p.add_argument("--threads", default="auto",
                   help="torch threads for every phase, or 'auto': probe 1 vs. all cores interleaved, take the faster")
    p.add_argument("--output", type=Path, default=HERE / "RESULTS.md", help="Markdown file to update")
    p.add_argument("--no-write", action="store_true", help="print only, do not update --output")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (database, checkpoint, PNGs)")
    p.add_argument("--_phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    p.add_argument("--_spec", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._phase:
        print(MARKER + json.dumps(PHASES[args._phase](json.loads(args._spec))), flush=True)
        return 0

    src_dir, field = SOURCES[args.source]
    args.data_root = args.data_root.resolve()
    if not (args.data_root / src_dir).is_dir():
        print(f"{args.data_root / src_dir} not found; pass --data-root", file=sys.stderr)
        return 2
    command = " ".join(shlex.quote(a) for a in [display_path(sys.executable), *sys.argv])
    started = datetime.now(timezone.utc)
    load_before = loadavg()
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="alldata-genbench-"))
    env = dict(os.environ)
    env.update(
        FIFTYONE_DO_NOT_TRACK="true",
        FIFTYONE_DATABASE_VALIDATION="false",
        ALLDATA_HOME=str(tmp / "alldata_home"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    db: Mongod | None = None
    res: dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                    if not k.startswith("_")}}
    phase_s: dict[str, float] = {}
    try:
        db = start_mongod(tmp / "db", set_env=False)
        env["FIFTYONE_DATABASE_URI"] = db.uri
        print(f"private mongod up in {db.start_seconds:.1f} s at {db.uri} (data in {tmp / 'db'})", flush=True)
        base = {"dataset": "genbench", "label_field": field, "image_size": args.image_size, "work": str(tmp),
                "checkpoint": str(tmp / "checkpoint")}
        print(f"[0] ingest {args.source} + grouped split ...", flush=True)
        res["prepare"] = _run_phase("prepare", {**base, "source": args.source,
                                                "source_root": str(args.data_root / src_dir)}, env, tmp)
        print(f"    {res['prepare']['added']} cells in {res['prepare']['ingest_seconds']:.1f} s; "
              f"split {res['prepare']['split_counts']}", flush=True)
        print("[1] (c) training ...", flush=True)
        res["train"] = _run_phase("train", {**base, "train_steps": args.train_steps, "batch_size": args.batch_size,
                                            "threads": args.threads}, env, tmp)
        tr = res["train"]
        print(f"    {tr['seconds']:.1f} s, {tr['seconds'] / tr['steps']:.3f} s/step, "
              f"{tr['steps'] * tr['batch_size'] / tr['seconds']:.1f} img/s", flush=True)
        threads = tr["threads"]
        print("[2] (a) + (b) sampling ...", flush=True)
        res["sample"] = _run_phase("sample", {**base, "threads": threads, "a_samples": args.a_samples,
                                              "a_batch_size": args.a_batch_size, "b_samples": args.b_samples,
                                              "b_batch_size": args.b_batch_size, "ddpm_steps": args.ddpm_steps}, env, tmp)
        print("[3] encoder + FD/KID ...", flush=True)
        res["score"] = _run_phase("score", {**base, "threads": threads, "encoder_epochs": args.encoder_epochs,
                                            "values": res["sample"]["values"], "b_counts": res["sample"]["b_counts"],
                                            "a_counts": res["sample"]["a_counts"], "floor_draws": args.floor_draws},
                                  env, tmp)
        phase_s = {k: res[k]["process_seconds"] for k in ("prepare", "train", "sample", "score")}
    finally:
        if db is not None:
            db.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - t_all
    load_after = loadavg()

    table_a, table_brk, table_b, table_c = _tables(res)
    a, sc, pr, tr = res["sample"]["a"], res["score"], res["prepare"], res["train"]
    ratio = a["seconds"]["sample_loop"] / a["seconds"]["generate_to_dataset"]
    ratio_s = a["seconds"]["Diffusion.sample"] / a["seconds"]["generate_to_dataset"]
    print()
    for t in (table_a, table_brk, table_b, table_c):
        print(t)
        print()
    print(f"end-to-end keeps {ratio:.1%} of the bare loop's images/s ({ratio_s:.1%} of Diffusion.sample's); "
          f"target >= 80 %: {'met' if ratio >= 0.8 else 'NOT met'}")
    print(f"threads {threads}; total bench time {total:.0f} s; load average before {load_before}, after {load_after}")
    if args.no_write:
        return 0

    probe = tr["probe"]
    probe_txt = (
        "chosen by an interleaved probe (median s per UNet forward+backward at batch "
        f"{args.batch_size}: " + ", ".join(f"{k} thread(s) {v:.3f} s" for k, v in probe.items()) + ")"
        if probe else "set with --threads"
    )
    vocab = tr["conditions"].get(field, [])
    b_rows = res["sample"]["b"]
    dflt, ddpm = b_rows[0], b_rows[-1]
    speedup = (dflt["n"] / dflt["seconds"]) / (ddpm["n"] / ddpm["seconds"])
    s = [
        SECTION,
        "",
        f"Command: `{command}` (from the repository root)  ",
        (f"Date: {started.strftime('%Y-%m-%d %H:%M UTC')}; whole bench {total:.0f} s "
        f"(ingest+split {phase_s.get('prepare', 0):.0f} s, training {phase_s.get('train', 0):.0f} s, "
        f"sampling {phase_s.get('sample', 0):.0f} s, encoder+scores {phase_s.get('score', 0):.0f} s, each a fresh process)  "),
        (f"Machine: {sh('nproc')} CPU cores ({cpu_model()}), {_mem_total()} RAM, {platform.system()} {platform.release()}; "
        "**no GPU was available to this session**  "),
        (f"Python {platform.python_version()}; torch {version('torch')}; diffusers {version('diffusers')}; "
        f"fiftyone {version('fiftyone')}; alldata {version('alldata')}  "),
        f"torch threads: {threads} (default would be {tr['default_threads']}), {probe_txt}  ",
        (f"Load average (1/5/15 min) before {load_before}, after {load_after}. The machine is shared with other "
        "sessions' work, so absolute speeds move with their load; the methods inside (a) and inside (b) ran "
        "back to back in one process (in (a) interleaved per class, order alternated) so their ratios are the "
        "figures to read."),
        "",
        (
            f"**The H100 target ({H100_TARGET}) could not be measured: no GPU was available to this session.** "
            "Everything below is CPU-only, fp32, at "
            f"{args.image_size} px with the `cpu` preset model ({tr['params']:,} parameters: UNet "
            "block_out_channels (16, 32, 32, 64), 1 layer per block, attention at the lowest level and in the middle "
            "block)."
        ),
        "",
        (
            f"Data: {args.source} ({pr['added']} real cells ingested in {pr['ingest_seconds']:.1f} s into a private "
            f"database), grouped split {pr['split_counts']} stratified by diagnosis; the generator is conditioned on "
            f"`{field}` ({', '.join(vocab)}; per split: "
            + "; ".join(f"{k} {v}" for k, v in pr["labels_per_split"].items())
            + f") and, as `Diffusion.train` does by default, on the morphology attributes {tr['continuous']} "
            "from the segmentation masks (left unknown when sampling). Samples are split evenly over the "
            f"`{field}` values."
        ),
        "",
        "### (a) End-to-end `generate_to_dataset` vs. the bare sampling loop",
        "",
        (
            "alldata's default sampler: DDIM (eta 0, `make_scheduler(\"ddim\", cfg)`, the same scheduler for all "
            "three methods), 20 steps, classifier-free guidance 2.0 (so 2 UNet evaluations per step), "
            f"batch {a['batch_size']}, {a['n']} images per method, the same seeds (batch k of a call uses seed + k, "
            "as `plan_generation` makes them) and the same loaded weights; one untimed warm-up batch first. "
            "`generate_to_dataset` is timed as a whole call, so its per-call fixed costs (checkpoint sha256, "
            "loading the checkpoint, the existing-keys query) are in it; importing FiftyOne and connecting to the "
            f"database ({a['connect_seconds']:.1f} s, once per process) happened before any clock started."
        ),
        "",
        table_a,
        "",
        (
            f"**End-to-end keeps {ratio:.1%} of the bare loop's images/s** ({ratio_s:.1%} of `Diffusion.sample`'s); "
            f"target ≥ 80 %: **{'met' if ratio >= 0.8 else 'not met'}**. It added {a['added']} records "
            f"({a['tagged_synthetic']} tagged `synthetic`; mean PNG {a['png_bytes_mean'] / 1024:.1f} KiB), e.g. "
            f"provenance `{json.dumps(a['provenance_example'], default=str)}`. "
            "The breakdown comes from timers the bench wraps around alldata's functions for the end-to-end calls only "
            "(alldata's code is not changed):"
        ),
        "",
        table_brk,
        "",
        "### (b) alldata's default sampler (DDIM 20) and DPM-Solver++ 20 vs. 1000-step DDPM",
        "",
        (
            "All rows sample the same trained UNet (EMA weights) from the same initial noise (same seeds). "
            f"The DDPM row is the `DDPMPipeline` algorithm - `DDPMScheduler`, {args.ddpm_steps} ancestral steps, "
            "fixed-small variance, one UNet evaluation per step, no guidance - run through alldata's own "
            f"`Diffusion.sample(sampler=\"ddpm\", num_inference_steps={args.ddpm_steps}, guidance_scale=1.0)`, because diffusers' "
            "`DDPMPipeline` calls `unet(x, t)` and this class-conditional UNet needs `class_labels`. "
            "The DDIM guidance-1.0 row isolates the sampler from guidance (DDIM at the DDPM row's guidance). "
            "The DPM-Solver++ row (`make_scheduler(\"dpm++\", cfg)`, 2nd order, guidance 2.0) uses lambda_min_clipped and dynamic thresholding, "
            "the fix for the saturation the cosine schedule caused. "
            f"Sizes are small so the 1000-step chain fits the CPU budget ({b_rows[-1]['n']} images take "
            f"{b_rows[-1]['seconds']:.0f} s)."
        ),
        "",
        (
            f"Quality: Fréchet distance (FD) and KID (cubic kernel, 100 subsets of min(1000, N) per side) of each set "
            f"against {sc['n_ref']} held-out real cells (val + test split; {sc['ref_labels']}), on the "
            f"{sc['feature_dim']}-d features of alldata's own CNN encoder (`alldata.encoder.train_encoder`, "
            f"{res['args']['encoder_epochs']} epoch(s) on the {sc['n_train']} train-split cells, `{field}` classifier, "
            f"{args.image_size} px, {sc['encoder_seconds']:.0f} s; train accuracy {sc['encoder_train_acc']:.2f}, "
            f"held-out accuracy {sc['encoder_heldout_acc']:.2f}). No Inception weights are available offline, so "
            "these are not FID values and are comparable only within this table. FD is strongly biased at these "
            "sample sizes (N far below the feature dimension), which is why every fake set has a real-vs-real "
            "floor of the same N and class mix: real train-split cells (the cells the generator learnt from) "
            "scored the same way."
        ),
        "",
        table_b,
        "",
        (
            f"Measured: alldata's default (DDIM 20 steps, guidance 2.0) samples {speedup:.1f}x as many "
            f"images/s as the {args.ddpm_steps}-step DDPM chain ({dflt['unet_evals']} vs. {ddpm['unet_evals']} UNet "
            f"evaluations per image, a {ddpm['unet_evals'] / dflt['unet_evals']:.0f}x ratio; with guidance the "
            "2 evaluations of a step run as one batch of 2B)."
        ),
        "",
        (
            f"**Sample quality of this run is poor, as expected**: {tr['steps']} training steps of a "
            f"{tr['params'] / 1e6:.2f} M-parameter model on {tr['n_train_cells']} cells at {args.image_size} px on a CPU "
            "is a smoke-scale run, far from converged. Compare the samplers with each other and with the floor, "
            "not with published FIDs; quality runs (the `gpu` preset, 64 px, tens of thousands of steps) need a GPU."
        ),
        "",
        "### (c) Training throughput of `Diffusion.train`",
        "",
        (
            f"`Diffusion.train(cells, steps={tr['steps']}, batch_size={tr['batch_size']}, sample_every=0, save_every=0, "
            "**Diffusion.preset('cpu'))`, timed as a whole call (model build, the training loop with AdamW, "
            "gradient clipping, EMA update and augmentation, and the final checkpoint write); loading the "
            f"{tr['n_train_cells']} train cells (`load_cells`, resize to {args.image_size} px) took "
            f"{tr['load_seconds']:.1f} s and is not in it."
        ),
        "",
        table_c,
    ]
    _write_section(args.output, "\n".join(s) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
