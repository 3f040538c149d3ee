"""Where alldata looks for data and writes its own files (environment-driven)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["data_root", "home", "max_image_pixels", "source_root"]


def data_root() -> Path:
    """The data root: ``$ALLDATA_DATA_ROOT``, else ``./data``, else ``../shared/data`` if it exists."""
    env = os.environ.get("ALLDATA_DATA_ROOT")
    if env:
        return Path(env).expanduser()
    local = Path("data")
    if local.is_dir():
        return local
    shared = Path("..") / "shared" / "data"
    if shared.is_dir():
        return shared
    return local


def source_root(name: str, dirname: str) -> Path:
    """A source's folder: ``$ALLDATA_<NAME>_ROOT`` if set, else ``<data root>/<dirname>``."""
    env = os.environ.get(f"ALLDATA_{name.upper()}_ROOT")
    return Path(env).expanduser() if env else data_root() / dirname


def home() -> Path:
    """alldata's own folder (ingest reports): ``$ALLDATA_HOME`` or ``~/.alldata``."""
    return Path(os.environ.get("ALLDATA_HOME", "~/.alldata")).expanduser()


def max_image_pixels() -> int:
    """Largest image (width x height) ingest will decode; ``$ALLDATA_MAX_IMAGE_PIXELS``, default 100 MP."""
    return int(os.environ.get("ALLDATA_MAX_IMAGE_PIXELS", "100000000"))
