"""Schemathesis over the live server's OpenAPI document, with every check it has: no 5xx, every
response as documented (status, headers, content type, body schema), valid input accepted,
invalid input refused. A fixed seed and a bounded number of examples: the same cases each run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LiveServer

ST = str(Path(sys.executable).parent / "st")


@pytest.mark.slow
@pytest.mark.parametrize("key", ["with a key", "without a key"])
def test_the_fuzzer_finds_nothing(tmp_path: Path, key: str) -> None:
    server = LiveServer(tmp_path / "index", api_key="fuzz-key")
    server.start()
    auth = ["-H", "Authorization: Bearer fuzz-key"] if key == "with a key" else []
    try:
        run = subprocess.run(
            [
                ST,
                "--config-file",
                str(Path(__file__).with_name("schemathesis.toml")),
                "run",
                server.url + "/openapi.json",
                "--checks",
                "all",
                "--seed",
                "1",
                "--max-examples",
                "50",
                "--workers",
                "1",
                "--no-color",
                "--request-timeout",
                "300",
                *auth,
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,  # its cache folder goes there
            timeout=1500,
        )
    finally:
        server.stop()
    summary = run.stdout[run.stdout.find("SUMMARY") :]
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    assert " passed" in summary and "generated" in summary
