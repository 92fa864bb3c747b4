"""The field types of the faces' inputs, one set for the HTTP schemas and the MCP tools: each runs
the index's own check, so bad input is refused at the edge naming the field, in the same words
on both faces."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

from groundqa.index.index import DOC_ID_PATTERN, check_doc_id
from groundqa.index.ranking import (
    MAX_DOC_IDS,
    MAX_K,
    MAX_QUESTION_CHARS,
    QUESTION_PATTERN,
    check_doc_ids,
    check_k,
    check_min_confidence,
    clean_question,
)

# The index's own checks, run at the edge so that bad input is a 422 naming the field.
# The patterns and bounds only describe the rules in the OpenAPI document (json_schema_extra:
# pydantic does not check them); the checks themselves are the index's, whose messages say
# what is wrong in words, the same on every face.
QuestionText = Annotated[
    str,
    Field(
        description=f"the question, in plain words, 1 to {MAX_QUESTION_CHARS} characters",
        json_schema_extra={"pattern": QUESTION_PATTERN},
    ),
    AfterValidator(clean_question),
]


def _whole_number(value: object) -> object:
    """JSON Schema counts 5.0 as an integer; so do we (strings and booleans stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


K = Annotated[
    int,
    Field(description="how many passages to return", json_schema_extra={"minimum": 1, "maximum": MAX_K}),
    BeforeValidator(_whole_number),
    AfterValidator(check_k),
]
DocId = Annotated[
    str,
    Field(
        description="a document's id, as passages name it",
        json_schema_extra={"pattern": f"^{DOC_ID_PATTERN}$"},
    ),
    AfterValidator(check_doc_id),
]


DocIds = Annotated[
    list[DocId] | None,
    Field(
        description=f"search only these documents (at most {MAX_DOC_IDS})",
        json_schema_extra={"maxItems": MAX_DOC_IDS},
    ),
    AfterValidator(check_doc_ids),
]


MinConfidence = Annotated[
    float | None,
    Field(
        description="leave the answer out (null) under this confidence; 0 always answers; "
        "GROUNDQA_MIN_CONFIDENCE by default",
        json_schema_extra={"minimum": 0, "maximum": 1},
    ),
    AfterValidator(check_min_confidence),
]
