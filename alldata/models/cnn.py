"""CNN classifiers on cell images, built with timm and trained from scratch.

Registered in :data:`~alldata.models.CLASSIFIERS`: ``resnet18``, ``mobilenetv3``
(``mobilenetv3_large_100``) and ``efficientnet_b0``; :class:`TimmClassifier` takes any other
timm architecture by name (``arch=``). Nothing is downloaded (``pretrained=False``); local
weights come in as ``weights=`` a ``.safetensors`` file (every tensor but the head).

The API is the classical classifiers' on images (``input_kind = "image"``): ``fit``,
``predict``, ``predict_proba``, ``embed``, ``save`` / ``load`` (``config.json`` +
``model.safetensors``) and :func:`load_cnn`. Training: AdamW with a cosine schedule, balanced
cross-entropy, albumentations augmentation, a small head init and "precise BN"; CUDA (bf16
autocast) when present, else the CPU in fp32, where the same data and ``seed`` give the same model.

Architectures, weight loading and why each training choice: docs/models.md#cnn-classifiers.
"""

from __future__ import annotations

import difflib
import warnings
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from alldata.models._torch import (
    WEIGHTS_NAME,
    autocast,
    check_images,
    load_state,
    progress_bar,
    read_checkpoint,
    read_weights,
    recalibrate_batchnorm,
    save_checkpoint,
    seeded,
    select_device,
    versions,
)
from alldata.models.base import CLASSIFIERS, ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["FORMAT", "EfficientNetB0", "MobileNetV3", "ResNet18", "TimmClassifier", "load_cnn"]

#: Written into every config.json; ``load`` refuses any other value.
FORMAT = "alldata.models.cnn/v1"
_CLASS_WEIGHTS = (None, "balanced")
_RESERVED = ("pretrained", "num_classes", "model_name", "pretrained_cfg", "checkpoint_path")


def _as_labels(labels: Any) -> np.ndarray:
    values = [v.value if isinstance(v, Enum) else v for v in labels]
    y = np.asarray(values)
    if y.ndim != 1 or y.dtype.kind not in "iuU":
        raise ModelError(f"labels must be a flat sequence of strings or integers, got {y.dtype} (e.g. {values[:1]!r})")
    return y


def _check_arch(arch: str) -> str:
    import timm

    if not isinstance(arch, str) or not timm.is_model(arch):
        close = difflib.get_close_matches(str(arch), timm.list_models(), n=3)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ModelError(f"unknown timm architecture {arch!r}; see timm.list_models() for the names.{hint}")
    return arch


def _positive(name: str, value: Any, kind: type = int) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
    if kind is int:
        ok = ok and float(value).is_integer()
    if not ok:
        raise ModelError(f"{name}={value!r} must be a positive {'integer' if kind is int else 'number'}")


