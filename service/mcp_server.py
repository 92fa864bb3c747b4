"""groundqa as an MCP server (the official SDK): `groundqa mcp` over stdio, and the same tools
mounted in the HTTP service at /mcp (streamable HTTP). Every result is structured output with a
schema, and text; domain errors come back as tool errors with their message."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import CallToolResult
from pydantic import BaseModel, Field, ValidationError

from groundqa import __version__
from groundqa.index.errors import DocumentConflict, DocumentNotFound, GroundQAError
from groundqa.index.ranking import DEFAULT_K, DEFAULT_MODE, Mode
from groundqa.service.auth import WriteCheck
from groundqa.service.citations import citations
from groundqa.service.fields import DocId, DocIds, K, QuestionText
from groundqa.service.schemas import (
    Cited,
    DocumentList,
    DocumentOut,
    History,
    PassageOut,
    QueryResponse,
    turns_of,
)
from groundqa.service.search import Searcher

INSTRUCTIONS = (
    "groundqa answers questions from a fixed set of articles and cites them exactly. Call `ask` with a "
    "question to get the answer sentence and the passages it comes from, each with its document and "
    "character offsets; when `answer` is null the articles do not answer the question: say so rather "
    "than guess. Call `get_document` with start and end to read around a citation, and "
    "`list_documents` to see what the articles are."
)
# Characters of context get_document returns at most in one call.
MAX_SLICE = 20_000


class Passages(BaseModel):
    passages: list[PassageOut]


class Answered(QueryResponse):
    citations: list[Cited] = Field(
        description="[1] the answer sentence, then passages around it, each with a link a person "
        "can open to check it (empty when the articles do not answer)"
    )


class DocumentSlice(BaseModel):
    doc_id: str
    title: str
    start: int
    end: int
    chars: int = Field(description="the document's whole length, in characters")
    text: str = Field(description="document_text[start:end]")


class PlainErrors(MCPServer):
    """Tool errors as one plain sentence in MCP's words: a bad argument names the argument and
    what it takes (not a validation dump), an unknown argument is refused by name, and the SDK's
    "Error executing tool" prefix is left out."""

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None = None
    ) -> CallToolResult | Any:
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            known = sorted(tool.parameters.get("properties", {}))
            unknown = sorted(set(arguments) - set(known))
            if unknown:
                raise ToolError(
                    f"{name} has no argument {unknown[0]!r}; its arguments are {', '.join(known) or 'none'}."
                )
            try:
                tool.fn_metadata.validate_arguments(arguments)
            except ValidationError as exc:
                raise ToolError(_argument_error(name, exc)) from exc
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError:
            raise
        except ToolError as exc:
            raise ToolError(str(exc).removeprefix(f"Error executing tool {name}: ")) from exc.__cause__


def _argument_error(tool: str, exc: ValidationError) -> str:
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"])
    if e["type"] == "missing":
        return f"{tool} needs the argument {where!r}."
    said = e["msg"][0].lower() + e["msg"][1:]
    said = said.removeprefix("input ").removeprefix("value error, ")
    if said.startswith((f"{where} ", f"{where}:")):  # the index's own check names the argument
        return f"The argument {where!r} of {tool} is wrong: {said}; change it and call {tool} again."
    given = e.get("input")
    return f"The argument {where!r} of {tool} {said} (it was {given!r}); change it and call {tool} again."


def build(searcher: Searcher, check_write: WriteCheck | None, link_base: str | None = None) -> MCPServer:
    """The tools over the searcher's index (loaded lazily by the caller): questions take the
    service's one search path; add_document exists when check_write is given, and runs only when
    it passes. link_base: the base of the citation links (None: no server is known to show them,
    so a citation is its text and offsets alone).

    Long: one closure per tool over the searcher, each with the description a model reads; split
    apart, each would need the same three arguments passed on."""
    server = PlainErrors("groundqa", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING")
    index = searcher.index

    @server.tool()
    async def ask(
        question: QuestionText,
        k: K = DEFAULT_K,
        mode: Mode = DEFAULT_MODE,
        doc_ids: DocIds = None,
        history: History = None,
    ) -> Answered:
        """Answer a question from the articles: the sentence that answers it (null when the articles
        do not seem to answer; then the passages are only the closest ones), the confidence that it
        answers (0 to 1), the passages it comes from, best first, each with doc_id, title, start
        and end (character offsets into the document's text), page (PDFs) and text, and
        citations with links a person can open to check them: give those links with the answer.
        For a follow-up ("How long is it?"), pass the earlier turns as history, or ask a
        self-contained question; searched_for then says what was searched."""

        async def answer() -> Answered:
            found = await searcher.search("mcp", question, k, mode, doc_ids, history=turns_of(history))
            return Answered(**QueryResponse.of(found).__dict__, citations=citations(found, link_base))

        return await _call(answer)

    @server.tool()
    async def search(
        question: QuestionText, k: K = DEFAULT_K, mode: Mode = DEFAULT_MODE, doc_ids: DocIds = None
    ) -> Passages:
        """Find the passages of the articles closest to a question, best first, with their
        offsets; no answer sentence. Use ask to get an answer."""

        async def passages() -> Passages:
            found = await searcher.search("mcp", question, k, mode, doc_ids)
            return Passages(passages=QueryResponse.of(found).passages)

        return await _call(passages)

    @server.tool()
    async def get_document(
        doc_id: DocId,
        start: Annotated[int, Field(ge=0, description="first character (0 = the beginning)")] = 0,
        end: Annotated[
            int | None, Field(ge=0, description="end character, exclusive (none: to the end)")
        ] = None,
    ) -> DocumentSlice:
        """Read a document, or the part start:end of it (offsets as in passages): read around a
        citation to check it or see its context. At most 20,000 characters a call."""

        def read() -> DocumentSlice:
            doc, text = index().document(doc_id)
            stop = len(text) if end is None else min(end, len(text))
            if start > stop:
                raise ToolError(f"start {start} is past end {stop}; the document has {len(text)} characters")
            stop = min(stop, start + MAX_SLICE)
            return DocumentSlice(
                doc_id=doc.doc_id,
                title=doc.title,
                start=start,
                end=stop,
                chars=len(text),
                text=text[start:stop],
            )

        return await _call(read)

    @server.tool()
    async def list_documents() -> DocumentList:
        """The articles the answers come from: doc_id, title, length and when each was added."""

        def listing() -> DocumentList:
            docs = index().documents()
            return DocumentList(documents=[DocumentOut.of(d) for d in docs], count=len(docs))

        return await _call(listing)

    if check_write is not None:

        @server.tool()
        async def add_document(
            text: Annotated[str, Field(description="the article's text, stored exactly as given")],
            ctx: Context,
            title: Annotated[str | None, Field(description="its title (default: its first line)")] = None,
            doc_id: Annotated[
                str | None, Field(description="its id, A-Z a-z 0-9 . _ - (default: from the title)")
            ] = None,
            replace: Annotated[
                bool, Field(description="replace the text of an existing doc_id (else that is refused)")
            ] = False,
        ) -> DocumentOut:
            """Add an article so that questions can be answered from it. The same text again
            changes nothing; other text under an existing doc_id is refused unless replace is true."""
            check_write(ctx)
            return await _call(
                lambda: DocumentOut.of(
                    index().add(text, title=title, doc_id=doc_id, replace=replace).document
                )
            )

    return server


async def _call(work: Callable[[], Any] | Callable[[], Awaitable[Any]]) -> Any:
    """Domain errors become tool errors the model reads, in MCP's words: what to change. Work
    that is not a coroutine (reading, adding a document) runs on a thread: the event loop goes on."""
    try:
        if inspect.iscoroutinefunction(work):
            return await work()
        return await anyio.to_thread.run_sync(work)
    except DocumentNotFound as exc:
        named = (
            f"doc_id {exc.doc_ids[0]!r}"
            if len(exc.doc_ids) == 1
            else "doc_ids " + ", ".join(map(repr, exc.doc_ids))
        )
        raise ToolError(f"No document has the {named}; call list_documents for the doc_ids.") from exc
    except DocumentConflict as exc:
        if exc.doc_id is None:
            raise ToolError(f"{exc}.") from exc
        raise ToolError(
            f"The doc_id {exc.doc_id!r} already holds other text; call add_document again with "
            "replace: true to replace it, or give another doc_id."
        ) from exc
    except GroundQAError as exc:
        raise ToolError(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from exc
