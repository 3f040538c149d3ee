"""Generator jobs: train on the store's real cells, fine-tune, sample, and write provenance.

Each stage asks :data:`~alldata.generators.GENERATORS` for the family's class (no per-family
code here): :func:`train_generator` (real cells of chosen sources and split ->
``cls.train``), :func:`finetune_generator` (few-shot, a new class), :func:`generate_to_dataset`
(seeded batches -> PNGs -> samples tagged ``synthetic`` whose provenance, ``recipe``
included, is written once at creation; batch ``k`` uses seed ``seed + k``, so an interrupted
run resumes without duplicates; PNGs and records are written by a writer thread while the
next batch samples, see :func:`pipeline`; ``devices=N`` samples the batches in N worker
processes, one per GPU or CPU share, :func:`sample_batches`, with the same output; a checkpoint
whose last score failed is warned about, :func:`score_warning`). :func:`run_generator_job` chains them for one recipe arm
(the benchmark), reusing a finished generator when its settings and training set match.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import queue
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from alldata import __version__
from alldata.errors import AlldataError
from alldata.schema import CellType, Diagnosis, F, Provenance, Subtype

if TYPE_CHECKING:
    from alldata.generators.base import Generator
    from alldata.generators.data import CellSet

__all__ = [
    "FailedScoreWarning",
    "GeneratePlan",
    "JobResult",
    "finetune_generator",
    "generate_to_dataset",
    "pipeline",
    "plan_generation",
    "run_generator_job",
    "sample_batches",
    "score_warning",
    "train_generator",
    "trainable_family",
    "training_view",
    "write_pngs",
]

T = TypeVar("T")


_ENUMS = {F.CELL_TYPE: CellType, F.DIAGNOSIS: Diagnosis, F.SUBTYPE: Subtype}


def training_view(dataset: str, *, sources: Sequence[str] | None = None, split: str | None = "train", where: dict[str, str] | None = None):
    """Real cell samples of ``dataset`` for training: optional sources, split and label filters.

    ``split="train"`` (the default) keeps validation and test groups out of generator
    training, so synthetic data can never carry a test image into a benchmark.
    """
    from alldata.store import load_dataset

    ds = load_dataset(dataset)
    view = ds.match({F.IMAGE_KIND: "cell", F.IS_SYNTHETIC: {"$ne": True}})
    if sources:
        view = view.match({F.SOURCE: {"$in": list(sources)}})
    if split:
        if split not in {"train", "val", "test"}:
            raise AlldataError(f"split {split!r} is not train, val or test (or pass none for all samples)")
        view = view.match({F.SPLIT: split})
    for k, v in (where or {}).items():
        view = view.match({f"{k}.label": {"$in": v.split("|")}})
    if len(view) == 0:
        raise AlldataError(
            f"no real cell samples in {dataset!r} for sources={list(sources or [])} split={split} where={where}; "
            "ingest a cell source and run `alldata split` first"
        )
    return view


def trainable_family(family: str) -> type[Generator]:
    """The class of trainable generator family ``family``.

    Raises:
        AlldataError: ``family`` is not a registered trainable family (the message lists them).
    """
    from alldata.generators.base import GENERATORS, trainable_families

    names = trainable_families()
    if family not in names:
        close = difflib.get_close_matches(family, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise AlldataError(f"generator family {family!r} cannot be trained here; choose one of {names}.{hint}")
    return GENERATORS.get(family)


def train_generator(
    family: str,
    dataset: str,
    out_dir: str | Path,
    *,
    image_size: int = 64,
    sources: Sequence[str] | None = None,
    split: str | None = "train",
    where: dict[str, str] | None = None,
    label_fields: Sequence[str] = (F.CELL_TYPE,),
    max_samples: int | None = None,
    preset: str = "cpu",
    **train_kwargs: Any,
) -> Generator:
    """Train generator ``family`` on the real cells selected by the arguments; returns it.

    ``preset`` picks a model size from the family's ``PRESETS``; ``train_kwargs`` go to its
    ``train`` (steps, batch_size, seed, ...) and override the preset's config keys.
    """
    from alldata.generators.data import load_cells

    cls = trainable_family(family)
    sizes = cls.preset(preset)
    view = training_view(dataset, sources=sources, split=split, where=where)
    cells = load_cells(view, image_size, label_fields=label_fields, max_samples=max_samples)
    return cls.train(cells, out_dir, **{**sizes, **train_kwargs})


def finetune_generator(
    checkpoint: str | Path,
    dataset: str,
    out_dir: str | Path,
    *,
    add: dict[str, str],
    where: dict[str, str],
    sources: Sequence[str] | None = None,
    split: str | None = "train",
    steps: int = 200,
    **finetune_kwargs: Any,
) -> Generator:
    """Few-shot: grow a trained generator's vocabulary by ``add`` and fine-tune it on the few
    real cells selected by ``where`` (e.g. a handful of FAB L3 blasts); saved to ``out_dir``.

    This is how a rare class the base model never saw (``subtype=L3``) becomes sampleable:
    the new condition row starts at the mean of the known ones and is fitted on the examples.
    """
    from alldata.generators.base import Generator
    from alldata.generators.data import load_cells

    if not add or not where:
        raise AlldataError("give the new condition value(s) to add (e.g. subtype=L3) and a --where filter selecting their examples")
    gen = Generator.from_pretrained(checkpoint)
    for field_, value in add.items():
        gen.add_condition_value(field_, value)
    view = training_view(dataset, sources=sources, split=split, where=where)
    cells = load_cells(view, int(gen.config["image_size"]), label_fields=list(gen.config["conditions"]))
    return gen.finetune(cells, out_dir, steps=steps, base_dir=checkpoint, **finetune_kwargs)


def _slug(condition: dict[str, Any]) -> str:
    return ",".join(f"{k}={condition[k]}" for k in sorted(condition)) or "unconditional"


@dataclass
class GeneratePlan:
    """What ``generate`` will make: batches (seed, size) and which are already stored."""

    checkpoint_sha256: str
    family: str
    condition: dict[str, Any]
    batches: list[tuple[int, int]]  # (seed, size)
    done: set[int] = field(default_factory=set)  # batch indices already in the dataset

    @property
    def to_make(self) -> int:
        return sum(n for i, (_, n) in enumerate(self.batches) if i not in self.done)

    def source_id(self, batch: int, index: int) -> str:
        cond = hashlib.sha256(_slug(self.condition).encode()).hexdigest()[:8]
        return f"{self.checkpoint_sha256[:12]}-{cond}-s{self.batches[batch][0]}-{index:04d}"


def plan_generation(checkpoint: str | Path, condition: dict[str, Any], num_samples: int, dataset: str, *, seed: int = 0, batch_size: int = 64) -> GeneratePlan:
    """Work out batches and which of them a previous (possibly interrupted) run already stored."""
    from alldata.generators.base import CONFIG_NAME, checkpoint_sha256
    from alldata.synthetic import existing_keys, synthetic_source

    if num_samples <= 0 or batch_size <= 0:
        raise AlldataError(f"num_samples={num_samples} and batch_size={batch_size} must be positive")
    sha = checkpoint_sha256(checkpoint)
    family = json.loads((Path(checkpoint) / CONFIG_NAME).read_text()).get("family", "?")
    sizes = [min(batch_size, num_samples - i) for i in range(0, num_samples, batch_size)]
    plan = GeneratePlan(sha, family, condition, [(seed + k, n) for k, n in enumerate(sizes)])
    have = existing_keys(dataset, synthetic_source(family))
    src = synthetic_source(family)
    plan.done = {k for k, (_, n) in enumerate(plan.batches) if all(f"{src}/{plan.source_id(k, i)}" in have for i in range(n))}
    return plan


class FailedScoreWarning(UserWarning):
    """Sampling a checkpoint whose last ``alldata score`` failed (or cannot be read)."""


def score_warning(checkpoint: str | Path) -> str | None:
    """Why samples of ``checkpoint`` may not look like real cells, or None.

    A message when the checkpoint's last ``alldata score --checkpoint`` report
    (:func:`alldata.score.last_score`) failed, naming the failed gates, or when its
    ``score.json`` cannot be read; None when it passed or was never scored.
    """
    from alldata.score import last_score

    try:
        r = last_score(checkpoint)
    except AlldataError as e:
        return str(e)
    if r is None or r.passed:
        return None
    gates = ", ".join(f"{g.name} ({g.value:.3g}, threshold {g.threshold:.3g})" for g in r.failed())
    return (f"checkpoint {checkpoint} failed its last score ({r.created}): {gates or 'no gate named'}; "
            f"its samples may not look like real cells (report: {r.report_path or Path(checkpoint) / 'score.json'})")


_DONE = object()


def pipeline(items: Iterable[T], consume: Callable[[T], None], *, depth: int = 2) -> None:
    """``consume(item)`` for each of ``items``, in order, in one writer thread, while the
    caller's thread makes the next item (``depth`` items wait at most; 0: no thread).

    The producer (here: sampling on the GPU) and the consumer (PNG encoding and file and
    database writes, which release the GIL) overlap; the order of the writes is the order
    of ``items``. An error in ``consume`` stops the production and is raised here; an error
    in the producer lets the writer finish the items already queued, then propagates.
    """
    if depth <= 0:
        for item in items:
            consume(item)
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    failed: list[BaseException] = []

    def work() -> None:
        while (item := q.get()) is not _DONE:
            if not failed:  # after an error, drain so the producer never blocks
                try:
                    consume(item)
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
                    failed.append(e)

    writer = threading.Thread(target=work, name="alldata-writer", daemon=True)
    writer.start()
    try:
        for item in items:
            q.put(item)
            if failed:
                break
    finally:
        q.put(_DONE)
        writer.join()
    if failed:
        raise failed[0]


#: the generator a sampling worker process loaded (:func:`_init_worker`)
_WORKER: dict[str, Any] = {}


def _init_worker(checkpoint: str, slots: Any) -> None:
    """In a worker process: take one ``(device, threads)`` slot, set torch's threads, load the checkpoint."""
    import torch

    from alldata.generators.base import Generator

    device, threads = slots.get()
    torch.set_num_threads(threads)
    _WORKER["gen"] = Generator.from_pretrained(checkpoint, device=device)


