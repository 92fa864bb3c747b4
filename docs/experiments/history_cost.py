"""What the longest histories allowed cost the follow-up resolver (index/conversation.py), per
query, in process: crafted histories of 10 and 50 turns (GROUNDQA's limits: 50 turns, 4,000
characters a turn, 40,000 in all) made of title-cased words (one name a turn, before 0.12.0),
"the" + noun pairs (stand-ins to look up) and names joined by "of"; the median of 5 runs each.

    .venv/bin/python docs/experiments/history_cost.py
"""

from __future__ import annotations

import random
import statistics
import string
import time
from collections.abc import Callable

from groundqa.index.conversation import MAX_HISTORY_CHARS, MAX_TURN_CHARS, Titles, Turn, resolve

random.seed(0)


def _word() -> str:
    return "".join(random.choice(string.ascii_lowercase) for _ in range(random.randint(3, 7)))


CRAFTS: dict[str, Callable[[int], str]] = {
    "title-cased words": lambda n: " ".join(_word().capitalize() for _ in range(n)),
    "'the' + noun": lambda n: " ".join("the" if i % 2 == 0 else _word() for i in range(n)),
    "names joined by 'of'": lambda n: " ".join(_word().capitalize() if i % 3 else "of" for i in range(n)),
}


def main() -> None:
    titles = Titles(["Power of Siberia 2", "Putin visits China"])
    print("| history | turns | resolver p50 ms | longest searched_for |")
    print("|---|---:|---:|---:|")
    for name, craft in CRAFTS.items():
        for turns in (10, 50):
            per = min(MAX_TURN_CHARS, MAX_HISTORY_CHARS // turns)
            history = [
                Turn("user" if i % 2 == 0 else "assistant", craft(per)[: per - 4] + " it?")
                for i in range(turns)
            ]
            took, longest = [], 0
            for _ in range(5):
                for question in ("What about the city?", "How long is it?"):
                    began = time.perf_counter()
                    searched = resolve(question, history, titles).searched_for
                    took.append((time.perf_counter() - began) * 1000)
                    longest = max(longest, len(searched))
            print(f"| {name} | {turns} | {statistics.median(took):.1f} | {longest} |")


if __name__ == "__main__":
    main()
