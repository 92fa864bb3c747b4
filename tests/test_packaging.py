"""Set-up: pinned versions and a quiet build (defect 12 of the reliability issue)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_dependency_is_pinned_in_the_constraints() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_name(name)] = version
    assert {_name(r) for r in wanted} - set(pins) == set()
    assert pins["torch"] == "2.13.0"
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c constraints.txt") == 2  # make install and make dev


@pytest.mark.slow
def test_the_package_builds_without_warnings(tmp_path: Path) -> None:
    """setuptools warned about every data folder ("Package 'eval.questions' is absent")."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr
    assert "Warning" not in built.stdout + built.stderr
    wheel = next(tmp_path.glob("groundqa-*.whl"))
    listing = subprocess.run([sys.executable, "-m", "zipfile", "-l", str(wheel)], capture_output=True, text=True).stdout
    for data in ("index/data/residual-2bit.npz", "service/static/app.js", "eval/questions/putin-china-visit.jsonl"):
        assert data in listing
