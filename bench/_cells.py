"""Shared by bench/diagnose.py, bench/gpu.py and bench/train_speed.py: cells from a
bench/cells_npz.py ``.npz`` and time-bounded, resumable diffusion training. Needs no FiftyOne.

Importing it first makes the project importable from this checkout when it is not
pip-installed (a bare GPU machine), see :func:`_project`.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _project() -> None:
    """The repository root on ``sys.path`` and ``generators/`` as ``alldata.generators`` (what
    setuptools' package-dir does for an install), when ``alldata`` is not installed."""
    if importlib.util.find_spec("pydantic") is None:
        sys.exit("bench: the project needs pydantic (`import alldata` loads alldata.schema): pip install pydantic")
    if importlib.util.find_spec("alldata") is None:
        sys.path.insert(0, str(ROOT))
    import alldata

    if importlib.util.find_spec("alldata.generators") is None:
        alldata.__path__.append(str(ROOT))


_project()

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


def agree(value: Any) -> Any:
    """The main process's ``value`` on every process under ``accelerate launch`` (a
    collective: every rank calls it at the same point); ``value`` itself in one process."""
    from alldata.generators._accel import distributed

    if not distributed():
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def train_for(cells: CellSet, out: str | Path, seconds: float, chunk: int, **train_kwargs: Any) -> dict[str, Any]:
    """``Diffusion.train`` in resumable chunks of ``chunk`` steps until the next chunk would overrun
    ``seconds`` (a finished state in ``out`` is continued); the run's step count, time and losses.
    Under ``accelerate launch`` the main process's clock decides for every process."""
    family, state = GENERATORS.get("diffusion"), Path(out) / "train_state" / "state.json"
    steps = agree(json.loads(state.read_text())["step"] if state.is_file() else 0)
    chunk = agree(chunk)
    t0, chunks = time.perf_counter(), 0
    while True:
        steps, chunks = steps + chunk, chunks + 1
        family.train(cells, out, steps=steps, resume=True, sample_every=0, save_every=chunk, **train_kwargs)
        spent = time.perf_counter() - t0
        if agree(spent + spent / chunks > seconds):
            break
    losses = json.loads(state.read_text())["losses"]
    return {"steps": steps, "seconds": round(time.perf_counter() - t0, 1),
            "loss_first50": round(float(np.mean(losses[:50])), 4), "loss_last200": round(float(np.mean(losses[-200:])), 4)}