class _TimmBase:
    """Everything but the architecture's name (the registered classes fix it, TimmClassifier takes it)."""

    #: Registry key (``None`` for an unregistered architecture).
    name: ClassVar[str | None] = None
    #: What ``fit`` / ``predict`` take: images, not feature vectors.
    input_kind: ClassVar[str] = "image"
    #: The timm model name.
    arch: str

    def __init__(
        self,
        *,
        seed: int = 0,
        image_size: int = 64,
        epochs: int = 10,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        augment: bool = True,
        class_weight: str | None = "balanced",
        device: str | None = None,
        weights: str | None = None,
        progress: bool = True,
        **timm_kwargs: Any,
    ) -> None:
        _check_arch(self.arch)
        for key, value in (("image_size", image_size), ("epochs", epochs), ("batch_size", batch_size)):
            _positive(key, value)
        _positive("lr", lr, float)
        if not isinstance(weight_decay, int | float) or weight_decay < 0:
            raise ModelError(f"weight_decay={weight_decay!r} must be a number >= 0")
        if image_size < 16:
            raise ModelError(f"image_size={image_size} is too small for a CNN; use 16 or more (64 is the default)")
        if class_weight not in _CLASS_WEIGHTS:
            raise ModelError(f"class_weight={class_weight!r} is not one of {_CLASS_WEIGHTS}")
        reserved = sorted(set(timm_kwargs) & set(_RESERVED))
        if reserved:
            raise ModelError(f"{reserved} cannot be passed: models are built with pretrained=False and one output "
                             "per class; pass local weights with weights=FILE")
        self.seed = int(seed)
        self.params: dict[str, Any] = {
            "image_size": int(image_size),
            "epochs": int(epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "weight_decay": float(weight_decay),
            "augment": bool(augment),
            "class_weight": class_weight,
            "weights": None if weights is None else str(weights),
            **timm_kwargs,
        }
        self.timm_kwargs = dict(timm_kwargs)
        self.device = select_device(device)
        self.progress = bool(progress)
        self.model_: nn.Module | None = None
        self.classes_: np.ndarray | None = None
        self.history_: list[dict[str, float]] = []
        self.weights_info_: dict[str, Any] | None = None
        self._mean: list[float] = []
        self._std: list[float] = []

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"seed": self.seed, **self.params}.items())
        return f"{type(self).__name__}({args})" if self.name else f"TimmClassifier({self.arch!r}, {args})"

    # --- building ---------------------------------------------------------------------------
    def _build(self, num_classes: int) -> nn.Module:
        import timm
        from torch import nn

        try:
            model = timm.create_model(self.arch, pretrained=False, num_classes=num_classes, **self.timm_kwargs)
        except TypeError as e:
            raise ModelError(f"{self.arch}: bad timm arguments {self.timm_kwargs!r} ({e})") from None
        head = model.get_classifier()
        if isinstance(head, nn.Linear):
            # timm's EfficientNet / MobileNet init draws the head from U(+-1/sqrt(num_classes)):
            # with 2-5 classes the first logits are in the tens and training from scratch diverges
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self._mean = [float(v) for v in cfg.get("mean", (0.485, 0.456, 0.406))]
        self._std = [float(v) for v in cfg.get("std", (0.229, 0.224, 0.225))]
        return model

    def _load_backbone(self, model: nn.Module, weights: str | Path) -> dict[str, Any]:
        """Load every tensor of ``weights`` but the head (strict=False); returns the counts."""
        path = Path(weights)
        if path.is_dir():
            path = path / WEIGHTS_NAME
        state = read_weights(path)
        head = model.get_classifier()
        prefixes = tuple(f"{n}." for n, m in model.named_modules() if n and m is head)
        own = model.state_dict()
        body = {k: v for k, v in state.items() if not k.startswith(prefixes)}
        bad = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in body.items() if k in own and v.shape != own[k].shape]
        if bad:
            k, got, want = bad[0]
            raise ModelError(f"{path}: {len(bad)} tensors have other shapes than {self.arch}'s (e.g. {k}: {got} in "
                             f"the file, {want} in the model); the file is for another architecture")
        missing, unexpected = model.load_state_dict(body, strict=False)
        missing = [k for k in missing if not k.startswith(prefixes)]
        loaded = len(body) - len(unexpected)
        if loaded == 0:
            raise ModelError(f"{path}: none of its {len(state)} tensors belongs to {self.arch} "
                             f"(e.g. {next(iter(state), None)!r}); pass weights saved from this architecture")
        info = {"file": str(path), "loaded": loaded, "missing": len(missing), "unexpected": len(unexpected),
                "skipped_head": len(state) - len(body)}
        if missing or unexpected:
            warnings.warn(f"{path}: loaded {loaded} tensors into {self.arch}; {len(missing)} missing "
                          f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})", stacklevel=3)
        return info

    def _to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        """uint8 NHWC (already ``image_size``) -> normalised float NCHW on the device."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        mean = torch.tensor(self._mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self._std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _resized(self, images: Any) -> np.ndarray:
        from alldata.models.augment import eval_transform

        resize = eval_transform(self.params["image_size"])
        return np.stack([resize(image=img)["image"] for img in check_images(images, min_size=1)])

    # --- the API ----------------------------------------------------------------------------
    def fit(self, images: Any, labels: Any) -> _TimmBase:
        """Train on uint8 RGB ``images`` (any sizes) and their ``labels``; returns ``self``."""
        import torch
        import torch.nn.functional as tf

        from alldata.models.augment import train_transform

        small = self._resized(images)
        y = _as_labels(labels)
        if len(y) != len(small):
            raise ModelError(f"{len(small)} images but {len(y)} labels")
        classes = np.unique(y)
        if len(classes) < 2:
            raise ModelError(f"need at least two classes to fit, got only {classes.tolist()}")
        y_idx = np.searchsorted(classes, y).astype(np.int64)
        p = self.params
        counts = np.bincount(y_idx, minlength=len(classes)).astype(np.float64)
        aug = train_transform(p["image_size"], seed=self.seed) if p["augment"] else None
        n, bs = len(small), p["batch_size"]
        steps = -(-n // bs) - (1 if n > bs and n % bs == 1 else 0)  # a last batch of one joins the one before
        with seeded(self.seed):
            model = self._build(len(classes)).to(self.device)
            info = self._load_backbone(model, p["weights"]) if p["weights"] else None
            gen = torch.Generator().manual_seed(self.seed)
            weight = None
            if p["class_weight"] == "balanced":
                weight = torch.tensor(n / (len(classes) * counts), dtype=torch.float32, device=self.device)
            y_t = torch.from_numpy(y_idx).to(self.device)
            opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"], fused=True)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p["epochs"] * steps)
            history = []
            with progress_bar(p["epochs"] * steps, f"fit {self.name or self.arch}", self.progress) as bar:
                for epoch in range(p["epochs"]):
                    model.train()
                    order = torch.randperm(n, generator=gen).numpy()
                    loss_sum, correct = 0.0, 0
                    for s in range(steps):
                        idx = order[s * bs : (s + 1) * bs if s < steps - 1 else n]
                        batch = np.stack([aug(image=small[i])["image"] for i in idx]) if aug else small[idx]
                        with autocast(self.device):
                            logits = model(self._to_tensor(batch))
                        loss = tf.cross_entropy(logits.float(), y_t[idx], weight=weight)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        sched.step()
                        loss_sum += loss.item() * len(idx)
                        correct += int((logits.argmax(1) == y_t[idx]).sum())
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                    history.append({"epoch": epoch + 1, "loss": loss_sum / n, "accuracy": correct / n})
            bs_eval = max(2, bs)
            recalibrate_batchnorm(
                model, (self._to_tensor(small[i : i + bs_eval]) for i in range(0, n, bs_eval)), self.device
            )
        self.model_, self.classes_ = model.eval(), classes
        self.history_, self.weights_info_ = history, info
        return self

    def _fitted(self) -> nn.Module:
        if self.model_ is None:
            raise ModelError(f"{self.name or self.arch} is not fitted yet; call fit(images, labels) or load(dir) first")
        return self.model_

    def _forward(self, images: Any, embed: bool) -> np.ndarray:
        import torch

        model = self._fitted()
        small = self._resized(images)
        out = []
        bs = self.params["batch_size"]
        with torch.inference_mode(), autocast(self.device):
            for i in range(0, len(small), bs):
                x = self._to_tensor(small[i : i + bs])
                if embed:
                    out.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
                else:
                    out.append(torch.softmax(model(x).float(), dim=1))
        return torch.cat(out).cpu().numpy()

    def predict_proba(self, images: Any) -> np.ndarray:
        """Class probabilities, float64 ``(n, n_classes)``, columns in ``classes_`` order."""
        return self._forward(images, embed=False).astype(np.float64)

    def predict(self, images: Any) -> np.ndarray:
        """The predicted label of each image (values from ``classes_``)."""
        return self.classes_[self.predict_proba(images).argmax(axis=1)]

    def embed(self, images: Any) -> np.ndarray:
        """Penultimate features (timm ``forward_head(pre_logits=True)``), float32 ``(n, dim)``."""
        return self._forward(images, embed=True)

    # --- saving -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``; returns it."""
        import timm

        model = self._fitted()
        config = {
            "format": FORMAT,
            "name": self.name,
            "arch": self.arch,
            "seed": self.seed,
            "params": self.params,
            "classes": [c.item() for c in self.classes_],
            "mean": self._mean,
            "std": self._std,
            "history": self.history_,
            "weights_info": self.weights_info_,
            "timm_version": timm.__version__,
            **versions(),
        }
        return save_checkpoint(model, config, directory)

    @classmethod
    def load(cls, directory: str | Path, device: str | None = None, progress: bool = True) -> _TimmBase:
        """The classifier saved in ``directory`` by :meth:`save` (on ``device``, default CUDA-else-CPU)."""
        config, state = read_checkpoint(directory, FORMAT)
        if cls.name is not None and config.get("name") != cls.name:
            raise ModelError(f"{directory} holds a {config.get('name') or config.get('arch')!r} classifier, "
                             f"not {cls.name!r}; use load_cnn(dir)")
        return _from_saved(directory, config, state, device, progress)


