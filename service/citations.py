"""Citations a person can check from any client: each cited span with its page and a link to the
citation view (/view/{doc_id}?start=&end=, the document with the span highlighted), and the same
links as Markdown at the end of a reply, for clients that keep only the text."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

from groundqa.index.index import SearchResult

# Passages cited beside the answer sentence.
SEE_ALSO = 3


def view_url(base: str, doc_id: str, start: int, end: int) -> str:
    return f"{base}/view/{quote(doc_id)}?{urlencode({'start': start, 'end': end})}#cited"


def citations(result: SearchResult, base: str) -> list[dict[str, Any]]:
    """[1] the answer sentence, then up to SEE_ALSO other returned passages of its document
    (context for it) that overlap nothing cited before them, each with its exact text, page and
    link; none when the answer was left out."""
    if result.answer is None:
        return []
    a = result.answer
    found = [(a.passage.doc_id, a.title, a.span.start, a.span.end, a.text, a.page)]
    for hit in result.hits:
        p = hit.passage
        if len(found) > SEE_ALSO:
            break
        overlaps = any(d == p.doc_id and p.start < e and s < p.end for d, _, s, e, _, _ in found)
        if p.doc_id == a.passage.doc_id and not overlaps:
            found.append((p.doc_id, hit.title, p.start, p.end, p.text, hit.page))
    return [
        {
            "index": i,
            "doc_id": doc_id,
            "title": title,
            "start": start,
            "end": end,
            "page": page,
            "text": text,
            "url": view_url(base, doc_id, start, end),
        }
        for i, (doc_id, title, start, end, text, page) in enumerate(found, start=1)
    ]


def written_citations(
    sentences: list[dict[str, Any]], titles: dict[str, str], base: str
) -> list[dict[str, Any]]:
    """One citation per distinct span that supports a sentence of a written answer, in order."""
    spans: list[tuple[str, int, int]] = []
    out = []
    for c in (c for s in sentences for c in [s["citation"], *s.get("also", [])]):
        if c is None or (c["doc_id"], c["start"], c["end"]) in spans:
            continue
        spans.append((c["doc_id"], c["start"], c["end"]))
        title = titles.get(c["doc_id"], c["doc_id"])
        url = view_url(base, c["doc_id"], c["start"], c["end"])
        out.append({"index": len(spans), "title": title, **c, "url": url})
    return out


def marked(sentence: dict[str, Any], cited: list[dict[str, Any]]) -> str:
    """A sentence of a written answer followed by the markers of its spans ([?]: kept unsupported);
    the sentences so marked, joined, then the sources, are a written reply."""
    number = {(x["doc_id"], x["start"], x["end"]): x["index"] for x in cited}
    spans = (
        [c for c in [sentence["citation"], *sentence.get("also", [])] if c] if sentence["supported"] else []
    )
    markers = [number.get((c["doc_id"], c["start"], c["end"])) for c in spans]
    return f"{sentence['text']} " + (
        "".join(f"[{m}]" for m in markers) if markers and all(markers) else "[?]"
    )


def sources(cited: list[dict[str, Any]]) -> str:
    """The citations as a Markdown list, one item a marker: `- [1] Title, p. 2: <link>`."""
    lines = []
    for c in cited:
        page = f", p. {c['page']}" if c["page"] else ""
        title = c["title"].replace("[", "(").replace("]", ")")
        lines.append(f"- [{c['index']}] {title}{page}: <{c['url']}>")
    return "Sources:\n\n" + "\n".join(lines) if lines else ""
