"""Evaluation: generate answers for the test split and score them field by field.

The scoring (pure Python, no model needed) lives in :mod:`folio_llm.evaluation.scoring`;
generation (torch) in :mod:`folio_llm.evaluation.generate`, imported only where needed.
"""

from folio_llm.evaluation.scoring import (
    FIELDS,
    MACRO_FIELDS,
    FolioSchema,
    parse_output,
    score,
    score_record,
    target_schema,
    to_folio,
)

__all__ = [
    "FIELDS",
    "MACRO_FIELDS",
    "FolioSchema",
    "parse_output",
    "score",
    "score_record",
    "target_schema",
    "to_folio",
]
