"""Package-level promises: a light import, complete registries, schema validation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from alldata.errors import UnknownNameError
from alldata.registry import Registry
from alldata.schema import Box, CellType, SegMask
from alldata.sources import SOURCES


def test_import_is_light():
    code = "import alldata, sys; print(sorted(m for m in ('torch', 'diffusers', 'fiftyone') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_source_has_a_test():
    tests = Path(__file__).parent
    text = "".join(p.read_text() for p in tests.rglob("test_*.py"))
    for name in SOURCES.names():
        cls = SOURCES.get(name)
        assert f'"{name}"' in text or cls.__name__ in text, f"source {name!r} has no test"
        assert cls.layout().strip(), f"source {name!r} docstring draws no Layout:: tree"


def test_registry_did_you_mean_and_no_double_registration():
    reg: Registry[int] = Registry("thing")
    reg.register("alpha")(1)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        reg.get("alpah")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(2)


def test_schema_rejects_bad_geometry_and_masks():
    with pytest.raises(ValidationError, match="extends past the image"):
        Box(label=CellType.rbc, bbox=(0.9, 0.1, 0.2, 0.1))
    with pytest.raises(ValidationError, match="outside"):
        Box(label=CellType.rbc, bbox=(-0.1, 0.1, 0.2, 0.1))
    with pytest.raises(ValidationError, match="values \\[7\\]"):
        SegMask(mask=np.full((4, 4), 7, np.uint8), annotator="x")
    with pytest.raises(ValidationError):
        Box(label="not-a-cell", bbox=(0, 0, 0.1, 0.1))
