from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from groundqa.cli.main import build_parser
from groundqa.eval.server import groundqa_command
from tests.conftest import ARTICLE, ROOT, groundqa


@pytest.mark.slow
def test_ingest_ask_docs_rm(tmp_path: Path) -> None:
    index = tmp_path / "index"
    first = groundqa("ingest", str(ARTICLE), index=index)
    assert first.returncode == 0, first.stderr
    assert re.search(r"^putin-china-visit\t\d+ passages\tadded$", first.stdout, re.M)
    again = groundqa("ingest", str(ARTICLE.parent), index=index)
    assert "unchanged" in again.stdout and "the index holds 1 documents" in again.stdout

    asked = groundqa("ask", "How long is the Power of Siberia 2 pipeline?", "--json", index=index)
    assert asked.returncode == 0, asked.stderr
    body = json.loads(asked.stdout)
    text = ARTICLE.read_text(encoding="utf-8")
    assert "2,500 km" in body["answer"]["text"]
    for item in body["passages"] + [body["answer"]]:
        assert text[item["start"] : item["end"]] == item["text"]

    plain = groundqa(
        "ask", "Which Russian energy company posted its first loss in decades?", "-k", "2", index=index
    )
    assert plain.stdout.startswith("Answer: ") and "Gazprom" in plain.stdout
    assert plain.stdout.count("score") == 2

    listed = groundqa("docs", index=index)
    assert listed.stdout.startswith("putin-china-visit\t") and "1 documents" in listed.stdout
    assert groundqa("rm", "putin-china-visit", index=index).stdout.strip() == "deleted putin-china-visit"
    assert groundqa("docs", index=index).stdout.strip() == "0 documents"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ingest", "no/such/file.txt"], "no/such/file.txt does not exist"),
        (["ask", "   "], "the question is empty"),
        (["ask", "why?", "-k", "99"], "k is 99"),
        (["ingest", str(ARTICLE), str(ARTICLE), "--doc-id", "x"], "give one file"),
        (["eval", "questions", "missing.jsonl"], "cannot read missing.jsonl"),
        (["eval", "squad", "missing.json"], "cannot read missing.json"),
        (["bench", "--data", "missing.json"], "cannot read missing.json"),
    ],
)
def test_user_mistakes_are_one_line_on_stderr(args: list[str], message: str) -> None:
    result = groundqa(*args)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_data_paths_are_arguments_not_a_checkout() -> None:
    """The benchmarks name their data: nothing assumes the shared folder beside a checkout."""
    result = groundqa("bench")
    assert result.returncode == 2 and "the following arguments are required: --data" in result.stderr


@pytest.mark.slow
def test_an_index_that_cannot_be_opened_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "meta.json").write_text("{not json")
    for index, message in (
        (Path("/proc/forbidden"), "cannot open the index"),
        (tmp_path / "damaged", "is damaged"),
    ):
        result = groundqa("ingest", str(ARTICLE), index=index)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_binary_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 au lait")
    result = groundqa("ingest", str(bad), index=tmp_path / "index")
    assert result.returncode == 1 and "is not UTF-8 text (byte 3)" in result.stderr
    assert not (tmp_path / "index").exists(), "nothing is written when an input is bad"


@pytest.mark.slow
def test_bom_is_removed_and_crlf_kept(tmp_path: Path) -> None:
    doc = tmp_path / "crlf.md"
    doc.write_bytes("\ufeffTitle line\r\n\r\nBody 😀 text.\r\n".encode())
    index = tmp_path / "index"
    assert groundqa("ingest", str(doc), index=index).returncode == 0
    from groundqa.index.storage.store import Store

    assert Store(index / "store.sqlite").document("crlf")[1] == "Title line\r\n\r\nBody 😀 text.\r\n"  # type: ignore[index]


def test_every_command_is_documented_with_an_example() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        assert f"groundqa {name}" in readme, f"README does not show 'groundqa {name}'"
        assert sub.epilog and sub.epilog.startswith("example: groundqa"), name


