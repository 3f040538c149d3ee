"""Feature encoders for scoring synthetic cells (:mod:`alldata.score`); feature extractors of :mod:`alldata.features`.

* ``cnn`` - a small CNN trained here on real cells (ImageNet weights cannot be downloaded):
  4 blocks of conv3x3-BatchNorm-ReLU-maxpool (32, 64, 128, 128 channels), global average
  pooling -> a 128-d feature, and a linear head on a label field (``cell_type``, else
  ``diagnosis``); a few seeded epochs with flip / 90-degree-rotation augmentation; saved as
  ``config.json`` + ``model.safetensors`` (never pickle), reloaded with :meth:`Encoder.from_pretrained`.
* ``inception`` - torchvision's ``inception_v3`` with weights the user provides
  (``--inception-weights FILE``: a state dict in safetensors or a torch file); features are
  the 2048-d pool output at 299 px, as in FID.

:meth:`Encoder.encode` returns the penultimate-layer features, **not** L2-normalised (the
raw pooled activations, as FID/KID expect); normalise yourself if you need cosine geometry.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alldata.devices import select_device
from alldata.errors import AlldataError

if TYPE_CHECKING:
    import fiftyone as fo
    import torch
    from torch import nn

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "Encoder",
    "EncoderError",
    "choose_label_field",
    "load_encoder",
    "train_encoder",
    "train_encoder_on_view",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
INCEPTION_SIZE = 299
DEFAULT_CHANNELS = (32, 64, 128, 128)


class EncoderError(AlldataError, ValueError):
    """Bad encoder arguments, unusable images or an unusable checkpoint / weights file."""


def _cnn(channels: Sequence[int], num_classes: int) -> nn.Module:
    """The CNN: ``features`` (blocks + global average pool) and a linear ``head``."""
    from torch import nn

    layers: list[nn.Module] = []
    c_in = 3
    for c in channels:
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    model = nn.Module()
    model.features = nn.Sequential(*layers)
    model.head = nn.Linear(c_in, num_classes)
    return model


def _check_images(images: np.ndarray) -> np.ndarray:
    from alldata.features import check_images

    return check_images(images, EncoderError)


def _to_tensor(batch: np.ndarray, size: int, device: str) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], resized (bilinear, antialiased) to ``size``."""
    import torch
    import torch.nn.functional as tf

    x = torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if x.shape[-2:] != (size, size):
        x = tf.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x


