"""A U-Net cell / nucleus segmenter in plain torch, registered in SEGMENTERS as ``unet``.

Four classes per pixel (:data:`CLASSES`): background, cytoplasm, nucleus and a **cell
boundary** ring ``boundary_width`` pixels wide, which separates touching cells.

* ``segment(image)`` -> ``uint8`` ``(H, W)`` 0/1/2 mask (boundary pixels count as cytoplasm);
* ``instances(image)`` -> ``int32`` ``(H, W)`` labels 1..N: a watershed on the boundary
  probability, seeded by the cell interiors of at least ``min_area`` pixels.

Training: weighted cross-entropy plus soft Dice, AdamW with a cosine schedule,
:func:`alldata.models.augment.seg_transform`, precise BN; CUDA (bf16) when present, else the
CPU in fp32 (deterministic in ``seed``). Saved as ``config.json`` + ``model.safetensors``
(:meth:`UNet.save_pretrained` / :meth:`UNet.from_pretrained`; ``save`` / ``load`` alias them).
Architecture, the boundary ring and the loss in detail: docs/models.md#u-net.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as tf
from scipy import ndimage as ndi
from torch import nn

from alldata.models._torch import (
    autocast,
    check_image,
    check_images,
    load_state,
    progress_bar,
    read_checkpoint,
    recalibrate_batchnorm,
    save_checkpoint,
    seeded,
    select_device,
    versions,
)
from alldata.models.base import SEGMENTERS, ModelError

__all__ = ["CLASSES", "FORMAT", "UNet", "UNetNet", "boundary_target", "instances_from_proba"]

#: The network's output classes, by index.
CLASSES = ("background", "cytoplasm", "nucleus", "boundary")
BOUNDARY = 3
#: Written into every config.json; ``from_pretrained`` refuses any other value.
FORMAT = "alldata.models.unet/v1"


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class UNetNet(nn.Module):
    """The bare network: ``(N, 3, S, S)`` -> ``(N, num_classes, S, S)`` logits, ``S`` a multiple of ``2**depth``."""

    def __init__(self, base_channels: int = 16, depth: int = 3, num_classes: int = len(CLASSES)) -> None:
        super().__init__()
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList([_block(3, chans[0])] + [_block(chans[i - 1], chans[i]) for i in range(1, depth + 1)])
        self.up = nn.ModuleList([_block(chans[i + 1] + chans[i], chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else tf.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()  # the bottleneck output is x itself
        for block in self.up:
            x = tf.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


# --- targets ----------------------------------------------------------------------------------
def boundary_target(mask: np.ndarray, instances: np.ndarray | None = None, width: int = 2) -> np.ndarray:
    """The 4-class training target: ``mask``'s 0/1/2 with a ``width``-pixel inner ring of each cell set to 3.

    Cells are the labels of ``instances`` when given (pixels of an instance that the mask
    calls background count as cytoplasm; each connected region of mask foreground that no
    instance covers is a cell too, so an all-zero map means "no instances known"), else the
    connected regions of ``mask > 0``. A ring
    pixel is a cell pixel within ``width`` pixels (chessboard distance) of a pixel outside
    its cell, the image border excepted.

    Examples:
        >>> m = np.zeros((7, 7), np.uint8); m[1:6, 1:6] = 2
        >>> boundary_target(m, width=1)[3].tolist()
        [0, 3, 2, 2, 2, 3, 0]
    """
    mask = np.asarray(mask)
    target = mask.astype(np.uint8).copy()
    if instances is None:
        inst, _ = ndi.label(mask > 0)
    else:
        inst = np.asarray(instances).astype(np.int64)
        target[(inst > 0) & (target == 0)] = 1
        rest = (mask > 0) & (inst == 0)
        if rest.any():  # cells of the mask that no instance covers: one cell per connected region
            extra, _ = ndi.label(rest)
            inst[rest] = extra[rest] + inst.max()
    fg = inst > 0
    if not fg.any() or width < 1:
        return target
    # a pixel is on an edge when a 3x3 neighbour (edge-padded, so the image border is not an
    # edge) carries another label; the ring is those edges grown by width - 1, inside the cells
    padded = np.pad(inst, 1, mode="edge")
    h, w = inst.shape
    edge = np.zeros(inst.shape, bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            edge |= padded[dy : dy + h, dx : dx + w] != inst
    edge &= fg
    if width > 1:
        edge = ndi.binary_dilation(edge, np.ones((3, 3), bool), iterations=width - 1)
    target[edge & fg] = BOUNDARY
    return target


def instances_from_proba(probs: np.ndarray, min_area: int = 20) -> np.ndarray:
    """Cells from 4-class probabilities ``(H, W, 4)`` (:data:`CLASSES` order) as an ``int32`` map.

    Markers are the connected regions of cell interior (argmax cytoplasm or nucleus) of at
    least ``min_area`` pixels; a watershed on the boundary probability floods the predicted
    cell mask (argmax not background) from them; cells under ``min_area`` pixels are
    dropped and the rest numbered 1..N. Callers that stitch probabilities of several
    windows (a large smear in tiles) use it on the stitched map.

    Examples:
        >>> p = np.zeros((6, 6, 4), np.float32); p[..., 0] = 1
        >>> p[1:5, 1:5] = (0, 0, 0, 1); p[2:4, 2:4] = (0, 0, 1, 0)
        >>> instances_from_proba(p, min_area=1)[1].tolist()
        [0, 1, 1, 1, 1, 0]
    """
    from skimage.segmentation import relabel_sequential, watershed

    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[-1] != len(CLASSES):
        raise ModelError(f"probabilities must have shape (H, W, {len(CLASSES)}) in {CLASSES} order; got {probs.shape}")
    classes = probs.argmax(axis=-1)
    markers, _ = ndi.label((classes == 1) | (classes == 2))
    if min_area > 0 and markers.any():
        small = np.bincount(markers.ravel()) < min_area
        small[0] = False
        markers[small[markers]] = 0
    if not markers.any():
        return np.zeros(classes.shape, np.int32)
    labels = watershed(probs[..., BOUNDARY], markers, mask=classes > 0)
    if min_area > 0:
        small = np.bincount(labels.ravel()) < min_area
        small[0] = False
        labels[small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def _resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D label array to ``size`` x ``size`` (any integer dtype)."""
    h, w = a.shape
    rows = np.minimum(((np.arange(size) + 0.5) * h / size).astype(np.int64), h - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * w / size).astype(np.int64), w - 1)
    return a[rows[:, None], cols[None, :]]


