from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route

from groundqa.service.app import create_app
from groundqa.service.auth import require_key
from groundqa.service.config import Settings
from groundqa.service.routes import api_routes
from tests.conftest import ARTICLE, ROOT, seed_input, server_settings, wait_until_ready

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUESTION = "How long is the Power of Siberia 2 pipeline?"
MIXED = "Intro 😀😀 emoji 🇨🇳 first.\r\n\r\n中文句子在这里。第二句话！\r\nCafe\u0301 au lait is served.\r\n\r\nThe answer is 42 kilometres."


def _client(tmp_path: Path, seed: bool = True, **settings: object) -> TestClient:
    config = Settings(index_dir=tmp_path / "index", **settings)  # type: ignore[arg-type]
    seeds = [seed_input()] if seed else []
    return TestClient(create_app(config, seed=seeds))


# The Qdrant variants are slow (local mode per test): the fast loop keeps the embedded index.
@pytest.fixture(params=["embedded", pytest.param("qdrant", marks=pytest.mark.slow), "qdrant-server"])
def client(request: pytest.FixtureRequest, tmp_path: Path, seeded_index: Path) -> Iterator[TestClient]:
    """Every route on both backends: the embedded index (a copy of one seeded with the bundled
    article), Qdrant through qdrant-client's local mode (layer 1 of the Qdrant backend's tests)
    and a real Qdrant server when GROUNDQA_QDRANT_URL names one (layer 4; skipped otherwise)."""
    backend: dict[str, object] = {}
    if request.param == "embedded":
        shutil.copytree(seeded_index, tmp_path / "index")
    elif request.param == "qdrant":
        backend = {"qdrant_url": f"local:{tmp_path / 'qdrant'}"}
    elif request.param == "qdrant-server":
        backend = server_settings()
    with _client(tmp_path, api_key=KEY, **backend) as c:  # type: ignore[arg-type]
        wait_until_ready(c)
        yield c


def _assert_exact(client: TestClient, body: dict) -> None:
    texts: dict[str, str] = {}
    for item in body["passages"] + ([body["answer"]] if body["answer"] else []):
        doc_id = item["doc_id"]
        if doc_id not in texts:
            texts[doc_id] = client.get(f"/v1/documents/{doc_id}").json()["text"]
        assert texts[doc_id][item["start"] : item["end"]] == item["text"]


def test_query_returns_the_answer_with_exact_offsets(client: TestClient) -> None:
    reply = client.post("/v1/query", json={"question": QUESTION})
    assert reply.status_code == 200
    body = reply.json()
    assert set(body) == {"question", "mode", "k", "answer", "confidence", "passages", "took_ms"}
    assert body["mode"] == "hybrid" and body["k"] == 5
    assert "2,500 km" in body["answer"]["text"]
    assert len(body["answer"]["text"]) <= 400
    assert [p["rank"] for p in body["passages"]] == list(range(1, len(body["passages"]) + 1))
    assert set(body["passages"][0]) == {
        "rank",
        "doc_id",
        "title",
        "passage_id",
        "start",
        "end",
        "text",
        "score",
        "page",
    }
    # A text document has no pages: null, in the passages and the answer alike.
    assert body["passages"][0]["page"] is None and body["answer"]["page"] is None
    _assert_exact(client, body)


def test_get_query_is_the_same(client: TestClient) -> None:
    post = client.post("/v1/query", json={"question": QUESTION, "k": 3, "mode": "dense"}).json()
    get = client.get("/v1/query", params={"q": QUESTION, "k": 3, "mode": "dense"}).json()
    assert post["passages"] == get["passages"] and post["answer"] == get["answer"]