def _sample_in_worker(n: int, condition: dict[str, Any], seed: int, kwargs: dict[str, Any]) -> Any:
    return _WORKER["gen"].sample(n, condition, seed, **kwargs)


def _worker_context(checkpoint: str | Path) -> Any:
    """A multiprocessing context for sampling workers: a fork server that has imported torch
    and the checkpoint's family module once (each worker then forks from it, with no CUDA
    and no thread pool started), or ``spawn`` where there is no fork server (Windows)."""
    import multiprocessing

    from alldata.generators.base import CONFIG_NAME, GENERATORS

    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    family = json.loads((Path(checkpoint) / CONFIG_NAME).read_text()).get("family", "")
    target = GENERATORS.target(family) if family in GENERATORS else None
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "alldata.generate", *([target.split(":")[0]] if target else [])])
    return ctx


def sample_batches(
    checkpoint: str | Path,
    condition: dict[str, Any],
    batches: Sequence[tuple[int, int, int]],
    *,
    devices: int = 1,
    device: str | None = None,
    gen: Generator | None = None,
    **sample_kwargs: Any,
) -> Iterator[tuple[int, int, Any]]:
    """``(k, seed, images)`` for each ``(k, seed, n)`` of ``batches``, in that order.

    ``devices=1`` samples in this process (with ``gen`` when given, else the checkpoint
    loaded on ``device``). ``devices=N`` starts N worker processes (:func:`_worker_context`), one per
    device of :func:`alldata.devices.worker_devices` (``cuda:0`` .. ``cuda:N-1``, or the
    CPU with ``cores // N`` torch threads each); each loads the checkpoint once and takes the
    next batch when it is free, at most ``2 N`` batches ahead of the caller. A batch's images
    depend only on its seed (each image's noise comes from ``(seed, index)``), so the output
    is the same whatever N, up to the kernels of the devices (on one CPU thread count,
    byte-identical). A worker's error is raised here; stopping early cancels what is queued.
    Under ``accelerate launch`` / ``torchrun`` the launched processes share the batches
    instead (:func:`_launched_batches`) and only the main process yields.
    """
    from alldata.generators._accel import distributed

    if distributed():
        if devices > 1:
            raise AlldataError(f"devices={devices} under accelerate launch/torchrun: the launched processes are the "
                               "devices; leave --devices at 1")
        yield from _launched_batches(checkpoint, condition, batches, **sample_kwargs)
        return
    if devices <= 1:
        if gen is None:
            from alldata.generators.base import Generator

            gen = Generator.from_pretrained(checkpoint, device=device)
        for k, batch_seed, n in batches:
            yield k, batch_seed, gen.sample(n, condition, batch_seed, **sample_kwargs)
        return
    from concurrent.futures import ProcessPoolExecutor

    from alldata.devices import worker_devices

    ctx = _worker_context(checkpoint)
    slots = ctx.Queue()
    for slot in worker_devices(devices, device):
        slots.put(slot)
    pool = ProcessPoolExecutor(max_workers=devices, mp_context=ctx, initializer=_init_worker,
                               initargs=(str(checkpoint), slots))
    ahead: deque = deque()
    try:
        for k, batch_seed, n in batches:
            ahead.append((k, batch_seed, pool.submit(_sample_in_worker, n, condition, batch_seed, sample_kwargs)))
            if len(ahead) >= 2 * devices:
                k0, s0, fut = ahead.popleft()
                yield k0, s0, fut.result()
        while ahead:
            k0, s0, fut = ahead.popleft()
            yield k0, s0, fut.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _launched_batches(checkpoint: str | Path, condition: dict[str, Any], batches: Sequence[tuple[int, int, int]],
                      **sample_kwargs: Any) -> Iterator[tuple[int, int, Any]]:
    """:func:`sample_batches` in a process of ``accelerate launch`` (or ``torchrun``): the main
    process's batch list is taken by all; in each round of P batches, process p samples the
    p-th on its own device; the main process gathers the round and yields it in order
    (the others yield nothing, so only the main process writes)."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, gather_object

    from alldata.generators.base import Generator

    state = PartialState(cpu=not torch.cuda.is_available())
    todo = broadcast_object_list([list(batches)], from_process=0)[0]
    gen = Generator.from_pretrained(checkpoint, device=str(state.device))
    p, rank = state.num_processes, state.process_index
    for r in range(0, len(todo), p):
        mine = [(k, s, gen.sample(n, condition, s, **sample_kwargs)) for k, s, n in todo[r + rank : r + rank + 1]]
        got = gather_object(mine)  # every process's list, in rank order: the batches' order
        if state.is_main_process:
            yield from got


def write_pngs(images: Sequence[Any], paths: Sequence[Path]) -> None:
    """Save uint8 ``(H, W, 3)`` ``images`` as PNG files at ``paths``."""
    from PIL import Image

    for img, path in zip(images, paths):
        Image.fromarray(img).save(path)


def generate_to_dataset(
    checkpoint: str | Path,
    condition: dict[str, Any],
    num_samples: int,
    dataset: str,
    out_dir: str | Path,
    *,
    seed: int = 0,
    batch_size: int = 64,
    progress: bool = True,
    recipe: str | None = None,
    writer_depth: int = 2,
    devices: int = 1,
    device: str | None = None,
    **sample_kwargs: Any,
) -> tuple[GeneratePlan, int]:
    """Sample ``num_samples`` images for ``condition`` and add them to ``dataset`` with provenance.

    Returns the plan and the number of samples added. ``recipe`` (the benchmark recipe the
    samples are made for) goes into the provenance; ``sample_kwargs`` go to the generator's
    ``sample`` (e.g. ``sampler="dpm++"``, ``num_inference_steps=20``). Batches are sampled
    in this thread while a writer thread (:func:`pipeline`, ``writer_depth`` batches
    queued; 0 writes in this thread) encodes the PNGs and adds the samples, batch by batch
    in order: the files and records are the same either way. ``devices=N`` samples the
    batches in N worker processes on ``device`` (:func:`sample_batches`: GPUs when there
    are, else CPU shares); this process still writes every file and record, once. Warns
    (:class:`FailedScoreWarning`) when the checkpoint's last score failed.
    """
    from tqdm import tqdm

    from alldata.generators.base import Generator
    from alldata.synthetic import add_synthetic, make_synthetic_sample

    if devices != 1:
        from alldata.devices import worker_devices

        worker_devices(devices, device)  # a bad count (or device) fails here, before any work
    plan = plan_generation(checkpoint, condition, num_samples, dataset, seed=seed, batch_size=batch_size)
    if (msg := score_warning(checkpoint)) is not None:
        warnings.warn(msg, FailedScoreWarning, stacklevel=2)
    gen = Generator.from_pretrained(checkpoint, device="cpu" if devices > 1 else device)  # workers load their own
    gen.check_condition(condition)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = {k: _ENUMS[k](v) for k, v in condition.items() if k in _ENUMS}
    added = [0]
    bar = tqdm(total=plan.to_make, desc=f"generate {plan.family}", unit="img", disable=not progress)

    todo = [(k, batch_seed, n) for k, (batch_seed, n) in enumerate(plan.batches) if k not in plan.done]
    batches = sample_batches(checkpoint, condition, todo, devices=devices, device=device,
                             gen=gen if devices <= 1 else None, **sample_kwargs)

    def write(batch: tuple[int, int, Any]) -> None:
        k, batch_seed, images = batch
        sids = [plan.source_id(k, i) for i in range(len(images))]
        paths = [out / f"{sid}.png" for sid in sids]
        write_pngs(images, paths)
        samples = []
        for i, (sid, path) in enumerate(zip(sids, paths)):
            prov = Provenance(
                generator=plan.family,
                checkpoint_sha256=plan.checkpoint_sha256,
                seed=batch_seed,
                condition=dict(condition, batch_index=i),
                sampler=sample_kwargs.get("sampler"),
                num_inference_steps=sample_kwargs.get("num_inference_steps"),
                recipe=recipe,
                alldata_version=__version__,
            )
            samples.append(make_synthetic_sample(path, family=plan.family, source_id=sid, provenance=prov, **labels))
        added[0] += add_synthetic(dataset, samples)
        bar.update(len(images))

    try:
        pipeline(batches, write, depth=writer_depth)
    finally:
        batches.close()  # stops the workers when the writer failed
        bar.close()
    return plan, added[0]


@dataclass
class JobResult:
    """What :func:`run_generator_job` made: the checkpoint and the samples' keys per request."""

    family: str
    checkpoint: Path
    checkpoint_sha256: str
    train_seconds: float
    generate_seconds: float
    image_size: int
    keys: list[list[str]]  # per request, the dataset keys of its samples