def _file_sha256(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class Encoder:
    """A frozen feature extractor: uint8 images in, ``(N, D)`` float32 features out.

    A :class:`alldata.features.FeatureExtractor`: ``name`` is ``encoder-<kind>`` and
    calling it is :meth:`encode`.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], device: str | None = None) -> None:
        self.device = select_device(device)
        self.model = model.to(self.device).eval()
        self.config = config
        self.sha256: str | None = None  # of the files it was loaded from / saved to
        self.path: str | None = None

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    @property
    def name(self) -> str:
        """``encoder-cnn`` or ``encoder-inception`` (the feature-extractor protocol's name)."""
        return f"encoder-{self.kind}"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """:meth:`encode` with the default batch size (the feature-extractor protocol)."""
        return self.encode(images)

    @property
    def image_size(self) -> int:
        """Input size the network sees (images are resized to it)."""
        return int(self.config["image_size"])

    @property
    def feature_dim(self) -> int:
        return int(self.config["feature_dim"])

    def describe(self) -> dict[str, Any]:
        """What a score report records about the encoder."""
        keys = ("kind", "image_size", "feature_dim", "label_field", "classes", "epochs", "seed", "n_train")
        return {**{k: self.config[k] for k in keys if k in self.config}, "path": self.path, "sha256": self.sha256}

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.features(x) if self.kind == "cnn" else self.model(x)

    def encode(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Penultimate-layer features of uint8 ``(N, H, W, 3)`` images: float32 ``(N, D)``, not normalised."""
        import torch

        images = _check_images(images)
        out = np.empty((len(images), self.feature_dim), np.float32)
        self.model.eval()
        with torch.inference_mode():
            for i in range(0, len(images), max(1, batch_size)):
                x = _to_tensor(images[i : i + batch_size], self.image_size, self.device)
                out[i : i + len(x)] = self._features(x).float().cpu().numpy()
        return out

    # --- the trained CNN ---------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (cnn encoders only)."""
        from safetensors.torch import save_file

        if self.kind != "cnn":
            raise EncoderError("only the trained CNN encoder is saved; an Inception encoder is its weights file")
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (WEIGHTS_NAME + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}, str(tmp))
        tmp.replace(d / WEIGHTS_NAME)
        (d / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True))
        self.path, self.sha256 = str(d.resolve()), _file_sha256(d / CONFIG_NAME, d / WEIGHTS_NAME)
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None) -> Encoder:
        """Load an encoder written by :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        d = Path(directory)
        cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
        if not cfg_path.is_file() or not w_path.is_file():
            raise EncoderError(
                f"{d} is not an encoder: {CONFIG_NAME} and {WEIGHTS_NAME} are needed "
                "(train one with `alldata train-encoder`)"
            )
        cfg = json.loads(cfg_path.read_text())
        if cfg.get("kind") != "cnn":
            raise EncoderError(f"{cfg_path}: kind {cfg.get('kind')!r} is not a trained encoder ('cnn')")
        model = _cnn(cfg["channels"], len(cfg["classes"]))
        try:
            model.load_state_dict(load_file(str(w_path)))
        except RuntimeError as e:
            raise EncoderError(f"{w_path} does not match {cfg_path}: {str(e).splitlines()[0]}") from None
        enc = cls(model, cfg, device)
        enc.path, enc.sha256 = str(d.resolve()), _file_sha256(cfg_path, w_path)
        return enc

    # --- Inception ---------------------------------------------------------------------------
    @classmethod
    def from_inception(cls, weights: str | Path, device: str | None = None) -> Encoder:
        """torchvision ``inception_v3`` with the user's state dict; 2048-d pool features at 299 px.

        ``weights``: a ``.safetensors`` file, or a torch file read with ``weights_only=True``
        (a state dict, or a dict holding one under ``state_dict``). The classifier (``fc``)
        and auxiliary head are not used, so their keys may be absent or of another size.
        Inputs are scaled to [-1, 1], which is what torchvision's ImageNet weights see after
        their ``transform_input`` step.
        """
        import torch
        from torch import nn
        from torchvision.models import inception_v3

        p = Path(weights)
        if not p.is_file():
            raise EncoderError(f"Inception weights file {p} not found; pass a torchvision inception_v3 state dict")
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(p))
            else:
                state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
            raise EncoderError(f"cannot read Inception weights {p}: {e}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise EncoderError(f"{p} holds a {type(state).__name__}, not a state dict")
        model = inception_v3(weights=None, aux_logits=True, init_weights=False)
        model.fc = nn.Identity()
        model.AuxLogits = None
        body = {k: v for k, v in state.items() if not k.startswith(("fc.", "AuxLogits."))}
        missing, unexpected = model.load_state_dict(body, strict=False)
        if missing or unexpected:
            raise EncoderError(
                f"{p} is not a torchvision inception_v3 state dict: {len(missing)} keys missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
        cfg = {"kind": "inception", "image_size": INCEPTION_SIZE, "feature_dim": 2048}
        enc = cls(model, cfg, device)
        enc.path, enc.sha256 = str(p.resolve()), _file_sha256(p)
        return enc


def load_encoder(encoder_dir: str | Path | None = None, inception_weights: str | Path | None = None,
                 device: str | None = None) -> Encoder:
    """A trained CNN from ``encoder_dir`` or Inception from ``inception_weights`` (exactly one)."""
    if (encoder_dir is None) == (inception_weights is None):
        raise EncoderError("pass exactly one of an encoder folder or an Inception weights file")
    if encoder_dir is not None:
        return Encoder.from_pretrained(encoder_dir, device)
    return Encoder.from_inception(inception_weights, device)  # type: ignore[arg-type]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per-sample random horizontal flip and rotation by a multiple of 90 degrees (square images)."""
    import torch

    n = x.shape[0]
    flip = torch.rand(n, generator=gen) < 0.5
    k = torch.randint(0, 4, (n,), generator=gen)
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for r in (1, 2, 3):
        m = (k == r).to(x.device)
        if m.any():
            out[m] = torch.rot90(x[m], r, dims=(-2, -1))
    return out