@pytest.mark.parametrize("mode", ["hybrid", "dense", "lexical"])
def test_every_mode_answers(client: TestClient, mode: str) -> None:
    body = client.post("/v1/query", json={"question": QUESTION, "mode": mode, "k": 3}).json()
    assert body["mode"] == mode and "2,500 km" in body["passages"][0]["text"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"question": "   "}, "question"),
        ({"question": "x" * 1001}, "question"),
        ({"question": "ok", "k": 0}, "k"),
        ({"question": "ok", "k": 51}, "k"),
        ({"question": "ok", "mode": "fuzzy"}, "mode"),
        ({"question": 5}, "question"),
        ({}, "question"),
    ],
)
def test_bad_queries_get_422_naming_the_field(client: TestClient, body: dict, field: str) -> None:
    reply = client.post("/v1/query", json=body)
    assert reply.status_code == 422
    assert field in reply.json()["detail"]


def test_malformed_json_gets_422(client: TestClient) -> None:
    reply = client.post("/v1/query", content=b'{"question": ', headers={"Content-Type": "application/json"})
    assert reply.status_code == 422 and "JSON" in reply.json()["detail"]


def test_unknown_doc_ids_get_404(client: TestClient) -> None:
    reply = client.post("/v1/query", json={"question": QUESTION, "doc_ids": ["missing"]})
    assert reply.status_code == 404 and "missing" in reply.json()["detail"]


def test_document_lifecycle(client: TestClient) -> None:
    created = client.post(
        "/v1/documents", json={"text": MIXED, "title": "Mixed", "doc_id": "mixed"}, headers=AUTH
    )
    assert created.status_code == 201
    assert created.json()["doc_id"] == "mixed" and created.json()["chars"] == len(MIXED)
    again = client.post(
        "/v1/documents", json={"text": MIXED, "title": "Mixed", "doc_id": "mixed"}, headers=AUTH
    )
    assert again.status_code == 200 and again.json()["sha256"] == created.json()["sha256"]
    conflict = client.post("/v1/documents", json={"text": "Other text.", "doc_id": "mixed"}, headers=AUTH)
    assert conflict.status_code == 409

    stored = client.get("/v1/documents/mixed").json()
    assert stored["text"] == MIXED and stored["title"] == "Mixed"
    body = client.post(
        "/v1/query", json={"question": "What is the answer in kilometres?", "doc_ids": ["mixed"]}
    ).json()
    assert body["passages"] and all(p["doc_id"] == "mixed" for p in body["passages"])
    assert "42 kilometres" in body["answer"]["text"]
    _assert_exact(client, body)
    emoji = client.post(
        "/v1/query", json={"question": "中文句子", "doc_ids": ["mixed"], "mode": "lexical"}
    ).json()
    _assert_exact(client, emoji)

    listing = client.get("/v1/documents").json()
    assert listing["count"] == 2 and {d["doc_id"] for d in listing["documents"]} == {
        "putin-china-visit",
        "mixed",
    }

    replaced = client.put(
        "/v1/documents/mixed", json={"text": "Entirely new text about penguins."}, headers=AUTH
    )
    assert replaced.status_code == 200
    hits = client.post("/v1/query", json={"question": "answer kilometres", "k": 20, "mode": "lexical"}).json()
    assert all("42 kilometres" not in p["text"] for p in hits["passages"])

    assert client.delete("/v1/documents/mixed", headers=AUTH).status_code == 204
    assert client.get("/v1/documents/mixed").status_code == 404
    assert client.delete("/v1/documents/mixed", headers=AUTH).status_code == 404
    for mode in ("hybrid", "dense", "lexical"):
        found = client.post("/v1/query", json={"question": "penguins", "k": 50, "mode": mode}).json()
        assert all(p["doc_id"] != "mixed" for p in found["passages"])


def test_put_creates_a_missing_document(client: TestClient) -> None:
    reply = client.put("/v1/documents/new-doc", json={"text": "A new document."}, headers=AUTH)
    assert reply.status_code == 201 and reply.json()["doc_id"] == "new-doc"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": "  \r\n "}, "text"),
        ({"text": "ok", "doc_id": "bad id"}, "doc_id"),
        ({"text": "ok", "doc_id": "x" * 129}, "doc_id"),
        ({"text": 12}, "text"),
    ],
)
def test_bad_documents_get_422(client: TestClient, body: dict, field: str) -> None:
    reply = client.post("/v1/documents", json=body, headers=AUTH)
    assert reply.status_code == 422 and field in reply.json()["detail"]
    assert client.get("/v1/documents").json()["count"] == 1


