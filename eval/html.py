"""report.html: an evaluation report as one page that opens from disk (no script, no CDN, plots
inside it) and reads at phone width."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import Any

Table = tuple[str, dict[str, dict[str, Any]]]
# Missed questions shown open in each mode.
OPEN = 3

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
code, .cmd { font-family: ui-monospace, monospace; font-size: .85rem; word-break: break-all; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #ccc; padding: .2rem .5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; height: auto; }
details { border: 1px solid #ddd; border-radius: 4px; margin: .4rem 0; padding: .3rem .6rem; }
summary { cursor: pointer; }
.passage { border-left: 3px solid #bbb; margin: .4rem 0; padding: .2rem .6rem; white-space: pre-wrap; }
.where { color: #555; font-size: .85rem; }
mark { background: #ffe066; }
"""


def page(report: dict[str, Any], tables: list[Table], plots: list[Path]) -> str:
    title = f"groundqa evaluation: {report.get('dataset') or report.get('set', '')}"
    parts = [f"<h1>{escape(title)}</h1>"]
    if report.get("command"):
        parts.append(f"<p>Made by <span class='cmd'>{escape(report['command'])}</span></p>")
    parts.append(f"<p>{escape(_counts(report))}</p>")
    for name, rows in tables:
        parts += [f"<h2>{escape(name)}</h2>", _table(rows)]
    parts += _answers(report.get("answers"))
    for path in plots:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f"<p><img alt='{escape(path.stem)}' src='data:image/png;base64,{data}'></p>")
    for mode, missed in (report.get("missed") or {}).items():
        parts.append(f"<h2>Missed in {escape(mode)}: the answer sentence holds no gold span</h2>")
        # The first ones open: the page shows misses with their spans marked without a click.
        parts += [_question(m, opened=n < OPEN) for n, m in enumerate(missed)] or ["<p>None.</p>"]
    if report.get("settings"):
        items = "".join(
            f"<li>{escape(str(k))}: <code>{escape(str(v))}</code></li>" for k, v in report["settings"].items()
        )
        parts.append(f"<h2>Settings</h2><ul>{items}</ul>")
    return document(title, parts)


def document(title: str, parts: list[str]) -> str:
    """A whole page: the house style and the parts, in order."""
    body = "\n".join(parts)
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n</body></html>\n"
    )


def _counts(report: dict[str, Any]) -> str:
    if "conversations" in report:
        return f"{report['conversations']} conversations ({report.get('short', 0)} short follow-ups)."
    return f"{report.get('questions')} questions scored."


def _table(rows: dict[str, dict[str, Any]]) -> str:
    columns = list(next(iter(rows.values()), {}))
    head = "".join(f"<th>{escape(c)}</th>" for c in ["", *columns])
    lines = [
        f"<tr><td>{escape(row)}</td>" + "".join(f"<td>{_cell(m.get(c))}</td>" for c in columns) + "</tr>"
        for row, m in rows.items()
    ]
    return f"<div class='scroll'><table><tr>{head}</tr>{''.join(lines)}</table></div>"


def _cell(value: Any) -> str:
    return "n/a" if value is None else escape(str(value))


def _answers(answers: dict[str, Any] | None) -> list[str]:
    """How the answer texts were found in the documents, and those found nowhere."""
    if not answers:
        return []
    parts = [
        "<h2>Answers given as text</h2>",
        f"<p>Found exactly: {answers['exact']}; normalised: {answers['normalised']}; "
        f"nowhere (left out of the scores): {len(answers['unfound'])}; "
        f"in several documents: {len(answers['ambiguous'])}.</p>",
    ]
    if answers["unfound"]:
        items = "".join(
            f"<li>{escape(u['id'])}: {escape(u['question'])} (answer: <q>{escape(u['answer'])}</q>)</li>"
            for u in answers["unfound"]
        )
        parts.append(f"<p>Found in no document:</p><ul>{items}</ul>")
    if answers["ambiguous"]:
        items = "".join(
            f"<li>{escape(qid)}: {escape(', '.join(docs))}</li>" for qid, docs in answers["ambiguous"].items()
        )
        parts.append(f"<p>Found in several documents (each one's spans count):</p><ul>{items}</ul>")
    return parts


def _question(m: dict[str, Any], opened: bool) -> str:
    rank = f"first passage holding it: #{m['rank']}" if m["rank"] else "no passage of the top 20 holds it"
    confidence = "" if m.get("confidence") is None else f", confidence {m['confidence']:.3f}"
    parts = [
        f"<details{' open' if opened else ''}><summary><b>{escape(m['id'])}</b> {escape(m['question'])} "
        f"<span class='where'>({rank}{confidence})</span></summary>"
    ]
    if m.get("answer"):
        parts.append(f"<p>Expected: <q>{escape(m['answer'])}</q></p>")
    for c in m["context"]:
        parts.append(_passage("Gold span in context", c, m["gold"]))
    if m.get("answer_given"):
        parts.append(_passage("Answer sentence given", m["answer_given"], m["gold"]))
    for rank_at, p in enumerate(m["top"], start=1):
        parts.append(_passage(f"Passage #{rank_at}", p, m["gold"]))
    parts.append("</details>")
    return "\n".join(parts)


def _passage(label: str, shown: dict[str, Any], gold: list[list[Any]]) -> str:
    """A stretch of a document with the gold spans inside it marked, and its offsets."""
    start, text = shown["start"], shown["text"]
    inside = sorted(
        (s - start, e - start)
        for d, s, e in gold
        if d == shown["doc_id"] and start <= s and e <= shown["end"]
    )
    pieces, at = [], 0
    for s, e in inside:
        if s < at:
            continue
        pieces += [escape(text[at:s]), f"<mark>{escape(text[s:e])}</mark>"]
        at = e
    pieces.append(escape(text[at:]))
    where = f"{label}: {shown['doc_id']} [{shown['start']}, {shown['end']})"
    return f"<div class='where'>{escape(where)}</div><div class='passage'>{''.join(pieces)}</div>"
