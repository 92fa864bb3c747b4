"""groundqa eval conversations: follow-up questions scored on the gold spans of their last question.

Each conversation is asked four ways, one after the other (so that load falls on all alike):
the standalone question (the upper bound), the follow-up alone (a chat without memory), the
follow-up with its history, and the standalone question after the history of a conversation on
another document (a change of subject, which the history must not drag back).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from groundqa.eval.data import DataError, Dataset, Question, check_spans, read_jsonl
from groundqa.eval.metrics import Located, Outcome, covers, percentile, summarize
from groundqa.eval.runner import ASK_K, Reply, reply_of_json, reply_of_result, score
from groundqa.index.conversation import ROLES, Turn
from groundqa.index.index import Index
from groundqa.index.progress import progress

# The four ways each conversation is asked, in the report's order.
ROWS = ("standalone", "follow_up_alone", "follow_up_with_history", "switch_with_unrelated_history")
COLUMNS = ("hit@1", "hit@5", "hit@20", "answer_hit", "latency_ms_p50")

AskWith = Callable[[str, list[Turn]], Reply]


@dataclass(frozen=True)
class Conversation:
    id: str
    doc_id: str
    history: list[Turn]
    question: str  # the follow-up, as a person types it
    standalone: str  # the same question naming its subject
    spans: list[tuple[int, int]]
    short: bool = False


def load(path: Path) -> list[Conversation]:
    """JSONL, one conversation a line: {"id", "doc_id", "history": [{"role", "content"}, ...],
    "question", "standalone", "spans": [[start, end], ...], "short"?}."""
    found = []
    for number, item in read_jsonl(path, "conversation"):
        try:
            history = [Turn(t["role"], str(t.get("content") or "")) for t in item["history"]]
            conversation = Conversation(
                str(item["id"]),
                str(item["doc_id"]),
                history,
                str(item["question"]),
                str(item["standalone"]),
                [(int(s), int(e)) for s, e in item["spans"]],
                bool(item.get("short", False)),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(
                f"{path}:{number}: malformed conversation ({exc}); see the README's format"
            ) from exc
        if any(t.role not in ROLES for t in history) or not conversation.spans:
            raise DataError(
                f"{path}:{number}: roles are user or assistant, and spans hold at least one [start, end]"
            )
        found.append(conversation)
    if not found:
        raise DataError(f"{path} holds no conversations")
    return found


def golds(conversations: list[Conversation]) -> list[Question]:
    """Each conversation's follow-up with the gold spans of its answer."""
    return [Question(c.id, c.question, c.doc_id, c.spans) for c in conversations]


def check(conversations: list[Conversation], texts: dict[str, str]) -> None:
    """Every conversation names a document held, and its spans lie inside it."""
    check_spans(Dataset("conversations", golds(conversations)), texts)


def unrelated(conversations: list[Conversation], at: int) -> list[Turn]:
    """The history of the next conversation on another document (OFF_TOPIC in a set on one)."""
    doc = conversations[at].doc_id
    n = len(conversations)
    others = (conversations[(at + step) % n] for step in range(1, n))
    return next((c.history for c in others if c.doc_id != doc), OFF_TOPIC)


# A change of subject for a set whose conversations are all on one document.
OFF_TOPIC = [
    Turn("user", "Who painted the Mona Lisa?"),
    Turn("assistant", "Leonardo da Vinci painted the Mona Lisa in the early 16th century."),
]


def ask_index(index: Index, mode: str) -> AskWith:
    def ask(question: str, history: list[Turn]) -> Reply:
        return reply_of_result(index.search(question, ASK_K, mode, min_confidence=0.0, history=history))  # type: ignore[arg-type]

    return ask


def ask_remote(query: Callable[..., dict[str, Any]], mode: str) -> AskWith:
    """query: cli.client.Client.query."""

    def ask(question: str, history: list[Turn]) -> Reply:
        turns = [{"role": t.role, "content": t.content} for t in history]
        return reply_of_json(query(question, ASK_K, mode, 0.0, history=turns))

    return ask


def evaluate(conversations: list[Conversation], ask: AskWith, floor: float) -> dict[str, list[Outcome]]:
    found: dict[str, list[Outcome]] = {row: [] for row in ROWS}
    for at, (c, gold) in enumerate(
        zip(progress(conversations, "conversations"), golds(conversations), strict=True)
    ):
        asks: tuple[tuple[str, list[Turn]], ...] = (
            (c.standalone, []),
            (c.question, []),
            (c.question, c.history),
            (c.standalone, unrelated(conversations, at)),
        )
        for row, (question, history) in zip(ROWS, asks, strict=True):
            began = time.perf_counter()
            reply = ask(question, history)
            found[row].append(score(gold, c.doc_id, reply, (time.perf_counter() - began) * 1000, floor))
    return found


