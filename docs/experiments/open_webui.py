"""Open WebUI in front of groundqa, for real: groundqa serves the bundled article, Open WebUI
(`pip install open-webui` in a virtual environment of its own; it runs offline) has it as its
OpenAI connection, and Chromium asks it a question and a follow-up as a person would. A proxy
between the two records every request Open WebUI sends (its title, tags and follow-up prompts
among them) into --record, for the tests to replay (tests/test_clients.py); a screenshot shows
the answer with groundqa's sources as Open WebUI's own citation chips and Sources panel.

    .venv/bin/python docs/experiments/open_webui.py /tmp/owui/bin/open-webui \
        --record tests/data/open_webui --shot docs/img/open-webui.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from groundqa.eval.server import wait_ready
from groundqa.service.openai_shapes import task_of

HERE = Path(__file__).resolve().parents[2]
QUESTIONS = ["How long is the Power of Siberia 2 pipeline?", "How much gas will it carry?"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("open_webui", help="the open-webui command, in its own environment")
    parser.add_argument("--record", type=Path, default=HERE / "tests" / "data" / "open_webui")
    parser.add_argument("--shot", type=Path, default=HERE / "docs" / "img" / "open-webui.png")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="open-webui-"))
    seeded = [sys.executable, "-m", "groundqa", "serve", "--index", str(work / "index"), "--port", "8611"]
    article = str(HERE / "corpus" / "putin-china-visit.txt")
    groundqa = subprocess.Popen([*seeded, "--workers", "1", "--seed", article], cwd=HERE)
    recorded: list[dict[str, object]] = []
    proxy = ThreadingHTTPServer(("127.0.0.1", 8612), _recorder("http://127.0.0.1:8611", recorded))
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    env = dict(
        os.environ,
        DATA_DIR=str(work / "open-webui"),
        OFFLINE_MODE="true",
        HF_HUB_OFFLINE="1",
        WEBUI_AUTH="False",
        ENABLE_OLLAMA_API="false",
        OPENAI_API_BASE_URL="http://127.0.0.1:8612/v1",
        OPENAI_API_KEY="not-needed",
    )
    webui = subprocess.Popen(
        [args.open_webui, "serve", "--host", "127.0.0.1", "--port", "8613"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready("http://127.0.0.1:8611", groundqa)
        wait_ready("http://127.0.0.1:8613", webui, path="/health")
        _chat(args.shot)
        _save(recorded, args.record)
    finally:
        webui.terminate()
        groundqa.terminate()
        proxy.shutdown()


def _recorder(upstream: str, recorded: list[dict[str, object]]) -> type[BaseHTTPRequestHandler]:
    class Recorder(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.endswith("/chat/completions"):
                recorded.append(json.loads(body))
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            reply = httpx.request(
                self.command, upstream + self.path, content=body, headers=headers, timeout=120
            )
            self.send_response(reply.status_code)
            for k, v in reply.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        do_GET = do_POST = _forward

        def log_message(self, *args: object) -> None:
            pass

    return Recorder


def _chat(shot: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto("http://127.0.0.1:8613/", wait_until="load")
        page.get_by_text("Okay, Let's Go!").click(timeout=30_000)
        for question in QUESTIONS:
            _ask(page, question)
        page.wait_for_timeout(10_000)  # the title, tags and follow-ups come after the answer
        panel = page.locator("button:has-text('Sources')").last
        print(f"Open WebUI's sources button under the last answer: {panel.inner_text()!r}", file=sys.stderr)
        panel.click()  # the Sources panel, from groundqa's annotations
        page.wait_for_timeout(1000)
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot))
        browser.close()


def _ask(page: Page, question: str) -> None:
    box = page.locator("#chat-input")
    box.click()
    box.fill(question)
    box.press("Enter")
    page.wait_for_timeout(2000)
    page.locator("#chat-container").get_by_text("Sources", exact=False).last.wait_for(timeout=60_000)
    page.wait_for_timeout(3000)


def _save(recorded: list[dict[str, object]], folder: Path) -> None:
    """Each kind of request once: the first question, the follow-up, and each task prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    kinds: dict[str, dict[str, object]] = {}
    for body in recorded:
        messages = body.get("messages") or []
        last = messages[-1]["content"] if messages else ""  # type: ignore[index]
        task = task_of(last) if isinstance(last, str) else None
        kind = task.kind if task else ("question" if len(messages) == 1 else "second_question")  # type: ignore[arg-type]
        kinds.setdefault(kind, body)
    for kind, body in kinds.items():
        (folder / f"{kind}.json").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    print(f"recorded {len(recorded)} requests: {', '.join(sorted(kinds))}", file=sys.stderr)


if __name__ == "__main__":
    main()
