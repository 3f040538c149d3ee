"""Ingest: stream a source's samples into a persistent FiftyOne dataset.

Idempotent and resumable: each sample is keyed ``<source>/<source_id>`` and carries a
fingerprint of its whole record, so a re-run adds nothing, changed files are replaced,
and an interrupted run picks up where it stopped (samples are written in batches).
Files that cannot be loaded are reported (file + reason) and skipped; nothing on disk is
ever changed, and nothing already in the dataset is deleted.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from alldata.config import home
from alldata.errors import AlldataError, SourceNotFoundError
from alldata.schema import F, Sample
from alldata.sources import SOURCES, Problem, Source, get_source
from alldata.store import open_dataset, to_fiftyone

if TYPE_CHECKING:
    import fiftyone as fo

__all__ = ["IngestReport", "ingest", "ingest_all", "report_path", "tag_duplicates"]


@dataclass
class IngestReport:
    """What one ingest did; written as JSON beside the dataset's other reports."""

    source: str
    root: str
    dataset: str
    found: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    not_on_disk: int = 0
    duplicates_tagged: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def skipped(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "skipped"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = [p.to_dict() for p in self.problems]
        d["skipped"], d["warnings"] = len(self.skipped), len(self.warnings)
        return d

    def summary(self) -> str:
        return (
            f"{self.source}: {self.found} files, {self.added} added, {self.updated} updated, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped, {len(self.warnings)} warnings "
            f"({self.seconds:.1f} s)"
        )


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
    report.duplicates_tagged = tag_duplicates(ds)
    report.problems = sorted(src.problems, key=lambda p: (p.severity, p.path))
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
    data = report.to_dict()
    data["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = report_path(ds.name, report.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    info = dict(ds.info)
    info.setdefault("ingest", {})[report.source] = {k: v for k, v in data.items() if k != "problems"}
    info["ingest"][report.source]["report"] = str(path)
    ds.info = info
    ds.save()
