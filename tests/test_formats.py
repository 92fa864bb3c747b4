"""Articles as files: web pages, PDFs and Word files read into exact-offset text with pages, by
extraction alone, over HTTP (upload and source routes) and through the CLI (files and URLs)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from groundqa.index.errors import FileRefused, FileTooLarge, ParseBusy
from groundqa.index.storage import page_at
from groundqa.ingest.formats import detect, extract, unreadable
from groundqa.ingest.isolation import isolated
from groundqa.ingest.limits import FileLimits
from groundqa.service.app import create_app
from groundqa.service.config import Settings
from tests.conftest import ROOT, groundqa, wait_until_ready
from tests.files import (
    HTML,
    PDF,
    SCRIPTED_PAGE,
    encrypted_pdf,
    make_docx,
    make_pdf,
    shared,
    zip_bomb,
)

KEY = "formats-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
OCR = shutil.which("tesseract") is not None

# Each saved page: phrases of its article, and phrases of its menus, banners, sign-up boxes,
# related links and comments, which must not be indexed.
PAGES = json.loads((ROOT / "eval" / "questions" / "boilerplate.json").read_text(encoding="utf-8"))


# --- extraction -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PAGES))
def test_a_saved_web_page_gives_its_article_without_the_boilerplate(name: str) -> None:
    found = extract(shared(HTML / f"{name}.html"), f"{name}.html")
    assert found.format == "html" and found.title and found.date
    for phrase in PAGES[name]["article"]:
        assert phrase in found.text, f"{phrase!r} (the article) is missing from {name}"
    for phrase in PAGES[name]["boilerplate"]:
        assert phrase not in found.text, f"{phrase!r} (boilerplate) was extracted from {name}"


def test_the_format_is_told_by_the_content_not_the_name() -> None:
    pdf = make_pdf([["A page of text."]])
    assert detect(pdf, "report.txt") == "pdf"
    assert detect(b"<!doctype html><html><body><p>x</p></body></html>", "page.txt") == "html"
    assert detect(make_docx(["Word text."]), "file.bin") == "docx"
    assert detect("# Café\n".encode(), "notes.md") == "markdown"
    assert detect(b"# HTML\n\nA page opens with <html> and has a <body> tag.", "notes.md") == "markdown"
    assert (
        detect(b"<!-- saved from url=(0040)https://example.org/ -->\n<html><body>x</body></html>") == "html"
    )
    assert detect(b"plain words", "notes") == "text"
    with pytest.raises(FileRefused, match="not a PDF"):
        detect(b"plain words", "paper.pdf")
    with pytest.raises(FileRefused, match="binary"):
        detect(b"\x89PNG\r\n\x1a\n\0\0\0", "picture.png")


def test_a_two_column_paper_reads_column_by_column_with_words_joined() -> None:
    found = extract(shared(PDF / "tracemonkey.pdf"))
    text = found.text
    assert found.format == "pdf" and len(found.page_starts) == 14 and found.warnings == ()
    # Ligatures expanded and words hyphenated at line ends joined (PDFium's soft hyphen dropped).
    assert not any(0xFB00 <= ord(c) <= 0xFB06 for c in text) and "\x02" not in text
    assert "more difficult to compile than statically typed ones" in text
    # The left column's sentence continues in the left column, not across into the right one.
    assert "We present an alternative compilation technique for dynamically-typed languages" in text
    # A sentence wrapped over lines is one line (reflowed), so it is one sentence to the index.
    assert "TraceMonkey supports all the JavaScript features of SpiderMonkey, with a 2x-20x speedup" in text
    assert page_at(found.page_starts, text.index("SpiderMonkey, with a 2x-20x")) == 2


def test_a_book_keeps_its_pages_and_title_in_bounded_memory() -> None:
    # Page by page: the 352-page book (2.6 MB) reads within 300 MB of address space, OCR included.
    found = isolated(shared(PDF / "freeculture.pdf"), "freeculture.pdf", FileLimits(memory=300 << 20))
    assert found.title == "Free Culture" and len(found.page_starts) == 352
    assert found.page_starts == tuple(sorted(found.page_starts)) and found.page_starts[0] == 0
    at = found.text.index("Steamboat Willie brought")
    assert page_at(found.page_starts, at) == 35
    if OCR:  # the cover is an image: read by OCR, and said so
        assert any("page 1 " in w and "OCR" in w for w in found.warnings)


def test_a_word_file_gives_its_paragraphs_tables_and_title() -> None:
    data = make_docx(
        ["First paragraph.", "", "Second paragraph."], title="A memo", table=[["a", "b"], ["1", "2"]]
    )
    found = isolated(data, "memo.docx")
    assert (found.format, found.title, found.page_starts) == ("docx", "A memo", ())
    assert found.text == "First paragraph.\n\nSecond paragraph.\n\na | b\n1 | 2"


def test_a_scanned_page_is_read_by_ocr_or_named_in_a_warning() -> None:
    data = make_pdf(
        [
            ["The first page has a text layer."],
            ("scan", ["The harbour lighthouse", "was built in 1874."]),
            ["Page three has text."],
        ]
    )
    without = extract(data, limits=FileLimits(ocr=False))
    assert without.text == "The first page has a text layer.\n\nPage three has text."
    assert without.page_starts == (0, 32, 34)  # page 2 is empty: text on page 3 says 3
    assert page_at(without.page_starts, 34) == 3
    assert without.warnings == (
        "page 2 had no readable text: left out (with tesseract-ocr installed, GROUNDQA_OCR on, scanned pages are read)",
    )
    if not OCR:
        message = "tesseract-ocr is not installed: the OCR half needs it (CI installs it)"
        if os.environ.get("GROUNDQA_REQUIRE_OCR"):
            pytest.fail(message)
        pytest.skip(message)
    found = extract(data)
    assert "lighthouse" in found.text and "1874" in found.text
    assert page_at(found.page_starts, found.text.index("1874")) == 2
    assert found.warnings == ("page 2 had no text layer: read by OCR (check the text)",)


def test_garbage_glyphs_are_told_from_text() -> None:
    assert unreadable("\x03\x04\x05 \x06\x07 ab")
    assert unreadable("\ue000\ue001\ue002 text")
    assert not unreadable("Ordinary words, with numbers 42 and symbols ❚❘❙ — fine.")
    assert not unreadable("")


BAD_FILES = {
    "truncated.pdf": (lambda: shared(PDF / "tracemonkey.pdf")[:300_000], 422, "damaged or truncated"),
    "junk.pdf": (lambda: b"%PDF-1.7\n" + bytes(range(256)) * 40, 422, "damaged or truncated"),
    "locked.pdf": (encrypted_pdf, 422, "encrypted"),
    "scan-only.pdf": (
        lambda: make_pdf([("scan", ["Only an image."])]),
        422,
        "no page of the PDF has readable text",
    ),
    "bomb.docx": (lambda: zip_bomb(300 << 20), 413, "unpacks to"),
    "broken.docx": (lambda: make_docx(["text"])[:2000], 422, "damaged"),
    "app.html": (lambda: SCRIPTED_PAGE, 422, "drawn by scripts"),
    "picture.png": (lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 422, "binary"),
    "latin1.txt": (lambda: "caf\xe9".encode("latin-1"), 422, "not UTF-8"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_refused_with_the_reason(name: str) -> None:
    make, status, reason = BAD_FILES[name]
    with pytest.raises(FileRefused, match=reason) as refused:
        isolated(make(), name, FileLimits(ocr=False))
    assert isinstance(refused.value, FileTooLarge) == (status == 413)


def test_a_parse_that_runs_out_of_time_or_memory_is_stopped() -> None:
    book = shared(PDF / "freeculture.pdf")
    with pytest.raises(FileRefused, match="longer than 0.2 s"):
        isolated(book, "book.pdf", FileLimits(timeout=0.2))
    with pytest.raises(FileRefused, match="memory|cannot be read"):
        isolated(book, "book.pdf", FileLimits(memory=64 << 20))
    with pytest.raises(FileTooLarge, match="352 pages; the limit is 100"):
        isolated(book, "book.pdf", FileLimits(max_pages=100))


def test_the_gold_spans_of_the_file_questions_index_the_extracted_texts() -> None:
    """eval/questions/articles.jsonl was written on these extractions: a change to them shows."""
    texts = {}
    for line in (ROOT / "eval" / "questions" / "articles.jsonl").read_text().splitlines():
        q = json.loads(line)
        doc = q["doc_id"]
        if doc not in texts:
            path = (HTML / f"{doc}.html") if (HTML / f"{doc}.html").exists() else PDF / f"{doc}.pdf"
            texts[doc] = extract(shared(path))
        (start, end), found = q["spans"][0], texts[doc]
        assert found.text[start:end] == q["answer"], q["id"]
        assert page_at(found.page_starts, start) == q.get("page"), q["id"]


# --- HTTP -----------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = Settings(index_dir=tmp_path / "index", api_key=KEY, ocr=False)  # type: ignore[call-arg]
    with TestClient(create_app(config)) as c:
        wait_until_ready(c)
        yield c


LIGHTHOUSE = make_pdf(
    [
        ["Harbour notes, first page."],
        ["The lighthouse keeper lit the", "lamp at dusk every evening."],
        ["The lighthouse was built in 1874", "from granite quarried nearby."],
    ]
)


def _upload(client: TestClient, name: str, data: bytes, **form: str) -> dict:
    reply = client.post("/v1/documents/upload", files={"file": (name, data)}, data=form, headers=AUTH)
    return {"status": reply.status_code, **reply.json()}


def test_an_uploaded_pdf_answers_with_its_page_and_serves_its_original(client: TestClient) -> None:
    made = _upload(client, "harbour.pdf", LIGHTHOUSE)
    assert made["status"] == 201 and made["state"] == "added"
    assert (made["doc_id"], made["format"], made["pages"], made["source"]) == (
        "harbour",
        "pdf",
        3,
        "harbour.pdf",
    )
    assert made["warnings"] == []
    again = _upload(client, "harbour.pdf", LIGHTHOUSE)  # idempotent by the extracted text's sha256
    assert (again["status"], again["state"], again["sha256"]) == (200, "unchanged", made["sha256"])

    body = client.post("/v1/query", json={"question": "When was the lighthouse built?"}).json()
    text = client.get("/v1/documents/harbour").json()["text"]
    answer = body["answer"]
    assert answer["page"] == 3 and "1874" in answer["text"]
    assert text[answer["start"] : answer["end"]] == answer["text"]
    for p in body["passages"]:
        assert text[p["start"] : p["end"]] == p["text"]
        assert p["page"] == page_at(tuple(text_page_starts(text)), p["start"])

    source = client.get("/v1/documents/harbour/source")
    assert source.status_code == 200 and source.headers["content-type"] == "application/pdf"
    assert source.content == LIGHTHOUSE
    listed = client.get("/v1/documents").json()["documents"]
    assert [(d["doc_id"], d["format"], d["pages"]) for d in listed] == [("harbour", "pdf", 3)]


def text_page_starts(text: str) -> list[int]:
    """The page starts of LIGHTHOUSE's text: its pages join with a blank line."""
    starts, at = [0], 0
    while (at := text.find("\n\n", at)) >= 0:
        at += 2
        starts.append(at)
    return starts


