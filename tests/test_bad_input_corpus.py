"""Every native layout, fed a corpus of broken and odd files: each valid file is ingested, each
broken one is named with a human reason (tests/_bad_corpus.py says what to expect of each file)."""

from __future__ import annotations

import re
from pathlib import Path

import fiftyone as fo
import pytest

from alldata.curation import LABEL_CONFLICT_TAG
from alldata.ingest import ingest
from alldata.schema import F
from alldata.sources import get_source
from alldata.split import check_no_leak, split_dataset
from tests._bad_corpus import SOURCES, build

#: What a reason for people must not look like: a Python object, a traceback, a bare exception name.
_NOT_HUMAN = re.compile(r"object at 0x|<[\w.]+ object|Traceback|^\w+(Error|Exception):")


def _norm(p: str | Path) -> str:
    p = Path(p)
    return str(p.parent.resolve() / p.name)


@pytest.mark.parametrize("source", SOURCES)
def test_every_file_ingested_or_named_with_a_reason(source, shared_data, tmp_path, dataset_name):
    corpus = build(source, shared_data, tmp_path / "données")  # a unicode folder above every file
    report = ingest(get_source(source, corpus.root), dataset_name, progress=False)
    ds = fo.load_dataset(dataset_name)
    ingested = {_norm(p) for p in ds.values("filepath")}
    problems: dict[str, list[tuple[str, str]]] = {}
    for p in report.problems:
        problems.setdefault(_norm(p.path), []).append((p.severity, p.reason))
        assert not _NOT_HUMAN.search(p.reason), p
    expected = {_norm(p): e for p, e in corpus.expected.items()}
    for path, e in expected.items():
        got = problems.get(path, [])
        for words in e.warnings:
            assert any(s == "warning" and all(w in r for w in words) for s, r in got), (e.kind, words, got)
        if e.outcome == "ingested":
            assert path in ingested, (e.kind, path, got)
        else:
            assert path not in ingested, (e.kind, path)
            assert any(s == e.outcome and all(w in r for w in e.words) for s, r in got), (e.kind, e.words, got)
    # nothing unexpected: every ingested file and every problem is one the corpus planned
    assert ingested <= {p for p, e in expected.items() if e.outcome == "ingested"}
    unplanned = [(p, r) for p, lst in problems.items() for s, r in lst if p not in expected]
    assert not unplanned, unplanned
    for path, lst in problems.items():  # no warning beyond those planned for each file
        e = expected[path]
        planned = e.warnings + ([] if e.outcome == "ingested" else [e.words])
        for s, r in lst:
            assert any(all(w in r for w in words) for words in planned), (e.kind, r)
    assert report.added == len(ingested) and len(report.label_conflicts) == corpus.conflicts
    if corpus.conflicts:  # exact duplicates with different labels: tagged, and one split each
        tagged = set(ds.match_tags(LABEL_CONFLICT_TAG).values(F.KEY))
        assert tagged == {c.key for g in report.label_conflicts for c in g.copies}
        split_dataset(ds, ratios=(0.5, 0.25, 0.25), stratify=None)
        check_no_leak(ds)
        for g in report.label_conflicts:
            assert len(set(ds.match({F.SHA256: g.sha256}).values(F.SPLIT))) == 1
