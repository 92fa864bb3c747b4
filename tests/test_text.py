from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from groundqa.index.errors import InvalidDocument
from groundqa.index.text import MAX_SENTENCE_CHARS, Chunking, count_tokens, sentences, token_starts

# Pieces that break naive offset code: astral emoji, CJK, combining marks, CRLF, runs of spaces.
PIECES = [
    "The pipeline is 2,500 km long.",
    "Mr. Putin met Mr. Xi.",
    "😀",
    "👩‍👩‍👧",
    "🇨🇳",
    "中文句子。",
    "日本語のテキスト！",
    "e\u0301",
    "Z\u0351\u0352",
    "\r\n",
    "\n\n",
    "   ",
    "\t",
    "Ünïcödé wörds",
    "«quoted»",
    "$1.5 billion",
    "?!",
]
texts = (
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(min_size=1, max_size=30)), min_size=1, max_size=60)
    .map(" ".join)
    .filter(lambda t: t.strip())
)
small = Chunking(max_tokens=16, overlap=4, sentence_slack=6)


def _check_passages(text: str, chunking: Chunking) -> None:
    passages = chunking.split("d", text)
    assert passages
    for p in passages:
        assert text[p.start : p.end] == p.text
        assert p.text == p.text.strip() and p.text
        assert count_tokens(p.text) <= chunking.max_tokens
    spans = [(p.start, p.end) for p in passages]
    assert len(set(spans)) == len(spans), "duplicate passages"
    assert spans == sorted(spans)
    covered = set()
    for p in passages:
        covered.update(range(p.start, p.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace()), (
        "text left out of every passage"
    )


@settings(max_examples=300, deadline=None)
@given(texts)
def test_passage_offsets_slice_the_text_exactly(text: str) -> None:
    _check_passages(text, small)


@settings(max_examples=100, deadline=None)
@given(texts)
def test_default_chunking_offsets(text: str) -> None:
    _check_passages(text, Chunking())


@settings(max_examples=200, deadline=None)
@given(texts)
def test_sentence_spans_are_exact_and_short(text: str) -> None:
    for s in sentences(text):
        piece = text[s.start : s.end]
        assert piece and piece == piece.strip()
        assert s.end - s.start <= MAX_SENTENCE_CHARS


@settings(max_examples=100, deadline=None)
@given(texts)
def test_token_starts_are_character_boundaries(text: str) -> None:
    starts = token_starts(text)
    assert starts[0] == 0 and starts[-1] == len(text)
    assert starts == sorted(starts)


def test_repeated_paragraphs_keep_their_own_offsets() -> None:
    paragraph = "The same paragraph, word for word, appears several times. " * 6
    text = "\r\n\r\n".join([paragraph] * 5)
    passages = small.split("d", text)
    assert len({(p.start, p.end) for p in passages}) == len(passages)
    assert passages[-1].end == len(text.rstrip())
    for p in passages:
        assert text[p.start : p.end] == p.text


def test_text_shorter_than_a_window_is_one_passage() -> None:
    [p] = Chunking().split("d", "  Short 😀 text.  ")
    assert (p.start, p.end, p.text) == (2, 15, "Short 😀 text.")


def test_passages_end_at_sentence_ends(article: str) -> None:
    passages = Chunking().split("d", article)
    ends_at_sentence = sum(p.text[-1] in '.!?”’"' or p.end == len(article.rstrip()) for p in passages)
    assert ends_at_sentence >= 0.7 * len(passages)


@pytest.mark.parametrize("text", ["", "   ", "\r\n\t\n"])
def test_empty_documents_are_refused(text: str) -> None:
    with pytest.raises(InvalidDocument, match="empty"):
        Chunking().split("d", text)


def test_abbreviations_do_not_end_sentences() -> None:
    text = "Mr. Putin met Mr. Xi in Beijing. They talked."
    assert [text[s.start : s.end] for s in sentences(text)] == [
        "Mr. Putin met Mr. Xi in Beijing.",
        "They talked.",
    ]


def test_long_sentences_are_cut_into_parts() -> None:
    text = "word " * 300 + "end."
    parts = sentences(text)
    assert len(parts) > 1 and all(s.end - s.start <= MAX_SENTENCE_CHARS for s in parts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.sampled_from(["中文句子很长", "😀", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ﷺ", "a\u0301"]), min_size=50, max_size=400
    ).map("".join)
)
def test_no_passage_exceeds_what_the_model_embeds(embedder, text: str) -> None:  # type: ignore[no-untyped-def]
    for p in Chunking().split("d", text, embedder.fits):
        assert text[p.start : p.end] == p.text
        assert embedder.word_pieces(p.text) <= embedder.info.max_word_pieces
