"""Embeddings alldata computes itself, and the FiftyOne Brain runs built on them.

:func:`embed_dataset` gives every sample a centred, unit-length ``embedding`` from the small
CNN of :mod:`alldata.encoder` (trained on the dataset's real cells, kept in
``<alldata home>/datasets/NAME/encoder``; ``features="handcrafted"`` uses the 37 features of
:func:`alldata.models.extract_features`), then runs the Brain on it: a 2-D visualisation
(:data:`VIS_KEY`: PCA, t-SNE or UMAP), a similarity index (:data:`SIM_KEY`, cosine), an App
workspace (:data:`WORKSPACE`) and near duplicates: samples within ``dup_threshold`` (cosine
distance; default :data:`DUP_RATIO` x the median nearest-neighbour distance) of a kept
sample are tagged ``near_duplicate``. Nothing is downloaded. A smear is embedded from its
whole image resized, so smears cluster together rather than by content.

Design notes (the relative threshold, centring, the encoder): docs/curation.md#embeddings.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from alldata.config import home
from alldata.curation import curated
from alldata.errors import AlldataError
from alldata.schema import F

if TYPE_CHECKING:
    import fiftyone as fo

    from alldata.features import FeatureExtractor

__all__ = [
    "DUP_RATIO",
    "EMBEDDING_FIELD",
    "FEATURES",
    "METHODS",
    "NEAR_DUPLICATE_DISTANCE",
    "NEAR_DUPLICATE_OF",
    "SIM_KEY",
    "TAG_NEAR_DUPLICATE",
    "VIS_KEY",
    "WORKSPACE",
    "EmbedError",
    "EmbedReport",
    "default_encoder_dir",
    "embed_dataset",
    "load_images",
]

EMBEDDING_FIELD = "embedding"
VIS_KEY = "alldata_viz"
#: Saved App workspace: the sample grid beside the Embeddings panel, coloured by ``is_synthetic``.
WORKSPACE = "alldata-embeddings"
SIM_KEY = "alldata_sim"
TAG_NEAR_DUPLICATE = "near_duplicate"
NEAR_DUPLICATE_OF = "near_duplicate_of"
NEAR_DUPLICATE_DISTANCE = "near_duplicate_distance"
#: Visualisation methods (``umap`` needs ``pip install umap-learn``).
METHODS = ("pca", "tsne", "umap")
#: Feature kinds: the trained CNN, or hand-crafted colour/shape/texture features.
FEATURES = ("cnn", "handcrafted")
#: Default near-duplicate threshold, as a fraction of the median nearest-neighbour distance.
DUP_RATIO = 0.05


class EmbedError(AlldataError, ValueError):
    """Bad embedding arguments, or a dataset with nothing to embed."""


@dataclass
class EmbedReport:
    """What :func:`embed_dataset` did."""

    dataset: str
    n_embedded: int
    features: str  # "cnn" or "handcrafted"
    encoder: dict[str, Any] | None  # the CNN's description (path, sha256, classes, ...)
    method: str
    brain_keys: dict[str, str]
    workspace: str
    near_duplicates: int
    dup_threshold: float
    failures: dict[str, str] = field(default_factory=dict)  # filepath -> reason
    notes: list[str] = field(default_factory=list)


def default_encoder_dir(dataset: str) -> Path:
    """``<alldata home>/datasets/<dataset>/encoder`` (shared with ``alldata score --train-encoder``)."""
    return home() / "datasets" / dataset / "encoder"


def _as_square(path: str, kind: str | None, size: int) -> np.ndarray:
    from PIL import Image

    from alldata.generators.data import square_resize

    with Image.open(path) as img:
        if kind == "smear":  # the whole field of view, aspect not kept
            return np.asarray(img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC), np.uint8)
        return square_resize(img, size)


def load_images(
    paths: list[str], kinds: list[str | None], size: int, failures: dict[str, str] | None = None
) -> tuple[np.ndarray, list[int]]:
    """Read ``paths`` as ``(N, size, size, 3)`` uint8: cells centre-squared, smears resized whole.

    Unreadable files are left out and recorded in ``failures`` (path -> reason); returns
    the images and the indices of the paths that were read.
    """
    from PIL import UnidentifiedImageError

    images, ok = [], []
    for i, (p, k) in enumerate(zip(paths, kinds)):
        try:
            images.append(_as_square(p, k, size))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            if failures is None:
                raise EmbedError(f"cannot read image {p}: {e}") from None
            failures[p] = f"{type(e).__name__}: {e}"
            continue
        ok.append(i)
    return (np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)), ok


def _batches(view: Any, size: int, batch: int, failures: dict[str, str], progress: bool) -> Iterator[tuple[list[str], np.ndarray]]:
    from tqdm import tqdm

    ids, paths, kinds = view.values(["id", "filepath", F.IMAGE_KIND])
    with tqdm(total=len(ids), desc="embed", disable=not progress, unit="img") as bar:
        for i in range(0, len(ids), batch):
            imgs, ok = load_images(paths[i : i + batch], kinds[i : i + batch], size, failures)
            if ok:
                yield [ids[i + j] for j in ok], imgs
            bar.update(len(paths[i : i + batch]))


def _unit(x: np.ndarray) -> np.ndarray:
    """Centred, then each row scaled to length 1."""
    x = x - x.mean(0)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.where(n > 0, n, 1.0)).astype(np.float32)


def _cnn_encoder(ds: Any, encoder_dir: str | Path | None, retrain: bool, epochs: int, image_size: int, seed: int,
                 device: str | None, progress: bool) -> Any:
    from alldata.encoder import CONFIG_NAME, load_encoder, train_encoder_on_view

    if encoder_dir is not None:
        return load_encoder(encoder_dir, device=device)
    out = default_encoder_dir(ds.name)
    if (out / CONFIG_NAME).is_file() and not retrain:
        return load_encoder(out, device=device)
    from fiftyone import ViewField as FF
    from PIL import UnidentifiedImageError

    real = curated(ds.match({F.IS_SYNTHETIC: {"$ne": True}}))
    labelled = real.match((FF(F.CELL_TYPE) != None) | (FF(F.DIAGNOSIS) != None))
    try:
        return train_encoder_on_view(labelled, out, image_size=image_size, epochs=epochs, seed=seed, device=device,
                                     progress=progress)
    except (OSError, UnidentifiedImageError) as e:
        raise EmbedError(
            f"training the encoder on the real cells of {ds.name!r} failed reading an image: {e}; "
            "fix or re-ingest that file, tag its sample 'reject', or pass --encoder DIR"
        ) from None


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.where(np.isfinite(x), x, np.nan)
    mean = np.nanmean(x, 0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    x = np.where(np.isnan(x), mean, x)
    std = x.std(0)
    return (x - mean) / np.where(std > 0, std, 1.0)


def _median_nn_distance(x: np.ndarray) -> float:
    """Median cosine distance of each (unit) row to its nearest other row, exact copies (0) left out."""
    from sklearn.neighbors import NearestNeighbors

    if len(x) < 2:
        return 0.0
    d, _ = NearestNeighbors(n_neighbors=2, metric="cosine").fit(x).kneighbors(x)
    positive = d[:, 1][d[:, 1] > 1e-9]
    return float(np.median(positive)) if len(positive) else 0.0


def _delete_run(ds: Any, key: str) -> None:
    if key in ds.list_brain_runs():
        ds.delete_brain_run(key)


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise EmbedError(f"method {method!r} is not one of {METHODS}; use pca (fast), tsne or umap")
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise EmbedError("method 'umap' needs umap-learn, which is not installed; pip install umap-learn, or use tsne/pca")


def _save_workspace(ds: Any) -> None:
    """The App workspace :data:`WORKSPACE` (open it with ``/datasets/NAME?workspace=alldata-embeddings``)."""
    import fiftyone as fo

    panel = fo.Panel(type="Embeddings", state={"brainResult": VIS_KEY, "colorByField": F.IS_SYNTHETIC})
    space = fo.Space(children=[fo.Panel(type="Samples", pinned=True), panel], orientation="horizontal")
    ds.save_workspace(WORKSPACE, space, description="sample grid and the embeddings (alldata embed)", overwrite=True)


def _near_duplicates(ds: Any, view: Any, index: Any, threshold: float) -> int:
    """Tag ``near_duplicate`` from the similarity index (stale tags and fields cleared first)."""
    import fiftyone as fo

    stale = ds.match_tags(TAG_NEAR_DUPLICATE)
    stale.untag_samples(TAG_NEAR_DUPLICATE)
    for name, ftype in ((NEAR_DUPLICATE_OF, fo.StringField), (NEAR_DUPLICATE_DISTANCE, fo.FloatField)):
        if not ds.has_field(name):
            ds.add_sample_field(name, ftype)
    ds.exists(NEAR_DUPLICATE_OF).set_field(NEAR_DUPLICATE_OF, None).set_field(NEAR_DUPLICATE_DISTANCE, None).save()
    index.find_duplicates(thresh=threshold)
    ids, keys, shas = view.values(["id", F.KEY, F.SHA256])
    key_of, sha_of = dict(zip(ids, keys)), dict(zip(ids, shas))
    of, dist = {}, {}
    for kept, dups in index.neighbors_map.items():
        for dup, d in dups:
            if sha_of.get(dup) and sha_of.get(dup) == sha_of.get(kept):
                continue  # byte-identical: already tagged `duplicate` by ingest
            of[dup], dist[dup] = key_of[kept], float(d)
    if of:
        ds.set_values(NEAR_DUPLICATE_OF, of, key_field="id")
        ds.set_values(NEAR_DUPLICATE_DISTANCE, dist, key_field="id")
        ds.select(list(of)).tag_samples(TAG_NEAR_DUPLICATE)
    return len(of)


def embed_dataset(
    dataset: str | fo.Dataset,
    *,
    features: str = "cnn",
    encoder_dir: str | Path | None = None,
    retrain: bool = False,
    epochs: int = 5,
    image_size: int = 64,
    method: str = "pca",
    dup_threshold: float | None = None,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = None,
    progress: bool = False,
) -> EmbedReport:
    """Embed every sample of ``dataset`` and (re)compute the Brain runs on the embeddings.

    Idempotent: the ``embedding`` field, the brain runs :data:`VIS_KEY` / :data:`SIM_KEY`
    and the ``near_duplicate`` tags are replaced on each run. Samples whose image cannot
    be read are reported in ``failures`` and left without an embedding.

    Args:
        dataset: a dataset or its name.
        features: ``"cnn"`` (the trained encoder) or ``"handcrafted"``.
        encoder_dir: a saved encoder to use (``features="cnn"``); default: the dataset's
            encoder folder, trained there first if missing (or when ``retrain``).
        epochs, image_size, seed, device: of the encoder training.
        method: the 2-D visualisation, one of :data:`METHODS`.
        dup_threshold: cosine distance under which a sample is a near duplicate; default
            :data:`DUP_RATIO` x the median distance of a sample to its nearest other one.
        batch_size: images read and encoded at a time.

    Raises:
        EmbedError: bad arguments, or no image of the dataset could be read.
        EncoderError: an unusable ``encoder_dir``.

    Examples:
        >>> r = embed_dataset("alldata", method="tsne")  # doctest: +SKIP
        >>> r.brain_keys  # doctest: +SKIP
        {'visualization': 'alldata_viz', 'similarity': 'alldata_sim'}
    """
    import fiftyone as fo
    import fiftyone.brain as fob

    from alldata.encoder import EncoderError
    from alldata.store import load_dataset

    if features not in FEATURES:
        raise EmbedError(f"features {features!r} is not one of {FEATURES}; use cnn (trained encoder) or handcrafted")
    _check_method(method)
    if dup_threshold is not None and not 0 <= dup_threshold <= 2:
        raise EmbedError(f"dup_threshold {dup_threshold} is not a cosine distance in [0, 2]; e.g. 0.001, or leave it "
                         f"out for {DUP_RATIO} x the median nearest-neighbour distance")
    ds = load_dataset(dataset) if isinstance(dataset, str) else dataset
    if not len(ds):
        raise EmbedError(f"dataset {ds.name!r} is empty; ingest or generate samples first")
    notes: list[str] = []
    encoder = None
    if features == "cnn":
        try:
            encoder = _cnn_encoder(ds, encoder_dir, retrain, epochs, image_size, seed, device, progress)
        except EncoderError as e:
            if encoder_dir is not None:
                raise
            notes.append(f"no CNN encoder could be trained ({e}); used hand-crafted features instead")
            features = "handcrafted"
    size = encoder.image_size if encoder is not None else image_size
    from alldata.models.features import HandcraftedFeatures

    encode: FeatureExtractor = encoder if encoder is not None else HandcraftedFeatures()

    failures: dict[str, str] = {}
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    for batch_ids, images in _batches(ds, size, batch_size, failures, progress):
        ids += batch_ids
        chunks.append(np.asarray(encode(images), np.float64))
    if not ids:
        raise EmbedError(f"no image of dataset {ds.name!r} could be read; first failures: {dict(list(failures.items())[:3])}")
    x = np.concatenate(chunks)
    x = _unit(_standardise(x) if features == "handcrafted" else x)

    if not ds.has_field(EMBEDDING_FIELD):
        ds.add_sample_field(EMBEDDING_FIELD, fo.VectorField)
    ds.exists(EMBEDDING_FIELD).set_field(EMBEDDING_FIELD, None).save()
    ds.set_values(EMBEDDING_FIELD, dict(zip(ids, x)), key_field="id")
    view = ds.exists(EMBEDDING_FIELD)

    for key in (VIS_KEY, SIM_KEY):
        _delete_run(ds, key)
    kw: dict[str, Any] = {"seed": seed}
    if method == "tsne":  # sklearn needs perplexity < n_samples, and PCA to at most min(n, d) dims first
        kw.update(perplexity=float(min(30, max(2, (len(ids) - 1) // 3))), pca_dims=min(50, *x.shape), verbose=False)
    fob.compute_visualization(view, embeddings=EMBEDDING_FIELD, method=method, brain_key=VIS_KEY, num_dims=2,
                              progress=progress, **kw)
    index = fob.compute_similarity(view, embeddings=EMBEDDING_FIELD, backend="sklearn", metric="cosine",
                                   brain_key=SIM_KEY, progress=progress)
    if dup_threshold is None:
        dup_threshold = DUP_RATIO * _median_nn_distance(x)
    n_dups = _near_duplicates(ds, view, index, dup_threshold)
    _save_workspace(ds)

    report = EmbedReport(
        dataset=ds.name, n_embedded=len(ids), features=features,
        encoder=encoder.describe() if encoder is not None else None, method=method,
        brain_keys={"visualization": VIS_KEY, "similarity": SIM_KEY}, workspace=WORKSPACE, near_duplicates=n_dups,
        dup_threshold=dup_threshold, failures=failures, notes=notes,
    )
    info = dict(ds.info)
    info["embeddings"] = {k: v for k, v in report.__dict__.items() if k not in ("failures", "dataset")}
    info["embeddings"]["failures"] = len(failures)
    ds.info = info
    ds.save()
    return report
