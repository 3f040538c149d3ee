"""Checks every source must pass (after torchvision's DatasetTestCase)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alldata.errors import SourceNotFoundError
from alldata.schema import Sample
from alldata.sources.base import SOURCES, Source


def check_contract(source: Source, expected: int, again: Source | None = None) -> list[Sample]:
    """Load everything; assert count, no skipped files, unique ids and sane identity fields.

    ``again``: a second, fresh instance with the same options (default ``type(source)(source.root)``).
    """
    source.check()
    assert len(source) == expected
    samples = list(source)
    skipped = [p for p in source.problems if p.severity == "skipped"]
    assert not skipped, skipped[:5]
    assert len(samples) == expected
    ids = [s.source_id for s in samples]
    assert len(set(ids)) == len(ids), "source_id values must be unique"
    for s in samples:
        assert s.source == source.name
        assert SOURCES.get(s.source) is type(source)
        assert Path(s.filepath).is_absolute() and Path(s.filepath).is_file()
        assert s.group_id and "/" in s.group_id
    # deterministic: a second pass gives the same records
    second = again if again is not None else type(source)(source.root)
    assert [s.fingerprint() for s in second] == [s.fingerprint() for s in samples]
    return samples


def check_missing(source_cls: type[Source], tmp_path: Path) -> None:
    """A missing root raises SourceNotFoundError that shows the layout and how to obtain it."""
    with pytest.raises(SourceNotFoundError) as ei:
        source_cls(tmp_path / "nope").check()
    msg = str(ei.value)
    assert source_cls.title in msg and "How to obtain it" in msg
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    with pytest.raises(SourceNotFoundError):
        source_cls(empty).check()
