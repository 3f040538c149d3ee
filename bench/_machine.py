"""Machine and environment facts the benchmarks record beside their figures."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["cpu_model", "display_path", "loadavg", "sh", "version"]


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, check=False, shell=True, capture_output=True, text=True, timeout=30).stdout.rstrip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def display_path(exe: str) -> str:
    """``sys.executable`` relative to the current folder when it is inside it (e.g. ``.venv/bin/python``)."""
    p = Path(exe).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
