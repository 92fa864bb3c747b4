"""Two-turn conversations made from a SQuAD file: a first question on an article, then one of
its questions with the article's subject replaced by a pronoun or a stand-in ("the city").

    python -m groundqa.eval.conversation_set SQUAD.json OUT.jsonl [--per-article N] [--seed S]

Follow-ups are the questions that name the subject (its title, the title before a comma or a
bracket, a person's surname, an acronym the article gives in brackets); the first question is
another question of the same article, naming the subject where one does. The pronoun follows
the article's own: "he" or "she" where its first paragraphs say so most, "the city" (country,
company...) where its first sentence calls it that, "they" for a plural title, else "it".
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

from groundqa.eval.data import Article, DataError, Question, load_squad

# Follow-ups of at most this many words are "short" ("When was he born?").
SHORT_WORDS = 6
_KINDS = ("city", "country", "company", "university", "band", "state", "dynasty", "organization")
_MODIFIERS = frozenset("a an the each every this that its his her their first second third last any".split())
_NOUN_ENDINGS = ("tion", "ment", "ry", "ity", "ship", "ance", "ence", "ers", "ees", "ants", "film")
_OBJECT_AFTER = frozenset("in of to by for with from about on at than into against over under".split())


def aliases(article: Article) -> list[str]:
    """Names the article's questions use for its subject, longest first."""
    title = article.title
    found = {title, re.split(r"[,(]", title)[0].strip()}
    for acronym in re.findall(rf"{re.escape(title)} \(([A-Z]{{2,6}})\)", article.text):
        found.add(acronym)
    if _pronoun(article) in ("he", "she") and " " in title:
        found.add(title.split()[-1])
    return sorted((a for a in found if len(a) > 2), key=len, reverse=True)


def _pronoun(article: Article) -> str:
    opening = " " + " ".join(article.text.split("\n\n")[:2]).lower() + " "
    count = {p: len(re.findall(rf"\b(?:{p})\b", opening)) for p in ("he|his|him", "she|her", "it|its")}
    person = all(w[0].isupper() for w in article.title.split())
    if person and count["he|his|him"] >= 4 and count["he|his|him"] > 2 * count["she|her"]:
        return "he"
    if person and count["she|her"] >= 4 and count["she|her"] > 2 * count["he|his|him"]:
        return "she"
    first = article.text.split(". ")[0].lower()
    kind = next((k for k in _KINDS if re.search(rf"\b{k}\b", first)), None)
    if kind:
        return f"the {kind}"
    return "they" if article.title.endswith("s") and not article.title.endswith("ss") else "it"


_FORMS = {
    "he": ("he", "him", "his"),
    "she": ("she", "her", "her"),
    "it": ("it", "it", "its"),
    "they": ("they", "them", "their"),
}


def follow_up(question: str, names: list[str], pronoun: str, text: str = "") -> str | None:
    """The question with its first mention of the subject replaced, or None if it has none or
    uses the subject as a modifier (text: the article, where "Huguenot refugees" stands)."""
    for name in names:
        m = re.search(rf"(?<![\w+-])(?:the )?{re.escape(name)}(?:'s|’s|')?(?![\w+-])", question)
        if m is None:
            continue
        said = m.group()
        before = question[: m.start()].split()
        if before and (before[-1].lower() in _MODIFIERS or before[-1].isdigit()):
            return None  # the name as a modifier ("each Super Bowl 50 participant")
        after = question[m.end() :].split()
        if before and before[-1][0].isupper() and len(before) > 1:
            return None  # inside a longer name ("Western Imperialism")
        if after and (after[0][0].isupper() or f"{name} {after[0]}".lower() in text.lower()):
            return None  # part of a compound ("Sky UK Limited", "Huguenot refugees")
        if after and after[0].rstrip("?,.").endswith(_NOUN_ENDINGS) or before[-1:] == ["downtown"]:
            return None  # the name as an adjective ("Huguenot settlement")
        if pronoun.startswith("the "):
            word = pronoun + ("'s" if said.endswith(("'s", "’s")) else "")
        else:
            subject, obj, possessive = _FORMS[pronoun]
            if said.endswith(("'s", "’s", "'")):
                word = possessive
            elif (before and before[-1].lower() in _OBJECT_AFTER) or question[m.end() :].strip() in ("?", ""):
                word = obj
            else:
                word = subject
        if m.start() == 0:
            word = word[0].upper() + word[1:]
        return question[: m.start()] + word + question[m.end() :]
    return None


def conversations(
    articles: list[Article], questions: list[Question], per_article: int, seed: int
) -> list[dict[str, object]]:
    rng = random.Random(seed)
    rows = []
    for article in articles:
        names = aliases(article)
        pronoun = _pronoun(article)
        own = [q for q in questions if q.doc_id == article.doc_id and q.spans]
        made = [(q, f) for q in own if (f := follow_up(q.question, names, pronoun, article.text)) is not None]
        rng.shuffle(made)
        for q, text in made[:per_article]:
            firsts = [p for p in own if p.id != q.id]
            naming = [p for p in firsts if any(n.lower() in p.question.lower() for n in names)]
            first = rng.choice(naming or firsts)
            rows.append(
                {
                    "id": q.id,
                    "doc_id": article.doc_id,
                    "history": [
                        {"role": "user", "content": first.question},
                        {"role": "assistant", "content": first.answer},
                    ],
                    "question": text,
                    "standalone": q.question,
                    "spans": [list(s) for s in q.spans],
                    "short": len(text.split()) <= SHORT_WORDS,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-article", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        dataset = load_squad(args.squad)
    except DataError as exc:
        print(f"conversation_set: {exc}", file=sys.stderr)
        return 1
    rows = conversations(dataset.articles, dataset.questions, args.per_article, args.seed)
    args.out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} conversations over {len({r['doc_id'] for r in rows})} articles in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
