"""Follow-up questions read in the light of the conversation: the rules, the index, the HTTP API,
the OpenAI route through the official client, MCP through the SDK's client, the CLI and the
evaluation. Each follow-up below is one that the index misses when the history is ignored."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fastapi.testclient import TestClient
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from groundqa.eval.conversation_set import conversations, follow_up
from groundqa.eval.data import load_squad
from groundqa.index.conversation import (
    MAX_HISTORY_CHARS,
    MAX_TURN_CHARS,
    MAX_TURNS,
    Titles,
    Turn,
    check_history,
    resolve,
    trim_history,
)
from groundqa.index.errors import InvalidQuery
from groundqa.index.index import Index
from groundqa.index.ranking import MAX_QUESTION_CHARS
from groundqa.service.app import create_app
from groundqa.service.config import Settings
from tests.conftest import ARTICLE, ROOT, SQUAD_SLICE, LiveServer, groundqa, wait_until_ready

PIPELINE = "What is the Power of Siberia 2 pipeline?"
PIPELINE_ANSWER = (
    "The Power of Siberia 2 pipeline, once completed, will help Russia export gas from the Yamal "
    "Peninsula field in western Siberia, through eastern Mongolia to northern China, stretching more "
    "than 2,500 km."
)
HISTORY = [Turn("user", PIPELINE), Turn("assistant", PIPELINE_ANSWER)]
# Alone, these find nothing about the pipeline or James Char (checked below).
HOW_LONG = "How long is it?"
CHAR = [Turn("user", "Who is James Char?")]
WHERE = "Where does he work?"
TEXT = ARTICLE.read_text(encoding="utf-8")
LENGTH = (TEXT.index("more than 2,500 km"), TEXT.index("more than 2,500 km") + len("more than 2,500 km"))


def holds(item: Any, span: tuple[int, int]) -> bool:
    return item is not None and item.start <= span[0] and span[1] <= item.end


# --- the rules -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "question", "searched"),
    [
        (HISTORY, HOW_LONG, "How long is Power of Siberia 2?"),
        (
            HISTORY,
            "How much gas is it expected to carry?",
            "How much gas is Power of Siberia 2 expected to carry?",
        ),
        (HISTORY, "How long is the pipeline?", "How long is Power of Siberia 2 pipeline?"),
        (CHAR, WHERE, "Where does James Char work?"),
        (
            [Turn("user", "Who is Marie Curie?")],
            "What did her husband do?",
            "What did Marie Curie's husband do?",
        ),
        ([Turn("user", "When was Fresno founded?")], "Who is the city's mayor?", "Who is Fresno's mayor?"),
        (HISTORY, "What about Mongolia?", "What about Mongolia? (Power of Siberia 2)"),
        # Earlier follow-ups are resolved in turn: the subject carries on.
        (
            HISTORY + [Turn("user", HOW_LONG)],
            "Who will it carry gas to?",
            "Who will Power of Siberia 2 carry gas to?",
        ),
    ],
)
def test_a_follow_up_is_searched_with_the_subject_of_the_conversation(
    history: list[Turn], question: str, searched: str
) -> None:
    assert resolve(question, history).searched_for == searched


@pytest.mark.parametrize(
    "question",
    [
        "Who directs Russia's China Institute?",  # names its own subject
        "When did Tesla say he would return?",  # "he" is Tesla, named first
        "Where did Alexander Gabuev write about the war?",  # "the war" is its own
        "Which university does Zhao Minghao teach at?",
    ],
)
def test_a_question_that_changes_the_subject_is_searched_as_asked(question: str) -> None:
    assert resolve(question, HISTORY).searched_for == question


def test_without_history_the_question_is_the_search() -> None:
    assert resolve(HOW_LONG, []).searched_for == HOW_LONG


def test_titles_pick_the_subject_among_the_names_of_a_question() -> None:
    titles = Titles(["Intergovernmental Panel on Climate Change", "Yuan dynasty", "Black Death"])
    asked = [Turn("user", "What role did Michael Oppenheimer have in the IPCC's reports?")]
    assert resolve("Who is the chair of it?", asked, titles).searched_for == "Who is the chair of IPCC?"
    asked = [Turn("user", "When did Khan declare the Yuan dynasty?")]
    assert resolve("Who started it?", asked, titles).subject == "Yuan dynasty"
    asked = [Turn("user", "How many died of the black death?")]
    assert resolve("When did it end?", asked, titles).searched_for == "When did black death end?"


def test_history_limits_are_checked_and_a_long_history_is_trimmed_from_the_oldest() -> None:
    with pytest.raises(InvalidQuery, match=f"the limit is {MAX_TURNS}"):
        check_history([Turn("user", "hi")] * (MAX_TURNS + 1))
    with pytest.raises(InvalidQuery, match=f"the limit is {MAX_TURN_CHARS}"):
        check_history([Turn("user", "x" * (MAX_TURN_CHARS + 1))])
    with pytest.raises(InvalidQuery, match="'system'"):
        check_history([Turn("system", "be brief")])  # type: ignore[arg-type]
    long = [Turn("user", f"question {i} " + "x" * 3000) for i in range(40)]
    kept = trim_history(long)
    assert kept == long[-len(kept) :] and sum(len(t.content) for t in kept) <= MAX_HISTORY_CHARS
    check_history(kept)


@pytest.mark.parametrize("turns", [10, 50])
def test_a_crafted_history_resolves_within_the_question_limit(turns: int) -> None:
    """Round 4, defect 9: a history of title-cased words made one name of a whole turn, searched
    as 4,007 characters (and cost 200 ms); names are at most MAX_NAME_WORDS words now, and what is
    searched stays within the question limit (its cost: docs/experiments/history_cost.py)."""
    per = min(MAX_TURN_CHARS, MAX_HISTORY_CHARS // turns)
    heading = " ".join(f"Word{chr(97 + i % 26)}x" for i in range(per // 7))[: per - 4] + " it?"
    history = [Turn("user" if i % 2 == 0 else "assistant", heading) for i in range(turns)]
    check_history(history)
    for question in ("What about the city?", "How long is it?", "x" * 990 + " is it?"):
        searched = resolve(question, history, Titles(["Power of Siberia 2"])).searched_for
        assert len(searched) <= MAX_QUESTION_CHARS, len(searched)


# --- the index -----------------------------------------------------------------------------


def test_the_index_answers_a_follow_up_from_its_history(article_index: Index) -> None:
    alone = article_index.search(HOW_LONG, k=3, min_confidence=0)
    assert not any(holds(h.passage, LENGTH) for h in alone.hits) and alone.searched_for is None
    found = article_index.search(HOW_LONG, k=3, history=HISTORY)
    assert found.question == HOW_LONG and found.searched_for == "How long is Power of Siberia 2?"
    assert holds(found.hits[0].passage, LENGTH)
    # The answer given before is not given again: "How much gas?" gets the next sentence.
    gas = article_index.search("How much gas is it expected to transport?", k=3, history=HISTORY)
    assert gas.answer is not None and "50 billion cubic meters" in gas.answer.text


def test_the_history_of_another_subject_leaves_a_question_as_it_is(article_index: Index) -> None:
    question = "Which university does Zhao Minghao teach at?"
    plain = article_index.search(question, k=5)
    after = article_index.search(question, k=5, history=HISTORY)
    assert after.searched_for == question
    assert [h.passage for h in after.hits] == [h.passage for h in plain.hits]
    assert after.answer is not None and plain.answer is not None
    assert dataclasses.replace(after.answer, given=None) == plain.answer
    assert after.confidence == plain.confidence


# --- HTTP ----------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path, seeded_index: Path) -> Iterator[TestClient]:
    shutil.copytree(seeded_index, tmp_path / "index")
    with TestClient(create_app(Settings(index_dir=tmp_path / "index"))) as c:
        wait_until_ready(c)
        yield c


def _turns(history: list[Turn]) -> list[dict[str, str]]:
    return [{"role": t.role, "content": t.content} for t in history]


def test_post_query_takes_a_history_and_says_what_it_searched(client: TestClient) -> None:
    body = {"question": WHERE, "k": 2, "history": _turns(CHAR)}
    reply = client.post("/v1/query", json=body).json()
    assert reply["question"] == WHERE and reply["searched_for"] == "Where does James Char work?"
    assert "School of S. Rajaratnam International Studies" in reply["passages"][0]["text"]
    alone = client.post("/v1/query", json={"question": WHERE, "k": 2}).json()
    assert "Rajaratnam" not in json.dumps(alone)


def test_without_history_the_response_is_as_before(client: TestClient) -> None:
    for body in ({"question": PIPELINE}, {"question": PIPELINE, "history": []}):
        reply = client.post("/v1/query", json=body).json()
        assert list(reply) == ["question", "mode", "k", "answer", "confidence", "passages", "took_ms"]
    limits = client.get("/v1/limits").json()
    assert (limits["history_turns"], limits["history_turn_chars"], limits["history_chars"]) == (
        MAX_TURNS,
        MAX_TURN_CHARS,
        MAX_HISTORY_CHARS,
    )


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([{"role": "user", "content": "hi"}] * (MAX_TURNS + 1), f"at most {MAX_TURNS} items"),
        ([{"role": "user", "content": "x" * (MAX_TURN_CHARS + 1)}], f"at most {MAX_TURN_CHARS} characters"),
        (
            [{"role": "user", "content": "x" * MAX_TURN_CHARS}] * (MAX_HISTORY_CHARS // MAX_TURN_CHARS + 1),
            f"the limit is {MAX_HISTORY_CHARS}",
        ),
        ([{"role": "system", "content": "be brief"}], "history.0.role"),
        ([{"role": "user"}], "history.0.content"),
        ([{"role": "user", "content": "hi", "name": "x"}], "history.0.name"),
    ],
)
def test_a_history_over_the_limits_gets_422_naming_it(
    client: TestClient, history: list, message: str
) -> None:
    reply = client.post("/v1/query", json={"question": HOW_LONG, "history": history})
    assert reply.status_code == 422 and message in reply.json()["detail"]


# --- the OpenAI route and MCP, through their official clients ---------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("conversation") / "index") as live:
        yield live


def test_openai_route_answers_a_follow_up_from_the_messages(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="any", max_retries=0)
    messages: list[Any] = [
        {"role": "system", "content": "Answer from the articles."},
        {"role": "user", "content": PIPELINE},
    ]
    first = client.chat.completions.create(model="groundqa", messages=messages)
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": HOW_LONG},
    ]
    reply = client.chat.completions.create(model="groundqa", messages=messages)
    citations = (reply.model_extra or {})["citations"]
    assert any(c["start"] <= LENGTH[0] and LENGTH[1] <= c["end"] for c in citations)
    alone = client.chat.completions.create(model="groundqa", messages=[{"role": "user", "content": HOW_LONG}])
    assert not any("2,500 km" in c["text"] for c in (alone.model_extra or {})["citations"])
    # A long conversation is trimmed from its oldest turn, never refused.
    long = [{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "y" * 3000}] * 30
    trimmed = client.chat.completions.create(model="groundqa", messages=long + messages[1:])
    assert any("2,500 km" in c["text"] for c in (trimmed.model_extra or {})["citations"])


def test_mcp_ask_takes_a_history(server: LiveServer) -> None:
    async def run() -> tuple[Any, Any]:
        async with (
            httpx2.AsyncClient(timeout=120) as http,
            streamable_http_client(f"{server.url}/mcp", http_client=http) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            asked = await session.call_tool("ask", {"question": WHERE, "k": 2, "history": _turns(CHAR)})
            bad = await session.call_tool("ask", {"question": WHERE, "history": [{"role": "robot"}]})
            return asked, bad

    asked, bad = asyncio.run(run())
    assert not asked.is_error
    body = asked.structured_content
    assert body["searched_for"] == "Where does James Char work?"
    assert "Rajaratnam" in body["passages"][0]["text"]
    assert bad.is_error and "history" in bad.content[0].text


# --- the CLI -------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_ask_reads_a_history_file(tmp_path: Path, seeded_index: Path, server: LiveServer) -> None:
    shutil.copytree(seeded_index, tmp_path / "index")
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps(_turns(HISTORY)))
    asked = groundqa("ask", HOW_LONG, "-k", "1", "--history", str(turns), index=tmp_path / "index")
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.startswith("Searched for: How long is Power of Siberia 2?\nAnswer: ")
    assert "2,500 km" in asked.stdout
    remote = groundqa("ask", HOW_LONG, "--json", "--history", str(turns), "--url", server.url)
    assert json.loads(remote.stdout)["searched_for"] == "How long is Power of Siberia 2?"
    turns.write_text('[{"role": "user"}]')
    bad = groundqa("ask", HOW_LONG, "--history", str(turns), index=tmp_path / "index")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "--history" in bad.stderr


# --- the evaluation ------------------------------------------------------------------------


def test_conversation_set_replaces_the_subject() -> None:
    assert follow_up("When was Super Bowl 50 played?", ["Super Bowl 50"], "it") == "When was it played?"
    assert follow_up("Who coached each Super Bowl 50 team?", ["Super Bowl 50"], "it") is None
    assert follow_up("What did Luther's father do?", ["Luther"], "he") == "What did his father do?"
    assert follow_up("What river runs by Fresno?", ["Fresno"], "the city") == "What river runs by the city?"
    dataset = load_squad(SQUAD_SLICE)
    made = conversations(dataset.articles, dataset.questions, 3, seed=0)
    assert len(made) >= 6 and len({r["doc_id"] for r in made}) >= 3
    for row in made:
        assert row["question"] != row["standalone"] and row["history"][0]["role"] == "user"


@pytest.mark.slow
def test_eval_conversations_prints_the_four_rows(tmp_path: Path, seeded_index: Path) -> None:
    shutil.copytree(seeded_index, tmp_path / "index")
    out = tmp_path / "report"
    found = ROOT / "eval" / "conversations" / "putin-china-visit.jsonl"
    result = groundqa("eval", "conversations", str(found), "--out", str(out), index=tmp_path / "index")
    assert result.returncode == 0, result.stderr
    for row in ("standalone", "follow_up_alone", "follow_up_with_history", "switch_with_unrelated_history"):
        assert f"| {row} |" in result.stdout
    report = json.loads((out / "report.json").read_text())
    rows = report["rows"]
    assert rows["follow_up_with_history"]["hit@5"] > rows["follow_up_alone"]["hit@5"]
    assert report["needing_history"] >= 2 and report["needing_history_found"] == 1.0