class TimmClassifier(_TimmBase):
    """Any timm architecture ``arch`` as an image classifier; the keywords are the registered models'.

    Examples:
        >>> clf = TimmClassifier("resnet10t", image_size=32, epochs=1, progress=False)
        >>> clf.arch, clf.params["image_size"]
        ('resnet10t', 32)
    """

    def __init__(self, arch: str, **kwargs: Any) -> None:
        self.arch = arch
        super().__init__(**kwargs)


def _from_saved(directory: str | Path, config: dict, state: dict, device: str | None, progress: bool) -> _TimmBase:
    missing = {"arch", "seed", "params", "classes"} - set(config)
    if missing:
        raise ModelError(f"{directory}/config.json: missing keys {sorted(missing)}")
    name = config.get("name")
    if name:
        obj = CLASSIFIERS.get(name)(seed=config["seed"], device=device, progress=progress, **config["params"])
    else:
        obj = TimmClassifier(config["arch"], seed=config["seed"], device=device, progress=progress, **config["params"])
    classes = np.asarray(config["classes"])
    model = obj._build(len(classes))
    load_state(model, state, directory)
    obj.model_, obj.classes_ = model.to(obj.device).eval(), classes
    obj._mean, obj._std = list(config.get("mean", obj._mean)), list(config.get("std", obj._std))
    obj.history_, obj.weights_info_ = list(config.get("history", [])), config.get("weights_info")
    return obj


