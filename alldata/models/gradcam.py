"""Grad-CAM (Selvaraju et al., ICCV 2017) for the reference CNN classifiers (:mod:`alldata.models.cnn`).

For each image: the gradient of the explained class's logit with respect to one stage's feature
map, averaged over space, weights that map's channels; their sum, through a ReLU, is the heatmap.
It is upsampled (bilinear) from the stage's grid to the network's input square, then resized to the
image's own size (the classifiers resize every image to ``image_size`` x ``image_size``, no crop),
and scaled to [0, 1] by its maximum (an all-zero map stays zero).

The stage is one of timm's ``feature_info`` stages, the last by default (``stage=-1``: ``layer4`` of
a ResNet, ``blocks.6`` of MobileNetV3 / EfficientNet, 1/32 of the input; at the classifiers' default
64 px that is a 2 x 2 grid, so ``stage=-2``, 1/16, gives finer maps).

Examples:
    >>> import numpy as np
    >>> from alldata.models.cnn import TimmClassifier
    >>> imgs = np.zeros((4, 32, 32, 3), np.uint8); imgs[2:] = 255
    >>> clf = TimmClassifier("resnet10t", image_size=32, epochs=1, progress=False).fit(imgs, ["a", "a", "b", "b"])
    >>> maps = gradcam(clf, imgs[:1])
    >>> maps[0].shape, maps[0].dtype, float(maps[0].min()) >= 0
    ((32, 32), dtype('float32'), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from alldata.models.base import ModelError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["gradcam", "stage_names"]


def stage_names(model: nn.Module) -> list[str]:
    """The module names of a timm model's feature stages (``feature_info``), shallow to deep."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ModelError(f"{type(model).__name__} has no timm feature_info; Grad-CAM needs a timm CNN")
    return [f["module"] for f in info]


def _stage(model: nn.Module, stage: int | str) -> tuple[str, nn.Module]:
    names = stage_names(model)
    if isinstance(stage, str):
        if stage not in names:
            raise ModelError(f"stage {stage!r} is not one of this model's stages {names}")
        name = stage
    else:
        if not -len(names) <= stage < len(names):
            raise ModelError(f"stage={stage} is out of range for the {len(names)} stages {names}; "
                             "-1 is the last (deepest), -2 the one before")
        name = names[stage]
    return name, dict(model.named_modules())[name]


def _cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(n, h, w)`` Grad-CAM at ``layer``'s resolution for class indices ``target``."""
    import torch

    acts: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: acts.append(out))
    try:
        with torch.enable_grad():
            logits = model(x).float()
            score = logits.gather(1, target[:, None]).sum()
            (grad,) = torch.autograd.grad(score, acts[-1])
    finally:
        handle.remove()
    act = acts[-1].detach().float()
    weights = grad.float().mean(dim=(2, 3), keepdim=True)
    return torch.relu((weights * act).sum(dim=1))


def gradcam(
    classifier: Any,
    images: Any,
    labels: Sequence[Any] | None = None,
    *,
    stage: int | str = -1,
    batch_size: int | None = None,
) -> list[np.ndarray]:
    """One float32 heatmap in [0, 1] per image, at the image's size (``(h, w)``).

    Args:
        classifier: a fitted CNN classifier of :mod:`alldata.models.cnn` (``ResNet18``,
            ``MobileNetV3``, ``EfficientNetB0``, ``TimmClassifier``, or one from ``load_cnn``).
        images: uint8 RGB images (an ``(N, H, W, 3)`` array or a list; sizes may differ).
        labels: the class to explain per image (values of ``classifier.classes_``); default:
            the predicted class.
        stage: the timm feature stage, an index into :func:`stage_names` or its module name.
        batch_size: images per forward pass (default: the classifier's).

    Raises:
        ModelError: an unfitted classifier, a label it does not know, a bad stage.
    """
    import torch
    import torch.nn.functional as tf

    from alldata.models._torch import check_images

    model = classifier._fitted()
    originals = check_images(images, min_size=1)
    small = classifier._resized(originals)
    classes = list(classifier.classes_)
    if labels is not None:
        if len(labels) != len(originals):
            raise ModelError(f"{len(originals)} images but {len(labels)} labels to explain")
        unknown = sorted({str(v) for v in labels if v not in classes})
        if unknown:
            raise ModelError(f"labels {unknown} are not classes of this classifier ({classes}); "
                             "pass labels from classifier.classes_ or None for the predicted class")
        wanted = [classes.index(v) for v in labels]
    _, layer = _stage(model, stage)
    bs = int(batch_size or classifier.params["batch_size"])
    size = small.shape[1:3]
    out: list[np.ndarray] = []
    model.eval()
    for i in range(0, len(small), bs):
        x = classifier._to_tensor(small[i : i + bs])
        if labels is None:
            with torch.inference_mode():
                target = model(x).argmax(1)
            target = target.clone()
        else:
            target = torch.tensor(wanted[i : i + bs], device=x.device)
        cam = _cam(model, layer, x, target)
        cam = tf.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].cpu().numpy()
        for j, c in enumerate(cam):
            h, w = originals[i + j].shape[:2]
            if (h, w) != c.shape:
                c = tf.interpolate(torch.from_numpy(c)[None, None], size=(h, w), mode="bilinear",
                                   align_corners=False)[0, 0].numpy()
            c = np.maximum(c, 0)
            peak = float(c.max())
            out.append((c / peak if peak > 0 else c).astype(np.float32))
    return out