def test_an_uploaded_web_page_is_its_article_and_its_source_runs_no_script(client: TestClient) -> None:
    data = shared(HTML / "nature.com.telescope.html")
    made = _upload(client, "telescope.html", data, doc_id="fast", title="FAST opens")
    assert (made["status"], made["doc_id"], made["title"], made["format"]) == (
        201,
        "fast",
        "FAST opens",
        "html",
    )
    assert made["published"] == "2019-09-24" and made["pages"] is None
    text = client.get("/v1/documents/fast").json()["text"]
    assert "Five-hundred-meter Aperture" in text and "Privacy Policy" not in text
    source = client.get("/v1/documents/fast/source")
    assert source.content == data and source.headers["content-security-policy"] == "sandbox"
    assert source.headers["x-content-type-options"] == "nosniff"


def test_a_text_document_serves_its_text_as_its_source(client: TestClient) -> None:
    client.post("/v1/documents", json={"doc_id": "note", "text": "A short note."}, headers=AUTH)
    source = client.get("/v1/documents/note/source")
    assert source.text == "A short note." and source.headers["content-type"].startswith("text/plain")
    assert client.get("/v1/documents/nothing/source").status_code == 404


def test_uploads_need_the_key_and_keep_to_the_limits(tmp_path: Path) -> None:
    config = Settings(index_dir=tmp_path / "index", api_key=KEY, max_file_bytes=50_000, max_pages=2)  # type: ignore[call-arg]
    with TestClient(create_app(config)) as c:
        wait_until_ready(c)
        keyless = c.post("/v1/documents/upload", files={"file": ("a.pdf", LIGHTHOUSE)})
        assert keyless.status_code == 401
        pages = _upload(c, "a.pdf", LIGHTHOUSE)
        assert pages["status"] == 413 and "3 pages; the limit is 2" in pages["detail"]
        big = _upload(c, "big.txt", b"word " * 20_000)
        assert big["status"] == 413
        assert c.get("/v1/limits").json()["file_bytes"] == 50_000
        bad_id = _upload(c, "a.txt", b"text", doc_id="../x")
        assert bad_id["status"] == 422 and "doc_id" in bad_id["detail"]
        assert c.get("/v1/documents").json()["count"] == 0


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_upload_gets_a_clear_4xx_and_stores_nothing(client: TestClient, name: str) -> None:
    make, status, reason = BAD_FILES[name]
    reply = _upload(client, name, make())
    assert reply["status"] == status and reason in reply["detail"]
    assert client.get("/v1/documents").json()["count"] == 0


