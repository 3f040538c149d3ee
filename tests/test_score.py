"""Scoring synthetic cells: the quality gates, the feature extractors, score_dataset and the CLI.

The metrics themselves are tested in tests/metrics/test_generative.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from alldata.cli import app
from alldata.encoder import Encoder, EncoderError, train_encoder
from alldata.features import Embedding, FeatureExtractor, extract
from alldata.ingest import ingest
from alldata.models.features import HandcraftedFeatures
from alldata.schema import F, Provenance
from alldata.score import (
    COPY_FLAG,
    NN_DISTANCE,
    NN_RATIO,
    NN_REAL_KEY,
    SCORE_NAME,
    TAG_MEMORISED,
    Gates,
    ScoreError,
    ScoreParams,
    ScoreReport,
    last_score,
    parse_view,
    score_dataset,
    score_images,
)
from alldata.synthetic import add_synthetic, make_synthetic_sample

runner = CliRunner()
rng = np.random.default_rng


# --- views ---------------------------------------------------------------------------------


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
    assert isinstance(enc, FeatureExtractor) and enc.name == "encoder-cnn"  # the feature-extractor protocol
    np.testing.assert_array_equal(enc(imgs), feats)
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


# --- the feature-extractor protocol and the gates -------------------------------------------


class Thumbnails:
    """A feature extractor for tests: each image mean-pooled to 4 x 4 x 3 = 48 values."""

    name = "thumbnails"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        n, h, w, c = images.shape
        return images.astype(float).reshape(n, 4, h // 4, 4, w // 4, c).mean((2, 4)).reshape(n, -1)


def _labelled_cells(n: int, seed: int) -> tuple[np.ndarray, dict[str, list[str]]]:
    """``n`` cells, alternately lymphocytes (small, dark) and lymphoblasts (large, violet)."""
    big = [i % 2 == 1 for i in range(n)]
    imgs = [_cell_array((90, 60, 160), 11, seed + i) if b else _cell_array((60, 30, 90), 6, seed + i)
            for i, b in enumerate(big)]
    return np.stack(imgs), {"cell_type": ["lymphoblast" if b else "lymphocyte" for b in big]}


def test_extractors_follow_the_protocol():
    imgs = np.stack([_cell_array((90, 60, 160), 11, i) for i in range(3)])
    for extractor in (Thumbnails(), HandcraftedFeatures()):
        assert isinstance(extractor, FeatureExtractor)
        x = extract(extractor, imgs)
        assert x.shape[0] == 3 and x.dtype == np.float64
    assert HandcraftedFeatures().name == "handcrafted" and extract(HandcraftedFeatures(), imgs).shape == (3, 37)

    class FakeCNN:
        name = "resnet18"

        def fit(self, images, labels):
            self.fitted = len(images)
            return self

        def embed(self, images):
            return np.ones((len(images), 5), np.float32)

    emb = Embedding(FakeCNN()).fit(imgs, ["a", "b", "a"])
    assert isinstance(emb, FeatureExtractor) and emb.name == "resnet18-embedding" and emb.classifier.fitted == 3
    assert extract(emb, imgs).shape == (3, 5)
    with pytest.raises(ValueError, match="uint8"):
        extract(emb, imgs.astype(float))


def test_gates_pass_on_held_out_real_cells_and_fail_on_noise():
    real, real_labels = _labelled_cells(60, 0)
    held_as_synthetic, syn_labels = _labelled_cells(30, 50_000)
    held, held_labels = _labelled_cells(30, 90_000)
    kw = {"heldout": held, "real_labels": real_labels, "heldout_labels": held_labels,
          "params": ScoreParams(kid_subsets=10)}
    ok = score_images(real, held_as_synthetic, Thumbnails(), synthetic_labels=syn_labels, **kw)
    assert ok.passed and not ok.failed() and not ok.skipped, ok.gates
    assert [g.name for g in ok.gates] == ["mean_colour", "std", "hf_energy", "fd", "kid", "precision", "recall",
                                          "copy_rate", "cas"]
    assert all(g.passed for g in ok.gates)
    m = ok.metrics
    assert m.cas_label_field == "cell_type" and m.cas >= 0.8 * m.trs and m.fd_half <= 3 * m.fd_floor
    assert ok.pixels_real.hf_energy == pytest.approx(ok.pixels_synthetic.hf_energy, rel=0.05)

    noise = rng(1).integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    bad = score_images(real, noise, Thumbnails(), synthetic_labels=syn_labels, **kw)
    assert not bad.passed
    # (CAS is not asserted: a classifier fitted on noise may still split the real classes by chance)
    assert {g.name for g in bad.failed()} >= {"mean_colour", "std", "hf_energy", "fd", "kid", "precision", "recall"}
    assert ScoreReport.model_validate_json(bad.model_dump_json()) == bad  # the JSON round trip

    pixels_only = score_images(real, noise)  # no encoder: the pixel gates still judge
    assert not pixels_only.passed and "encoder" in pixels_only.skipped
    assert [g.passed for g in pixels_only.gates[:3]] == [False, False, False]
    assert all(g.passed is None for g in pixels_only.gates[3:])
    lenient = Gates(mean_levels=255, std_rel=10, hf_rel=10)
    assert score_images(real, noise, gates=lenient).passed
    with pytest.raises(ValueError, match="extra"):
        Gates(mean_level=5)
    assert "mean_levels = 10.0" in Gates().describe()


# --- score_dataset and the CLI -------------------------------------------------------------


def _cell_array(colour: tuple[int, int, int], radius: int, seed: int, bg=(230, 190, 200)) -> np.ndarray:
    """A 32 px 'cell': a noisy disc of ``colour`` on a pink background."""
    g = rng(seed)
    yy, xx = np.mgrid[:32, :32]
    cx, cy = 16 + g.integers(-3, 4, 2)
    img = np.empty((32, 32, 3), np.float64)
    img[:] = bg
    img[(xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2] = colour
    img += g.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cell(path: Path, colour: tuple[int, int, int], radius: int, seed: int, bg=(230, 190, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_cell_array(colour, radius, seed, bg)).save(path)
    return path


def _synthetic(dataset: str, folder: Path, files: dict[str, Path], generator: str, sha: str = "0" * 64) -> None:
    samples = [
        make_synthetic_sample(p, family=generator, source_id=name,
                              provenance=Provenance(generator=generator, checkpoint_sha256=sha, seed=i))
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
    checkpoint = tmp_path / "ckpt"  # a stand-in: provenance hashes config.json + model.safetensors
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text('{"family": "diffusion"}')
    (checkpoint / "model.safetensors").write_bytes(b"weights")
    assert last_score(checkpoint) is None
    from alldata.generators.base import checkpoint_sha256

    _synthetic(dataset_name, syn, files, "diffusion", checkpoint_sha256(checkpoint))
    _synthetic(dataset_name, syn, {"other": _cell(syn / "other.png", (90, 60, 160), 11, seed=3)}, "gan")
    ds.match({F.KEY: {"$in": ["synthetic/diffusion/odd0", "synthetic/gan/other"]}}).tag_samples(TAG_MEMORISED)

    r = runner.invoke(app, ["train-encoder", "--dataset", dataset_name, "--out", str(tmp_path / "enc"), "--epochs", "2",
                            "--image-size", "32", "--real-view", "all", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "trained on 18 cells, cell_type: lymphoblast 9, lymphocyte 9" in r.output
    enc = Encoder.from_pretrained(tmp_path / "enc", device="cpu")
    report = score_dataset(dataset_name, "generator=diffusion", "split=train", enc, report_path=tmp_path / "r.json",
                           heldout_filter="split=val", params=ScoreParams(kid_subsets=5))
    assert (report.n_real, report.n_fake, report.n_heldout) == (17, 5, 1)
    assert [m["key"] for m in report.memorised] == ["synthetic/diffusion/copy"]
    assert report.memorised[0]["nn_real_key"] == "folder/lymphoblast/b3.png"
    m = report.metrics
    assert m.copy_rate == pytest.approx(0.2) and m.fd > 0 and m.precision < 1
    assert list(report.skipped) == ["cas"] and "label field" in report.skipped["cas"]  # synthetic cells unlabelled
    assert not report.passed and {"mean_colour", "std"} <= {g.name for g in report.failed()}  # green cells
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["metrics"]["copy_rate"] == pytest.approx(0.2) and saved["encoder"]["kind"] == "cnn"  # what the card reads
    assert ScoreReport.model_validate(saved) == report

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
                 "n_real", "17", "n_fake", "quality gates", "mean_colour", "FAIL", "verdict: FAILED"):
        assert text in r.output, text
    assert (tmp_path / "cli.json").is_file() and not (checkpoint / SCORE_NAME).exists()

    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--checkpoint", str(checkpoint), "--strict",
                            "--encoder", str(tmp_path / "enc"), "--report", str(tmp_path / "ck.json")])
    assert r.exit_code == 1 and "verdict: FAILED" in r.output  # --strict: a failed gate is an error
    last = last_score(checkpoint)
    assert last is not None and not last.passed and last.n_fake == 5 and last.checkpoint_sha256
    (checkpoint / "model.safetensors").write_bytes(b"retrained")
    assert last_score(checkpoint) is None  # the report scored other weights
    (checkpoint / SCORE_NAME).write_text("{}")
    with pytest.raises(ScoreError, match="not an `alldata score` report"):
        last_score(checkpoint)

    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--synthetic-view", "gen=diffusion",
                            "--encoder", str(tmp_path / "enc")])
    assert r.exit_code == 1 and "unknown key 'gen'" in r.output and "generator, tag" in r.output
    r = runner.invoke(app, ["score", "--dataset", dataset_name])
    assert r.exit_code == 1 and "choose exactly one encoder" in r.output
    r = runner.invoke(app, ["score", "--dataset", dataset_name, "--real-view", "split=test", "--encoder",
                            str(tmp_path / "enc")])
    assert r.exit_code == 1 and "holds no cell images" in r.output


def test_pixel_gates_are_measured_at_the_generators_own_size(tmp_path, dataset_name):
    """32-px samples scored at 64 px (an encoder's size) are upsampled, hence smoother than real cells
    read at 64: the pixel gates must compare both at 32."""
    from alldata.generators.data import load_cells

    from alldata.metrics.generative import pixel_statistics

    real_root = tmp_path / "real"
    for i in range(6):
        img = np.kron(_cell_array((90, 60, 160), 11, seed=i), np.ones((2, 2, 1), np.uint8))  # 64 px
        img = np.clip(img + rng(50 + i).normal(0, 8, img.shape), 0, 255).astype(np.uint8)
        (real_root / "lymphoblast").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(real_root / "lymphoblast" / f"b{i}.png")
    ingest("folder", dataset_name, root=real_root, progress=False)
    fo.load_dataset(dataset_name).set_values(F.SPLIT, ["train"] * 6)
    syn = tmp_path / "syn"
    _synthetic(dataset_name, syn, {f"s{i}": _cell(syn / f"s{i}.png", (90, 60, 160), 11, seed=300 + i) for i in range(3)},
               "diffusion")
    report = score_dataset(dataset_name, "generator=diffusion", "split=train", None, 64, heldout_filter=None,
                           report_path=tmp_path / "r.json")
    assert report.image_size == 64 and report.pixel_size == 32
    at32 = load_cells(fo.load_dataset(dataset_name).match_tags("synthetic"), 32, progress=False).images
    at64 = load_cells(fo.load_dataset(dataset_name).match_tags("synthetic"), 64, progress=False).images
    assert report.pixels_synthetic.hf_energy == pytest.approx(pixel_statistics(at32).hf_energy)
    assert pixel_statistics(at64).hf_energy < 0.8 * report.pixels_synthetic.hf_energy  # what the old code compared
