"""How likely the answer sentence answers the question: signals the ranking already has, plus a
few read from the texts, weighed by a logistic model trained on the shared SQuAD half
(`python -m groundqa.eval.train_confidence`, which writes index/data/confidence.json with its
seed and the sha256 of its data).

Every signal is on a scale that does not depend on the corpus (cosines, shares of the question's
words, word match with weights that sum to one), so one threshold serves one article and
thousands: BM25 scores and min-max fused scores, which move with the corpus, are left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from groundqa.index.lexical import NEGATION, asked_keys, terms

PATH = Path(__file__).parent / "data" / "confidence.json"
# The signals, in the order the model reads them.
SIGNALS = (
    "answer_cosine",  # the question's cosine with the answer sentence
    "answer_match",  # word match of the question with the answer sentence
    "passage_cosine",  # the question's cosine with the answer's passage
    "best_cosine",  # the best cosine of any candidate passage
    "passage_match",  # word match of the question with the answer's passage
    "answer_words",  # share of the question's words (stems) in the answer sentence
    "passage_words",  # and in its passage
    "lost_negation",  # the question holds a negation the answer sentence lacks
    "lost_numbers",  # share of the question's numbers missing from the passage
    "lost_names",  # share of the question's capitalized words missing from the passage
    "question_words",  # log(1 + words of the question)
    "weakest_word",  # the best cosine of the passage's worst-matched rare question word
)


def text_signals(question: str, sentence: str, passage: str) -> dict[str, float]:
    """The signals read from the texts: words, negations, numbers and names."""
    asked = set(terms(question))
    in_sentence, in_passage = set(terms(sentence)), set(terms(passage))
    numbers, names = asked_keys(question)
    return {
        "answer_words": len(asked & in_sentence) / len(asked) if asked else 0.0,
        "passage_words": len(asked & in_passage) / len(asked) if asked else 0.0,
        "lost_negation": float(bool(NEGATION.search(question)) and not NEGATION.search(sentence)),
        "lost_numbers": sum(n not in passage for n in numbers) / len(numbers) if numbers else 0.0,
        "lost_names": sum(n not in passage for n in names) / len(names) if names else 0.0,
        "question_words": math.log1p(len(asked)),
    }


def expand(x: np.ndarray) -> np.ndarray:
    """The model's inputs: the signals, and the squares and pairwise products of the first five
    (the similarities), which bend the linear model where one similarity alone misleads."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    sims = x[:, :5]
    pairs = [sims[:, i] * sims[:, j] for i in range(5) for j in range(i, 5)]
    return np.column_stack([x, *pairs])


@dataclass(frozen=True)
class ConfidenceModel:
    """Logistic regression over expand(signals), standardized: P(the answer sentence answers)."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float  # the default GROUNDQA_MIN_CONFIDENCE, chosen when it was trained
    about: dict[str, object]  # seed, data sha256, command, held-out figures

    def floor(self, asked: float | None) -> float:
        """The confidence under which answers are left out: the one asked for, else the model's."""
        return self.threshold if asked is None else asked

    def probability(self, signals: np.ndarray) -> np.ndarray:
        z = (expand(signals) - self.mean) / self.scale @ self.weights + self.bias
        return 1 / (1 + np.exp(-z))

    def to_json(self) -> str:
        return json.dumps(
            {
                "signals": list(SIGNALS),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "weights": self.weights.tolist(),
                "bias": self.bias,
                "threshold": self.threshold,
                "about": self.about,
            },
            indent=1,
        )

    @classmethod
    def neutral(cls) -> ConfidenceModel:
        """0.5 for everything and no threshold: for collecting signals before a model exists."""
        width = expand(np.zeros(len(SIGNALS))).shape[1]
        return cls(np.zeros(width), np.ones(width), np.zeros(width), 0.0, 0.0, {})

    @classmethod
    def read(cls, path: Path) -> ConfidenceModel:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if tuple(raw["signals"]) != SIGNALS:
            raise ValueError(f"{path} was trained on other signals: train it again")
        return cls(
            np.array(raw["mean"]),
            np.array(raw["scale"]),
            np.array(raw["weights"]),
            float(raw["bias"]),
            float(raw["threshold"]),
            dict(raw["about"]),
        )


@lru_cache(maxsize=1)
def bundled() -> ConfidenceModel:
    return ConfidenceModel.read(PATH)