def _soft_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.softmax(logits, dim=1)
    onehot = tf.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    inter = (probs * onehot).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + onehot.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (total + 1.0)).mean()


def _int_param(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ModelError(f"{name}={value!r} must be an integer >= {low}")
    return int(value)


@SEGMENTERS.register("unet")
class UNet:
    """The U-Net segmenter (see the module doc); fit it, or load a saved one, before use.

    Examples:
        >>> img = np.full((32, 32, 3), 230, np.uint8); mask = np.zeros((32, 32), np.uint8)
        >>> img[8:24, 8:24] = (170, 150, 215); mask[8:24, 8:24] = 1
        >>> seg = UNet(image_size=32, base_channels=4, depth=2, epochs=1, progress=False).fit([img], [mask])
        >>> seg.segment(img).shape, seg.instances(img).dtype
        ((32, 32), dtype('int32'))
    """

    name = "unet"

    def __init__(
        self,
        *,
        seed: int = 0,
        image_size: int = 128,
        base_channels: int = 16,
        depth: int = 3,
        epochs: int = 20,
        batch_size: int = 8,
        lr: float = 1e-3,
        boundary_width: int = 2,
        device: str | None = None,
        progress: bool = True,
        min_area: int = 20,
        dice_weight: float = 1.0,
        weight_decay: float = 1e-4,
        augment: bool = True,
    ) -> None:
        depth = _int_param("depth", depth, 1)
        image_size = _int_param("image_size", image_size, 2**depth)
        if image_size % 2**depth:
            raise ModelError(f"image_size={image_size} must be a multiple of 2**depth = {2**depth} (depth={depth})")
        for key, value in (("lr", lr), ("dice_weight", dice_weight), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or (key == "lr" and value == 0):
                raise ModelError(f"{key}={value!r} must be a {'positive' if key == 'lr' else 'non-negative'} number")
        self.seed = int(seed)
        self.params: dict[str, Any] = {
            "image_size": image_size,
            "base_channels": _int_param("base_channels", base_channels, 1),
            "depth": depth,
            "epochs": _int_param("epochs", epochs, 1),
            "batch_size": _int_param("batch_size", batch_size, 1),
            "lr": float(lr),
            "boundary_width": _int_param("boundary_width", boundary_width, 1),
            "min_area": _int_param("min_area", min_area, 0),
            "dice_weight": float(dice_weight),
            "weight_decay": float(weight_decay),
            "augment": bool(augment),
        }
        self.device = select_device(device)
        self.progress = bool(progress)
        self.model_: UNetNet | None = None
        self.class_weights_: list[float] | None = None
        self.history_: list[dict[str, float]] = []

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"seed": self.seed, **self.params}.items())
        return f"UNet({args})"

    # --- training -----------------------------------------------------------------------------
    def _targets(self, images: Any, masks: Any, instances: Any) -> tuple[np.ndarray, np.ndarray]:
        """Images resized to ``image_size`` and their 4-class targets (see :func:`boundary_target`)."""
        from alldata.models.augment import eval_transform

        imgs = check_images(images, min_size=1)
        masks = list(masks) if not isinstance(masks, np.ndarray) or masks.ndim == 3 else None
        if masks is None or len(masks) != len(imgs):
            raise ModelError(f"need one 2-D mask per image: {len(imgs)} images, masks {np.shape(masks)}")
        if instances is None:
            instances = [None] * len(imgs)
        instances = list(instances)
        if len(instances) != len(imgs):
            raise ModelError(f"{len(imgs)} images but {len(instances)} instance maps (use None for images without)")
        size, resize = self.params["image_size"], eval_transform(self.params["image_size"])
        xs, ys = [], []
        for i, (img, mask, inst) in enumerate(zip(imgs, masks, instances, strict=True)):
            mask = np.asarray(mask)
            if mask.shape != img.shape[:2] or mask.dtype.kind not in "iub" or not np.isin(mask, (0, 1, 2)).all():
                raise ModelError(f"masks[{i}]: need integer values 0/1/2 (background/cytoplasm/nucleus) of shape "
                                 f"{img.shape[:2]}; got {mask.dtype} {mask.shape} with values {np.unique(mask)[:6].tolist()}")
            if inst is not None:
                inst = np.asarray(inst)
                if inst.shape != img.shape[:2] or inst.dtype.kind not in "iu" or (inst < 0).any():
                    raise ModelError(f"instances[{i}]: need a non-negative integer map of shape {img.shape[:2]} "
                                     f"(0 background, 1..N cells); got {inst.dtype} {inst.shape}")
                inst = _resize_nearest(inst, size)
            xs.append(resize(image=img)["image"])
            ys.append(boundary_target(_resize_nearest(mask, size), inst, self.params["boundary_width"]))
        return np.stack(xs), np.stack(ys)

    def fit(self, images: Any, masks: Any, instances: Any = None) -> UNet:
        """Train on uint8 RGB ``images``, 0/1/2 ``masks`` and optional int ``instances`` maps; returns ``self``.

        Args:
            images: ``(N, H, W, 3)`` uint8 array or a list of ``(H, W, 3)`` arrays (sizes may differ).
            masks: one ``(H, W)`` 0/1/2 mask per image (:data:`alldata.schema.SEG_CLASSES`).
            instances: ``None``, or one ``(H, W)`` map per image (0 background, 1..N cells), each
                entry may be ``None``; the boundary class is drawn from them where given.
        """
        from alldata.models.augment import seg_transform

        x_all, y_all = self._targets(images, masks, instances)
        p = self.params
        freq = np.bincount(y_all.ravel(), minlength=len(CLASSES)).astype(np.float64) / y_all.size
        weights = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
        weights = weights / weights[freq > 0].mean()
        aug = seg_transform(p["image_size"], seed=self.seed) if p["augment"] else None
        n, bs = len(x_all), p["batch_size"]
        steps = -(-n // bs)
        with seeded(self.seed):
            model = UNetNet(p["base_channels"], p["depth"]).to(self.device)
            gen = torch.Generator().manual_seed(self.seed)
            w_t = torch.tensor(weights, dtype=torch.float32, device=self.device)
            opt = torch.optim.AdamW(model.parameters(), lr=p["lr"], weight_decay=p["weight_decay"], fused=True)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p["epochs"] * steps)
            history = []
            with progress_bar(p["epochs"] * steps, "fit unet", self.progress) as bar:
                for epoch in range(p["epochs"]):
                    model.train()
                    order = torch.randperm(n, generator=gen).numpy()
                    loss_sum = 0.0
                    for s in range(steps):
                        idx = order[s * bs : (s + 1) * bs]
                        if aug is None:
                            xb, yb = x_all[idx], y_all[idx]
                        else:
                            outs = [aug(image=x_all[i], mask=y_all[i]) for i in idx]
                            xb = np.stack([o["image"] for o in outs])
                            yb = np.stack([o["mask"] for o in outs])
                        target = torch.from_numpy(yb.astype(np.int64)).to(self.device)
                        with autocast(self.device):
                            logits = model(self._to_tensor(xb))
                        logits = logits.float()
                        loss = tf.cross_entropy(logits, target, weight=w_t)
                        if p["dice_weight"]:
                            loss = loss + p["dice_weight"] * _soft_dice_loss(logits, target)
                        opt.zero_grad(set_to_none=True)
                        loss.backward()
                        opt.step()
                        sched.step()
                        loss_sum += loss.item() * len(idx)
                        bar.update(1)
                        bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                    history.append({"epoch": epoch + 1, "loss": loss_sum / n})
            bs_eval = max(2, bs)
            recalibrate_batchnorm(
                model, (self._to_tensor(x_all[i : i + bs_eval]) for i in range(0, n, bs_eval)), self.device
            )
        self.model_ = model.eval()
        self.class_weights_ = weights.tolist()
        self.history_ = history
        return self

    def _to_tensor(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    # --- inference ----------------------------------------------------------------------------
    def _fitted(self) -> UNetNet:
        if self.model_ is None:
            raise ModelError("unet is not fitted yet; call fit(images, masks) or UNet.from_pretrained(dir) first")
        return self.model_

    def predict_proba(self, image: np.ndarray) -> np.ndarray:
        """Per-pixel class probabilities, float32 ``(H, W, 4)`` at the image's size, in :data:`CLASSES` order."""
        from alldata.models.augment import eval_transform

        model = self._fitted()
        img = check_image(image)
        x = self._to_tensor(eval_transform(self.params["image_size"])(image=img)["image"][None])
        with torch.inference_mode(), autocast(self.device):
            logits = model(x).float()
        logits = tf.interpolate(logits, size=img.shape[:2], mode="bilinear", align_corners=False)
        return torch.softmax(logits, dim=1)[0].permute(1, 2, 0).cpu().numpy()

    def segment(self, image: np.ndarray) -> np.ndarray:
        """``uint8`` ``(H, W)`` mask: 0 background, 1 cytoplasm (boundary included), 2 nucleus."""
        classes = self.predict_proba(image).argmax(axis=-1).astype(np.uint8)
        classes[classes == BOUNDARY] = 1
        return classes

    def instances(self, image: np.ndarray, min_area: int | None = None) -> np.ndarray:
        """``int32`` ``(H, W)`` map, 0 background and 1..N one label per cell (see :func:`instances_from_proba`)."""
        min_area = self.params["min_area"] if min_area is None else _int_param("min_area", min_area, 0)
        return instances_from_proba(self.predict_proba(image), min_area)

    # --- saving -------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``; returns it."""
        model = self._fitted()
        config = {
            "format": FORMAT,
            "name": self.name,
            "seed": self.seed,
            "params": self.params,
            "classes": list(CLASSES),
            "class_weights": self.class_weights_,
            "history": self.history_,
            **versions(),
        }
        return save_checkpoint(model, config, directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | None = None, progress: bool = True) -> UNet:
        """The U-Net saved in ``directory`` by :meth:`save_pretrained` (on ``device``, default CUDA-else-CPU)."""
        config, state = read_checkpoint(directory, FORMAT)
        if "params" not in config or "seed" not in config:
            raise ModelError(f"{directory}/config.json: missing keys 'params' / 'seed'")
        obj = cls(seed=config["seed"], device=device, progress=progress, **config["params"])
        model = UNetNet(obj.params["base_channels"], obj.params["depth"])
        load_state(model, state, directory)
        obj.model_ = model.to(obj.device).eval()
        obj.class_weights_ = config.get("class_weights")
        obj.history_ = list(config.get("history", []))
        return obj

    save = save_pretrained
    load = from_pretrained
