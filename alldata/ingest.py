"""Ingest: stream a source's samples into a persistent FiftyOne dataset.

Idempotent and resumable: each sample is keyed ``<source>/<source_id>`` and carries a
fingerprint of its whole record, so a re-run adds nothing, changed files are replaced,
and an interrupted run picks up where it stopped (samples are written in batches).
Files that cannot be loaded are reported (file + reason) and skipped; nothing on disk is
ever changed, and nothing already in the dataset is deleted. The run's
:class:`~alldata.reports.IngestReport` is written to :func:`report_path`.

Speed: files are loaded (read, hashed, fully checked, validated, turned into database
documents) in a pool of worker processes, in order, a bounded window of chunks at a time
(memory stays flat); documents are written in bulk (:func:`alldata.store.insert_documents`).
A re-run skips, without reading it, a file whose source gives a cheap stamp
(:meth:`~alldata.sources.Source.quick_stamp`: size, mtime, inode, label folder) equal to
the stored one; ``recheck=True`` reads and checks every file again.

Scale-out: ``shard=(i, n)`` ingests only the files whose relative path hashes to ``i``
modulo ``n``, so ``n`` processes (on one or many machines, against one MongoDB named by
``FIFTYONE_DATABASE_URI``) share a source; a unique index on the key makes the database
refuse a second copy of a record whoever writes it.
"""

from __future__ import annotations

import gc
import hashlib
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from alldata.config import home
from alldata.curation import audit_duplicates, repeated_files
from alldata.errors import AlldataError, SourceNotFoundError
from alldata.reports import IngestProblem, IngestReport, save_report
from alldata.schema import F
from alldata.sources import SOURCES, Problem, Source, get_source
from alldata.store import STAMP_FIELD, ensure_key_index, insert_documents, open_dataset, to_document

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["IngestReport", "ingest", "ingest_all", "parse_shard", "report_path", "shard_of", "tag_duplicates"]


def report_path(dataset: str, source: str, shard: tuple[int, int] | None = None) -> Path:
    """Where the ingest report of ``source`` (or of one shard of it) into ``dataset`` is written."""
    suffix = f"-shard{shard[0]}of{shard[1]}" if shard else ""
    return home() / "datasets" / dataset / f"ingest-{source}{suffix}.json"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; :class:`ValueError` naming the fix otherwise."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"shard {text!r} is not of the form i/n (e.g. 0/4 ... 3/4)") from None
    if not 0 <= i < n:
        raise ValueError(f"shard {text!r}: need 0 <= i < n (for n={n}: 0/{n} ... {n - 1}/{n})")
    return i, n


def shard_of(relative_path: str, n: int) -> int:
    """The shard (0..n-1) of a file: a stable hash (sha1) of its path relative to the source root,
    so every machine and every run puts a file in the same shard."""
    return int.from_bytes(hashlib.sha1(relative_path.encode("utf-8")).digest()[:8], "big") % n


@dataclass(frozen=True)
class _Loaded:
    """One loaded file, ready to write: its key, record fingerprint, quick stamp and document."""

    key: str
    fingerprint: str
    doc: dict


#: The source a forked worker process loads from (set just before the pool forks).
_WORKER_SOURCE: Source | None = None


def _load_one(source: Source, path: str | Path) -> _Loaded | Problem:
    path = Path(path)
    try:
        quick = source.quick_stamp(path)  # before reading: a change while loading makes it stale, not fresh
        sample = source.load(path)
        fp = sample.fingerprint()
        doc = to_document(sample, fp)
        if quick is not None:
            doc[STAMP_FIELD] = quick[1]
        return _Loaded(sample.key, fp, doc)
    except AlldataError as e:
        return Problem(str(path), str(e))
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the ingest
        return Problem(str(path), f"{type(e).__name__}: {e}")


def _load_chunk(paths: list[str]) -> list[tuple[_Loaded | Problem, list[Problem]]]:
    """Worker side: load ``paths`` in order; each result carries the problems its load recorded."""
    src = _WORKER_SOURCE
    assert src is not None
    out = []
    for p in paths:
        n0 = len(src.problems)
        res = _load_one(src, p)
        out.append((res, src.problems[n0:]))
        del src.problems[n0:]
    return out


class _Loader(Iterator):
    """The loaded files in input order, loaded here, lazily; :meth:`close` is for :class:`_PoolLoader`."""

    def __init__(self, results: Iterator[_Loaded | Problem]) -> None:
        self._results = results

    def __next__(self) -> _Loaded | Problem:
        return next(self._results)

    def waiting(self) -> bool:
        """Whether the next file is still being loaded (the caller can write what it holds meanwhile)."""
        return False

    def close(self) -> None:
        pass


