"""Layers look down only. From the bottom: index (saves and searches), ingest (files, folders and
URLs to documents), then the two faces, service (HTTP, MCP, the page) and eval (measures), which
never import each other, and cli on top, which composes both. Read from the source with ast, so
an import inside a function counts too, and so does a module named in a string: a
`-m groundqa.cli.main` command or code handed to a subprocess. No module imports itself back
through others. No module is over 500 lines, and no function over 80 without its reason."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

LAYERS = ("index", "ingest", "service", "eval", "cli")
# Each layer and the layers it must never reach.
FORBIDDEN = {
    "index": {"ingest", "service", "eval", "cli"},
    "ingest": {"service", "eval", "cli"},
    "service": {"eval", "cli"},
    "eval": {"service", "cli"},
    "cli": set(),
}
# A module of a layer named anywhere in a string: "groundqa.cli.main", "groundqa.service.app:app".
NAMED = re.compile(r"\bgroundqa\.(index|ingest|service|eval|cli)((?:\.\w+)*)")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
# A longer function says why at its top, in a docstring sentence or comment beginning "Long:".
LONG_REASON = re.compile(r"^\s*(#\s*)?Long:", re.M)


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
        "CMD = [sys.executable, '-m', 'groundqa.cli.main', 'serve']\n"
        "CODE = 'from groundqa.eval.bench import run'\n"
        "def g():\n    'Trained by groundqa.cli.main: prose, not an import.'\n"
    )
    assert layers_of(imports(source)) == {"service", "eval", "cli"}
    assert "groundqa.cli.main" in imports(source)


def test_no_module_imports_itself_back() -> None:
    known = modules()
    graph = {
        name: {target for target in (n if n in known else n.rpartition(".")[0] for n in imports(path))}
        & set(known) - {name}
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

    code = f"import importlib.util as u; print([n for n in {LAYERS} if u.find_spec(n)])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "[]", result.stderr
    version = subprocess.run(
        [sys.executable, "-m", "groundqa", "--version"], capture_output=True, text=True, cwd=tmp_path
    )
    assert version.returncode == 0 and version.stdout.startswith("groundqa "), version.stderr


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def long_functions(path: Path) -> dict[str, int]:
    """The functions of a file over MAX_FUNCTION_LINES that give no reason at their top."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            size = (node.end_lineno or node.lineno) - node.lineno + 1
            top = "\n".join(lines[node.lineno - 1 : node.body[0].lineno + 8])
            if size > MAX_FUNCTION_LINES and not LONG_REASON.search(top):
                found[f"{path.relative_to(ROOT)}:{node.name}"] = size
    return found


def test_no_function_is_over_80_lines_without_a_reason() -> None:
    assert {k: v for path in modules().values() for k, v in long_functions(path).items()} == {}


@pytest.mark.parametrize(
    ("module", "imported", "allowed"),
    [
        ("index/x.py", "from groundqa.ingest.sources import read_source", False),
        ("ingest/x.py", "from groundqa.service.app import create_app", False),
        ("service/x.py", "from groundqa.eval.bench import run", False),
        ("service/x.py", "CMD = ['-m', 'groundqa.cli.main']", False),
        ("eval/x.py", "from groundqa.service.schemas import QueryResponse", False),
        ("cli/x.py", "from groundqa.eval.bench import run", True),
        ("service/x.py", "from groundqa.ingest.sources import read_source", True),
    ],
)
def test_a_violation_is_seen(tmp_path: Path, module: str, imported: str, allowed: bool) -> None:
    """The rules catch each kind of wrong import, and let the right ones be."""
    path = tmp_path / module
    path.parent.mkdir(parents=True)
    path.write_text(imported + "\n")
    layer = module.split("/")[0]
    assert (not (layers_of(imports(path)) & FORBIDDEN[layer])) == allowed


def test_a_long_function_needs_its_reason(tmp_path: Path) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    bare = tmp_path / "bare.py"
    bare.write_text(f"def f():\n    'Does things.'\n{body}")
    told = tmp_path / "told.py"
    told.write_text(f"def f():\n    # Long: one table, read top to bottom.\n{body}")
    import tests.test_layers as me

    root = me.ROOT
    me.ROOT = tmp_path  # type: ignore[misc]
    try:
        assert list(long_functions(bare)) == ["bare.py:f"] and long_functions(told) == {}
    finally:
        me.ROOT = root  # type: ignore[misc]


# Module names that stand in more than one layer for the same thing: each layer's settings.
SHARED_NAMES = {"__init__.py", "config.py"}
# dict[str, Any] in service/: only where JSON is written (error bodies, a response's dump, the
# OpenAPI responses) and the MCP SDK's own signature.
UNTYPED_IN_SERVICE = 5


def test_no_two_modules_share_a_name_for_different_things() -> None:
    seen: dict[str, list[str]] = {}
    for name, path in modules().items():
        seen.setdefault(path.name, []).append(name)
    assert {n: m for n, m in seen.items() if len(m) > 1 and n not in SHARED_NAMES} == {}


def test_routes_take_typed_dependencies_and_service_keeps_few_untyped_dicts() -> None:
    """No route reads app.state (service/deps.py alone does); objects that cross the service
    are typed, dicts only where JSON is written."""
    routes = sorted((ROOT / "service" / "routes").glob("*.py"))
    assert [p.name for p in routes if "app.state" in p.read_text(encoding="utf-8")] == []
    service = [p for p in sorted((ROOT / "service").rglob("*.py"))]
    untyped = {
        str(p.relative_to(ROOT)): p.read_text(encoding="utf-8").count("dict[str, Any]") for p in service
    }
    assert sum(untyped.values()) <= UNTYPED_IN_SERVICE, {p: n for p, n in untyped.items() if n}