def test_bodies_over_the_limit_get_413(tmp_path: Path) -> None:
    with _client(tmp_path, seed=False, api_key=KEY, max_body_bytes=1000) as c:
        wait_until_ready(c)
        reply = c.post("/v1/documents", json={"text": "word " * 500}, headers=AUTH)
        assert reply.status_code == 413 and "1000 bytes" in reply.json()["detail"]
        streamed = c.post("/v1/documents", content=(b"x" * 600 for _ in range(3)), headers=AUTH)
        assert streamed.status_code == 413


def test_writes_need_the_right_key(client: TestClient) -> None:
    doc = {"text": "Some text."}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        reply = client.post("/v1/documents", json=doc, headers=headers)
        assert reply.status_code == 401 and "Bearer" in reply.json()["detail"]
        assert client.delete("/v1/documents/putin-china-visit", headers=headers).status_code == 401
        assert client.put("/v1/documents/x", json=doc, headers=headers).status_code == 401
    assert client.get("/v1/documents").json()["count"] == 1


def test_writes_are_refused_when_no_key_is_set(tmp_path: Path) -> None:
    with _client(tmp_path, seed=False) as c:
        wait_until_ready(c)
        reply = c.post("/v1/documents", json={"text": "Some text."}, headers=AUTH)
        assert reply.status_code == 403 and "GROUNDQA_API_KEY" in reply.json()["detail"]
        assert c.delete("/v1/documents/x", headers=AUTH).status_code == 403


def test_empty_index_is_ready_and_answers_nothing(tmp_path: Path) -> None:
    with _client(tmp_path, seed=False) as c:
        wait_until_ready(c)
        body = c.post("/v1/query", json={"question": QUESTION}).json()
        assert body["passages"] == [] and body["answer"] is None


@pytest.mark.slow
def test_readyz_is_503_until_the_index_loads(tmp_path: Path) -> None:
    text = ARTICLE.read_text(encoding="utf-8")
    seeds = [
        seed_input(Path(f"copy-{i}.txt"), f"{text}\n\nCopy {i}.") for i in range(6)
    ]  # seconds of embedding
    config = Settings(index_dir=tmp_path / "index")  # type: ignore[call-arg]
    with TestClient(create_app(config, seed=seeds)) as c:
        first = c.get("/readyz")
        query = c.post("/v1/query", json={"question": QUESTION})
        assert c.get("/healthz").status_code == 200
        wait_until_ready(c)
        assert c.get("/readyz").json()["documents"] == 6
    assert first.status_code == 503 and "loading" in first.json()["detail"]
    assert query.status_code == 503


def test_a_broken_index_reports_503_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "index").mkdir()
    (tmp_path / "index" / "meta.json").write_text('{"format": 3, "model": "other-model"}')
    with _client(tmp_path, seed=False) as c:
        for _ in range(300):
            reply = c.get("/readyz")
            if "failed" in reply.json()["detail"]:
                break
            time.sleep(0.1)
        assert reply.status_code == 503 and "other-model" in reply.json()["detail"]
        assert c.post("/v1/query", json={"question": "x"}).status_code == 503


def test_metrics_count_requests_and_documents(client: TestClient) -> None:
    client.post("/v1/query", json={"question": QUESTION})
    client.post("/v1/query", json={"question": ""})
    text = client.get("/metrics").text
    assert 'groundqa_http_requests_total{method="POST",route="/v1/query",status="200"} 1.0' in text
    assert 'groundqa_http_requests_total{method="POST",route="/v1/query",status="422"} 1.0' in text
    assert "groundqa_query_seconds_count" in text
    passages = client.get("/readyz").json()["passages"]
    assert "groundqa_documents 1.0" in text and f"groundqa_passages {float(passages)}" in text


