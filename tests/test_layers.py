"""The layers of docs/architecture.md, held by the imports: the backends and the ports
never import the read path, the write path, the schema code or the command line."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import eventfold

SRC = Path(eventfold.__file__).parent
ABOVE = ("eventfold.projections", "eventfold.write", "eventfold.schema", "eventfold.cli")


def imported(path: Path, root: Path = SRC) -> set[str]:
    """Every module ``path`` (a module of the package at ``root``) imports, relative
    imports resolved, TYPE_CHECKING blocks included."""
    parts = ["eventfold", *path.relative_to(root).with_suffix("").parts]
    package = parts[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", ["backends", "store"])
def test_lower_layers_never_import_higher_ones(layer: str) -> None:
    wrong = {
        f"{path.relative_to(SRC)}: {name}"
        for path in sorted((SRC / layer).rglob("*.py"))
        for name in imported(path)
        if name.startswith(ABOVE)
    }
    assert not wrong


def test_the_check_resolves_relative_imports(tmp_path: Path) -> None:
    module = tmp_path / "backends" / "sqlite" / "_inline.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "from ..._codec import Codec\n"
        "from . import _schema\n"
        "if TYPE_CHECKING:\n"
        "    from ...projections._definition import ProjectionBase\n"
    )
    found = imported(module, tmp_path)
    assert {"eventfold._codec", "eventfold.backends.sqlite._schema"} <= found
    assert "eventfold.projections._definition" in found
