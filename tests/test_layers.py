"""Layers look down only: groundqa.index imports neither groundqa.service nor groundqa.eval, and
eval does not import service (service/cli.py is the root that composes both). Read from the
source with ast, so an import inside a function counts too, and so does a module named in a
string: a `-m groundqa.service.cli` command or code handed to a subprocess. No module imports
itself back through others."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = ("index", "service", "eval")
# Each layer and the layers it must never reach.
FORBIDDEN = {"index": {"service", "eval"}, "eval": {"service"}, "service": set()}
# A module of a layer named anywhere in a string: "groundqa.service.cli", "groundqa.service.app:app".
NAMED = re.compile(r"\bgroundqa\.(index|service|eval)((?:\.\w+)*)")


def imports(path: Path) -> set[str]:
    """The groundqa modules a file imports or names in a string (docstrings aside: prose may
    point anywhere), as dotted names."""
    found: set[str] = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{alias.name}" for alias in node.names} | {node.module}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            found |= {f"groundqa.{layer}{rest}" for layer, rest in NAMED.findall(node.value)}
    return {name for name in found if name.split(".")[0] == "groundqa"}


def layers_of(names: set[str]) -> set[str]:
    return {name.split(".")[1] for name in names if len(name.split(".")) > 1 and name.split(".")[1] in LAYERS}


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(("groundqa", *parts)).removesuffix(".__init__")
            out[name] = path
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_no_import_reaches_up(layer: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(layers_of(imports(path)) & FORBIDDEN[layer])
        for path in sorted((ROOT / layer).rglob("*.py"))
    }
    assert {p: w for p, w in wrong.items() if w} == {}


def test_the_check_sees_imports_in_functions_commands_and_code_strings(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import subprocess, sys\n"
        "def f():\n    from groundqa.service.app import create_app\n"
        "CMD = [sys.executable, '-m', 'groundqa.service.cli', 'serve']\n"
        "CODE = 'from groundqa.eval.bench import run'\n"
        "def g():\n    'Trained by groundqa.service.cli: prose, not an import.'\n"
    )
    assert layers_of(imports(source)) == {"service", "eval"}
    assert "groundqa.service.cli" in imports(source)


def test_no_module_imports_itself_back() -> None:
    known = modules()
    graph = {
        name: {target for target in (n if n in known else n.rpartition(".")[0] for n in imports(path))}
        & set(known)
        - {name}
        for name, path in known.items()
    }
    cycles = []
    for start in graph:  # a path from a module's imports back to it is a circle
        seen, todo = set(), list(graph[start])
        while todo:
            at = todo.pop()
            if at == start:
                cycles.append(start)
                break
            if at not in seen:
                seen.add(at)
                todo.extend(graph[at])
    assert cycles == []


def test_nothing_but_groundqa_is_importable_from_outside(tmp_path: Path) -> None:
    """The layers install inside one package: `import index` finds nothing outside the repository."""
    import subprocess
    import sys

    code = "import importlib.util as u; print([n for n in ('index', 'service', 'eval') if u.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stderr
    version = subprocess.run(
        [sys.executable, "-m", "groundqa", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert version.returncode == 0 and version.stdout.startswith("groundqa "), version.stderr
