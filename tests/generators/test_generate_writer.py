"""``generate``'s writer thread (same files and records as writing in line) and its failed-score warning."""

from __future__ import annotations

import threading
import time
import warnings

import fiftyone as fo
import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from alldata.generators.base import checkpoint_sha256
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion

from alldata.cli import app
from alldata.generate import FailedScoreWarning, generate_to_dataset, pipeline, score_warning
from alldata.schema import F
from alldata.score import SCORE_NAME, score_images

TINY = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
SAMPLE = {"sampler": "ddim", "num_inference_steps": 2}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    rng = np.random.default_rng(0)
    cells = CellSet(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), {"cell_type": ["lymphoblast", "lymphocyte"] * 3},
                    np.full(6, np.nan), np.full(6, np.nan))
    out = tmp_path_factory.mktemp("gen") / "ckpt"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Diffusion.train(cells, out, steps=2, batch_size=4, sample_every=0, save_every=0, progress=False, device="cpu", **TINY)
    finally:
        torch.set_num_threads(n)
    return out


@pytest.fixture
def two_datasets(dataset_name):
    names = [dataset_name, f"{dataset_name}-b"]
    yield names
    if fo.dataset_exists(names[1]):
        fo.delete_dataset(names[1])


def test_pipeline_keeps_order_overlaps_and_raises():
    made, seen = [], []

    def items():
        for i in range(6):
            made.append((i, threading.current_thread().name))
            yield i

    def slow(i):
        time.sleep(0.02)
        seen.append((i, threading.current_thread().name))

    pipeline(items(), slow, depth=2)
    assert [i for i, _ in seen] == list(range(6)) and {t for _, t in seen} == {"alldata-writer"}
    assert {t for _, t in made} == {threading.current_thread().name}
    seen.clear()
    pipeline(range(4), seen.append, depth=0)  # no thread
    assert seen == [0, 1, 2, 3]

    def boom(i):
        if i == 1:
            raise OSError("disk full")

    made.clear()
    with pytest.raises(OSError, match="disk full"):
        pipeline(items(), boom, depth=1)
    assert len(made) < 6  # production stopped soon after the writer failed


def _records(name):
    ds = fo.load_dataset(name)
    fields = [F.KEY, F.SEED, F.GENERATOR, F.CHECKPOINT_SHA256, f"{F.CELL_TYPE}.label", "filepath"]
    vals = dict(zip(fields, ds.values(fields)))
    vals["filepath"] = [p.rsplit("/", 1)[-1] for p in vals["filepath"]]
    return vals


def test_writer_thread_writes_what_writing_in_line_writes(ckpt, two_datasets, tmp_path):
    cond = {"cell_type": "lymphoblast"}
    outs = []
    for name, depth in zip(two_datasets, (0, 2)):
        out = tmp_path / f"depth{depth}"
        plan, added = generate_to_dataset(ckpt, cond, 5, name, out, seed=3, batch_size=2, progress=False,
                                          writer_depth=depth, **SAMPLE)
        assert added == 5 and plan.batches == [(3, 2), (4, 2), (5, 1)]
        outs.append(out)
    a, b = (_records(n) for n in two_datasets)
    assert a == b and a[F.SEED] == [3, 3, 4, 4, 5]
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir()) and len(names) == 5
    assert all((outs[0] / n).read_bytes() == (outs[1] / n).read_bytes() for n in names)


def _write_score(ckpt, passed: bool):
    rng = np.random.default_rng(0)
    real = np.full((8, 16, 16, 3), 200, np.uint8)
    syn = real.copy() if passed else rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    report = score_images(real, syn).model_copy(update={"checkpoint": str(ckpt), "checkpoint_sha256": checkpoint_sha256(ckpt)})
    assert report.passed is passed
    (ckpt / SCORE_NAME).write_text(report.model_dump_json(indent=1))
    return report


def test_generate_warns_when_the_last_score_failed(ckpt, dataset_name, tmp_path):
    try:
        assert score_warning(ckpt) is None  # never scored
        report = _write_score(ckpt, passed=False)
        msg = score_warning(ckpt)
        failed = [g.name for g in report.failed()]
        assert failed and all(name in msg for name in failed) and "failed its last score" in msg
        with pytest.warns(FailedScoreWarning, match="mean_colour"):
            generate_to_dataset(ckpt, {}, 1, dataset_name, tmp_path / "img", progress=False, **SAMPLE)
        r = CliRunner().invoke(app, ["generate", "--checkpoint", str(ckpt), "--num-samples", "1", "--dataset",
                                     dataset_name, "--dry-run"])
        assert r.exit_code == 0 and "warning:" in r.output and "mean_colour" in r.output, r.output
        _write_score(ckpt, passed=True)
        assert score_warning(ckpt) is None
        with warnings.catch_warnings():
            warnings.simplefilter("error", FailedScoreWarning)
            generate_to_dataset(ckpt, {}, 1, dataset_name, tmp_path / "img", seed=1, progress=False, **SAMPLE)
        (ckpt / SCORE_NAME).write_text("{}")  # unreadable: a warning, not a failure
        assert "not an `alldata score` report" in score_warning(ckpt)
    finally:
        (ckpt / SCORE_NAME).unlink(missing_ok=True)


def test_devices_2_writes_what_devices_1_writes(ckpt, two_datasets, tmp_path):
    """Two CPU worker processes (spawned, cores // 2 threads each) make the same PNG bytes and
    records, written once and in order, as one process at that thread count."""
    from alldata.devices import DeviceError, cpu_cores, worker_devices

    threads = max(1, cpu_cores() // 2)
    assert worker_devices(2, "cpu") == [("cpu", threads)] * 2
    with pytest.raises(DeviceError, match="devices=0"):
        worker_devices(0)
    cond, outs = {"cell_type": "lymphocyte"}, []
    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name, devices in zip(two_datasets, (1, 2)):
            out = tmp_path / f"devices{devices}"
            plan, added = generate_to_dataset(ckpt, cond, 7, name, out, seed=11, batch_size=2, progress=False,
                                              devices=devices, device="cpu", **SAMPLE)
            assert added == 7 and plan.batches == [(11, 2), (12, 2), (13, 2), (14, 1)]
            outs.append(out)
    finally:
        torch.set_num_threads(n)
    a, b = (_records(name) for name in two_datasets)
    assert a == b and a[F.SEED] == [11, 11, 12, 12, 13, 13, 14] and len(set(a[F.KEY])) == 7
    names = sorted(p.name for p in outs[0].iterdir())
    assert names == sorted(p.name for p in outs[1].iterdir()) and len(names) == 7
    assert all((outs[0] / name).read_bytes() == (outs[1] / name).read_bytes() for name in names)
    # resuming with another N adds nothing
    _, added = generate_to_dataset(ckpt, cond, 7, two_datasets[1], outs[1], seed=11, batch_size=2, progress=False,
                                   devices=2, device="cpu", **SAMPLE)
    assert added == 0
