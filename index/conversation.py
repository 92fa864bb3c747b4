"""Follow-up questions read in the light of the conversation, with no language model.

A follow-up leans on the history when it points back at something ("When was he born?", "How
long is the pipeline?", "What about Mongolia?"). Such a question is searched with the subject of
the conversation put in place of the pointer: the first name-like phrase of the latest earlier
question that had one, itself resolved the same way. A question that points at nothing is
searched as asked, so a change of subject is never dragged back, and a query without history is
the same query as before. Only string work: it adds well under a millisecond to a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from groundqa.index.errors import InvalidQuery
from groundqa.index.lexical import STOPWORDS
from groundqa.index.ranking import MAX_QUESTION_CHARS

Role = Literal["user", "assistant"]
ROLES: tuple[Role, ...] = ("user", "assistant")
# Earlier turns one query may carry, the characters of one turn, and of all of them (422 over).
MAX_TURNS = 50
MAX_TURN_CHARS = 4000
MAX_HISTORY_CHARS = 40000


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str


@dataclass(frozen=True)
class Resolved:
    """What is searched for a question: the question itself, or the question with the subject of
    the conversation in place of what pointed back at it."""

    searched_for: str
    subject: str | None  # the conversation's subject after this question


def check_history(history: Sequence[Turn]) -> None:
    """The limits of a history, for every face (the HTTP schemas and MCP run this at the edge)."""
    if len(history) > MAX_TURNS:
        raise InvalidQuery(
            f"history has {len(history)} turns; the limit is {MAX_TURNS} (at most {MAX_TURNS} items: "
            "send the latest turns)"
        )
    total = 0
    for number, turn in enumerate(history):
        if turn.role not in ROLES:
            raise InvalidQuery(f"history[{number}].role is {turn.role!r}; use 'user' or 'assistant'")
        if len(turn.content) > MAX_TURN_CHARS:
            raise InvalidQuery(
                f"history[{number}].content has {len(turn.content)} characters; the limit is "
                f"{MAX_TURN_CHARS} (at most {MAX_TURN_CHARS} characters a turn)"
            )
        total += len(turn.content)
    if total > MAX_HISTORY_CHARS:
        raise InvalidQuery(
            f"history has {total} characters; the limit is {MAX_HISTORY_CHARS} (send the latest turns)"
        )


def trim_history(history: Sequence[Turn]) -> list[Turn]:
    """The latest turns within the limits, each cut to MAX_TURN_CHARS: for clients (the OpenAI
    route) that send a whole conversation, which is trimmed from its oldest turn, never refused."""
    kept: list[Turn] = []
    total = 0
    for turn in reversed(history):
        content = turn.content[:MAX_TURN_CHARS]
        if len(kept) == MAX_TURNS or total + len(content) > MAX_HISTORY_CHARS:
            break
        kept.append(Turn(turn.role, content))
        total += len(content)
    return kept[::-1]


class Titles:
    """The index's document titles, by word: of the names a question gives, the one that covers
    most of a title is the likelier subject ("the IPCC" over "Michael Oppenheimer", "Super Bowl
    50" over "Florida")."""

    def __init__(self, titles: Sequence[str] = ()) -> None:
        self.sizes: list[int] = []
        self.by_word: dict[str, list[int]] = {}
        for number, title in enumerate(titles):
            words = {_POSSESSIVE_END.sub("", w.lower()) for w in _TOKEN.findall(title)} - _JOINERS
            self.sizes.append(len(words))
            for word in (words | {_acronym(title)}) - {""}:
                self.by_word.setdefault(word, []).append(number)

    def cover(self, name: str) -> float:
        """The largest share of one title's words that the name holds (an acronym holds all)."""
        words = {w.lower() for w in name.split()} - _JOINERS
        if not words:
            return 0.0
        if len(words) == 1 and f"acronym:{name.lower()}" in self.by_word:
            return 1.0
        shared: set[int] | None = None
        for word in words:
            found = set(self.by_word.get(word, ()))
            shared = found if shared is None else shared & found
            if not shared:
                return 0.0
        return max(len(words) / self.sizes[n] for n in shared or ())


def _acronym(title: str) -> str:
    letters = "".join(w[0] for w in _TOKEN.findall(title) if w.lower() not in _JOINERS | STOPWORDS)
    return f"acronym:{letters.lower()}" if len(letters) > 1 else ""


def resolve(question: str, history: Sequence[Turn], titles: Titles | None = None) -> Resolved:
    """The question as searched, after the user's earlier questions, each resolved in turn.
    Bounded work whatever the history: an earlier turn is read for what it asks (question_in:
    a longer one is text pasted before a question), what was said is
    remembered over its last SAID_CHARS, a name is at most MAX_NAME_WORDS words, and what is
    searched stays within the question limit (else the question is searched as asked)."""
    titles = titles or Titles()
    subject: str | None = None
    said = ""  # what was said lately, lower-cased, to tell a new name from a known one
    for turn in history:
        if turn.role == "user":
            searched, subject = _resolve_one(question_in(turn.content), subject, said, titles)
            said = f"{said} {searched.lower()}"[-SAID_CHARS:]
        else:  # an answer tells what is known ("the pipeline"), but never the subject
            said = f"{said} {turn.content[:MAX_QUESTION_CHARS].lower()}"[-SAID_CHARS:]
    searched, subject = _resolve_one(question, subject, said, titles)
    return Resolved(searched if len(searched) <= MAX_QUESTION_CHARS else question, subject)


# A sentence that asks: the text up to a question mark, from the end of the one before.
_ASKED = re.compile(r"[^.!?\n]*\?")


def question_in(text: str) -> str:
    """What a chat message asks: itself within the question limit; else (an article pasted with a
    question) its last question, or failing one, its end, from a sentence or word start."""
    if len(text.strip()) <= MAX_QUESTION_CHARS:
        return text
    asked = [m.group().strip() for m in _ASKED.finditer(text)]
    asked = [a for a in asked if 0 < len(a) <= MAX_QUESTION_CHARS]
    if asked:
        return asked[-1]
    end = text.strip()[-MAX_QUESTION_CHARS:]
    starts = [m.end() for m in re.finditer(r"[.!?]\s+", end)]
    return end[starts[0] :] if starts and starts[0] < len(end) else end[end.find(" ") + 1 :]


# What of a conversation is remembered to tell a known name from a new one, in characters.
SAID_CHARS = 8000
# The most words of a name ("Power of Siberia 2 pipeline" is 5): a longer run of capitalised
# words is a heading, and is read as names of this length.
MAX_NAME_WORDS = 6


# Words that point back at something said before. "that", "which" and "there" are left out:
# mostly relative or existential ("the river that flows", "is there").
_POINTERS = frozenset("he him his she her hers it its they them their theirs".split())
_POSSESSIVE = frozenset("his hers its their theirs".split())
# Nouns that stand for a subject named before: "the city" for Fresno, "the band" for Coldplay.
# Only names of kinds of things that have names: "the war", "the president" or "the game" in a
# question of its own most often mean one of their own.
_STAND_INS = frozenset(
    """city town country nation company firm band team club school college university church
    empire dynasty kingdom river island organization organisation album league parliament council
    network channel station pipeline species disease""".split()
)
# A question that only names what changes: "What about Mongolia?", "And the length?"
_ELLIPSIS = re.compile(r"^\s*(?:and\s+)?(?:what|how)\s+about\b|^\s*and\s+(?:the|in|for|of|what)\b", re.I)
# Words inside a name ("Power of Siberia 2", "Newcastle upon Tyne").
_JOINERS = frozenset("of the de du la le von van upon del da".split())
# Pointers that a name asked about before them takes ("When did Tesla say he ..."); "it" and
# "they" rarely point at a name of their own question.
_PERSONAL = frozenset("he him his she her hers".split())
_POSSESSIVE_END = re.compile(r"(?:'s|’s|'|’)$")
_TOKEN = re.compile(r"[^\W_][\w'’.-]*[^\W_]|[^\W_]")


Token = tuple[str, int, int]  # a word, where it begins and ends


def _resolve_one(question: str, subject: str | None, said: str, titles: Titles) -> tuple[str, str | None]:
    """The question as searched and the subject after it."""
    tokens = [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(question)]
    names = _names(tokens, titles)
    own = _subject(question, tokens, names, titles)
    if subject is None or not said:
        return question, own or subject
    new_names = [n for n in names if question[n[0] : n[1]].lower() not in said]
    if _ELLIPSIS.search(question) and names:
        return f"{question} ({subject})", subject
    at = _pointer(tokens, new_names[0][0] if new_names else len(question))
    if at is not None:
        i = at
        lower = tokens[i][0].lower()
        if lower == "her" and i + 1 < len(tokens) and tokens[i + 1][0].lower() in STOPWORDS:
            lower = "him"  # "her" as an object, not a possessive ("did she marry her")
        name = f"{subject}'s" if lower in _POSSESSIVE or lower == "her" else subject
        return question[: tokens[i][1]] + name + question[tokens[i][2] :], subject
    for i in range(len(tokens) - 1):
        noun, _, noun_end = tokens[i + 1]
        bare = _POSSESSIVE_END.sub("", noun)
        follows = tokens[i + 2][0].lower() if i + 2 < len(tokens) else ""
        if tokens[i][0].lower() in ("the", "this", "that") and noun[0].islower() and follows != "of":
            # "the city" for the subject; "the pipeline" for "Power of Siberia 2 pipeline", the
            # name and its noun as said before
            head = not new_names and _said(f"{subject} {bare}".lower(), said)
            if bare in _STAND_INS or head:
                name = (
                    f"{subject} {noun}" if head else subject + noun[len(bare) :]
                )  # "the city's": "Fresno's"
                return question[: tokens[i][1]] + name + question[noun_end:], subject
    return question, own or subject


def _pointer(tokens: list[Token], first_new: int) -> int | None:
    """The first pronoun that points back: a personal one after a new name points at that name
    ("When did Tesla say he ...")."""
    for i, (word, start, _) in enumerate(tokens):
        lower = word.lower()
        if lower in _POINTERS and not (lower in _PERSONAL and start >= first_new):
            return i
    return None


def _said(noun: str, said: str) -> bool:
    return re.search(rf"\b{re.escape(noun)}\b", said) is not None


def _subject(question: str, tokens: list[Token], names: list[tuple[int, int]], titles: Titles) -> str | None:
    """The question's likeliest subject: the phrase that covers most of a document's title (half
    of it at least: "Super Bowl 50" over "Florida"; "Yuan dynasty", "black death" in lower case
    when they are a whole title), else its first name."""
    best: tuple[float, str] = (0.0, "")
    for a, b in names:
        first = next(i for i, t in enumerate(tokens) if t[1] == a)
        last = next(i for i, t in enumerate(tokens) if t[2] == b)
        # The name, a part of it ("Fresno" of "Fresno Station"), or it and the words after it
        # that make a whole title ("Yuan" and "dynasty").
        for j in range(first, min(last + 3, len(tokens))):
            phrase = _POSSESSIVE_END.sub("", question[tokens[first][1] : tokens[j][2]])
            cover = titles.cover(phrase)
            if j == last or (j < last and cover >= 0.5) or cover == 1.0:
                best = max(best, (cover, phrase))
    for i in range(len(tokens)):
        for j in range(i, min(i + 5, len(tokens))):
            phrase = _POSSESSIVE_END.sub("", question[tokens[i][1] : tokens[j][2]])
            if tokens[i][0].lower() not in _COMMON and titles.cover(phrase) == 1.0:
                best = max(best, (1.0, phrase))
    if best[0] >= 0.5:
        return best[1]
    return _POSSESSIVE_END.sub("", question[names[0][0] : names[0][1]]) if names else None


def _names(tokens: list[Token], titles: Titles) -> list[tuple[int, int]]:
    """Where name-like phrases lie (capitalised words, with the numbers and joiners between them).
    A question's first word alone counts only when a title holds it ("Highways built in..."
    names nothing)."""
    found: list[tuple[int, int]] = []
    run: list[Token] = []

    def close() -> None:
        while run and run[-1][0].lower() in _JOINERS:
            run.pop()
        lone_first = len(run) == 1 and run[0][1] == tokens[0][1]
        common = " ".join(t[0] for t in run).lower() in _COMMON
        if run and not common and not (lone_first and not titles.cover(_POSSESSIVE_END.sub("", run[0][0]))):
            found.append((run[0][1], run[-1][2]))
        run.clear()

    for i, token in enumerate(tokens):
        word = token[0]
        capital = word[0].isupper() and not (i == 0 and word.lower() in _COMMON)
        if capital or (run and (word.isdigit() or word.lower() in _JOINERS)):
            run.append(token)
            if len(run) == MAX_NAME_WORDS:
                close()
        else:
            close()
    close()
    return found


# Capitalised at the start of a question without being a name.
_COMMON = STOPWORDS | frozenset(
    """i about after before during in on at which what who whom whose how why when where whats
    name list give tell according besides other some many much one two three""".split()
)