NO_MODEL = """
import sys
from groundqa.cli.main import main
code = main(sys.argv[1:])
# Either encoder's runtime: ONNX Runtime (the default) or sentence-transformers (torch).
print("model loaded" if {"onnxruntime", "sentence_transformers"} & set(sys.modules) else "no model", code)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "command", [["docs"], ["rm", "putin-china-visit"], ["rm", "nothing-here"], ["ingest"], ["ask", "Who?"]]
)
def test_commands_that_embed_nothing_do_not_load_the_model(
    command: list[str], make_index, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Defect 10: `docs`, `rm` and refusing an empty file loaded the model first (17 to 43 s).
    `ask` embeds its question: the check must see that model load, or it could never fail."""
    make_index().add(ARTICLE.read_text(encoding="utf-8"), doc_id="putin-china-visit")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    args = [*command, str(empty)] if command == ["ingest"] else command
    result = subprocess.run(
        [sys.executable, "-c", NO_MODEL, *args, "--index", str(tmp_path / "index")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    expected = "model loaded" if command[0] == "ask" else "no model"
    assert result.stdout.splitlines()[-1].startswith(expected), result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if command == ["ingest"]:
        assert (
            result.stderr.strip()
            == f"groundqa: error: {empty}: the document text is empty or white space only; give it some words"
        )


def test_a_document_over_the_size_limit_is_refused_by_name(tmp_path: Path) -> None:
    """Defect 4: documents had no size limit."""
    big = tmp_path / "big.txt"
    big.write_text("Long words here. " * 10)
    result = subprocess.run(
        groundqa_command("ingest", str(big), "--index", str(tmp_path / "index")),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "GROUNDQA_MAX_DOC_CHARS": "100"},
        timeout=300,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"groundqa: error: {big}: the document text has 170 characters; the limit is 100 "
        "(GROUNDQA_MAX_DOC_CHARS): split it into several documents"
    )


def test_serve_starts_one_worker_per_core_by_default(tmp_path: Path) -> None:
    """GROUNDQA_WORKERS=auto: one worker per core this process may use; one on a Qdrant folder,
    which one process opens at a time; a number as given; anything else one line."""
    import os

    from groundqa.service.config import Settings

    cores = len(os.sched_getaffinity(0))
    assert Settings().worker_count() == cores
    assert Settings(qdrant_url=f"local:{tmp_path}").worker_count() == 1
    assert Settings(workers=3).worker_count() == 3
    bad = groundqa("serve", "--workers", "many")
    assert bad.returncode == 2 and "'many' is neither a number nor auto" in bad.stderr


def test_a_folder_ingest_goes_past_unreadable_files_and_leaves_out_links_outside(tmp_path: Path) -> None:
    index, folder = tmp_path / "index", tmp_path / "notes"
    folder.mkdir()
    (folder / "good.md").write_text("# Good\n\nThe ferry leaves at noon.\n")
    (folder / "bad.txt").write_bytes(b"\xff\xfe not UTF-8 \xff")
    secret = tmp_path / "secret.txt"
    secret.write_text("The password is swordfish.")
    (folder / "link.txt").symlink_to(secret)
    done = groundqa("ingest", str(folder), index=index)
    assert done.returncode == 1  # before: exit 1 and nothing ingested, or the link read
    assert "bad.txt" in done.stderr and f"link.txt links to {secret}" in done.stderr
    assert done.stderr.count("\n") == 2
    assert re.search(r"^good\t\d+ passages\tadded$", done.stdout, re.M)
    assert "2 files: 1 could not be read (named above); 1 added" in done.stdout
    listed = groundqa("docs", index=index).stdout
    assert "good\t" in listed and "link" not in listed and "1 documents" in listed
    followed = groundqa("ingest", str(folder), "--follow-links", index=index)
    assert "link\t" in followed.stdout and followed.returncode == 1  # bad.txt still fails


@pytest.mark.parametrize(("name", "value"), [("GROUNDQA_PORT", "abc"), ("GROUNDQA_MAX_JOBS", "many")])
def test_a_bad_setting_is_one_line_naming_its_variable(name: str, value: str) -> None:
    for command in ("docs", "serve"):  # before: a 16-line pydantic traceback naming "port"
        result = groundqa(command, env={name: value})
        assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
        assert f"groundqa: error: {name} is {value!r}: input should be a valid integer" in result.stderr