def test_docs_page_works_offline(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower()
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static/swagger/swagger-ui.css").status_code == 200
    assert "/v1/query" in client.get("/openapi.json").json()["paths"]


def test_cors_is_closed_unless_configured(tmp_path: Path, client: TestClient) -> None:
    origin = {"Origin": "https://example.org"}
    assert "access-control-allow-origin" not in client.get("/healthz", headers=origin).headers
    with _client(tmp_path / "other", seed=False, cors_origins="https://example.org") as c:
        assert (
            c.get("/healthz", headers=origin).headers["access-control-allow-origin"] == "https://example.org"
        )


def test_refusals_carry_cors_headers_and_async_uploads_may_be_preflighted(tmp_path: Path) -> None:
    """A page on an allowed origin reads why a request was refused (the key guard's 401, the body
    limit's 413), and may send Prefer: respond-async (its preflight passes)."""
    origin = {"Origin": "https://example.org"}
    with _client(
        tmp_path, seed=False, cors_origins="https://example.org", api_key=KEY, max_body_bytes=2000
    ) as c:
        keyless = c.post("/v1/documents", json={"text": "A text."}, headers=origin)
        assert keyless.status_code == 401
        assert keyless.headers["access-control-allow-origin"] == "https://example.org"
        large = c.post("/v1/query", json={"question": "x" * 5000}, headers=origin)
        assert large.status_code == 413
        assert large.headers["access-control-allow-origin"] == "https://example.org"
        preflight = c.options(
            "/v1/documents/upload",
            headers=origin
            | {
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, prefer",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert "prefer" in preflight.headers["access-control-allow-headers"].lower()


def test_the_chat_page_is_sent_with_a_content_security_policy(client: TestClient) -> None:
    """Round 4, defect 12: the page ran under no policy; now only its own files and this server
    (tests/test_page.py checks in Chromium that the page breaks no rule of it)."""
    policy = client.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy


def test_openapi_names_the_bearer_scheme_on_every_write_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "GROUNDQA_API_KEY, as 'Authorization: Bearer <key>'",
    }
    secured = {
        (method.upper(), path)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if operation.get("security") == [{"apiKey": []}]
    }
    writes = {
        (method, route.path)
        for route in api_routes(client.app.routes)  # type: ignore[attr-defined]
        if route.include_in_schema and any(d.call is require_key for d in route.dependant.dependencies)
        for method in route.methods or ()
    }
    assert ("POST", "/v1/documents") in writes and ("DELETE", "/v1/documents/{doc_id}") in writes
    assert secured == writes


def test_queries_stay_whole_during_ingest_and_delete(client: TestClient) -> None:
    versions = [ARTICLE.read_text(encoding="utf-8")] + [MIXED + f" Copy {i}." for i in range(12)]

    def ask(i: int) -> int:
        reply = client.post(
            "/v1/query", json={"question": QUESTION if i % 2 else "中文句子 kilometres", "k": 10}
        )
        body = reply.json()
        for item in body["passages"] + ([body["answer"]] if body["answer"] else []):
            # The document may be gone by now: the passage must slice one version of it exactly.
            assert any(v[item["start"] : item["end"]] == item["text"] for v in versions)
        return reply.status_code

    def write(i: int) -> int:
        doc_id = f"doc-{i % 3}"
        if i % 2:
            return client.delete(f"/v1/documents/{doc_id}", headers=AUTH).status_code
        return client.put(
            f"/v1/documents/{doc_id}", json={"text": MIXED + f" Copy {i}."}, headers=AUTH
        ).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        writes = [pool.submit(write, i) for i in range(12)]
        asks = [pool.submit(ask, i) for i in range(60)]
        assert {f.result() for f in asks} == {200}
        assert {f.result() for f in writes} <= {200, 201, 204, 404}


def test_chat_page_is_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]


def test_bulk_add_stores_many_documents_in_one_commit(client: TestClient) -> None:
    docs = [
        {"text": f"Bulk note {i}: the tram to stop {i} runs every {i + 3} minutes.", "doc_id": f"bulk-{i}"}
        for i in range(30)
    ]
    reply = client.post("/v1/documents/batch", json={"documents": docs}, headers=AUTH)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["added"], body["replaced"], body["unchanged"]) == (30, 0, 0)
    assert [d["doc_id"] for d in body["documents"]] == [f"bulk-{i}" for i in range(30)]
    again = client.post(
        "/v1/documents/batch",
        json={"documents": docs[:2] + [{"text": "Changed.", "doc_id": "bulk-5"}], "replace": True},
        headers=AUTH,
    ).json()
    assert [d["state"] for d in again["documents"]] == ["unchanged", "unchanged", "replaced"]
    hit = client.get("/v1/query", params={"q": "How often does the tram to stop 17 run?", "k": 1}).json()
    assert hit["passages"][0]["doc_id"] == "bulk-17"