def test_a_pdf_with_a_scanned_page_is_stored_with_a_warning(client: TestClient) -> None:
    data = make_pdf([["Readable first page about tides."], ("scan", ["A scanned page."])])
    made = _upload(client, "tides.pdf", data)
    assert made["status"] == 201 and made["pages"] == 2
    assert made["warnings"] == [
        "page 2 had no readable text: left out (with tesseract-ocr installed, GROUNDQA_OCR on, scanned pages are read)"
    ]


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """The saved pages (and a picture) on a loopback web server."""
    root = tmp_path / "site"
    root.mkdir()
    for name in ("nature.com.telescope.html", "lemire.me.json.html"):
        (root / name).write_bytes(shared(HTML / name))
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.slow
def test_ingest_reads_folders_of_pages_and_urls(tmp_path: Path, site: str) -> None:
    index = tmp_path / "index"
    folder = tmp_path / "pages"
    folder.mkdir()
    for name in ("phys.org.tool.html", "salon.com.emissions.html"):
        (folder / name).write_bytes(shared(HTML / name))
    (folder / "notes.md").write_text("# Notes\n\nBirch tar was made by Neanderthals.\n")
    done = groundqa("ingest", str(folder), f"{site}/nature.com.telescope.html", index=index)
    assert done.returncode == 0, done.stderr
    assert "4 files: 4 added" in done.stdout
    listed = groundqa("docs", index=index).stdout
    for doc_id in ("phys.org.tool", "salon.com.emissions", "notes", "nature.com.telescope"):
        assert doc_id in listed
    asked = groundqa("ask", "Who is the chief scientist of FAST?", "--json", index=index)
    answer = json.loads(asked.stdout)["answer"]
    assert answer["doc_id"] == "nature.com.telescope" and "Di Li" in answer["text"]

    refused = groundqa("ingest", f"{site}/picture.png", index=index)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "serves image/png" in refused.stderr
    missing = groundqa("ingest", f"{site}/gone.html", index=index)
    assert missing.returncode == 1 and "404" in missing.stderr and missing.stderr.count("\n") == 1


