"""The import rule of docs/architecture.md: every import points down the layers, never up or sideways.

Every module of pmc/, baselines/, benchmarks/ and scripts/ is parsed with `ast` (imports inside functions and under
`if TYPE_CHECKING:` included) and each import of a project module is checked against the layer map below: a
module may import from a lower rank, or from its own layer; the two layers of rank 1 (methods, benchmark data) never
import each other. A failure names file:line and both layers.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pmc", "baselines", "benchmarks", "scripts")


class Layer(NamedTuple):
    name: str
    rank: int


CORE = Layer("core (pmc.core)", 0)
METHODS = Layer("methods (pmc.methods, baselines)", 1)
DATA = Layer("benchmark data (benchmarks)", 1)
METRICS = Layer("metric suites (benchmarks.metrics)", 2)
APPLICATION = Layer("application (pmc.*)", 3)
SCRIPTS = Layer("scripts", 4)

# dotted-name prefix -> layer; the longest matching prefix decides
LAYERS = {
    "pmc.core": CORE,
    "pmc.methods": METHODS,
    "baselines": METHODS,
    "benchmarks.metrics": METRICS,
    "benchmarks": DATA,
    "pmc": APPLICATION,
    "scripts": SCRIPTS,
}


def layer_of(module: str) -> Layer | None:
    """The layer of a dotted module name, or None for anything outside the project (torch, hydra, ...)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
    return ".".join(parts)


def is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in the file; `from package import name` counts as package.name when
    that is a module (a sub-package's layer can differ from its parent's: `from pmc import core`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                anchor = package[: len(package) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                dotted = f"{base}.{alias.name}"
                found.append((node.lineno, dotted if is_module(dotted) else base))
    return found


def violation(importer: Layer, imported: Layer) -> bool:
    """Up (a higher rank) or sideways (another layer of the same rank)."""
    return imported.rank > importer.rank or (imported.rank == importer.rank and imported != importer)


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def layer_violations(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        importer = layer_of(module_name(path))
        for line, module in imported_modules(path):
            imported = layer_of(module)
            if imported is not None and violation(importer, imported):
                problems.append(f"{path.relative_to(ROOT)}:{line}: {importer.name} imports {module}, "
                                f"{imported.name}")
    return problems


def test_every_import_points_down_the_layers():
    files = project_files()
    assert len(files) > 40  # the walk found the project
    problems = layer_violations(files)
    assert not problems, "imports against the layer order (docs/architecture.md):\n" + "\n".join(problems)


@pytest.mark.parametrize("module, layer", [
    ("pmc.core.records", CORE), ("pmc.core", CORE), ("pmc.methods.collapse", METHODS), ("baselines.npo", METHODS),
    ("benchmarks.tofu.data", DATA), ("benchmarks.source", DATA), ("benchmarks.metrics.paper", METRICS),
    ("benchmarks.metrics", METRICS), ("pmc.run", APPLICATION), ("pmc.reporting.tables", APPLICATION),
    ("pmc", APPLICATION), ("scripts.collect", SCRIPTS), ("torch.nn", None), ("pmcx", None),
])
def test_layer_map(module, layer):
    assert layer_of(module) == layer


def test_the_check_names_file_line_and_both_layers_of_an_upward_sideways_or_nested_import(tmp_path, monkeypatch):
    """Upward (a core module importing the application), sideways (a method importing benchmark data, inside a
    function), relative imports resolved, and allowed ones (down, same layer, third-party) left alone."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    for package in ("pmc", "pmc/core", "pmc/methods", "baselines", "benchmarks", "benchmarks/tofu"):
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "pmc" / "run.py").write_text("from pmc.core import records\nimport torch\n")
    (tmp_path / "pmc" / "core" / "records.py").write_text("import os\n\nfrom pmc import run\n")
    (tmp_path / "pmc" / "core" / "rouge.py").write_text("from . import records\nfrom .. import run\n")
    (tmp_path / "benchmarks" / "tofu" / "data.py").write_text("from pmc.core.records import QARecord\n")
    (tmp_path / "baselines" / "ga.py").write_text(
        "from pmc.methods import base\n\n\ndef load():\n    import benchmarks.tofu.data\n")
    files = sorted(tmp_path.rglob("*.py"))
    assert layer_violations(files) == [
        "baselines/ga.py:5: methods (pmc.methods, baselines) imports benchmarks.tofu.data, benchmark data "
        "(benchmarks)",
        "pmc/core/records.py:3: core (pmc.core) imports pmc.run, application (pmc.*)",
        "pmc/core/rouge.py:2: core (pmc.core) imports pmc.run, application (pmc.*)",
    ]