def test_bulk_add_is_all_or_nothing(client: TestClient) -> None:
    docs = [{"text": "Fine text.", "doc_id": "fine"}, {"text": "Other text.", "doc_id": "putin-china-visit"}]
    reply = client.post("/v1/documents/batch", json={"documents": docs}, headers=AUTH)
    assert reply.status_code == 409 and "putin-china-visit" in reply.json()["detail"]
    twice = client.post("/v1/documents/batch", json={"documents": [docs[0], docs[0]]}, headers=AUTH)
    assert twice.status_code == 409 and "twice" in twice.json()["detail"]
    assert client.post("/v1/documents/batch", json={"documents": []}, headers=AUTH).status_code == 422
    assert client.post("/v1/documents/batch", json={"documents": docs[:1]}).status_code == 401
    assert client.get("/v1/documents").json()["count"] == 1


def test_bulk_add_has_a_document_limit(tmp_path: Path) -> None:
    with _client(tmp_path, seed=False, api_key=KEY, max_batch_docs=2) as c:
        wait_until_ready(c)
        docs = [{"text": f"Doc {i}.", "doc_id": f"d{i}"} for i in range(3)]
        reply = c.post("/v1/documents/batch", json={"documents": docs}, headers=AUTH)
        assert reply.status_code == 413 and "limit is 2" in reply.json()["detail"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": ""}, "q"),
        ({"q": "  "}, "q"),
        ({"q": "x" * 1001}, "q"),
        ({"q": "", "k": 5, "doc_ids": ""}, "q"),
        ({"q": "ok", "mode": "x"}, "mode"),
    ],
)
def test_bad_get_queries_get_422_naming_the_field(client: TestClient, params: dict, field: str) -> None:
    reply = client.get("/v1/query", params=params)
    assert reply.status_code == 422 and field in reply.json()["detail"]


def test_lone_surrogates_get_422(client: TestClient) -> None:
    raw = b'{"question": "\\ud800 pipeline"}'
    reply = client.post("/v1/query", content=raw, headers={"Content-Type": "application/json"})
    assert reply.status_code == 422 and "question" in reply.json()["detail"]
    doc = b'{"text": "a \\ud800 b", "doc_id": "bad"}'
    reply = client.post("/v1/documents", content=doc, headers={"Content-Type": "application/json", **AUTH})
    assert reply.status_code == 422 and "surrogate" in reply.json()["detail"]
    assert client.get("/v1/documents").json()["count"] == 1


def test_an_empty_key_leaves_writes_off(tmp_path: Path) -> None:
    with _client(tmp_path, seed=False, api_key="  ") as c:
        wait_until_ready(c)
        reply = c.post("/v1/documents", json={"text": "Some text."}, headers={"Authorization": "Bearer"})
        assert reply.status_code == 403


def test_dot_doc_ids_get_422(client: TestClient) -> None:
    for doc_id in (".", ".."):
        reply = client.post("/v1/documents", json={"text": "Some text.", "doc_id": doc_id}, headers=AUTH)
        assert reply.status_code == 422 and "doc_id" in reply.json()["detail"]