#: The finished job's record in ``work_dir`` (its name predates the job function).
JOB_FILE = "generator.json"


def run_generator_job(
    family: str,
    params: dict[str, Any],
    dataset: str,
    work_dir: str | Path,
    *,
    train_cells: Callable[[int], CellSet],
    requests: Sequence[tuple[dict[str, Any], int]],
    finetune_cells: Callable[[int], CellSet] | None = None,
    image_size: int = 64,
    seed: int = 0,
    recipe: str | None = None,
    cache_key: str = "",
    progress: bool = False,
    devices: int = 1,
) -> JobResult:
    """Train (or reuse) -> fine-tune -> sample -> write, for one recipe arm of ``family``.

    Args:
        family: a trainable generator family.
        params: the arm's settings (the family's ``ARM_PARAMS``: preset, steps, ...).
        dataset: where the samples go.
        work_dir: holds ``generator/``, ``finetuned/``, ``images/`` and ``generator.json``;
            a finished generator there is reused when ``cache_key`` matches, else retrained.
        train_cells: ``image_size -> CellSet`` of the training cells (called only to train).
        requests: ``(condition, num_samples)`` pairs to sample.
        finetune_cells: ``image_size -> CellSet`` of the few-shot cells, or None (no fine-tune).
        image_size: the size used when ``params`` sets none.
        seed: training, fine-tuning and sampling seed.
        recipe: recorded in every sample's provenance.
        cache_key: what identifies the training data and settings (e.g. a hash of them).
        progress: show progress bars.
        devices: sample in this many worker processes (GPUs, else CPU shares; same output).
    """
    from alldata.generators.base import Generator, checkpoint_sha256
    from alldata.synthetic import synthetic_source

    cls = trainable_family(family)
    settings = cls.arm_settings(params, image_size)
    train_kw, finetune_kw, sample_kw = cls.arm_kwargs(settings)
    size, steps, batch, ft_steps = (int(settings[k]) for k in ("image_size", "steps", "batch_size", "finetune_steps"))
    work = Path(work_dir)
    done = work / JOB_FILE
    t0 = time.time()
    meta = json.loads(done.read_text()) if done.is_file() else None
    if meta is not None and meta.get("spec_sha256", cache_key) != cache_key:
        import shutil

        for stale in ("generator", "finetuned"):
            shutil.rmtree(work / stale, ignore_errors=True)
        meta = None
    if meta is None:
        base = work / "generator"
        cells = train_cells(size)
        gen = cls.train(cells, base, steps=steps, batch_size=batch, seed=seed, sample_every=0,
                        save_every=max(50, steps // 4), progress=progress, **cls.preset(settings["preset"]), **train_kw)
        ckpt, n_few = base, 0
        if ft_steps > 0 and finetune_cells is not None:
            few = finetune_cells(size)
            ckpt, n_few = work / "finetuned", len(few)
            gen.finetune(few, ckpt, steps=ft_steps, base_dir=base, batch_size=min(batch, max(2, len(few))), seed=seed,
                         sample_every=0, save_every=ft_steps, progress=progress, **finetune_kw)
        meta = {"checkpoint": str(ckpt), "sha256": checkpoint_sha256(ckpt), "train_seconds": round(time.time() - t0, 1),
                "n_train_cells": len(cells), "n_finetune_cells": n_few, "steps": steps, "finetune_steps": ft_steps,
                "image_size": size, "spec_sha256": cache_key}
        work.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(meta, indent=1))
    Generator.from_pretrained(meta["checkpoint"])  # fails loudly on a broken cache
    t1 = time.time()
    keys: list[list[str]] = []
    for condition, n in requests:
        if n <= 0:
            keys.append([])
            continue
        plan, _ = generate_to_dataset(meta["checkpoint"], condition, n, dataset, work / "images", seed=seed,
                                      batch_size=64, progress=False, recipe=recipe, devices=devices, **sample_kw)
        src = synthetic_source(plan.family)
        keys.append([f"{src}/{plan.source_id(k, i)}" for k, (_, m) in enumerate(plan.batches) for i in range(m)])
    return JobResult(family, Path(meta["checkpoint"]), meta["sha256"], meta["train_seconds"],
                     round(time.time() - t1, 1), size, keys)
