"""Where a CNN looked: Grad-CAM heatmaps on a dataset's predictions, and a saved view of its mistakes.

:func:`write_gradcam` explains, for every sample of a dataset or view that has a prediction in
``pred_field``, the predicted label with :func:`alldata.models.gradcam.gradcam`, writes each heatmap
as an 8-bit PNG (0-255 = heat 0-1, at the image's size) and stores ``fo.Heatmap(map_path=...,
range=[0, 255])`` in ``gradcam_<pred_field>``, which the App overlays on the image. It then saves the
view :data:`MISTAKES_VIEW` ("mistakes with heatmaps"): the samples whose prediction disagrees with
the truth field (:func:`alldata.views.truth_of` finds it) and that have a heatmap. The name does not
start with ``alldata-``, so ``alldata views`` leaves it alone; a second call replaces it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alldata.errors import AlldataError

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["FIELD_PREFIX", "MISTAKES_VIEW", "ExplainError", "GradcamReport", "save_mistakes_view", "write_gradcam"]

#: Heatmap fields are named ``FIELD_PREFIX + pred_field``.
FIELD_PREFIX = "gradcam_"
#: The saved view of wrong predictions that have a heatmap.
MISTAKES_VIEW = "mistakes with heatmaps"


class ExplainError(AlldataError, ValueError):
    """Nothing to explain, a prediction the model cannot explain, or no truth to compare with."""


@dataclass
class GradcamReport:
    """What :func:`write_gradcam` wrote."""

    field: str
    written: int
    output_dir: str
    view: str | None  # the saved mistakes view, None when no truth field is known
    mistakes: int  # samples in it
    note: str = ""


def _read_rgb(path: str) -> Any:
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ExplainError(f"{path}: cannot read the image ({e}); fix or remove the sample") from None


def save_mistakes_view(
    dataset: fo.Dataset | fo.DatasetView,
    pred_field: str,
    heatmap_field: str | None = None,
    *,
    truth: str | None = None,
    name: str = MISTAKES_VIEW,
) -> int:
    """Save ``name`` on the dataset: samples whose ``pred_field`` label differs from the truth and
    that have a ``heatmap_field``; returns its size.

    ``truth`` is the truth field; default: the one :func:`alldata.views.truth_of` finds (the
    predictions' ``truth_field`` attribute, or ``pred_<truth>...`` naming).
    """
    from fiftyone import ViewField as FF

    from alldata.views import truth_of

    ds = dataset._root_dataset if hasattr(dataset, "_root_dataset") else dataset
    heatmap_field = heatmap_field or FIELD_PREFIX + pred_field
    truths = [truth] if truth else truth_of(ds, pred_field)
    if not truths:
        raise ExplainError(f"{pred_field}: no truth field known to compare it with; pass truth='FIELD' (e.g. "
                           "'cell_type') or give the predictions a 'truth_field' attribute")
    missing = [t for t in truths if not ds.has_field(t)]
    if missing:
        raise ExplainError(f"truth field(s) {missing} of {pred_field} are not in {ds.name!r}; "
                           f"fields: {sorted(ds.get_field_schema())}")
    label = FF(f"{pred_field}.label")
    cond = None
    for t in truths:  # one truth field, or per sample the field its prediction names
        one = (FF(f"{t}.label") != None) & (label != FF(f"{t}.label"))
        if len(truths) > 1:
            one = one & (FF(f"{pred_field}.truth_field") == t)
        cond = one if cond is None else cond | one
    view = ds.exists(pred_field).exists(heatmap_field).match(cond)
    ds.save_view(name, view, description=f"{pred_field} disagrees with {' / '.join(truths)}; "
                 f"Grad-CAM in {heatmap_field}", color="#D32F2F", overwrite=True)
    return len(view)


def write_gradcam(
    dataset_or_view: fo.Dataset | fo.DatasetView,
    model: Any,
    *,
    pred_field: str,
    field: str | None = None,
    output_dir: str | Path | None = None,
    truth: str | None = None,
    stage: int | str = -1,
    batch_size: int = 32,
    progress: bool = True,
) -> GradcamReport:
    """Grad-CAM heatmaps of ``model`` for the samples that have a ``pred_field`` prediction.

    Args:
        dataset_or_view: where to look; only samples with ``pred_field`` set are explained.
        model: a fitted CNN classifier (:mod:`alldata.models.cnn`) or the directory it was saved to.
        pred_field: the ``fo.Classification`` predictions to explain (their label is the class).
        field: the heatmap field (default ``gradcam_<pred_field>``).
        output_dir: where the heatmap PNGs go (default ``<alldata home>/heatmaps/<dataset>/<field>``).
        truth: the truth field for the mistakes view (default: :func:`alldata.views.truth_of`).
        stage: the network stage (see :func:`alldata.models.gradcam.gradcam`; -1 the last).
        batch_size: images read and explained at a time.

    Raises:
        ExplainError: no sample has ``pred_field``, or a predicted label the model does not know.
    """
    import fiftyone as fo
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from alldata.config import home
    from alldata.models.cnn import load_cnn
    from alldata.models.gradcam import gradcam

    if isinstance(model, str | Path):
        model = load_cnn(model, progress=False)
    ds = dataset_or_view._root_dataset if hasattr(dataset_or_view, "_root_dataset") else dataset_or_view
    field = field or FIELD_PREFIX + pred_field
    view = dataset_or_view.exists(pred_field)
    if not len(view):
        raise ExplainError(f"no sample of {ds.name!r} (or of the view given) has a {pred_field!r} prediction; "
                           f"Classification fields: {sorted(_classification_fields(ds))}")
    ids, paths, labels = view.values(["id", "filepath", f"{pred_field}.label"])
    classes = [str(c) for c in model.classes_]
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise ExplainError(f"{pred_field} holds labels {unknown} that the model does not predict (its classes: "
                           f"{classes}); explain predictions made by this model")
    out_dir = Path(output_dir) if output_dir else home() / "heatmaps" / ds.name / field
    out_dir.mkdir(parents=True, exist_ok=True)
    by_class = {str(c): c for c in model.classes_}
    heatmaps: dict[str, fo.Heatmap] = {}
    for i in tqdm(range(0, len(ids), batch_size), desc=f"grad-cam {pred_field}", disable=not progress):
        images = [_read_rgb(p) for p in paths[i : i + batch_size]]
        maps = gradcam(model, images, [by_class[v] for v in labels[i : i + batch_size]], stage=stage)
        for sid, heat in zip(ids[i : i + batch_size], maps):
            path = out_dir / f"{sid}.png"
            Image.fromarray(np.rint(heat * 255).astype(np.uint8)).save(path)
            heatmaps[sid] = fo.Heatmap(map_path=str(path), range=[0, 255])
    view.set_values(field, heatmaps, key_field="id")
    name, mistakes, note = None, 0, ""
    try:
        mistakes = save_mistakes_view(ds, pred_field, field, truth=truth)
        name = MISTAKES_VIEW
    except ExplainError as e:
        if truth:
            raise
        note = f"view {MISTAKES_VIEW!r} not saved: {e}"
    return GradcamReport(field=field, written=len(heatmaps), output_dir=str(out_dir), view=name,
                         mistakes=mistakes, note=note)


def _classification_fields(ds: fo.Dataset) -> list[str]:
    import fiftyone as fo

    return [n for n, f in ds.get_field_schema().items()
            if isinstance(f, fo.EmbeddedDocumentField) and f.document_type is fo.Classification]