def test_documents_over_the_size_limit_get_422_with_the_limit(tmp_path: Path) -> None:
    """Defect 4: documents had no size limit (a 4.99 MB one ran for 22 minutes)."""
    with _client(tmp_path, seed=False, api_key=KEY, max_doc_chars=1000) as c:
        wait_until_ready(c)
        reply = c.post("/v1/documents", json={"text": "word " * 201}, headers=AUTH)
        assert reply.status_code == 422
        assert "1,005 characters; the limit is 1,000 (GROUNDQA_MAX_DOC_CHARS)" in reply.json()["detail"]
        batch = [{"text": "fine", "doc_id": "a"}, {"text": "x" * 1001, "doc_id": "b"}]
        assert c.post("/v1/documents/batch", json={"documents": batch}, headers=AUTH).status_code == 422
        assert c.get("/v1/documents").json()["count"] == 0
        assert c.post("/v1/documents", json={"text": "word " * 200}, headers=AUTH).status_code == 201


def test_invalid_utf8_and_deep_json_get_422(client: TestClient) -> None:
    """Defect 6: both got 400 where the contract says 422."""
    headers = {**AUTH, "Content-Type": "application/json"}
    bad = client.post("/v1/documents", content=b'{"text": "\xff\xfe"}', headers=headers)
    deep = client.post("/v1/query", content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    for reply in (bad, deep):
        assert reply.status_code == 422 and reply.json()["detail"].startswith("body: cannot be read as JSON")


def test_the_openapi_document_describes_every_error(client: TestClient) -> None:
    """Defect 6: 422 was declared as an array, and 400, 404, 409 and 413 were missing."""
    schema = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    assert schema["components"]["schemas"]["ErrorOut"]["properties"]["detail"]["type"] == "string"
    post = schema["paths"]["/v1/documents"]["post"]["responses"]
    assert {"200", "201", "401", "403", "408", "409", "413", "422", "503"} <= set(post)
    assert set(schema["paths"]["/v1/documents/{doc_id}"]["delete"]["responses"]) >= {"204", "404"}
    reply = client.post("/v1/query", json={"question": ""})
    assert reply.status_code == 422 and isinstance(reply.json()["detail"], str)
    options = client.options("/v1/documents")
    assert options.status_code == 405 and options.headers["allow"] == "GET, POST"


def test_questions_in_other_unicode_forms_find_the_document_over_http(client: TestClient) -> None:
    """Defect 8: an NFD or full-width question missed the NFC document and hybrid answered from
    another one. Offsets stay on the stored text."""
    import unicodedata

    text = "Der Bürgermeister von Zürich eröffnet das Café Größenwahn am Montag."
    assert (
        client.post("/v1/documents", json={"text": text, "doc_id": "zuerich"}, headers=AUTH).status_code
        == 201
    )
    for question in (
        unicodedata.normalize("NFD", "Wer eröffnet das Café Größenwahn in Zürich?"),
        "Wer eröffnet das Ｃａｆé Ｇｒößｅｎｗａｈｎ?",  # full-width Latin letters
    ):
        for mode in ("lexical", "hybrid"):
            body = client.post("/v1/query", json={"question": question, "mode": mode, "k": 1}).json()
            top = body["passages"][0]
            assert top["doc_id"] == "zuerich", (question, mode, top["doc_id"])
            assert text[top["start"] : top["end"]] == top["text"]


def test_every_route_is_documented_in_the_readme(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    app = create_app(Settings(index_dir=tmp_path / "index"))  # type: ignore[call-arg]
    routes = [
        (m, r.path)
        for r in [*api_routes(app.routes), *(r for r in app.routes if isinstance(r, Route))]
        for m in sorted(r.methods or ())
        if m != "HEAD"
    ]
    assert len(routes) > 10
    assert [f"{m} {p}" for m, p in routes if f"{m} {p}" not in readme] == []


def test_the_limits_are_the_apis_own(tmp_path: Path) -> None:
    """The chat page reads these; the API refuses one past each."""
    with _client(tmp_path, seed=False) as client:
        wait_until_ready(client)
        limits = client.get("/v1/limits").json()
        assert limits["modes"] == ["hybrid", "dense", "lexical"] and limits["default_mode"] == "hybrid"
        long = "x" * (limits["question_chars"] + 1)
        assert client.post("/v1/query", json={"question": long}).status_code == 422
        assert client.post("/v1/query", json={"question": "x" * limits["question_chars"]}).status_code == 200
        too_many = {"question": "Who?", "k": limits["k_max"] + 1}
        assert client.post("/v1/query", json=too_many).status_code == 422


@pytest.mark.parametrize(
    "request_line",
    [
        ("GET", "/v1/documents/bad%20id"),
        ("DELETE", "/v1/documents/bad%20id"),
        ("GET", "/v1/query?q=Who%3F&doc_ids=bad%20id"),
        ("POST", "/v1/query"),
    ],
)
def test_the_doc_id_rule_holds_on_every_route(tmp_path: Path, request_line: tuple[str, str]) -> None:
    method, path = request_line
    with _client(tmp_path, seed=False, api_key=KEY) as client:
        wait_until_ready(client)
        body = {"question": "Who?", "doc_ids": ["bad id"]} if method == "POST" else None
        reply = client.request(method, path, json=body, headers=AUTH)
        assert reply.status_code == 422, reply.text
        assert "doc_id" in reply.json()["detail"]


def test_every_list_in_a_request_has_a_limit(tmp_path: Path) -> None:
    """Defect 1 of round 2: 250,001 doc_ids gave a 500 (one SQL parameter each) with no key."""
    with _client(tmp_path) as client:
        wait_until_ready(client)
        most = client.get("/v1/limits").json()["doc_ids"]
        over = [f"d{i}" for i in range(most + 1)]
        for reply in (
            client.post("/v1/query", json={"question": "Who?", "doc_ids": over}),
            client.post("/v1/query", json={"question": "Who?", "doc_ids": ["a"] * 250_001}),
            client.get("/v1/query", params={"q": "Who?", "doc_ids": over}),
        ):
            assert reply.status_code == 422 and "doc_ids: List should have at most 1000" in reply.text, (
                reply.text
            )
        at_limit = client.post("/v1/query", json={"question": "Who?", "doc_ids": over[:most]})
        assert at_limit.status_code == 404  # none of them is indexed: said, not a 500
        chat = {"model": "groundqa", "messages": [{"role": "user", "content": "Who?"}] * 1001}
        reply = client.post("/v1/chat/completions", json=chat)
        assert reply.status_code == 400 and "messages" in reply.json()["error"]["message"]


def test_concurrent_questions_share_the_encoder_and_rank_on_few_threads(
    tmp_path: Path, seeded_index: Path
) -> None:
    """Over real HTTP, 16 questions at once: they wait for the encoder without holding a thread
    (so they meet in one forward pass), rank on the app's few ranking threads, and each gets the
    answer it gets alone."""
    import threading

    import httpx

    from groundqa.service.deps import services_of
    from groundqa.service.search import RANKING_THREADS
    from tests.conftest import LiveServer

    shutil.copytree(seeded_index, tmp_path / "index")
    server = LiveServer(tmp_path / "index")
    server.start()
    try:
        index = services_of(server.app).loaded()
        questions = [f"{QUESTION} ({n})" for n in range(15)] + ["Who visited China?"]
        alone = {q: index.search(q) for q in questions}
        index.questions.largest = 0
        barrier = threading.Barrier(len(questions))

        def ask(question: str) -> dict:
            with httpx.Client(base_url=server.url, timeout=300) as http:
                barrier.wait()
                reply = http.get("/v1/query", params={"q": question})
                assert reply.status_code == 200, reply.text
                return dict(reply.json())

        with ThreadPoolExecutor(len(questions)) as pool:
            answers = dict(zip(questions, pool.map(ask, questions), strict=True))
        rankers = [t.name for t in threading.enumerate() if t.name.startswith("ranking")]
    finally:
        server.stop()
    assert index.questions.largest > 1
    assert 1 <= len(rankers) <= RANKING_THREADS, rankers
    for question, body in answers.items():
        expected = alone[question]
        assert body["answer"]["start"] == expected.answer.span.start, question
        assert [p["passage_id"] for p in body["passages"]] == [
            f"{h.passage.doc_id}:{h.passage.start}-{h.passage.end}" for h in expected.hits
        ]
        assert body["confidence"] == expected.confidence
