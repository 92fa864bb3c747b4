"""Layers look down only: index/ imports neither service/ nor eval/, and eval/ does not import
service/ (service/cli.py is the root that composes both). Read from the source with ast, so an
import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Each package and the packages it must never import.
FORBIDDEN = {"index": {"service", "eval"}, "eval": {"service"}, "service": set()}


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_reaches_up(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {p: w for p, w in wrong.items() if w} == {}


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from service.app import create_app\n    import eval.cli\n")
    assert imported_packages(source) == {"service", "eval"}
