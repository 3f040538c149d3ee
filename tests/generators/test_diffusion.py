"""The conditional diffusion generator, on a tiny UNet and 8 random 16 px cells (CPU, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from alldata.generators.base import Generator, GeneratorError
from alldata.generators.data import CellSet
from alldata.generators.diffusion import Diffusion, make_scheduler, sample_loop

TINY = {"block_out_channels": (8, 16), "layers_per_block": 1, "norm_num_groups": 4}
FAST = {"num_inference_steps": 3}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_cells(n: int = 8, labels: dict | None = None, seed: int = 0) -> CellSet:
    rng = np.random.default_rng(seed)
    area = rng.uniform(0.2, 0.6, n).astype(np.float32)
    ncr = rng.uniform(0.5, 0.9, n).astype(np.float32)
    area[::3], ncr[1::3] = np.nan, np.nan
    if labels is None:
        labels = {"cell_type": ["lymphoblast", "normal"] * (n // 2 - 1) + [None, "normal"]}
    return CellSet(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), labels, area, ncr)


def train(out: Path, **kw) -> Diffusion:
    args = {"steps": 3, "batch_size": 4, "sample_every": 0, "save_every": 0, "progress": False, **TINY, **kw}
    return Diffusion.train(make_cells(), out, **args)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Diffusion, Path]:
    out = tmp_path_factory.mktemp("ddpm") / "run"
    return train(out, sample_every=3, grid_cols=3), out


def test_config_and_grid(run):
    gen, out = run
    assert gen.config["conditions"] == {"cell_type": ["lymphoblast", "normal"]}
    assert gen.config["continuous"] == ["area", "nc_ratio"]
    assert gen.config["image_size"] == 16
    grid = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / "samples" / "step_000003.png"))
    assert grid.shape == (2 * 16, 3 * 16, 3)  # one row per cell_type value, grid_cols columns


def test_shapes_and_determinism(run):
    gen, _ = run
    a = gen.sample(3, {"cell_type": "normal", "nc_ratio": 0.8}, seed=1, **FAST)
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, gen.sample(3, {"cell_type": "normal", "nc_ratio": 0.8}, seed=1, **FAST))
    assert not np.array_equal(a, gen.sample(3, {"cell_type": "normal", "nc_ratio": 0.8}, seed=2, **FAST))
    assert not np.array_equal(a[0], a[1])  # each image gets its own noise
    # per-image noise: the batch size changes at most float rounding
    b = gen.sample(3, {"cell_type": "normal", "nc_ratio": 0.8}, seed=1, batch_size=2, **FAST)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert gen.sample(0, {}, seed=0).shape == (0, 16, 16, 3)


def test_condition_changes_output(run):
    gen, _ = run
    a = gen.sample(2, {"cell_type": "normal"}, seed=0, **FAST)
    b = gen.sample(2, {"cell_type": "lymphoblast"}, seed=0, **FAST)
    c = gen.sample(2, {}, seed=0, **FAST)
    assert not np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("sampler", ["dpm++", "ddim", "ddpm"])
def test_samplers(run, sampler):
    gen, _ = run
    a = gen.sample(2, {"cell_type": "lymphoblast"}, seed=3, sampler=sampler, **FAST)
    assert a.shape == (2, 16, 16, 3) and a.dtype == np.uint8 and a.std() > 0
    assert np.array_equal(a, gen.sample(2, {"cell_type": "lymphoblast"}, seed=3, sampler=sampler, **FAST))


def test_bad_conditions(run):
    gen, _ = run
    with pytest.raises(GeneratorError, match=r"known values: \['lymphoblast', 'normal'\]"):
        gen.sample(1, {"cell_type": "L3"}, seed=0)
    with pytest.raises(GeneratorError, match="unknown condition field 'subtype'"):
        gen.sample(1, {"subtype": "L1"}, seed=0)
    with pytest.raises(GeneratorError, match=r"\[0, 1\]"):
        gen.sample(1, {"area": 1.5}, seed=0)
    with pytest.raises(GeneratorError, match="unknown sampler"):
        gen.sample(1, {}, seed=0, sampler="euler")


def test_round_trip(run, tmp_path):
    gen, out = run
    d = gen.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((d / "config.json").read_text())["family"] == "diffusion"
    assert not [p for p in out.rglob("*") if p.suffix in {".pt", ".pth", ".pkl", ".bin", ".ckpt"}]
    ref = gen.sample(2, {"cell_type": "normal", "area": 0.4}, seed=5, **FAST)
    for loaded in (Diffusion.from_pretrained(d, device="cpu"), Generator.from_pretrained(out, device="cpu")):
        assert isinstance(loaded, Diffusion)
        assert np.array_equal(ref, loaded.sample(2, {"cell_type": "normal", "area": 0.4}, seed=5, **FAST))


def test_sample_loop_is_bare(run):
    gen, _ = run
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    x = sample_loop(gen.unet, make_scheduler("ddim", gen.config), noise, gen.embed({"cell_type": "normal"}, 2),
                    gen.embed({}, 2), num_inference_steps=2)
    assert x.shape == (2, 3, 16, 16) and float(x.abs().max()) <= 1.0


def test_resume(tmp_path):
    straight = train(tmp_path / "a", steps=6)
    train(tmp_path / "b", steps=4, save_every=2)
    state = json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())
    assert state["step"] == 4 and len(state["losses"]) == 4
    resumed = train(tmp_path / "b", steps=6, save_every=2)
    state = json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())
    assert state["step"] == 6 and state["runs"] == [[0, 4], [4, 6]]  # the second call ran steps 4..6 only
    ref = json.loads((tmp_path / "a" / "train_state" / "state.json").read_text())
    assert state["losses"] == ref["losses"]
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh = train(tmp_path / "b", steps=2, resume=False)  # resume=False starts over
    assert not torch.equal(fresh.state_dict()["unet.conv_in.weight"], b["unet.conv_in.weight"])


def test_few_shot_l3(run, tmp_path):
    _, out = run
    gen = Diffusion.from_pretrained(out, device="cpu")
    unet_before = {k: v.clone() for k, v in gen.unet.state_dict().items()}
    l3 = make_cells(4, {"subtype": ["L3"] * 4, "cell_type": ["lymphoblast"] * 4}, seed=1)
    with pytest.raises(GeneratorError, match="add_condition_value"):
        gen.finetune(l3, tmp_path / "ft", steps=1, progress=False)
    assert gen.add_condition_value("subtype", "L3") == 1
    assert gen.add_condition_value("subtype", "L3") == 1  # idempotent
    gen.check_condition({"subtype": "L3", "cell_type": "lymphoblast"})
    # a new row in a known field starts at the mean of its value rows
    w = gen.conditioner.embeds["cell_type"].weight.detach().clone()
    assert gen.add_condition_value("cell_type", "blast-like") == 3
    assert torch.allclose(gen.conditioner.embeds["cell_type"].weight[3], w[1:].mean(0))
    emb_before = gen.conditioner.embeds["subtype"].weight.detach().clone()
    gen.finetune(l3, tmp_path / "ft", steps=2, batch_size=2, progress=False)
    assert not torch.equal(gen.conditioner.embeds["subtype"].weight, emb_before)
    assert all(torch.equal(v, unet_before[k]) for k, v in gen.unet.state_dict().items())  # UNet frozen
    a = gen.sample(2, {"subtype": "L3"}, seed=0, **FAST)
    assert a.shape == (2, 16, 16, 3)
    back = Generator.from_pretrained(tmp_path / "ft", device="cpu")
    assert back.config["conditions"]["subtype"] == ["L3"]
    assert back.config["conditions"]["cell_type"] == ["lymphoblast", "normal", "blast-like"]
    assert np.array_equal(a, back.sample(2, {"subtype": "L3"}, seed=0, **FAST))
    back.finetune(l3, tmp_path / "ft-all", steps=1, batch_size=2, train="all", progress=False)
    assert not torch.equal(back.unet.state_dict()["conv_in.weight"], unet_before["conv_in.weight"])


def test_bad_config(tmp_path):
    with pytest.raises(GeneratorError, match="norm_num_groups"):
        train(tmp_path / "x", norm_num_groups=5)
    with pytest.raises(GeneratorError, match="unknown diffusion config"):
        train(tmp_path / "x", channels=3)


def test_fit_reads_losses_back_in_chunks_and_resumes_across_optimizer_kinds(tmp_path):
    """One loss per step whatever the read-back interval; a fused AdamW's state resumes in a
    plain one (implementation flags are not restored); a state whose random stream was saved
    on another device type resumes with a warning and a fresh stream."""
    from alldata.generators.diffusion import _fit

    cells, out = make_cells(), tmp_path / "run"
    gen = Diffusion.build({"image_size": 16, "conditions": cells.vocabulary(), "continuous": ["area"], **TINY}, device="cpu")
    kw = {"batch_size": 4, "lr": 1e-3, "seed": 0, "resume": True, "sample_every": 0, "save_every": 0, "progress": False,
          "train": "all", "mode": "train"}
    _fit(gen, cells, out, steps=5, log_every=2, fused=True, **kw)
    state = out / "train_state" / "state.json"
    meta = json.loads(state.read_text())
    assert meta["step"] == 5 and len(meta["losses"]) == 5 and meta["rng_device"] == "cpu"
    assert all(np.isfinite(meta["losses"])) and meta["optimizers"]["optimizer"]["param_groups"][0]["fused"] is True
    _fit(gen, cells, out, steps=7, log_every=50, fused=False, **kw)
    meta = json.loads(state.read_text())
    assert len(meta["losses"]) == 7 and not meta["optimizers"]["optimizer"]["param_groups"][0]["fused"]
    meta["rng_device"] = "cuda"
    state.write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="random stream was saved on cuda"):
        _fit(gen, cells, out, steps=8, **kw)
    assert len(json.loads(state.read_text())["losses"]) == 8