def train_encoder(
    images: np.ndarray,
    labels: Sequence[str],
    *,
    label_field: str = "cell_type",
    image_size: int = 64,
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    channels: Sequence[int] = DEFAULT_CHANNELS,
    device: str | None = None,
    progress: bool = False,
) -> Encoder:
    """Train the CNN as a classifier of ``labels`` (class-balanced cross-entropy, AdamW).

    Deterministic for a given seed on a given device. ``config["history"]`` keeps the loss
    and training accuracy of each epoch.
    """
    import torch
    import torch.nn.functional as tf
    from tqdm import tqdm

    images = _check_images(images)
    if len(images) != len(labels):
        raise EncoderError(f"{len(images)} images but {len(labels)} labels")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise EncoderError(f"training the encoder needs at least 2 classes of {label_field!r}; found {classes}")
    if epochs < 1:
        raise EncoderError(f"epochs must be >= 1, got {epochs}")
    device = select_device(device)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    y_all = torch.tensor([classes.index(v) for v in labels])
    counts = torch.bincount(y_all, minlength=len(classes)).float()
    weight = (counts.sum() / (len(classes) * counts)).to(device)
    model = _cnn(channels, len(classes)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    history = []
    for epoch in tqdm(range(epochs), desc="train encoder", disable=not progress):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            x = _augment(_to_tensor(images[idx.numpy()], image_size, device), gen)
            y = y_all[idx].to(device)
            logits = model.head(model.features(x))
            loss = tf.cross_entropy(logits, y, weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == y).sum())
            total += len(idx)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(total, 1), "accuracy": correct / max(total, 1)})
    cfg = {
        "kind": "cnn",
        "image_size": image_size,
        "channels": list(channels),
        "feature_dim": int(channels[-1]),
        "classes": classes,
        "label_field": label_field,
        "epochs": epochs,
        "seed": seed,
        "lr": lr,
        "batch_size": batch_size,
        "n_train": len(images),
        "class_counts": dict(zip(classes, counts.int().tolist())),
        "history": history,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return Encoder(model, cfg, device)


def choose_label_field(labels: dict[str, list[str | None]], label_field: str | None = None) -> str:
    """``label_field`` if given, else ``cell_type`` when it has 2+ classes, else ``diagnosis``."""
    if label_field:
        if label_field not in labels:
            raise EncoderError(f"unknown label field {label_field!r}; choose one of {sorted(labels)}")
        return label_field
    for name in ("cell_type", "diagnosis"):
        if len({v for v in labels.get(name, []) if v}) >= 2:
            return name
    found = {k: sorted({v for v in vals if v}) for k, vals in labels.items()}
    raise EncoderError(
        f"no label field has 2 or more classes in these cells (found {found}); "
        "the encoder is trained as a classifier, so ingest labelled cells or pass --label-field"
    )


def train_encoder_on_view(
    view: fo.Dataset | fo.DatasetView,
    out: str | Path | None = None,
    *,
    label_field: str | None = None,
    image_size: int = 64,
    epochs: int = 10,
    seed: int = 0,
    device: str | None = None,
    max_samples: int | None = None,
    progress: bool = True,
) -> Encoder:
    """Train the CNN on the labelled cell images of ``view``; saved to ``out`` when given.

    Cells without a value of the chosen label field are left out.
    """
    from alldata.generators.data import load_cells

    fields = ("cell_type", "diagnosis") if label_field is None else (label_field,)
    cells = load_cells(view, image_size, label_fields=fields, max_samples=max_samples, progress=progress)
    field = choose_label_field(cells.labels, label_field)
    keep = [i for i, v in enumerate(cells.labels[field]) if v]
    enc = train_encoder(
        cells.images[keep],
        [cells.labels[field][i] for i in keep],  # type: ignore[misc]
        label_field=field,
        image_size=image_size,
        epochs=epochs,
        seed=seed,
        device=device,
        progress=progress,
    )
    if out is not None:
        enc.save_pretrained(out)
    return enc