def load_cnn(directory: str | Path, device: str | None = None, progress: bool = True) -> _TimmBase:
    """Load whichever CNN classifier ``directory`` holds (named in its config.json).

    Examples:
        >>> import tempfile
        >>> imgs = np.zeros((4, 16, 16, 3), np.uint8); imgs[2:] = 255
        >>> clf = ResNet18(image_size=16, epochs=1, progress=False).fit(imgs, ["a", "a", "b", "b"])
        >>> load_cnn(clf.save(tempfile.mkdtemp())).classes_.tolist()
        ['a', 'b']
    """
    config, state = read_checkpoint(directory, FORMAT)
    return _from_saved(directory, config, state, device, progress)


# --- the registered architectures -----------------------------------------------------------
@CLASSIFIERS.register("resnet18")
class ResNet18(_TimmBase):
    """timm ``resnet18`` trained from scratch on cell images (512-d embedding)."""

    name = "resnet18"
    arch = "resnet18"


@CLASSIFIERS.register("mobilenetv3")
class MobileNetV3(_TimmBase):
    """timm ``mobilenetv3_large_100`` trained from scratch on cell images (1280-d embedding)."""

    name = "mobilenetv3"
    arch = "mobilenetv3_large_100"


@CLASSIFIERS.register("efficientnet_b0")
class EfficientNetB0(_TimmBase):
    """timm ``efficientnet_b0`` trained from scratch on cell images (1280-d embedding)."""

    name = "efficientnet_b0"
    arch = "efficientnet_b0"
