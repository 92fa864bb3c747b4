"""Citations a person can check from any client: each cited span with its page and a link to the
citation view (/view/{doc_id}?start=&end=, the document with the span highlighted); in a reply,
each marker a Markdown link to it ([[1]](url)) with OpenAI's url_citation annotation at its place,
and the same links as a Markdown list at the end, for clients that keep only the text."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

from groundqa.index.index import SearchResult
from groundqa.service.schemas import Annotation, CitationOut, Cited, SentenceOut, URLCitation

# Passages cited beside the answer sentence.
SEE_ALSO = 3


def view_url(base: str | None, doc_id: str, start: int, end: int) -> str | None:
    """The citation view's link, under base (None: no server is known to show it)."""
    if base is None:
        return None
    return f"{base}/view/{quote(doc_id)}?{urlencode({'start': start, 'end': end})}#cited"


def citations(result: SearchResult, base: str | None) -> list[Cited]:
    """[1] the answer sentence, then up to SEE_ALSO other returned passages of its document
    (context for it) that overlap nothing cited before them, each with its exact text, page and
    link; none when the answer was left out."""
    if result.answer is None:
        return []
    a = result.answer
    found = [
        (
            a.title,
            CitationOut(
                doc_id=a.passage.doc_id, start=a.span.start, end=a.span.end, page=a.page, text=a.text
            ),
        )
    ]
    for hit in result.hits:
        p = hit.passage
        if len(found) > SEE_ALSO:
            break
        overlaps = any(c.doc_id == p.doc_id and p.start < c.end and c.start < p.end for _, c in found)
        if p.doc_id == a.passage.doc_id and not overlaps:
            found.append(
                (
                    hit.title,
                    CitationOut(doc_id=p.doc_id, start=p.start, end=p.end, page=hit.page, text=p.text),
                )
            )
    return [_cited(n, title, c, base) for n, (title, c) in enumerate(found, start=1)]


def _cited(index: int, title: str, c: CitationOut, base: str | None) -> Cited:
    url = view_url(base, c.doc_id, c.start, c.end)
    return Cited(index=index, title=title, url=url, **c.model_dump())


def written_citations(sentences: list[SentenceOut], titles: dict[str, str], base: str) -> list[Cited]:
    """One citation per distinct span that supports a sentence of a written answer, in order."""
    out: list[Cited] = []
    for c in (c for s in sentences for c in [s.citation, *s.also]):
        if c is None or any(_same(c, x) for x in out):
            continue
        out.append(_cited(len(out) + 1, titles.get(c.doc_id, c.doc_id), c, base))
    return out


def _same(a: CitationOut | Cited, b: CitationOut | Cited) -> bool:
    return (a.doc_id, a.start, a.end) == (b.doc_id, b.start, b.end)


def marker(c: Cited) -> str:
    """A citation's marker in a reply: [1], as a Markdown link to its view."""
    return f"[[{c.index}]]({c.url})" if c.url else f"[{c.index}]"


def marked(sentence: SentenceOut, cited: list[Cited]) -> str:
    """A sentence of a written answer followed by the markers of its spans ([?]: kept unsupported);
    the sentences so marked, joined, then the sources, are a written reply."""
    spans = [c for c in [sentence.citation, *sentence.also] if c] if sentence.supported else []
    markers = [next((x for x in cited if _same(c, x)), None) for c in spans]
    found = [m for m in markers if m is not None]
    every = markers and len(found) == len(markers)
    return f"{sentence.text} " + ("".join(marker(m) for m in found) if every else "[?]")


def url_citations(text: str, cited: list[Cited]) -> list[Annotation]:
    """One url_citation a marker, at its place in the reply's text, in order; a citation whose
    marker the text no longer holds (a reply cut at max_tokens) keeps its source, at the text's end."""
    found = []
    for c in (c for c in cited if c.url):
        title = f"{c.title}, p. {c.page}" if c.page else c.title
        found_at = [(m.start(), m.end()) for m in re.finditer(re.escape(marker(c)), text)]
        places = found_at or [(len(text), len(text))]
        for start, end in places:
            place = URLCitation(url=c.url or "", title=title, start_index=start, end_index=end)
            found.append(Annotation(url_citation=place))
    return sorted(found, key=lambda a: a.url_citation.start_index)


def sources(cited: list[Cited]) -> str:
    """The citations as a Markdown list, one item a marker: `- [1] Title, p. 2: <link>`."""
    lines = []
    for c in cited:
        page = f", p. {c.page}" if c.page else ""
        title = c.title.replace("[", "(").replace("]", ")")
        where = f"<{c.url}>" if c.url else f"{c.doc_id}, characters {c.start}-{c.end}"
        lines.append(f"- [{c.index}] {title}{page}: {where}")
    return "Sources:\n\n" + "\n".join(lines) if lines else ""
