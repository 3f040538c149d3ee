"""The segmentation task: a segmenter trained on real masks, with or without overlap composites.

Arms (:func:`alldata.recipes.arm_kinds` ``("segmentation")``): ``real`` (the fold's real
training cells with an expert mask; ``extra_real_tiles: N`` repeats them, an equal-steps
control) and ``overlap`` (``real`` plus composites of the fold's training cells pasted onto
the fold's training smears, cached per (arm, fold, seed); no test pixel reaches training).
Every image is resampled so that a red cell is :data:`RBC_PX` pixels across; smears are
segmented by overlapping tiles. Evaluation: smears with WBC instance masks (ALL-IDB1) give
pixel Dice / IoU, instance F1 at IoU 0.5, AJI and ``touching_recall``; smears with boxes
only (BCCD) give ``box_f1``. Metrics are pooled from per-image counts, so
:meth:`SegmentationTask.score` gives dataset-level figures for any subset of rows.

Arm parameters, scale and evaluation in detail: docs/benchmark.md#segmentation-task.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from alldata.benchmark.tasks import TASKS, CellContext, CellResult
from alldata.errors import AlldataError
from alldata.metrics.segmentation import boxes_from_instances, count_boxes, count_instances, pooled_scores
from alldata.recipes import Recipe, arm_kinds
from alldata.schema import F

__all__ = ["RBC_PX", "SegmentationTask", "predict_proba_tiled"]

#: The common scale: a red cell's diameter in pixels after resampling.
RBC_PX = 16.0
#: Cell labels scored (red cells and platelets are background for every segmenter here).
_WBC = "wbc"


class SegmentationError(AlldataError, ValueError):
    """A segmentation benchmark that cannot run (no training masks, unknown scale)."""


def _source_rbc(source: str) -> float:
    from alldata.generators.overlap import RBC_PX as SOURCE_RBC

    if source not in SOURCE_RBC:
        raise SegmentationError(
            f"no red-cell diameter known for source {source!r}; known: {sorted(SOURCE_RBC)} "
            "(alldata.generators.overlap.RBC_PX)"
        )
    return SOURCE_RBC[source]


def _read(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize(a: np.ndarray, scale: float, nearest: bool) -> np.ndarray:
    """``a`` (image, mask or instance map) resampled by ``scale``."""
    from PIL import Image

    h, w = a.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    if nearest:
        if a.dtype == np.int32 or a.dtype == np.int64:
            return np.asarray(Image.fromarray(a.astype(np.int32), mode="I").resize(size, Image.NEAREST)).astype(np.int32)
        return np.asarray(Image.fromarray(a).resize(size, Image.NEAREST))
    return np.asarray(Image.fromarray(a).resize(size, Image.BILINEAR))


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad ``a`` so both sides are at least ``size``."""
    h, w = a.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return a
    pad = [(ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad, mode="reflect" if min(h, w) > 1 else "edge")


def _starts(n: int, tile: int, stride: int) -> list[int]:
    if n <= tile:
        return [0]
    s = list(range(0, n - tile, stride))
    return [*s, n - tile]


def _tiles(image: np.ndarray, mask: np.ndarray, inst: np.ndarray, tile: int) -> list[tuple]:
    """Training tiles of one example: padded to ``tile``, then the corner tiles (all of it when small)."""
    image, mask, inst = _pad_to(image, tile), _pad_to(mask, tile), _pad_to(inst, tile)
    h, w = mask.shape
    out = []
    for y in sorted({0, h - tile}):
        for x in sorted({0, w - tile}):
            out.append((image[y : y + tile, x : x + tile], mask[y : y + tile, x : x + tile], inst[y : y + tile, x : x + tile]))
    return out


def predict_proba_tiled(model: Any, image: np.ndarray, tile: int, overlap: float = 0.33) -> np.ndarray:
    """Class probabilities ``(H, W, C)`` of a large ``image`` from overlapping ``tile`` windows.

    Each window goes through ``model.predict_proba`` (which sees exactly its training size),
    weighted by a smooth window so seams do not show.
    """
    img = _pad_to(image, tile)
    h, w = img.shape[:2]
    stride = max(1, int(tile * (1 - overlap)))
    ramp = np.hanning(tile + 2)[1:-1]
    win = np.outer(ramp, ramp).astype(np.float32) + 1e-3
    acc = None
    weight = np.zeros((h, w), np.float32)
    for y in _starts(h, tile, stride):
        for x in _starts(w, tile, stride):
            p = model.predict_proba(img[y : y + tile, x : x + tile])
            if acc is None:
                acc = np.zeros((h, w, p.shape[-1]), np.float32)
            acc[y : y + tile, x : x + tile] += p * win[..., None]
            weight[y : y + tile, x : x + tile] += win
    probs = acc / weight[..., None]
    ph, pw = h - image.shape[0], w - image.shape[1]
    return probs[ph // 2 : ph // 2 + image.shape[0], pw // 2 : pw // 2 + image.shape[1]]


def _instance_map(detections: list[Any], width: int, height: int) -> np.ndarray:
    """Full-size ``int32`` map of the WBC detections' masks (1..N in order)."""
    out = np.zeros((height, width), np.int32)
    k = 0
    for d in detections:
        if d.label != _WBC or d.mask is None:
            continue
        k += 1
        x, y, _, _ = d.bounding_box
        x0, y0 = round(x * width), round(y * height)
        m = np.asarray(d.mask).astype(bool)
        mh, mw = min(m.shape[0], height - y0), min(m.shape[1], width - x0)
        region = out[y0 : y0 + mh, x0 : x0 + mw]
        region[m[:mh, :mw] & (region == 0)] = k
    return out


class SegmentationTask:
    """The ``segmentation`` benchmark task (see the module docstring)."""

    name = "segmentation"
    arm_kinds = arm_kinds("segmentation")

    # --- data -------------------------------------------------------------------------------------
    def _records(self, dataset: str, ids: list[str]) -> list[dict[str, Any]]:
        from alldata.store import load_dataset

        if not ids:
            return []
        view = load_dataset(dataset).select(ids, ordered=True)
        fields = ["id", F.SOURCE, "filepath", F.GROUP_ID, F.WIDTH, F.HEIGHT]
        cols = view.values(fields)
        seg = view.values(f"{F.SEGMENTATION}.mask") if view.has_field(F.SEGMENTATION) else [None] * len(ids)
        cells = view.values(f"{F.CELLS}.detections") if view.has_field(F.CELLS) else [None] * len(ids)
        return [
            dict(zip(fields, vals), seg=s, cells=c or [])
            for vals, s, c in zip(zip(*cols), seg, cells)
        ]

    def _real_examples(self, ctx: CellContext) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The fold's training cells with an expert nucleus/cytoplasm mask, at the common scale."""
        from scipy import ndimage

        out = []
        for r in self._records(ctx.dataset, ctx.train_ids):
            if r["seg"] is None:
                continue
            img, mask = _read(r["filepath"]), np.asarray(r["seg"]).astype(np.uint8)
            if mask.shape != img.shape[:2]:
                continue
            inst = ndimage.label(mask > 0)[0].astype(np.int32)  # each separate cell its own instance
            s = RBC_PX / _source_rbc(r[F.SOURCE])
            out.append((_resize(img, s, False), _resize(mask, s, True), _resize(inst, s, True)))
        return out

    def _composites(self, ctx: CellContext, params: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``num_composites`` overlap composites from the fold's training side (cached)."""
        from alldata.compose import composer_from_dataset

        n = int(params.get("num_composites", 200))
        cache = (ctx.shared_dir or ctx.work_dir) / f"composites-{n}.npz"
        if cache.is_file():
            with np.load(cache) as z:
                k = int(z["n"])
                return [(z[f"image{i}"], z[f"mask{i}"], z[f"inst{i}"]) for i in range(k)]
        from alldata.store import load_dataset

        ds = load_dataset(ctx.dataset)
        view_name = f"_bench-{ctx.recipe.name}-fold{ctx.cell.fold}-seed{ctx.cell.seed}"
        ds.save_view(view_name, ds.select(ctx.train_ids), overwrite=True)
        try:
            kwargs: dict[str, Any] = {
                "donors_view": view_name,
                "backgrounds_view": view_name,
                "donor_sources": params.get("donor_sources"),
                "background_sources": params.get("background_sources"),
            }
            if params.get("synthetic_donors"):
                kwargs["synthetic_donors"] = params["synthetic_donors"]
            config = {k: params[k] for k in ("overlap_range", "cells_per_image", "output_size", "stain_jitter") if k in params}
            composer = composer_from_dataset(ctx.dataset, **kwargs, **config)
            made = composer.compose(n, seed=ctx.cell.seed)
        finally:
            ds.delete_saved_view(view_name)
        out = []
        for c in made:
            size = c.image.shape[0]
            inst = np.zeros((size, size), np.int32)
            for k, ins in enumerate(c.instances, start=1):
                x, y, _, _ = ins.bbox
                x0, y0 = round(x * size), round(y * size)
                m = np.asarray(ins.mask, bool)
                mh, mw = min(m.shape[0], size - y0), min(m.shape[1], size - x0)
                inst[y0 : y0 + mh, x0 : x0 + mw][m[:mh, :mw]] = k
            s = RBC_PX / (composer.config["rbc_diameter"] * size)
            out.append((_resize(c.image, s, False), _resize(c.semantic, s, True), _resize(inst, s, True)))
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"n": np.array(len(out))}
        for i, (a, b, d) in enumerate(out):
            arrays.update({f"image{i}": a, f"mask{i}": b, f"inst{i}": d})
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(cache)
        return out

    # --- one cell ---------------------------------------------------------------------------------
    def run(self, ctx: CellContext) -> CellResult:
        from alldata.models import get_segmenter

        t0 = time.time()
        recipe: Recipe = ctx.recipe
        tile = recipe.data.image_size
        arm = recipe.arm(ctx.cell.arm)
        spec = next(m for m in recipe.models if m.name == ctx.cell.model)
        real = self._real_examples(ctx)
        if not real:
            raise SegmentationError(
                f"fold {ctx.cell.fold}: no training cell with a nucleus/cytoplasm mask among {len(ctx.train_ids)} "
                f"samples of {recipe.data.sources}; the segmentation task trains on ALL-IDB2's masks "
                "(alldata ingest all_idb2)"
            )
        synthetic = self._composites(ctx, arm.params) if arm.kind == "overlap" else []
        images, masks, insts = [], [], []
        for img, mask, inst in real + synthetic:
            for a, b, c in _tiles(img, mask, inst, tile):
                images.append(a)
                masks.append(b)
                insts.append(c)
        extra = int(arm.params.get("extra_real_tiles", 0))
        if extra:  # an equal-steps control: repeats of real tiles (augmented differently in fit)
            n_real = len(images) - sum(len(_tiles(*x, tile)) for x in synthetic)
            pick = np.random.default_rng(ctx.cell.seed).integers(0, n_real, extra)
            images += [images[i] for i in pick]
            masks += [masks[i] for i in pick]
            insts += [insts[i] for i in pick]
        params = {"image_size": tile, "seed": ctx.cell.seed, "progress": ctx.progress, **spec.params}
        model = get_segmenter(spec.name, **params)
        if hasattr(model, "fit"):
            model.fit(images, masks, insts)
        rows = [self._evaluate(model, r, tile) for r in self._records(ctx.dataset, ctx.test_ids)]
        info = {"n_train": len(real) + len(synthetic), "n_real": len(real), "n_synthetic": len(synthetic),
                "n_tiles": len(images),
                "n_scored": sum("tp" in r or "box_tp" in r for r in rows), "seconds": round(time.time() - t0, 2)}
        return CellResult(rows=rows, metrics=self.score(rows), info=info)

    def _predict_instances(self, model: Any, image: np.ndarray, tile: int) -> np.ndarray:
        if hasattr(model, "predict_proba"):
            from alldata.models.unet import instances_from_proba

            return instances_from_proba(predict_proba_tiled(model, image, tile), model.params["min_area"])
        return model.instances(image)

    def _evaluate(self, model: Any, r: dict[str, Any], tile: int) -> dict[str, Any]:
        """One evaluation row: the predicted cells, and the counts to score them when the
        sample has WBC annotations (an unannotated smear's row only carries predictions)."""
        wbc = [d for d in r["cells"] if d.label == _WBC]
        s = RBC_PX / _source_rbc(r[F.SOURCE])
        image = _resize(_read(r["filepath"]), s, False)
        pred = self._predict_instances(model, image, tile)
        row: dict[str, Any] = {"id": r["id"], "group": r[F.GROUP_ID], "source": r[F.SOURCE],
                               "n_pred": int(pred.max())}
        h, w = image.shape[:2]
        pred_boxes = boxes_from_instances(pred)
        row["pred_boxes"] = [[x0 / w, y0 / h, (x1 - x0) / w, (y1 - y0) / h] for x0, y0, x1, y1 in pred_boxes]
        if not wbc:
            return row
        if all(d.mask is not None for d in wbc):
            true = _resize(_instance_map(wbc, int(r[F.WIDTH]), int(r[F.HEIGHT])), s, True)
            true = true[: pred.shape[0], : pred.shape[1]]
            row.update(count_instances(true, pred, iou_threshold=0.5))
        else:
            true_boxes = []
            for d in wbc:
                x, y, bw, bh = d.bounding_box
                true_boxes.append((x * w, y * h, (x + bw) * w, (y + bh) * h))
            row.update(count_boxes(true_boxes, pred_boxes, iou_threshold=0.5))
        return row

    # --- metrics ----------------------------------------------------------------------------------
    def score(self, rows: list[dict]) -> dict[str, float]:
        """Pooled Dice, IoU, instance F1, AJI, touching-cell recall (mask rows) and box F1 (box rows)."""
        return pooled_scores(rows)

    def write_predictions(self, dataset: str, field: str, rows: list[dict]) -> None:
        """Write the predicted white cells as ``fo.Detections`` (label ``wbc``, attribute
        ``truth_field="cells"``) to ``field`` of the rows' samples (the field is cleared first)."""
        import fiftyone as fo

        from alldata.store import load_dataset

        ds = load_dataset(dataset)
        if ds.has_sample_field(field):
            ds.clear_sample_field(field)
        values = {
            r["id"]: fo.Detections(detections=[fo.Detection(label=_WBC, bounding_box=b, truth_field=F.CELLS)
                                               for b in r.get("pred_boxes", [])])
            for r in rows
        }
        if values:
            ds.set_values(field, values, key_field="id")

    def plots(self, rows_by_arm: dict[str, list[dict]], out_dir: Path, model: str, focus: str | None) -> list[Path]:
        """A bar chart of the pooled metrics per arm."""
        from alldata.benchmark.plots import figure as _figure
        from alldata.benchmark.plots import save_figure as _save

        scores = {arm: self.score(rows) for arm, rows in rows_by_arm.items() if rows}
        if not scores:
            return []
        names = sorted({k for s in scores.values() for k, v in s.items() if not math.isnan(v)})
        fig = _figure((1.2 + 1.1 * len(names), 3.6))
        ax = fig.subplots()
        width = 0.8 / len(scores)
        for k, (arm, s) in enumerate(scores.items()):
            ax.bar([i + k * width for i in range(len(names))], [s.get(n, math.nan) for n in names], width, label=arm)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=20)
        ax.set_ylim(0, 1)
        ax.set_title(f"segmentation, pooled over folds ({model})")
        ax.legend()
        return [_save(fig, out_dir / f"segmentation_{model}.png")]


TASKS.register("segmentation")(SegmentationTask)
