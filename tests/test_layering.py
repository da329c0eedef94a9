"""Layering: nothing under ``fegan_anomalib/models/`` imports ``fegan_anomalib.experiments`` or ``.callbacks``.

The model is the bottom layer: ``experiments`` (peers, ablations, reports) and the user-facing
``callbacks`` package build on it, never the other way round. The check reads every module's source
with ``ast`` (nothing is imported), so it sees absolute imports, relative imports that resolve there,
imports inside functions or ``if TYPE_CHECKING:`` blocks, and ``import_module("...")``/``__import__("...")``
called with a literal name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"
MODELS = SOURCE / "fegan_anomalib" / "models"
FORBIDDEN = ("fegan_anomalib.experiments", "fegan_anomalib.callbacks")


def _module_name(path: Path) -> tuple[str, str]:
    """The dotted name of the module at ``path`` under ``SOURCE`` and the package its relative imports start from."""
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
        return ".".join(parts), ".".join(parts)
    return ".".join(parts), ".".join(parts[:-1])


def _imported_names(tree: ast.AST, package: str) -> list[tuple[int, str]]:
    """Every module name an import in ``tree`` may load, with its line; ``from M import n`` gives M and M.n."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base = ".".join(base_parts[: len(base_parts) - (node.level - 1)])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _upward_imports(source: str, path: Path) -> list[str]:
    """``file:line: module`` for each import of a forbidden layer (``from M import n`` reported once when M is one)."""
    _, package = _module_name(path)
    names = sorted(set(_imported_names(ast.parse(source, filename=str(path)), package)))
    upward = [(line, name) for line, name in names if any(name == f or name.startswith(f"{f}.") for f in FORBIDDEN)]
    return [
        f"{path.relative_to(SOURCE.parent)}:{line}: {name}"
        for line, name in upward
        if not any(other_line == line and name.startswith(f"{other}.") for other_line, other in upward)
    ]


def test_the_check_sees_absolute_relative_and_dynamic_imports() -> None:
    inside = MODELS / "fegan" / "example.py"
    source = "\n".join(
        [
            "from fegan_anomalib import callbacks",
            "import fegan_anomalib.experiments.peers",
            "from ...callbacks.broadcast import BroadcastBuffers",
            "from ... import experiments",
            "def f():",
            "    return importlib.import_module('fegan_anomalib.experiments.peers')",
            "from .callbacks import ValidateData",  # the model's own callbacks package: allowed
            "from fegan_anomalib.models.fegan.callbacks import SaveTestMetrics",  # allowed
            "from fegan_anomalib import data, image_io",  # allowed
        ]
    )
    found = [entry.split(": ", 1)[1] for entry in _upward_imports(source, inside)]
    assert found == [
        "fegan_anomalib.callbacks",
        "fegan_anomalib.experiments.peers",
        "fegan_anomalib.callbacks.broadcast",
        "fegan_anomalib.experiments",
        "fegan_anomalib.experiments.peers",
    ]
    package_init = MODELS / "fegan" / "__init__.py"  # a package's relative imports start at the package itself
    assert not _upward_imports("from ..experiments import x", package_init)  # fegan_anomalib.models.experiments
    assert _upward_imports("from ...experiments import x", package_init)


@pytest.mark.parametrize("path", sorted(MODELS.rglob("*.py")), ids=lambda path: str(path.relative_to(MODELS)))
def test_models_import_neither_experiments_nor_callbacks(path: Path) -> None:
    upward = _upward_imports(path.read_text(encoding="utf-8"), path)
    assert not upward, "models/ must not import experiments/ or callbacks/:\n" + "\n".join(upward)
