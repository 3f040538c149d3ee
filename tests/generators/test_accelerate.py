"""Diffusion training through Hugging Face accelerate (generators/_accel.py), on a tiny UNet (CPU).

One process here; the slow test runs two CPU processes under ``torchrun`` (DDP over gloo).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("accelerate")

from alldata.generators import _accel
from alldata.generators.base import GeneratorError
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion

TINY = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def cells(n: int = 8) -> CellSet:
    rng = np.random.default_rng(0)
    return CellSet(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), {"cell_type": ["a", "b"] * (n // 2)},
                   rng.uniform(0.2, 0.6, n).astype(np.float32), np.full(n, np.nan))


def train(out: Path, steps: int, **kw) -> Diffusion:
    args = {"batch_size": 4, "sample_every": 0, "save_every": 2, "progress": False, "device": "cpu", "lr": 1e-3, **TINY,
            **kw}
    return Diffusion.train(cells(), out, steps=steps, **args)


class Interrupt(Exception):
    """Stands for a killed run."""


def test_precision_and_accelerator_settings(monkeypatch):
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    assert _accel._precision("cpu", None) == "no" and _accel._precision("cuda", None) == "bf16"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch --mixed_precision fp16
    assert _accel._precision("cuda", None) == "fp16" and _accel._precision("cpu", None) == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # launch's default keeps bf16 on a GPU
    assert _accel._precision("cuda", None) == "bf16"
    with pytest.raises(GeneratorError, match="mixed_precision='fp64'"):
        _accel._precision("cpu", "fp64")
    acc, dev = _accel.make_accelerator("cpu")
    assert dev == "cpu" and acc.mixed_precision == "no" and acc.num_processes == 1 and acc.is_main_process
    # accelerate's process-wide state: a second run in this process at other settings gets them
    acc, _ = _accel.make_accelerator("cpu", "bf16")
    assert acc.mixed_precision == "bf16"
    acc, _ = _accel.make_accelerator("cpu")
    assert acc.mixed_precision == "no"


def test_rank_streams_losses_and_rng_resume():
    g0, g1 = _accel.rank_generator(7, "cpu", 0), _accel.rank_generator(7, "cpu", 1)
    ref = torch.Generator().manual_seed(7)
    a = torch.rand(4, generator=g0)
    assert torch.equal(a, torch.rand(4, generator=ref)) and not torch.equal(a, torch.rand(4, generator=g1))
    acc, _ = _accel.make_accelerator("cpu")
    texts = _accel.rng_states(acc, g0)
    assert len(texts) == 1
    nxt = torch.rand(3, generator=g0)
    g = torch.Generator()
    _accel.resume_rng(g, texts, "cpu", seed=7, step=4, rank=0, world=1)
    assert torch.equal(torch.rand(3, generator=g), nxt)  # the saved stream continues
    with pytest.warns(UserWarning, match=r"saved by 2 process\(es\), this run has 1"):
        _accel.resume_rng(g, texts * 2, "cpu", seed=7, step=4, rank=0, world=1)
    fresh = torch.rand(3, generator=g)
    with pytest.warns(UserWarning, match="saved on cuda"):
        _accel.resume_rng(g, texts, "cuda", seed=7, step=4, rank=0, world=1)
    assert torch.equal(torch.rand(3, generator=g), fresh)  # the fresh stream depends on (seed, step) only
    pending = [torch.tensor(0.5), torch.tensor(0.25)]
    assert _accel.read_losses(acc, pending) == [0.5, 0.25] and pending == []


def test_interrupted_run_resumes_to_the_uninterrupted_weights(tmp_path):
    """Killed after step 5 (state saved at 4), resumed to 6: the same raw and EMA weights and
    losses as one uninterrupted run; re-running the finished run changes nothing."""
    from torch.optim.optimizer import register_optimizer_step_post_hook

    straight = train(tmp_path / "a", 6)
    calls = [0]

    def kill(*_):
        calls[0] += 1
        if calls[0] == 5:
            raise Interrupt

    handle = register_optimizer_step_post_hook(kill)
    try:
        with pytest.raises(Interrupt):
            train(tmp_path / "b", 6)
    finally:
        handle.remove()
    state = tmp_path / "b" / "train_state" / "state.json"
    meta = json.loads(state.read_text())
    assert meta["step"] == 4 and meta["num_processes"] == 1 and len(meta["rng_ranks"]) == 1
    resumed = train(tmp_path / "b", 6)
    meta = json.loads(state.read_text())
    ref = json.loads((tmp_path / "a" / "train_state" / "state.json").read_text())
    assert meta["runs"] == [[0, 6], [4, 6]] and meta["losses"] == ref["losses"] and len(ref["losses"]) == 6
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from safetensors.torch import load_file

    ra, rb = (load_file(str(tmp_path / d / "train_state" / "model.safetensors")) for d in "ab")
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    before = {p: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    again = train(tmp_path / "b", 6)  # finished: a no-op
    assert {p: p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()} == before
    assert all(torch.equal(v, b[k]) for k, v in again.state_dict().items())


DDP_SCRIPT = """
import json, sys
import numpy as np, torch
from accelerate import PartialState
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion
torch.set_num_threads(1)
out, steps = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
cells = CellSet(rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8), {"cell_type": ["a", "b"] * 4},
                np.full(8, np.nan), np.full(8, np.nan))