def _need_ocr() -> None:
    if not OCR:
        message = "tesseract-ocr is not installed (CI installs it)"
        if os.environ.get("GROUNDQA_REQUIRE_OCR"):
            pytest.fail(message)
        pytest.skip(message)


def _bomb() -> bytes:
    """A 14,400-point square page holding only an image: OCR would render it at 300 dpi into
    60,000 x 60,000 pixels."""
    import io

    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument.new()
    page = pdf.new_page(14_400, 14_400)
    image = pdfium.PdfImage.new(pdf)
    image.set_bitmap(pdfium.PdfDocument.new().new_page(8, 8).render())
    image.set_matrix(pdfium.PdfMatrix().scale(14_400, 14_400))
    page.insert_obj(image)
    page.gen_content()
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def test_a_page_too_large_to_render_is_refused_before_it_is_rendered() -> None:
    _need_ocr()
    with pytest.raises(
        FileTooLarge, match=r"page 1 measures 14,400 x 14,400 points.*the limit is 150 million"
    ):
        isolated(_bomb(), "bomb.pdf", FileLimits(timeout=60))  # before: the whole timeout, then "took longer"


def _tesseracts() -> list[str]:
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = status.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "tesseract" in line and "page.png" in line:
            found.append(line)
    return found


def test_a_parse_timeout_kills_ocr_and_removes_its_files() -> None:
    import tempfile

    _need_ocr()
    scans = [
        ("scan", [f"Page {n} of the harbour log.", "The lighthouse keeper wrote daily."]) for n in range(12)
    ]
    temp = Path(tempfile.gettempdir())
    before = set(temp.glob("*/page.png")) | set(temp.glob("groundqa-parse-*"))
    with pytest.raises(FileRefused, match="took longer than 2 s"):
        isolated(make_pdf(scans), "scans.pdf", FileLimits(timeout=2))
    assert _tesseracts() == []  # before: tesseract went on, adopted by PID 1
    assert set(temp.glob("*/page.png")) | set(temp.glob("groundqa-parse-*")) <= before


