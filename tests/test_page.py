"""The chat page in a real Chromium, against a live server on loopback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import LiveServer

pytestmark = pytest.mark.browser

KEY = "page-key"
EMOJI_DOC = "😀🎉👩‍👩‍👧 Emoji first. 🇨🇳中文。\n\nThe secret ingredient of the soup is saffron from Iran. It costs a lot."


@pytest.fixture(scope="module", params=["embedded", "qdrant"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The page on both backends: the embedded index and Qdrant (qdrant-client's local mode)."""
    folder = tmp_path_factory.mktemp("page")
    backend = {"qdrant_url": f"local:{folder / 'qdrant'}"} if request.param == "qdrant" else {}
    live = LiveServer(folder / "index", api_key=KEY, **backend)
    live.start()
    reply = httpx.put(
        f"{live.url}/v1/documents/emoji-doc",
        json={"text": EMOJI_DOC, "title": "Soup"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert reply.status_code == 201
    yield live
    live.stop()


@pytest.fixture
def page(browser, server: LiveServer):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#docs-list input", state="attached")
    page.wait_for_selector("#mode option", state="attached")  # the API's limits are read
    yield page
    context.close()


def _ask(page, question: str) -> object:  # type: ignore[no-untyped-def]
    page.fill("#question", question)
    page.press("#question", "Enter")
    reply = page.locator(".turn").last.locator(".reply")
    reply.locator(".answer-text").wait_for()
    return reply


def _highlight(page, name: str) -> str:  # type: ignore[no-untyped-def]
    return "".join(page.locator(f"#viewer-text mark.hl-{name}").all_text_contents())


def test_ask_see_answer_and_open_the_citation(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    reply = _ask(page, "How long is the Power of Siberia 2 pipeline?")
    assert "2,500 km" in reply.locator(".answer-text").inner_text()
    citations = reply.locator(".citation")
    assert citations.count() == 3
    assert "2,500 km" in reply.locator(".citation mark.hl-answer").first.inner_text()

    citations.first.click()
    page.wait_for_selector("#viewer[open]")
    doc_id = citations.first.get_attribute("data-doc")
    start, end = (
        int(citations.first.get_attribute("data-start")),
        int(citations.first.get_attribute("data-end")),
    )
    text = httpx.get(f"{server.url}/v1/documents/{doc_id}").json()["text"]
    assert _highlight(page, "passage") == text[start:end]
    answer = httpx.post(
        f"{server.url}/v1/query", json={"question": "How long is the Power of Siberia 2 pipeline?"}
    ).json()["answer"]
    assert _highlight(page, "answer") == text[answer["start"] : answer["end"]]
    assert page.locator("#viewer-text mark.hl-answer").first.is_visible()
    page.click("#viewer-close")
    assert not page.locator("#viewer").is_visible()


def test_emoji_before_the_answer_highlight_exactly(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    reply = _ask(page, "What is the secret ingredient of the soup?")
    assert "saffron" in reply.locator(".answer-text").inner_text()
    citation = reply.locator(".citation[data-doc='emoji-doc']").first
    citation.click()
    page.wait_for_selector("#viewer[open]")
    start, end = int(citation.get_attribute("data-start")), int(citation.get_attribute("data-end"))
    assert _highlight(page, "passage") == EMOJI_DOC[start:end]
    body = httpx.post(
        f"{server.url}/v1/query", json={"question": "What is the secret ingredient of the soup?"}
    ).json()
    a = body["answer"]
    assert (
        _highlight(page, "answer")
        == EMOJI_DOC[a["start"] : a["end"]]
        == "The secret ingredient of the soup is saffron from Iran."
    )


def test_empty_and_too_long_questions_are_refused_plainly(page) -> None:  # type: ignore[no-untyped-def]
    page.press("#question", "Enter")
    assert page.locator("#status").inner_text() == "Type a question first."
    # The box holds at most the API's question length (GET /v1/limits): a longer one cannot be typed.
    page.fill("#question", "why " * 300)
    limit = httpx.get(page.url + "v1/limits").json()["question_chars"]
    assert len(page.input_value("#question")) == limit
    page.fill("#question", "")
    assert page.locator(".turn").count() == 0
    reply = _ask(page, "How much gas will the pipeline carry to China?")
    assert "50 billion cubic meters" in reply.inner_text()


def test_the_page_takes_its_limits_from_the_api(page) -> None:  # type: ignore[no-untyped-def]
    limits = httpx.get(page.url + "v1/limits").json()
    assert page.locator("#question").get_attribute("maxlength") == str(limits["question_chars"])
    assert [o.get_attribute("value") for o in page.locator("#mode option").all()] == limits["modes"]
    assert limits["generation"] is False and page.locator("#written-choice").is_hidden()  # no LLM set


def test_a_question_the_articles_do_not_answer_shows_the_closest_passages(page) -> None:  # type: ignore[no-untyped-def]
    reply = _ask(page, "Which country did the French president visit in March to sign a nuclear deal?")
    text = reply.inner_text()
    assert "don't seem to answer" in text and "Closest passages" in text
    assert reply.locator(".citation").count() > 0
    assert reply.locator("mark.hl-answer").count() == 0  # nothing is highlighted as an answer
    reply.locator(".citation").first.click()
    page.locator("#viewer-text mark.hl-passage").first.wait_for()
    assert page.locator("#viewer-text mark.hl-answer").count() == 0
    page.click("#viewer-close")
    answered = _ask(page, "How long is the Power of Siberia 2 pipeline?")
    assert "confidence" in answered.locator(".confidence").inner_text()


def test_nothing_found_says_so(page) -> None:  # type: ignore[no-untyped-def]
    reply = _ask(page, "xyzzy plugh qwertz")
    assert "Nothing in the documents answers this" in reply.inner_text()


def test_document_and_mode_selectors_narrow_the_search(page) -> None:  # type: ignore[no-untyped-def]
    page.click("#docs-summary")
    page.check("#docs-list input[value='emoji-doc']")
    assert page.locator("#docs-summary").inner_text() == "Documents: 1 chosen"
    page.select_option("#mode", "lexical")
    reply = _ask(page, "saffron pipeline Putin")
    docs = {c.get_attribute("data-doc") for c in reply.locator(".citation").all()}
    assert docs == {"emoji-doc"}


def test_a_server_that_is_down_is_reported(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    page.route("**/v1/query", lambda route: route.abort("connectionrefused"))
    reply = _ask(page, "Is anyone there?")
    assert "cannot be reached" in reply.inner_text()
    assert page.locator("#question").is_enabled()
    page.unroute("**/v1/query")
    assert "2,500 km" in _ask(page, "How long is the Power of Siberia 2 pipeline?").inner_text()


def test_server_errors_show_their_message(page) -> None:  # type: ignore[no-untyped-def]
    page.route(
        "**/v1/query", lambda route: route.fulfill(status=503, json={"detail": "the index is loading"})
    )
    reply = _ask(page, "Anything?")
    assert "the index is loading" in reply.inner_text()


def test_phone_screen_and_screenshot(browser, server: LiveServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = context.new_page()
    page.goto(server.url + "/")
    reply = _ask(page, "How much gas will the pipeline carry to China?")
    assert reply.locator(".citation").count() >= 1
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    shot = os.environ.get("GROUNDQA_SCREENSHOT")
    if shot:
        desktop = browser.new_context(viewport={"width": 1000, "height": 760})
        big = desktop.new_page()
        big.goto(server.url + "/")
        _ask(big, "How long is the Power of Siberia 2 pipeline?")
        big.screenshot(path=shot)
        desktop.close()
    context.close()


def test_a_replaced_document_is_never_shown_old(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """Defect 9: the page kept an old copy of a document after it was replaced."""
    put = lambda text: httpx.put(  # noqa: E731
        f"{server.url}/v1/documents/menu-doc",
        json={"text": text, "title": "Menu"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert put("The chef's special today is grilled trout with lemon.").status_code in (200, 201)
    reply = _ask(page, "What is the chef's special today?")
    citation = reply.locator(".citation[data-doc='menu-doc']").first
    citation.click()
    page.wait_for_selector("#viewer[open]")
    assert "grilled trout" in page.locator("#viewer-text").inner_text()
    page.click("#viewer-close")

    assert put("Changed since. The chef's special today is roast lamb with rosemary.").status_code == 200
    from playwright.sync_api import expect

    citation.click()  # the old answer's citation no longer matches the article
    expect(page.locator("#status")).to_contain_text("was changed after the answer", timeout=60_000)
    assert not page.locator("#viewer").is_visible()
    reply = _ask(page, "What is the chef's special today?")
    reply.locator(".citation[data-doc='menu-doc']").first.click()
    page.wait_for_selector("#viewer[open]")
    assert "roast lamb" in page.locator("#viewer-text").inner_text()
    assert "grilled trout" not in page.locator("#viewer-text").inner_text()


def test_the_page_asks_for_nothing_that_is_missing(browser, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """Defect 9: the page asked for a /favicon.ico that was not there."""
    context = browser.new_context()
    page = context.new_page()
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
    page.goto(server.url + "/")
    reply = _ask(page, "How long is the Power of Siberia 2 pipeline?")
    reply.locator(".citation").first.click()
    page.wait_for_selector("#viewer[open]")
    page.wait_for_load_state("networkidle")
    assert httpx.get(server.url + "/favicon.ico").status_code == 200
    context.close()
    assert failed == []


def test_a_question_asked_before_the_limits_arrive_is_answered(browser, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """CI defect: under load the page sent mode "" (its list still empty) and got 422, no citation."""
    context = browser.new_context()
    page = context.new_page()
    held: list[object] = []
    page.route("**/v1/limits", lambda route: held.append(route))  # answered only at the end
    page.goto(server.url + "/")  # returns at the load event: the page's script has run
    reply = _ask(page, "How long is the Power of Siberia 2 pipeline?")
    assert "2,500 km" in reply.locator(".answer-text").inner_text()
    assert reply.locator(".citation").count() == 3
    assert page.locator("#mode option").count() == 0  # asked while the limits were held back
    assert held, "the page did not ask for its limits"
    for route in held:
        route.continue_()  # type: ignore[attr-defined]
    page.wait_for_selector("#mode option", state="attached")
    context.close()


def test_the_api_reference_renders_the_openapi_document(browser, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    """Defect 5: Swagger UI 4.15 could not read OpenAPI 3.1 and listed no operation."""
    context = browser.new_context()
    page = context.new_page()
    page.goto(server.url + "/docs")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert "/v1/query" in paths and "/v1/documents/{doc_id}" in paths
    assert page.locator(".errors-wrapper").count() == 0
    context.close()


def test_a_pdf_citation_names_its_page_and_links_to_the_original_there(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    from tests.files import make_pdf

    pdf = make_pdf([["Harbour notes."], ["The lighthouse was built in 1874.", "Its lamp burns oil."]])
    auth = {"Authorization": f"Bearer {KEY}"}
    made = httpx.post(f"{server.url}/v1/documents/upload", files={"file": ("harbour.pdf", pdf)}, headers=auth)
    assert made.status_code == 201, made.text
    try:
        page.reload()
        page.wait_for_selector("#docs-list input", state="attached")
        reply = _ask(page, "When was the lighthouse built?")
        link = reply.locator(".answer-text a.page-link")
        assert link.inner_text() == "p. 2"
        assert link.get_attribute("href") == "/v1/documents/harbour/source#page=2"
        # The passage holding it begins on page 1 (a span names the page it begins on).
        assert reply.locator("li a.page-link").first.inner_text() == "p. 1"
        original = httpx.get(server.url + link.get_attribute("href").split("#")[0])
        assert original.headers["content-type"] == "application/pdf" and original.content == pdf
    finally:
        httpx.delete(f"{server.url}/v1/documents/harbour", headers=auth)


def test_a_follow_up_is_answered_from_the_conversation_and_survives_a_reload(page) -> None:  # type: ignore[no-untyped-def]
    sent: list[dict] = []
    page.on(
        "request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/query") else None
    )
    _ask(page, "What is the Power of Siberia 2 pipeline?")
    reply = _ask(page, "How long is it?")
    history = sent[-1]["history"]
    assert history[0] == {"role": "user", "content": "What is the Power of Siberia 2 pipeline?"}
    assert history[1]["role"] == "assistant" and "Power of Siberia 2" in history[1]["content"]
    assert "Power of Siberia 2" in reply.locator(".searched-for").inner_text()
    assert "2,500 km" in reply.inner_text()

    page.reload()
    page.wait_for_selector("#mode option", state="attached")
    assert page.locator(".turn").count() == 2  # the conversation is still there
    reply = _ask(page, "How much gas is it expected to transport?")
    assert len(sent[-1]["history"]) == 4
    assert "50 billion cubic meters" in reply.locator(".answer-text").inner_text()

    page.click("#new-conversation")
    assert page.locator(".turn").count() == 0
    _ask(page, "How long is it?")
    assert sent[-1]["history"] == []
    page.reload()
    page.wait_for_selector("#mode option", state="attached")
    assert page.locator(".turn").count() == 1


FERRY_PAGE = b"""<!DOCTYPE html><html><head><title>Harbour ferries</title></head><body><article>
<h1>Harbour ferries</h1><p>The harbour ferries leave from Pier 3 every forty minutes, from six in the
morning until midnight, and the crossing to the island takes twelve minutes in calm weather.</p>
<p>Tickets are sold on board; children under five travel free, and bicycles cost one euro extra.</p>
</article></body></html>"""


def _drop(page, name: str, data: bytes, kind: str) -> None:  # type: ignore[no-untyped-def]
    """Drops a file on the page as a person drags it from their desktop."""
    import base64

    transfer = page.evaluate_handle(
        """([name, b64, kind]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: kind }));
            return transfer;
        }""",
        [name, base64.b64encode(data).decode(), kind],
    )
    page.dispatch_event("#chat", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#chat", "drop", {"dataTransfer": transfer})


def test_the_workspace_adds_files_and_text_and_removes_a_document(page, server: LiveServer) -> None:  # type: ignore[no-untyped-def]
    from tests.files import make_pdf

    pdf = make_pdf([["Ferry history."], ["The ferry terminal opened in 1921.", "It was rebuilt in 1990."]])
    page.click("#open-workspace")
    page.fill("#key", KEY)
    page.set_input_files(
        "#files", files=[{"name": "ferries.html", "mimeType": "text/html", "buffer": FERRY_PAGE}]
    )
    _drop(page, "terminal.pdf", pdf, "application/pdf")
    uploads = page.locator("#uploads .upload")
    assert uploads.count() == 2 and page.locator("#uploads progress").count() == 2
    # (a locator, not a string of script: the page's policy allows no eval)
    expect(page.locator("#uploads .upload.done")).to_have_count(2, timeout=300_000)
    assert "Added: Harbour ferries" in uploads.nth(0).inner_text()
    assert "2 pages" in uploads.nth(1).inner_text()
    rows = page.locator("#documents tbody tr")
    page.wait_for_selector("#documents tr[data-doc='terminal']")
    assert "pdf" in page.locator("#documents tr[data-doc='terminal']").inner_text()

    page.fill("#paste-title", "Bakery")
    page.fill("#paste-text", "The bakery on Mill Street sells rye bread every Tuesday morning.")
    page.click("#paste button")
    page.wait_for_selector("#documents tr[data-doc='Bakery']")
    page.click("#workspace-close")

    reply = _ask(page, "When did the ferry terminal open?")
    assert "1921" in reply.locator(".answer-text").inner_text()
    assert reply.locator(".answer-text a.page-link").inner_text() == "p. 2"

    page.click("#open-workspace")
    page.once("dialog", lambda dialog: dialog.accept())
    before = rows.count()
    page.click("#documents tr[data-doc='terminal'] .remove")
    page.wait_for_selector("#documents tr[data-doc='terminal']", state="detached")
    assert rows.count() == before - 1
    assert httpx.get(f"{server.url}/v1/documents/terminal").status_code == 404
    for doc_id in ("ferries", "Bakery"):
        httpx.delete(f"{server.url}/v1/documents/{doc_id}", headers={"Authorization": f"Bearer {KEY}"})


def test_the_workspace_says_what_is_wrong_in_plain_words(page) -> None:  # type: ignore[no-untyped-def]
    page.click("#open-workspace")
    page.fill("#key", "wrong-key")
    page.set_input_files(
        "#files", files=[{"name": "note.txt", "mimeType": "text/plain", "buffer": b"A note."}]
    )
    page.wait_for_selector("#uploads .upload.failed")
    assert "wrong API key" in page.locator("#uploads .upload.failed").inner_text()


def test_the_workspace_at_phone_width(browser, server: LiveServer, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(server.url + "/")
    page.wait_for_selector("#documents tbody tr", state="attached")
    page.click("#open-workspace")
    assert page.evaluate("document.querySelector('#workspace').scrollWidth") <= 390
    page.keyboard.press("Tab")  # focus moves inside the dialog
    assert page.evaluate("document.querySelector('#workspace').contains(document.activeElement)")
    page.screenshot(path=str(tmp_path / "workspace-phone.png"))
    context.close()
