"""Scoring synthetic cells: the metrics on known distributions, the encoder, score_dataset and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.cli.score import app
from alldata.encoder import Encoder, EncoderError, train_encoder
from alldata.ingest import ingest
from alldata.schema import F, Provenance
from alldata.score import (
    COPY_FLAG,
    NN_DISTANCE,
    NN_RATIO,
    NN_REAL_KEY,
    TAG_MEMORISED,
    ScoreError,
    density_coverage,
    frechet_distance,
    kid,
    memorisation,
    parse_view,
    precision_recall,
    score_dataset,
)
from alldata.synthetic import add_synthetic, make_synthetic_sample

runner = CliRunner()
rng = np.random.default_rng


# --- metrics -------------------------------------------------------------------------------


def test_fd_is_zero_on_itself_and_matches_the_closed_form():
    x = rng(0).normal(size=(300, 4))
    assert abs(frechet_distance(x, x)) < 1e-8
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2 with the sample statistics
    a, b = rng(1).normal(0, 1, 500), rng(2).normal(2, 2, 700)
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(a, b) == pytest.approx(4 + 1, abs=0.5)  # the population value
    # 3-D, correlated: tr((S1 S2)^1/2) = sum of sqrt of the eigenvalues of S1 S2
    c = rng(3).normal(size=(400, 3)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]])
    d = rng(4).normal(size=(300, 3)) * [0.5, 1.5, 1] + [1, -1, 0]
    s1, s2 = np.cov(c, rowvar=False), np.cov(d, rowvar=False)
    tr_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    expected = ((c.mean(0) - d.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
    assert frechet_distance(c, d) == pytest.approx(expected, rel=1e-8)


def test_fd_survives_singular_covariances_and_rejects_bad_input():
    a, b = rng(0).normal(size=(5, 64)), rng(1).normal(size=(6, 64))  # fewer samples than dimensions
    assert np.isfinite(frechet_distance(a, b)) and frechet_distance(a, b) > 0
    with pytest.raises(ScoreError, match="dimensions differ"):
        frechet_distance(a, b[:, :10])
    with pytest.raises(ScoreError, match="at least 2"):
        frechet_distance(a[:1], b)


def test_kid_near_zero_for_one_distribution_and_positive_when_shifted():
    x, y = rng(0).normal(size=(400, 8)), rng(1).normal(size=(400, 8))
    mean, std = kid(x, y, subsets=20, subset_size=100, seed=0)
    assert abs(mean) < 0.1 and std > 0
    shifted, _ = kid(x, y + 1.0, subsets=20, subset_size=100, seed=0)
    assert shifted > 2.0 and shifted > 20 * abs(mean)
    assert kid(x, y, 20, 100, seed=0) == (mean, std)  # seeded


def test_precision_recall_density_coverage():
    x = rng(0).normal(size=(200, 6))
    assert precision_recall(x, x, k=3) == (1.0, 1.0)
    assert density_coverage(x, x, k=5)[1] == 1.0
    far = rng(1).normal(size=(150, 6)) + 50
    assert precision_recall(x, far, k=3) == (0.0, 0.0)
    assert density_coverage(x, far, k=5) == (0.0, 0.0)
    # half the fakes far away: precision halves, recall stays high
    half = np.vstack([rng(2).normal(size=(100, 6)), far[:100]])
    p, r = precision_recall(x, half, k=3)
    assert 0.35 < p < 0.6 and r > 0.8
    with pytest.raises(ScoreError, match="at least 4"):
        precision_recall(x, far[:3], k=3)


def test_memorisation_flags_copies_not_far_samples():
    real = rng(0).normal(size=(100, 8))
    copies = real[[3, 7]] + 1e-6 * rng(1).normal(size=(2, 8))
    far = rng(2).normal(size=(4, 8)) + 10
    m = memorisation(real, np.vstack([copies, far]), percentile=5)
    assert m.nn_index[:2].tolist() == [3, 7]
    assert m.copy_flag.tolist() == [True, True, False, False, False, False]
    assert m.copy_rate == pytest.approx(2 / 6)
    assert (m.nn_distance[:2] < 1e-5).all() and (m.ratio[:2] < 1e-4).all() and (m.ratio[2:] > 1).all()
    assert 0 < m.threshold < np.median(m.nn_distance[2:])


def test_parse_view_names_the_value_the_keys_and_the_fix():
    assert parse_view("generator=diffusion", "synthetic") == {"generator": "diffusion"}
    assert parse_view(" split=train , source=bccd ", "real") == {"split": "train", "source": "bccd"}
    assert parse_view("all", "real") == {}
    with pytest.raises(ScoreError, match=r"--synthetic-view 'gen=x'.*unknown key 'gen'.*generator, tag.*Fix"):
        parse_view("gen=x", "synthetic")
    with pytest.raises(ScoreError, match="'train' is not key=value"):
        parse_view("train", "real")


# --- encoder -------------------------------------------------------------------------------


def _two_class_images(n: int = 16, size: int = 32, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    g = rng(seed)
    imgs = g.integers(0, 120, (n, size, size, 3)).astype(np.uint8)
    imgs[n // 2 :] += 120  # class b is brighter
    return imgs, ["a"] * (n // 2) + ["b"] * (n - n // 2)


def test_encoder_trains_deterministically_and_round_trips(tmp_path):
    imgs, labels = _two_class_images()
    enc = train_encoder(imgs, labels, image_size=32, epochs=2, batch_size=8, seed=1, device="cpu")
    feats = enc.encode(imgs)
    assert feats.shape == (16, 128) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[-1])
    assert len(enc.config["history"]) == 2 and enc.config["classes"] == ["a", "b"]
    again = train_encoder(imgs, labels, image_size=32, epochs=2, batch_size=8, seed=1, device="cpu")
    np.testing.assert_array_equal(again.encode(imgs), feats)
    enc.save_pretrained(tmp_path / "enc")
    assert {p.name for p in (tmp_path / "enc").iterdir()} == {"config.json", "model.safetensors"}
    loaded = Encoder.from_pretrained(tmp_path / "enc", device="cpu")
    np.testing.assert_array_equal(loaded.encode(imgs), feats)
    assert loaded.sha256 == enc.sha256 and loaded.image_size == 32
    with pytest.raises(EncoderError, match="not an encoder"):
        Encoder.from_pretrained(tmp_path / "nothing")
    with pytest.raises(EncoderError, match="at least 2 classes"):
        train_encoder(imgs, ["a"] * 16, epochs=1)


def test_inception_loads_a_torchvision_state_dict(tmp_path):
    import torch
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    ref = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    state = {k: v.contiguous() for k, v in ref.state_dict().items()}
    save_file(state, str(tmp_path / "inception.safetensors"))
    enc = Encoder.from_inception(tmp_path / "inception.safetensors", device="cpu")
    assert (enc.kind, enc.image_size, enc.feature_dim) == ("inception", 299, 2048)
    img = rng(0).integers(0, 255, (1, 40, 40, 3), dtype=np.uint8)
    feats = enc.encode(img)
    ref.fc = torch.nn.Identity()
    x = torch.nn.functional.interpolate(
        torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1, size=(299, 299), mode="bilinear",
        antialias=True, align_corners=False)
    with torch.inference_mode():
        expected = ref(x).numpy()
    assert feats.shape == (1, 2048) and np.abs(feats).max() > 0
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-3 * np.abs(expected).max())
    state.pop("Conv2d_1a_3x3.conv.weight")
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(EncoderError, match="not a torchvision inception_v3 state dict"):
        Encoder.from_inception(tmp_path / "broken.pt")


# --- score_dataset and the CLI -------------------------------------------------------------


def _cell(path: Path, colour: tuple[int, int, int], radius: int, seed: int, bg=(230, 190, 200)) -> Path:
    """A 32 px 'cell': a noisy disc of ``colour`` on a pink background."""
    g = rng(seed)
    yy, xx = np.mgrid[:32, :32]
    cx, cy = 16 + g.integers(-3, 4, 2)
    img = np.empty((32, 32, 3), np.float64)
    img[:] = bg
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = colour
    img += g.normal(0, 8, img.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
    return path


def _synthetic(dataset: str, folder: Path, files: dict[str, Path], generator: str) -> None:
    samples = [
        make_synthetic_sample(p, family=generator, source_id=name,
                              provenance=Provenance(generator=generator, checkpoint_sha256="0" * 64, seed=i))
        for i, (name, p) in enumerate(files.items())
    ]
    assert add_synthetic(dataset, samples) == len(samples)


def test_score_dataset_end_to_end_and_cli(tmp_path, dataset_name):
    real_root = tmp_path / "real"
    for i in range(9):
        _cell(real_root / "lymphoblast" / f"b{i}.png", (90, 60, 160), 11, seed=i)
        _cell(real_root / "lymphocyte" / f"l{i}.png", (60, 30, 90), 6, seed=100 + i)
    ingest("folder", dataset_name, root=real_root, progress=False)
    ds = fo.load_dataset(dataset_name)
    ds.set_values(F.SPLIT, ["val" if k.endswith("b8.png") else "train" for k in ds.values(F.KEY)])

    syn = tmp_path / "syn"
    syn.mkdir()
    (syn / "copy.png").write_bytes((real_root / "lymphoblast" / "b3.png").read_bytes())
    files = {"copy": syn / "copy.png"}
    for i in range(4):  # far from every real cell: green, no pink background
        files[f"odd{i}"] = _cell(syn / f"odd{i}.png", (20, 200, 20), 14, seed=200 + i, bg=(10, 90, 10))
    _synthetic(dataset_name, syn, files, "diffusion")
    _synthetic(dataset_name, syn, {"other": _cell(syn / "other.png", (90, 60, 160), 11, seed=3)}, "gan")
    ds.match({F.KEY: {"$in": ["synthetic/diffusion/odd0", "synthetic/gan/other"]}}).tag_samples(TAG_MEMORISED)

    r = runner.invoke(app, ["train-encoder", "--dataset", dataset_name, "--out", str(tmp_path / "enc"), "--epochs", "2",
                            "--image-size", "32", "--real-view", "all", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "trained on 18 cells, cell_type: lymphoblast 9, lymphocyte 9" in r.output
    enc = Encoder.from_pretrained(tmp_path / "enc", device="cpu")
    report = score_dataset(dataset_name, "generator=diffusion", "split=train", enc, report_path=tmp_path / "r.json",
                           kid_subsets=5)
    assert (report["n_real"], report["n_fake"]) == (17, 5)
    assert [m["key"] for m in report["memorised"]] == ["synthetic/diffusion/copy"]
    assert report["memorised"][0]["nn_real_key"] == "folder/lymphoblast/b3.png"
    m = report["metrics"]
    assert m["copy_rate"] == pytest.approx(0.2) and m["fd"] > 0 and m["precision"] < 1 and not report["skipped"]
    assert json.loads((tmp_path / "r.json").read_text())["metrics"] == pytest.approx(m)

    ds.reload()
    copy = ds.match({F.KEY: "synthetic/diffusion/copy"}).first()
    assert copy[COPY_FLAG] is True and copy[NN_DISTANCE] == pytest.approx(0, abs=1e-4) and copy[NN_RATIO] < 1e-3
    assert copy[NN_REAL_KEY] == "folder/lymphoblast/b3.png" and TAG_MEMORISED in copy.tags
    odd = ds.match({F.KEY: "synthetic/diffusion/odd0"}).first()
    assert odd[COPY_FLAG] is False and odd[NN_RATIO] > 1 and TAG_MEMORISED not in odd.tags  # stale tag removed
    other = ds.match({F.KEY: "synthetic/gan/other"}).first()  # not in the scored view: untouched
    assert TAG_MEMORISED in other.tags and other[COPY_FLAG] is None
    assert ds.match_tags(TAG_MEMORISED).count() == 2

    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--synthetic-view", "generator=diffusion",
                            "--encoder", str(tmp_path / "enc"), "--report", str(tmp_path / "cli.json")])
    assert r.exit_code == 0, r.output
    for text in ("FD", "KID", "±", "precision", "recall", "density", "coverage", "copy rate", "20.0%",
                 "n_real", "17", "n_fake"):
        assert text in r.output, text
    assert (tmp_path / "cli.json").is_file()

    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--synthetic-view", "gen=diffusion",
                            "--encoder", str(tmp_path / "enc")])
    assert r.exit_code == 1 and "unknown key 'gen'" in r.output and "generator, tag" in r.output
    r = runner.invoke(app, ["score", "--dataset", dataset_name])
    assert r.exit_code == 1 and "choose exactly one encoder" in r.output
    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--real-view", "split=test", "--encoder",
                            str(tmp_path / "enc")])
    assert r.exit_code == 1 and "holds no cell images" in r.output