class _Hostile(http.server.BaseHTTPRequestHandler):
    """A loopback server that trickles, redirects out of http(s), or sends more than it says."""

    def do_GET(self) -> None:  # noqa: N802 (the handler's name)
        import time

        if self.path == "/trickle":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(40):  # a byte every half second: no read ever times out
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.5)
        elif self.path == "/to-ftp":
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/article.txt")
            self.end_headers()
        elif self.path == "/endless":  # no Content-Length: only counting finds the size
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            for _ in range(200):
                self.wfile.write(b"Words words words. " * 1000)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hostile() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize(
    ("path", "message", "env"),
    [
        (
            "/trickle",
            "did not arrive within 3 s (GROUNDQA_FETCH_DEADLINE): ",
            {"GROUNDQA_FETCH_DEADLINE": "3"},
        ),
        ("/to-ftp", "a redirect leads to ftp://127.0.0.1/article.txt: only http:// and https://", {}),
        (
            "/endless",
            "is larger than 1,000,000 bytes (GROUNDQA_MAX_FILE_BYTES)",
            {"GROUNDQA_MAX_FILE_BYTES": "1000000"},
        ),
    ],
)
def test_url_ingest_has_a_deadline_http_only_redirects_and_a_counted_size(
    tmp_path: Path, hostile: str, path: str, message: str, env: dict[str, str]
) -> None:
    index = tmp_path / "index"
    refused = groundqa("ingest", hostile + path, index=index, env=env)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert message in refused.stderr
    assert "0 documents" in groundqa("docs", index=index).stdout or not index.exists()


@pytest.mark.parametrize(
    ("content_type", "body", "named"),
    [
        ("multipart/form-data", b"--x\r\n", "Missing boundary"),
        (
            "multipart/form-data; boundary=x",
            b"".join(b"--x\r\nContent-Disposition: form-data; name=f%d\r\n\r\nv\r\n" % i for i in range(1100))
            + b"--x--\r\n",
            "Too many fields",
        ),
    ],
)
def test_a_multipart_body_that_cannot_be_read_is_named_as_such(
    client: TestClient, content_type: str, body: bytes, named: str
) -> None:
    reply = client.post("/v1/documents/upload", content=body, headers={**AUTH, "Content-Type": content_type})
    assert reply.status_code == 422
    detail = reply.json()["detail"]
    assert "multipart form cannot be read" in detail and named in detail and "JSON" not in detail


