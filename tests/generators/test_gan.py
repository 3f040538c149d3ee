"""The conditional GAN on a tiny CPU config (16 px, ngf=ndf=8, a few steps on 8 random images)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from alldata.generators.base import CONFIG_NAME, WEIGHTS_NAME, Generator, GeneratorError
from alldata.generators.data import CellSet
from alldata.generators.gan import GAN, _minibatch_std, diff_augment
from PIL import Image

TINY = {"z_dim": 8, "ngf": 8, "ndf": 8, "cond_dim": 8}
FAST = {"batch_size": 4, "progress": False, "device": "cpu", **TINY}
FAST_FT = {"batch_size": 4, "progress": False, "device": "cpu", "sample_every": 0, "save_every": 0}


def _cells(n: int = 8, seed: int = 0, subtype: str | None = None) -> CellSet:
    rng = np.random.default_rng(seed)
    area = rng.random(n).astype(np.float32)
    area[::3] = np.nan
    ncr = np.where(np.arange(n) % 2 == 0, np.nan, 0.6).astype(np.float32)
    sub = [subtype] * n if subtype else (["L1", "L2", None, None] * n)[:n]
    labels = {"cell_type": (["blast", "normal"] * n)[:n], "subtype": sub}
    return CellSet(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), labels, area, ncr)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors run faster on one thread, the more so on a busy shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def run(_one_thread, tmp_path_factory) -> tuple[GAN, Path]:
    out = tmp_path_factory.mktemp("gan")
    return GAN.train(_cells(), out, steps=3, sample_every=2, save_every=2, **FAST), out


def test_sample_shape_dtype_range(run):
    gan, _ = run
    assert gan.config["conditions"] == {"cell_type": ["blast", "normal"], "subtype": ["L1", "L2"]}
    assert gan.config["continuous"] == ["area", "nc_ratio"]
    x = gan.sample(5, {"cell_type": "blast", "area": 0.3}, seed=0)
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.uint8
    assert x.std() > 0 and x.min() >= 0 and x.max() <= 255
    assert gan.sample(0, {}, seed=0).shape == (0, 16, 16, 3)
    assert gan.sample(3, {}, seed=0, truncation=0.5).shape == (3, 16, 16, 3)


def test_sampling_is_deterministic(run):
    gan, _ = run
    cond = {"cell_type": "normal", "nc_ratio": 0.7}
    a = gan.sample(6, cond, seed=1)
    np.testing.assert_array_equal(a, gan.sample(6, cond, seed=1))
    np.testing.assert_array_equal(a, gan.sample(6, cond, seed=1, batch_size=4))  # batch size does not matter
    assert not np.array_equal(a, gan.sample(6, cond, seed=2))
    assert not np.array_equal(a, gan.sample(6, {"cell_type": "blast", "nc_ratio": 0.7}, seed=1))


def test_save_load_round_trip(run, tmp_path):
    gan, out = run
    assert {p.name for p in out.iterdir() if p.is_file()} == {CONFIG_NAME, WEIGHTS_NAME}
    gan.save_pretrained(tmp_path / "ck")
    assert {p.name for p in (tmp_path / "ck").iterdir()} == {CONFIG_NAME, WEIGHTS_NAME}
    assert json.loads((tmp_path / "ck" / CONFIG_NAME).read_text())["family"] == "gan"
    cond = {"subtype": "L2", "area": 0.5}
    ref = gan.sample(4, cond, seed=3)
    for loaded in (GAN.from_pretrained(tmp_path / "ck"), Generator.from_pretrained(out, device="cpu")):
        assert isinstance(loaded, GAN)
        np.testing.assert_array_equal(loaded.sample(4, cond, seed=3), ref)


def test_unknown_condition_names_known_values(run):
    gan, _ = run
    with pytest.raises(GeneratorError, match=r"blast.*normal"):
        gan.sample(1, {"cell_type": "myeloblast"}, seed=0)
    with pytest.raises(GeneratorError, match="unknown condition field 'stain'"):
        gan.sample(1, {"stain": "wright"}, seed=0)
    with pytest.raises(GeneratorError, match=r"\[0, 1\]"):
        gan.sample(1, {"area": 1.5}, seed=0)


def test_bad_config_is_an_error(tmp_path):
    with pytest.raises(GeneratorError, match="image_size"):
        GAN.build({"image_size": 24})
    with pytest.raises(GeneratorError, match="policy"):
        GAN.build({"diffaug": "color,rotate"})
    with pytest.raises(GeneratorError, match="unknown gan config keys"):
        GAN.build({"ngf_": 8})
    with pytest.raises(GeneratorError, match="r1_gamma"):
        GAN.build({"r1_gamma": -1})
    with pytest.raises(GeneratorError, match="image_size=32"):
        GAN.train(_cells(), tmp_path, steps=1, image_size=32, **FAST)


def test_diff_augment_is_differentiable_and_empty_is_identity():
    x = torch.rand(4, 3, 16, 16, requires_grad=True) * 2 - 1
    x.retain_grad()
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(diff_augment(x, "", gen), x)
    y = diff_augment(x, "color,translation,cutout", gen)
    assert y.shape == x.shape and not torch.allclose(y, x)
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for policy in ("translation", "cutout"):  # each moves or hides pixels
        assert not torch.equal(diff_augment(x.detach(), policy, torch.Generator().manual_seed(1)), x.detach())


def test_minibatch_std_sees_a_batch_of_identical_images():
    """The discriminator's extra channel is ~0 for a collapsed batch, > 0 for a varied one, for any batch size."""
    gen = torch.Generator().manual_seed(0)
    for b in (1, 3, 4, 5, 8):
        varied = torch.randn(b, 6, 4, 4, generator=gen)
        out = _minibatch_std(varied)
        assert out.shape == (b, 7, 4, 4) and torch.equal(out[:, :6], varied)
        assert (out[:, 6] > 0.5).all() == (b > 1 and b != 5)  # 5 images: groups of 1, no spread to see
        assert _minibatch_std(varied[:1].expand(b, -1, -1, -1))[:, 6].abs().max() < 1e-3