def openai_citations(conversations: list[Conversation], url: str) -> dict[str, float]:
    """Through a running server's OpenAI-compatible route, as a chat client asks (the whole
    conversation in messages): the share of follow-ups whose reply cites a span holding a gold
    span, with their history and alone."""
    found: dict[str, list[bool]] = {"with_history": [], "alone": []}
    with httpx.Client(base_url=url, timeout=120) as http:
        for c in progress(conversations, "openai"):
            for row, history in (("with_history", c.history), ("alone", [])):
                messages = [{"role": t.role, "content": t.content} for t in history]
                body = {"model": "groundqa", "messages": [*messages, {"role": "user", "content": c.question}]}
                reply = http.post("/v1/chat/completions", json=body)
                if reply.status_code != 200:
                    raise DataError(
                        f"{url}/v1/chat/completions answered {reply.status_code}: {reply.text[:200]}"
                    )
                cited = [
                    Located(x["doc_id"], x["start"], x["end"]) for x in reply.json().get("citations", [])
                ]
                found[row].append(any(covers(x, c.doc_id, c.spans) for x in cited))
    return {row: round(sum(hits) / len(hits), 4) for row, hits in found.items()}


def summary(conversations: list[Conversation], outcomes: dict[str, list[Outcome]]) -> dict[str, Any]:
    """The four rows over all conversations and over the short ones, the share of the follow-ups
    that only their history can answer which it does, and the latency history adds."""
    short = [i for i, c in enumerate(conversations) if c.short]
    rows = {row: _figures(found) for row, found in outcomes.items()}
    short_rows = (
        {row: _figures([found[i] for i in short]) for row, found in outcomes.items()} if short else {}
    )
    standalone, alone, with_history = (outcomes[r] for r in ROWS[:3])
    needing = [i for i in range(len(conversations)) if _top5(standalone[i]) and not _top5(alone[i])]
    added = [outcomes[ROWS[3]][i].latency_ms - standalone[i].latency_ms for i in range(len(conversations))]
    base = rows["standalone"]["hit@5"] or 1.0
    return {
        "conversations": len(conversations),
        "short": len(short),
        "rows": rows,
        "short_rows": short_rows,
        "ratios_to_standalone_hit@5": {
            "follow_up_with_history": _ratio(rows["follow_up_with_history"]["hit@5"], base),
            "follow_up_with_history_short": _ratio(
                short_rows.get("follow_up_with_history", {}).get("hit@5"),
                short_rows.get("standalone", {}).get("hit@5"),
            ),
            "switch_with_unrelated_history": _ratio(rows["switch_with_unrelated_history"]["hit@5"], base),
        },
        "needing_history": len(needing),
        "needing_history_found": round(sum(_top5(with_history[i]) for i in needing) / len(needing), 4)
        if needing
        else None,
        "added_latency_ms_p50": round(percentile(added, 50), 2),
    }


def markdown(name: str, command: str, s: dict[str, Any]) -> str:
    lines = [f"# groundqa evaluation: conversations {name}", "", "Made by:", "", f"    {command}", ""]
    lines += [f"{s['conversations']} conversations ({s['short']} short follow-ups).", ""]
    for title, rows in (("All", s["rows"]), ("Short follow-ups", s["short_rows"])):
        if not rows:
            continue
        lines += [
            f"**{title}**",
            "",
            "| asked | " + " | ".join(COLUMNS) + " |",
            "|---|" + "---:|" * len(COLUMNS),
        ]
        lines += [
            f"| {row} | " + " | ".join(f"{m.get(c)}" for c in COLUMNS) + " |" for row, m in rows.items()
        ]
        lines.append("")
    r = s["ratios_to_standalone_hit@5"]
    lines += [
        "- hit@5 against the standalone questions': follow-ups with history "
        f"{r['follow_up_with_history']}, short ones {r['follow_up_with_history_short']}, "
        f"a change of subject {r['switch_with_unrelated_history']}",
        f"- follow-ups that only their history can answer (standalone in the top 5, alone not): "
        f"{s['needing_history']}, found with history {s['needing_history_found']}",
        f"- latency added by a history (the standalone question after an unrelated history, against "
        f"alone, p50 of the differences): {s['added_latency_ms_p50']} ms",
    ]
    if s.get("openai_citations_hold"):
        o = s["openai_citations_hold"]
        lines.append(
            f"- over the OpenAI route, follow-ups whose citations hold a gold span: with history "
            f"{o['with_history']}, alone {o['alone']}"
        )
    lines.append("")
    return "\n".join(lines)


def _figures(found: list[Outcome]) -> dict[str, Any]:
    full = summarize(found)
    return {c: full.get(c) for c in COLUMNS}


def _top5(o: Outcome) -> bool:
    return o.rank is not None and o.rank <= 5


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 4)
