"""A running groundqa server, asked over HTTP: `ask --url` and `eval questions --url` share it."""

from __future__ import annotations

from typing import Any

import httpx

from groundqa.index.errors import GroundQAError


class ServerError(GroundQAError):
    pass


class Client:
    def __init__(self, url: str, timeout: float = 60) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout)

    def query(
        self,
        question: str,
        k: int,
        mode: str,
        min_confidence: float | None = None,
        doc_ids: list[str] | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """The contract's QueryResponse, as JSON; history: earlier turns, {"role", "content"}."""
        body: dict[str, Any] = {"question": question, "k": k, "mode": mode}
        if history:
            body["history"] = history
        if doc_ids is not None:
            body["doc_ids"] = doc_ids
        if min_confidence is not None:
            body["min_confidence"] = min_confidence
        result: dict[str, Any] = self._call("POST", "/v1/query", json=body)
        return result

    def limits(self) -> dict[str, Any]:
        found: dict[str, Any] = self._call("GET", "/v1/limits")
        return found

    def documents(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self._call("GET", "/v1/documents")["documents"]
        return listing

    def text(self, doc_id: str) -> str:
        return str(self._call("GET", f"/v1/documents/{doc_id}")["text"])

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.url}: {exc}; is 'groundqa serve' running there?") from exc
        if reply.status_code != 200:
            raise ServerError(f"{self.url}{path} answered {reply.status_code}: {_detail(reply)}")
        return reply.json()


def _detail(reply: httpx.Response) -> str:
    try:
        return str(reply.json().get("detail"))
    except ValueError:
        return reply.text[:200]