def test_generator_has_no_batch_dependence_and_old_checkpoints_are_named(run):
    """No batch norm: a sample is the same alone or in a batch; a pre-fix (batch-norm) state dict is refused clearly."""
    gan, _ = run
    z, lab, cont = torch.randn(4, 8), torch.ones(4, 2, dtype=torch.long), torch.full((4, 2), float("nan"))
    with torch.no_grad():
        torch.testing.assert_close(gan.model(z, lab, cont)[:1], gan.model(z[:1], lab[:1], cont[:1]))
    old = {("bns" + k[5:] if k.startswith("norms") else k): v for k, v in gan.state_dict().items()}
    with pytest.raises(GeneratorError, match="issue #9"):
        gan.load_state_dict(old)


def test_resume_continues_at_saved_step_and_matches_a_straight_run(tmp_path):
    cells = _cells(seed=1)
    straight = GAN.train(cells, tmp_path / "a", steps=4, sample_every=0, save_every=0, **FAST)
    GAN.train(cells, tmp_path / "b", steps=2, sample_every=0, save_every=0, **FAST)
    assert json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())["step"] == 2
    resumed = GAN.train(cells, tmp_path / "b", steps=4, sample_every=0, save_every=0, **FAST)
    assert json.loads((tmp_path / "b" / "train_state" / "state.json").read_text())["step"] == 4
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    restart = GAN.train(cells, tmp_path / "b", steps=4, resume=False, sample_every=0, save_every=0,
                        **{**FAST, "batch_size": 2})
    assert not torch.equal(restart.state_dict()["fc.weight"], resumed.state_dict()["fc.weight"])
    with pytest.raises(GeneratorError, match="another config"):
        GAN.train(cells, tmp_path / "b", steps=5, sample_every=0, **{**FAST, "ngf": 4})


def test_sample_grid_written(run):
    _, out = run
    paths = sorted(p.name for p in (out / "samples").iterdir())
    assert paths == ["step_000002.png", "step_000003.png"]
    with Image.open(out / "samples" / "step_000002.png") as im:
        assert im.size == (8 * 18 + 2, 2 * 18 + 2)  # 8 columns, a row per cell_type value


def test_few_shot_add_value_and_finetune(run, tmp_path):
    gan0, out = run
    gan = GAN.from_pretrained(out, device="cpu")
    old = gan.model.cond.embeds["subtype"].weight.detach().clone()
    assert gan.add_condition_value("subtype", "L3") == 3
    new = gan.model.cond.embeds["subtype"].weight.detach()
    assert new.shape[0] == old.shape[0] + 1 and torch.equal(new[:-1], old)
    assert torch.allclose(new[-1], old[1:].mean(0))
    np.testing.assert_array_equal(gan.sample(2, {"subtype": "L1"}, seed=0), gan0.sample(2, {"subtype": "L1"}, seed=0))
    assert gan.add_condition_value("subtype", "L3") == 3  # idempotent

    few = _cells(n=3, seed=2, subtype="L3")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuned = gan.finetune(few, tmp_path / "ft", steps=2, base_dir=out, **FAST_FT)
    assert not [w for w in caught if "discriminator" in str(w.message)]
    assert tuned.config["conditions"]["subtype"] == ["L1", "L2", "L3"]
    reloaded = Generator.from_pretrained(tmp_path / "ft", device="cpu")
    assert reloaded.config["conditions"]["subtype"] == ["L1", "L2", "L3"]
    x = reloaded.sample(3, {"subtype": "L3", "cell_type": "blast"}, seed=0)
    np.testing.assert_array_equal(x, tuned.sample(3, {"subtype": "L3", "cell_type": "blast"}, seed=0))
    assert not np.array_equal(x, gan.sample(3, {"subtype": "L3", "cell_type": "blast"}, seed=0))  # it trained

    with pytest.warns(UserWarning, match="fresh discriminator"):
        gan.finetune(few, tmp_path / "ft2", steps=1, **FAST_FT)
    with pytest.raises(GeneratorError, match="add_condition_value"):
        GAN.from_pretrained(out).finetune(few, tmp_path / "ft3", steps=1, base_dir=out, **FAST_FT)

