"""Ingest: stream a source's samples into a persistent FiftyOne dataset.

Idempotent and resumable: each sample is keyed ``<source>/<source_id>`` and carries a
fingerprint of its whole record, so a re-run adds nothing, changed files are replaced,
and an interrupted run picks up where it stopped (samples are written in batches).
Files that cannot be loaded are reported (file + reason) and skipped; nothing on disk is
ever changed, and nothing already in the dataset is deleted. The run's
:class:`~alldata.reports.IngestReport` is written to :func:`report_path`.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from alldata.config import home
from alldata.errors import AlldataError, SourceNotFoundError
from alldata.reports import IngestProblem, IngestReport, save_report
from alldata.schema import F, Sample
from alldata.sources import SOURCES, Problem, Source, get_source
from alldata.store import open_dataset, to_fiftyone

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["IngestReport", "ingest", "ingest_all", "report_path", "tag_duplicates"]


def report_path(dataset: str, source: str) -> Path:
    """Where the ingest report of ``source`` into ``dataset`` is written."""
    return home() / "datasets" / dataset / f"ingest-{source}.json"


def _load_all(source: Source, paths: list[Path], workers: int) -> Iterator[Sample | Problem]:
    """Load ``paths`` in order with a bounded thread window (memory stays flat)."""

    def one(p: Path) -> Sample | Problem:
        try:
            return source.load(p)
        except AlldataError as e:
            return Problem(str(p), str(e))
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the ingest
            return Problem(str(p), f"{type(e).__name__}: {e}")

    if workers <= 1:
        yield from map(one, paths)
        return
    with ThreadPoolExecutor(workers) as pool:
        window: deque[Future] = deque()
        it = iter(paths)
        for p in it:
            window.append(pool.submit(one, p))
            if len(window) >= 4 * workers:
                break
        for p in it:
            yield window.popleft().result()
            window.append(pool.submit(one, p))
        while window:
            yield window.popleft().result()


def ingest(
    source: Source | str,
    dataset: str,
    *,
    root: str | Path | None = None,
    batch_size: int = 64,
    workers: int = 2,
    max_samples: int | None = None,
    progress: bool = True,
) -> IngestReport:
    """Ingest one source into the persistent dataset ``dataset`` (created if missing).

    Args:
        source: a :class:`Source` or a registered source name.
        dataset: FiftyOne dataset name.
        root: the source's folder when ``source`` is a name (default: under the data root).
        batch_size: samples per database write.
        workers: threads decoding and hashing images.
        max_samples: load only the first N files (sorted), for trials.
        progress: show a progress bar.

    Returns:
        The :class:`IngestReport`, also written to :func:`report_path`.

    Raises:
        SourceNotFoundError: the source's files are not there (the message says how to get them).
    """
    from tqdm import tqdm

    src = get_source(source, root) if isinstance(source, str) else source
    src.check()
    t0 = time.perf_counter()
    paths = src.items()[:max_samples]
    report = IngestReport(source=src.name, root=str(src.root), dataset=dataset, found=len(paths))
    ds = open_dataset(dataset)
    view = ds.match({F.SOURCE: src.name})
    ids, keys, fps = view.values(["id", F.KEY, F.RECORD_SHA256])
    index = {k: (i, fp) for i, k, fp in zip(ids, keys, fps)}
    seen: set[str] = set()
    batch: list[fo.Sample] = []
    stale: list[str] = []

    def flush() -> None:
        if stale:
            ds.delete_samples(list(stale))
            stale.clear()
        if batch:
            ds.add_samples(batch, progress=False, validate=False)  # validated by pydantic
            batch.clear()

    bar = tqdm(total=len(paths), desc=f"ingest {src.name}", unit="img", disable=not progress)
    for item in _load_all(src, paths, workers):
        bar.update()
        if isinstance(item, Problem):
            src.problems.append(item)
            continue
        if item.key in seen:
            src.skip(item.filepath, f"source_id {item.source_id!r} appears twice in {src.name}; second copy skipped")
            continue
        seen.add(item.key)
        fp = item.fingerprint()
        old = index.get(item.key)
        if old is not None and old[1] == fp:
            report.unchanged += 1
            continue
        if old is not None:
            stale.append(old[0])
            report.updated += 1
        else:
            report.added += 1
        batch.append(to_fiftyone(item, fp))
        if len(batch) >= batch_size:
            flush()
    flush()
    bar.close()
    report.not_on_disk = 0 if max_samples else len(set(index) - seen)
    tag_duplicates(ds)
    report.duplicates_tagged = len(ds.match({F.SOURCE: src.name}).match_tags(F.TAG_DUPLICATE))
    report.problems = [IngestProblem(path=p.path, reason=p.reason, severity=p.severity)
                       for p in sorted(src.problems, key=lambda p: (p.severity, p.path))]
    report.seconds = time.perf_counter() - t0
    _write_report(ds, report)
    return report


def ingest_all(dataset: str, **kwargs) -> tuple[list[IngestReport], dict[str, str]]:
    """Ingest every registered source found under the data root.

    Returns the reports and, for each source not found, why (its check() message's first line).
    """
    reports, missing = [], {}
    for name in SOURCES.names():
        if name == "folder":  # needs an explicit PATH
            continue
        src = get_source(name)
        try:
            src.check()
        except SourceNotFoundError as e:
            missing[name] = str(e).splitlines()[0]
            continue
        reports.append(ingest(src, dataset, **kwargs))
    return reports, missing


def tag_duplicates(ds: fo.Dataset) -> int:
    """Tag every sample whose file bytes (sha256) equal another's, within and across sources.

    All members of a group get the ``duplicate`` tag; all but the first (by key) get
    ``duplicate_of`` = the first one's key. Nothing is dropped. Returns the number tagged.
    """
    ids, keys, shas = ds.values(["id", F.KEY, F.SHA256])
    groups: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for i, k, h in zip(ids, keys, shas):
        if h:
            groups[h].append((k, i))
    dup_of: dict[str, str | None] = {}
    for members in groups.values():
        if len(members) > 1:
            members.sort()
            first = members[0][0]
            for k, i in members:
                dup_of[i] = None if k == first else first
    view = ds.select(list(dup_of))
    if dup_of:
        view.tag_samples(F.TAG_DUPLICATE)
        ds.set_values(F.DUPLICATE_OF, dup_of, key_field="id")
    stale = ds.match_tags(F.TAG_DUPLICATE).exclude(list(dup_of))
    if len(stale):
        stale.untag_samples(F.TAG_DUPLICATE)
        stale.set_field(F.DUPLICATE_OF, None).save()
    return len(dup_of)


def _write_report(ds: fo.Dataset, report: IngestReport) -> None:
    """The report file (the contract), and a summary of it in ``ds.info["ingest"][source]``."""
    report.finished = datetime.now(timezone.utc).replace(microsecond=0)
    path = save_report(report, report_path(ds.name, report.source))
    info = dict(ds.info)
    info.setdefault("ingest", {})[report.source] = {
        **report.model_dump(mode="json", exclude={"problems"}), "skipped": len(report.skipped),
        "warnings": len(report.warnings), "report": str(path)}
    ds.info = info
    ds.save()