gen = Diffusion.train(cells, out, steps=steps, batch_size=4, sample_every=0, save_every=2, progress=False,
                      block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)
st = PartialState()
w = gen.state_dict()["unet.conv_in.weight"]
with open(f"{out}.rank{st.process_index}.json", "w") as f:  # one file per rank: their stdout interleaves
    json.dump({"rank": st.process_index, "world": st.num_processes, "ema": float(w.double().sum())}, f)
"""


@pytest.mark.slow
def test_two_cpu_processes_train_with_ddp_and_resume(tmp_path):
    """torchrun, 2 CPU processes: one run, DDP over gloo; every rank returns the main
    process's EMA; a run stopped at step 2 and resumed to 4 ends with the same weights."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def launch(out: Path, steps: int) -> list[dict]:
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                            str(out), str(steps)], check=False, capture_output=True, text=True, env=env,
                           timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        return [json.loads(Path(f"{out}.rank{i}.json").read_text()) for i in range(2)]

    ranks = launch(tmp_path / "a", 4)
    assert [d["world"] for d in ranks] == [2, 2] and ranks[0]["ema"] == ranks[1]["ema"]
    meta = json.loads((tmp_path / "a" / "train_state" / "state.json").read_text())
    assert meta["num_processes"] == 2 and len(meta["rng_ranks"]) == 2 and len(meta["losses"]) == 4
    assert meta["rng_ranks"][0] != meta["rng_ranks"][1]  # each process draws its own batches
    launch(tmp_path / "b", 2)
    resumed = launch(tmp_path / "b", 4)
    assert resumed[0]["ema"] == ranks[0]["ema"]
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / d / "model.safetensors")) for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)


GEN_SCRIPT = """
import sys
import numpy as np, torch
from accelerate import PartialState
from alldata.generate import sample_batches
torch.set_num_threads(1)
ckpt, out = sys.argv[1], sys.argv[2]
batches = [(k, 5 + k, 2) for k in range(5)]
got = list(sample_batches(ckpt, {"cell_type": "a"}, batches, sampler="ddim", num_inference_steps=2))
if PartialState().is_main_process:
    np.savez(out, k=np.array([k for k, _, _ in got]), images=np.concatenate([x for _, _, x in got]))
else:
    assert got == [], "only the main process yields"
"""


@pytest.mark.slow
def test_launched_processes_share_generation_batches(tmp_path):
    """Under torchrun (2 CPU processes) the batches are split between the processes and the
    main process yields every batch, in order, with the images one process makes."""
    from alldata.generate import sample_batches

    ckpt = tmp_path / "ckpt"
    train(ckpt, 2)
    script = tmp_path / "gen.py"
    script.write_text(textwrap.dedent(GEN_SCRIPT))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script), str(ckpt),
                        str(tmp_path / "got.npz")], check=False, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "got.npz")
    ref = list(sample_batches(ckpt, {"cell_type": "a"}, [(k, 5 + k, 2) for k in range(5)], device="cpu",
                              sampler="ddim", num_inference_steps=2))
    assert got["k"].tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(got["images"], np.concatenate([x for _, _, x in ref]))