def test_small_upload_refusals_read_plainly(client: TestClient) -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><text>Hi</text></svg>'
    refused = _upload(client, "logo.svg", svg)
    assert (
        refused["status"] == 422 and "SVG image, not an article" in refused["detail"]
    )  # before: AssertionError
    article = b"<p>The harbour ferries leave from Pier 3 every forty minutes, all day long.</p>" * 20
    page = b"<html><head><style>" + b"p { color: red; } " * 150_000 + b"</style></head><body><article>"
    body = (  # by hand: clients escape a NUL in a file name, a hostile one need not
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="../../../../tmp/ev\x00il.html"\r\n'
        b"Content-Type: text/html\r\n\r\n" + page + article + b"</article></body></html>\r\n--b--\r\n"
    )
    reply = client.post(
        "/v1/documents/upload",
        content=body,
        headers={**AUTH, "Content-Type": "multipart/form-data; boundary=b"},
    )
    kept = {"status": reply.status_code, **reply.json()}
    assert kept["status"] == 201 and kept["source"] == "evil.html" and kept["doc_id"] == "evil", kept
    assert any("repeated paragraphs are read once" in w for w in kept["warnings"])


def test_mcp_bodies_over_its_limit_and_bad_ids_get_json_rpc_errors(client: TestClient) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    big = client.post(
        "/mcp", content=b'{"jsonrpc": "2.0", "x": "' + b"a" * 4_900_000 + b'"}', headers=headers
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == -32600  # before: plain text
    body = {"jsonrpc": "2.0", "id": {"nested": 1}, "method": "tools/list"}
    odd = client.post("/mcp", json=body, headers=headers)
    assert (
        odd.status_code == 400 and "string or a number" in odd.json()["error"]["message"]
    )  # before: 202, empty


def _docx_bomb(unpacked: int) -> bytes:
    """A real Word file whose document.xml holds `unpacked` bytes of paragraphs: under the 200 MB
    unpacked limit, yet parsed into a tree of many times its size."""
    import io
    import zipfile

    paragraph = b"<w:p><w:r><w:t>Harbour.</w:t></w:r></w:p>"
    source = zipfile.ZipFile(io.BytesIO(make_docx(["A small file."])))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for entry in source.infolist():
            if entry.filename != "word/document.xml":
                bomb.writestr(entry, source.read(entry))
        head, _, tail = source.read("word/document.xml").partition(b"<w:body>")
        with bomb.open("word/document.xml", "w", force_zip64=True) as f:
            f.write(head + b"<w:body>")
            for _ in range(unpacked // (len(paragraph) * 10_000)):
                f.write(paragraph * 10_000)
            f.write(b"</w:body></w:document>")
    return out.getvalue()


@pytest.mark.slow
def test_a_parse_is_held_to_its_memory_whatever_the_file() -> None:
    # 60 MB of paragraphs (a 1 MB file) take a parse to 1.1 GB; a 4 GB machine's cap is 1 GB.
    with pytest.raises(FileRefused, match="memory"):
        isolated(_docx_bomb(60 << 20), "bomb.docx", FileLimits(memory=1 << 30))


def _parse_children() -> int:
    """Processes the forkserver of this test process has forked: the parses running now."""
    servers = {
        p.parent.name for p in Path("/proc").glob("[0-9]*/cmdline") if b"forkserver import main" in _read(p)
    }
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        parent = _read(stat).rpartition(b")")[2].split()[1:2]
        if parent and parent[0].decode() in servers:
            count += 1
    return count


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_at_most_max_parses_run_at_once_and_the_rest_wait(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    pages = [[f"Page {n}: the lighthouse keeper's log, line {i}." for i in range(8)] for n in range(150)]
    data = make_pdf(pages)
    limits = FileLimits(parses=1, slots=str(tmp_path / "slots"), wait=600, ocr=False)
    seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(_parse_children())
            stop.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with ThreadPoolExecutor(3) as pool:
        found = list(pool.map(lambda n: isolated(data, f"log{n}.pdf", limits), range(3)))
    stop.set()
    watcher.join()
    assert all(len(f.page_starts) == 150 for f in found)
    assert max(seen) == 1 and seen.count(1) > 3  # before: three children at once
    with pytest.raises(ParseBusy, match="GROUNDQA_MAX_PARSES"), ThreadPoolExecutor(2) as pool:
        quick = FileLimits(parses=1, slots=str(tmp_path / "slots"), wait=0.1, ocr=False)
        list(pool.map(lambda n: isolated(data, "log.pdf", quick), range(2)))
