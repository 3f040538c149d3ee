"""Imports only go down the layers of docs/architecture.md, at module level and inside functions.

Every module of the ``alldata`` distribution is parsed with :mod:`ast` (nothing is imported),
mapped to a layer by the longest matching prefix of :data:`LAYERS`, and each import of another
alldata module is checked: a module may import its own layer and the layers below. Imports
under ``if TYPE_CHECKING:`` are annotations only and are not counted; importing fiftyone counts
as using L2 (dataset access).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: module prefix -> layer; the longest matching prefix wins (keep in sync with docs/architecture.md)
LAYERS: dict[str, int] = {
    # L0 core: contracts and plumbing every layer may use
    "alldata": 0,  # the package __init__: version and the curated names
    "alldata.errors": 0,
    "alldata.registry": 0,
    "alldata.config": 0,
    "alldata.schema": 0,
    "alldata.imageio": 0,
    "alldata.licences": 0,
    "alldata.reports": 0,
    "alldata.score_report": 0,  # the pydantic models of the score report (read by the card)
    "alldata.mongod": 0,
    "alldata.dbservice": 0,  # the bundled mongod as a local service (alldata db)
    # L1 compute: arrays, tensors and files in, numbers and images out; no FiftyOne dataset access
    "alldata.metrics": 1,
    "alldata.generators": 1,
    "alldata.models": 1,
    "alldata.sources": 1,
    "alldata.features": 1,
    "alldata.encoder": 1,
    "alldata.devices": 1,  # torch device, autocast and seeding shared by models, generators and the encoder
    # L2 store: FiftyOne datasets read and written
    "alldata.store": 2,
    "alldata.ingest": 2,
    "alldata.split": 2,
    "alldata.curation": 2,
    "alldata.synthetic": 2,
    "alldata.previews": 2,
    "alldata.link": 2,
    "alldata.explain": 2,  # Grad-CAM heatmaps written to FiftyOne, the mistakes-with-heatmaps view
    "alldata.embeddings": 2,
    "alldata.views": 2,
    "alldata.mix": 3,  # an arm's training mix from a recipe: a job
    "alldata.info": 2,
    "alldata.brain": 2,  # the FiftyOne Brain on the embeddings and predictions
    "alldata.overlap_pools": 2,  # reads the overlap compositor's pools from FiftyOne
    # L3 jobs: one user-visible task end to end
    "alldata.generate": 3,
    "alldata.compose": 3,
    "alldata.score": 3,
    "alldata.benchmark": 3,
    "alldata.evaluate": 3,  # a saved model or a run's models scored on any dataset
    "alldata.card": 3,
    "alldata.export": 3,
    "alldata.publish": 3,
    "alldata.recipes": 3,
    # L4 the command line
    "alldata.cli": 4,
    "alldata.app_plugin": 4,  # the FiftyOne App plugin: operators call jobs, like the CLI
    # third-party packages that belong to one layer: a FiftyOne import is dataset access
    "fiftyone": 2,
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported alldata module
    path: Path
    line: int

    def describe(self) -> str:
        return (f"{self.source} (L{layer_of(self.source)}) -> {self.target} (L{layer_of(self.target)})  "
                f"[{self.path.relative_to(ROOT)}:{self.line}]")


#: top package -> its folder (pyproject.toml's package-dir installs ``generators/`` as alldata.generators)
PACKAGE_DIRS = {"alldata": ROOT / "alldata", "alldata.generators": ROOT / "generators"}


def modules() -> dict[str, Path]:
    """Every module of the distribution: dotted name -> file (subpackages found by walking)."""
    out: dict[str, Path] = {}
    for pkg, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            out[".".join((pkg, *rel))] = path
    return out


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYERS:
            return LAYERS[".".join(parts[:n])]
    return None


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """The alldata modules ``module`` imports, anywhere in the file (module level and functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_pkg else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for target in targets:
            if target.split(".")[0] != "alldata":
                target = target.split(".")[0] if target.split(".")[0] in LAYERS else ""
            while target.startswith("alldata") and target not in known:  # `alldata.x.y`: a name in a module
                target = target.rpartition(".")[0]
            if target and target != module:
                found.append(Import(module, target, path, node.lineno))
    return found


def upward_imports() -> list[Import]:
    mods = modules()
    known = set(mods)
    bad = []
    for module, path in sorted(mods.items()):
        src = layer_of(module)
        for imp in imports_of(module, path, known):
            dst = layer_of(imp.target)
            if src is not None and dst is not None and dst > src:
                bad.append(imp)
    return sorted(set(bad), key=lambda i: (i.source, i.line, i.target))


def test_the_parser_sees_function_level_and_relative_imports(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "import alldata.store\n"
        "from alldata import cli, errors\n"
        "from . import schema\n"
        "from .store import load_dataset\n"
        "import numpy, fiftyone.brain\n"
        "if TYPE_CHECKING:\n    from alldata.benchmark import engine\n"
        "def f():\n    from alldata.benchmark.engine import run\n"
    )
    known = {"alldata", "alldata.store", "alldata.cli", "alldata.errors", "alldata.schema", "alldata.benchmark",
             "alldata.benchmark.engine", "alldata.mod"}
    got = [(i.target, i.line) for i in imports_of("alldata.mod", src, known)]
    assert sorted(got) == sorted([("alldata.store", 2), ("alldata.cli", 3), ("alldata.errors", 3),
                                  ("alldata.schema", 4), ("alldata.store", 5), ("fiftyone", 6),
                                  ("alldata.benchmark.engine", 10)])
    assert layer_of("alldata.generators.diffusion") == 1 and layer_of("alldata.cli.views") == 4
    assert layer_of("fiftyone") == 2 and layer_of("numpy") is None


def test_every_module_has_a_layer():
    missing = sorted(m for m in modules() if layer_of(m) is None)
    assert not missing, "modules missing from LAYERS (add them here and to docs/architecture.md): " + ", ".join(missing)


def test_the_layer_table_is_documented():
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    undocumented = [p for p in LAYERS if p != "alldata" and p.removeprefix("alldata.") not in doc]
    assert not undocumented, f"docs/architecture.md does not mention {undocumented}"


def test_no_module_imports_a_higher_layer():
    bad = upward_imports()
    if bad:
        pytest.fail(f"{len(bad)} upward imports (lower layers never import higher ones):\n"
                    + "\n".join(i.describe() for i in bad), pytrace=False)


if __name__ == "__main__":  # print the violations: python tests/test_layers.py
    for imp in upward_imports():
        print(imp.describe())