class _PoolLoader(_Loader):
    """The loaded files in input order from forked worker processes, a bounded window of chunks
    ahead; :meth:`close` stops the workers (also unstarted chunks)."""

    def __init__(self, source: Source, pool: ProcessPoolExecutor, window: deque[Future], chunks: Iterator[list[str]]) -> None:
        self._source, self._pool, self._window, self._chunks = source, pool, window, chunks
        self._ready: deque[tuple[_Loaded | Problem, list[Problem]]] = deque()

    def __next__(self) -> _Loaded | Problem:
        if not self._ready:
            if not self._window:
                self._pool.shutdown(wait=False)  # the workers exit while the caller writes; close() joins them
                raise StopIteration
            self._ready.extend(self._window.popleft().result())
            nxt = next(self._chunks, None)
            if nxt is not None:
                self._window.append(self._pool.submit(_load_chunk, nxt))
        res, problems = self._ready.popleft()
        self._source.problems.extend(problems)  # in input order
        return res

    def waiting(self) -> bool:
        return not self._ready and bool(self._window) and not self._window[0].done()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _load_all(source: Source, paths: list[str], workers: int) -> _Loader:
    """Load ``paths`` in input order, in ``workers`` processes, a bounded window of chunks at a time.

    The workers start at once (so loading overlaps the caller's database set-up) and are
    forked (Linux): they share the imported modules and the source object; problems a worker
    records are moved back into ``source.problems`` in order. With ``workers <= 1``, a handful
    of files, or no ``fork`` on this platform, files are loaded here, lazily.
    """
    global _WORKER_SOURCE

    if workers <= 1 or len(paths) < 2 * workers or "fork" not in multiprocessing.get_all_start_methods():
        return _Loader(_load_one(source, p) for p in paths)
    chunk = max(1, min(32, len(paths) // (8 * workers)))
    chunks = (paths[i : i + chunk] for i in range(0, len(paths), chunk))
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    _WORKER_SOURCE = source
    try:  # every worker is forked at the first submit
        window: deque[Future] = deque(pool.submit(_load_chunk, c) for _, c in zip(range(12 * workers), chunks))
    finally:
        _WORKER_SOURCE = None
    return _PoolLoader(source, pool, window, chunks)


def _relative(path: str | Path, base: Path) -> str:
    """``path`` relative to the source root, as posix text (the shard key)."""
    path = Path(path)
    try:
        return path.parent.resolve().joinpath(path.name).relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def ingest(
    source: Source | str,
    dataset: str,
    *,
    root: str | Path | None = None,
    batch_size: int = 256,
    workers: int = 2,
    max_samples: int | None = None,
    shard: tuple[int, int] | None = None,
    recheck: bool = False,
    decode: bool = True,
    progress: bool = True,
) -> IngestReport:
    """Ingest one source into the persistent dataset ``dataset`` (created if missing).

    Args:
        source: a :class:`Source` or a registered source name.
        dataset: FiftyOne dataset name.
        root: the source's folder when ``source`` is a name (default: under the data root).
        batch_size: samples per database write.
        workers: processes reading, hashing and checking files (1: all in this process).
        max_samples: load only the first N files (sorted), for trials.
        shard: ``(i, n)``: only the files of shard ``i`` of ``n`` (:func:`shard_of`), so ``n``
            processes can share one source; see the module docstring.
        recheck: read and check every file even when its quick stamp says it is unchanged.
        decode: decode every image (the default). False checks JPEG and PNG files by their
            structure only: truncated files are still refused, corrupt data inside an intact
            file is not (see :func:`alldata.imageio.check_structure`); the report says which.
        progress: show a progress bar.

    Returns:
        The :class:`IngestReport`, also written to :func:`report_path`.

    Raises:
        SourceNotFoundError: the source's files are not there (the message says how to get them).
    """
    src = get_source(source, root) if isinstance(source, str) else source
    src.decode = decode
    src.check()  # a missing source is said before FiftyOne is imported
    import fiftyone  # noqa: F401 - imported before the clock and the gc freeze (its ~250k objects are frozen too)

    with _frozen_gc():
        return _run(src, dataset, batch_size, workers, max_samples, shard, recheck, progress)


@contextmanager
def _frozen_gc() -> Iterator[None]:
    """Keep the objects that exist before the ingest (FiftyOne's modules: ~250k) out of the
    garbage collector's full passes while it runs, and out of the forked workers' copy-on-write
    (``gc.freeze`` before ``fork``, as the :mod:`gc` docs advise). A full pass over them costs
    ~0.13 s, and listing 100k files triggers dozens. Unfrozen at the end unless the caller had
    frozen objects itself (then ours stay frozen too: ``gc.unfreeze`` has no partial form)."""
    before = gc.get_freeze_count()
    gc.freeze()
    try:
        yield
    finally:
        if not before:
            gc.unfreeze()


def _run(src: Source, dataset: str, batch_size: int, workers: int, max_samples: int | None,
         shard: tuple[int, int] | None, recheck: bool, progress: bool) -> IngestReport:
    """:func:`ingest` once the source is checked and FiftyOne imported."""
    import fiftyone as fo

    t0 = time.perf_counter()
    listed = src.listing()
    src.forget_listing()
    paths: list = listed if max_samples is None else listed[:max_samples]
    del listed
    if shard is not None:
        base = src.root.resolve()
        paths = [p for p in paths if shard_of(_relative(p, base), shard[1]) == shard[0]]
    for i, p in enumerate(paths):  # as text, in place: ~3x less memory than Path objects at 100k files
        paths[i] = os.fspath(p)
    report = IngestReport(source=src.name, root=str(src.root), dataset=dataset, found=len(paths), decoded=src.decode)
    # a new dataset has nothing to compare with: start loading now, and set the dataset up meanwhile
    new = not fo.dataset_exists(dataset)
    example = _example(src, paths) if new else None  # before the workers fork: they inherit what it warmed up
    loader = _load_all(src, paths, workers) if new or recheck else None
    try:
        return _ingest(src, dataset, paths, loader, example, report, t0, batch_size, workers, max_samples, shard,
                       recheck, progress)
    finally:
        if loader is not None:
            loader.close()


def _example(src: Source, paths: list[str], tries: int = 8) -> dict | None:
    """The document of the first of ``paths`` that loads (tried here, the problems it records
    dropped: the workers load it again), so a new dataset's schema is declared with the
    source's extra fields at once, without waiting for the workers' first results."""
    for p in paths[:tries]:
        n0 = len(src.problems)
        res = _load_one(src, p)
        del src.problems[n0:]
        if isinstance(res, _Loaded):
            return res.doc
    return None


def _ingest(src: Source, dataset: str, paths: list[str], loader: _Loader | None, example: dict | None,
            report: IngestReport, t0: float, batch_size: int, workers: int, max_samples: int | None,
            shard: tuple[int, int] | None, recheck: bool, progress: bool) -> IngestReport:
    """The body of :func:`ingest` (``loader``: files already being loaded, for a new dataset;
    ``example``: one of its documents, whose extra fields the new schema declares)."""
    from tqdm import tqdm

    ds = open_dataset(dataset, example)
    ensure_key_index(ds)
    # key -> (record fingerprint, stamp), read straight from the sample collection (half the time of
    # FiftyOne's values(), which builds one array per field); no sample ids (converting 100k ObjectIds costs seconds)
    fields = {F.KEY: 1, F.RECORD_SHA256: 1, STAMP_FIELD: 1, "_id": 0}
    index = {d[F.KEY]: (d.get(F.RECORD_SHA256), d.get(STAMP_FIELD))
             for d in ds._sample_collection.find({F.SOURCE: src.name}, fields, batch_size=10_000) if F.KEY in d}
    seen: set[str] = set()
    batch: list[dict] = []
    stale: list[str] = []
    restamp: dict[str, str | None] = {}

    def flush() -> None:
        if stale:
            ds.delete_samples(ds.match({F.KEY: {"$in": list(stale)}}))
            stale.clear()
        if batch:
            where = {d[F.KEY]: d["filepath"] for d in batch}
            for key in insert_documents(ds, batch):  # validated by pydantic; refused: another writer has it
                src.warn(where[key], f"{key} was stored meanwhile by another ingest process; that copy was kept")
                report.added -= 1
                report.unchanged += 1
            batch.clear()

    bar = tqdm(total=len(paths), desc=f"ingest {src.name}", unit="img", disable=not progress)
    todo = paths
    if loader is None and index and not recheck:  # re-run: files whose quick stamp is unchanged are not read
        todo = []
        for p in paths:
            quick = src.quick_stamp(p)
            old = index.get(f"{src.name}/{quick[0]}") if quick is not None else None
            if old is not None and old[1] == quick[1] and f"{src.name}/{quick[0]}" not in seen:
                seen.add(f"{src.name}/{quick[0]}")
                report.unchanged += 1
                bar.update()
            else:
                todo.append(p)
    min_batch = max(1, batch_size // 8)
    inner = loader is None
    if inner:
        loader = _load_all(src, todo, workers)
    try:
        for item in loader:
            bar.update()
            if isinstance(item, Problem):
                src.problems.append(item)
                continue
            if item.key in seen:
                src.skip(item.doc["filepath"], f"source_id {item.doc[F.SOURCE_ID]!r} appears twice in {src.name}; "
                                               "second copy skipped")
                continue
            seen.add(item.key)
            old = index.get(item.key)
            if old is not None and old[0] == item.fingerprint:
                report.unchanged += 1
                if old[1] != item.doc.get(STAMP_FIELD):  # same record, new stamp (e.g. touched): remember it
                    restamp[item.key] = item.doc.get(STAMP_FIELD)
                continue
            if old is not None:
                stale.append(item.key)
                report.updated += 1
            else:
                report.added += 1
            batch.append(item.doc)
            # full, or a worthwhile part while the workers are still loading: the last write after them is short
            if len(batch) >= batch_size or len(batch) >= min_batch and loader.waiting():
                flush()
    finally:
        if inner:
            loader.close()
    flush()
    if restamp:
        ds.set_values(STAMP_FIELD, restamp, key_field=F.KEY)
    bar.close()
    report.not_on_disk = 0 if max_samples or shard else len(set(index) - seen)
    groups = repeated_files(ds)  # one grouping by the database for both
    tag_duplicates(ds, groups)
    src.problems += audit_duplicates(ds, report, seen, groups)  # this run's duplicates; label conflicts tagged + reported
    report.problems = [IngestProblem(path=p.path, reason=p.reason, severity=p.severity)
                       for p in sorted(src.problems, key=lambda p: (p.severity, p.path))]
    report.seconds = time.perf_counter() - t0
    _write_report(ds, report, shard)
    return report


def ingest_all(dataset: str, **kwargs) -> tuple[list[IngestReport], dict[str, str]]:
    """Ingest every registered source found under the data root.

    Returns the reports and, for each source not found, why (its check() message's first line).
    """
    reports, missing = [], {}
    for name in SOURCES.names():
        if name == "folder":  # needs an explicit PATH
            continue
        try:  # ingest() checks the source first, before touching the database (one listing, not two)
            reports.append(ingest(get_source(name), dataset, **kwargs))
        except SourceNotFoundError as e:
            missing[name] = str(e).splitlines()[0]
    return reports, missing


def tag_duplicates(ds: fo.Dataset, groups: dict[str, list[tuple[str, str]]] | None = None) -> int:
    """Tag every sample whose file bytes (sha256) equal another's, within and across sources.

    All members of a group get the ``duplicate`` tag; all but the first (by key) get
    ``duplicate_of`` = the first one's key. Nothing is dropped. Returns the number tagged.
    The database groups the files (:func:`~alldata.curation.repeated_files`), so memory
    grows with the duplicates, not with the dataset. ``groups``: that function's answer, if
    the caller already has it.
    """
    dup_of: dict[str, str | None] = {}
    for members in (repeated_files(ds) if groups is None else groups).values():
        members.sort()
        first = members[0][0]
        for k, i in members:
            dup_of[i] = None if k == first else first
    if dup_of:
        ds.select(list(dup_of)).tag_samples(F.TAG_DUPLICATE)
        ds.set_values(F.DUPLICATE_OF, dup_of, key_field="id")
    # untag only what this snapshot saw tagged: a concurrent ingest's newer tags are left alone
    stale = [i for i in ds.match_tags(F.TAG_DUPLICATE).values("id") if i not in dup_of]
    if stale:
        view = ds.select(stale)
        view.untag_samples(F.TAG_DUPLICATE)
        view.set_field(F.DUPLICATE_OF, None).save()
    return len(dup_of)


def _write_report(ds: fo.Dataset, report: IngestReport, shard: tuple[int, int] | None = None) -> None:
    """The report file (the contract), and a summary of it in ``ds.info["ingest"][source]``
    (``"<source> shard i/n"`` for a shard).

    The summary is set with one atomic ``$set`` on the dataset's document, so processes
    ingesting other sources or shards at the same time keep theirs; then only ``info`` is
    re-read (no full reload of the dataset: a re-run of 1,000 unchanged files spent half its
    time there). Uses ``ds._doc`` (FiftyOne's dataset document, a MongoEngine document).
    """
    report.finished = datetime.now(timezone.utc).replace(microsecond=0)
    path = save_report(report, report_path(ds.name, report.source, shard))
    summary = {**report.model_dump(mode="json", exclude={"problems"}), "skipped": len(report.skipped),
               "warnings": len(report.warnings), "report": str(path)}
    entry = report.source + (f" shard {shard[0]}/{shard[1]}" if shard else "")
    doc = ds._doc
    type(doc)._get_collection().update_one({"_id": doc.pk}, {"$set": {f"info.ingest.{entry}": summary}})
    doc.reload("info")
