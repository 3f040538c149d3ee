"""Shared by bench/diagnose.py and bench/gpu.py: cells from a bench/cells_npz.py ``.npz`` and
time-bounded, resumable diffusion training. Needs no FiftyOne."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from alldata.generators import GENERATORS
from alldata.generators.data import CellSet, square_resize


def load_npz(path: str | Path, label_field: str = "subtype",
             size: int | None = None) -> tuple[CellSet, np.ndarray, np.ndarray]:
    """Training cells labelled with ``label_field`` ("" = unknown), held-out images and labels,
    resized to ``size`` when given."""
    from PIL import Image

    z = np.load(path)
    train, test = z["images_train"], z["images_test"]
    if size is not None and train.shape[1] != size:
        train, test = (np.stack([square_resize(Image.fromarray(x), size) for x in a]) for a in (train, test))
    n = len(train)
    labels = [str(v) or None for v in z["labels_train"]]
    return CellSet(train, {label_field: labels}, np.full(n, np.nan), np.full(n, np.nan)), test, z["labels_test"].astype(str)


def train_for(cells: CellSet, out: str | Path, seconds: float, chunk: int, **train_kwargs: Any) -> dict[str, Any]:
    """``Diffusion.train`` in resumable chunks of ``chunk`` steps until the next chunk would overrun
    ``seconds`` (a finished state in ``out`` is continued); the run's step count, time and losses."""
    family, state = GENERATORS.get("diffusion"), Path(out) / "train_state" / "state.json"
    steps = json.loads(state.read_text())["step"] if state.is_file() else 0
    t0, chunks = time.perf_counter(), 0
    while True:
        steps, chunks = steps + chunk, chunks + 1
        family.train(cells, out, steps=steps, resume=True, sample_every=0, save_every=chunk, **train_kwargs)
        spent = time.perf_counter() - t0
        if spent + spent / chunks > seconds:
            break
    losses = json.loads(state.read_text())["losses"]
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "loss_first50": round(float(np.mean(losses[:50])), 4), "loss_last200": round(float(np.mean(losses[-200:])), 4)}
