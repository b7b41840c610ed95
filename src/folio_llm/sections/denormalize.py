"""Section ``denormalize``: labels instead of UUIDs, the fields to keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from folio_llm.sections.fields import DEFAULT_FIELDS
from folio_llm.typed_config import setting

DEFAULT_IDENTIFIER_TYPES = [
    "ISBN",
    "ISSN",
    "ISMN",
    "LCCN",
    "UPC",
    "Other standard identifier",
    "Publisher or distributor number",
]


@dataclass
class DenormalizeParams:
    fields: dict[str, list[str] | None] = setting(
        "Fields to keep, in order, after reference UUIDs are replaced by labels "
        "(xxxId -> xxxText). For a list of objects, the keys to keep (null = all keys).",
        factory=lambda: dict(DEFAULT_FIELDS),
    )
    identifier_types: list[str] = setting(
        "Identifier types to keep (labels); others (system control numbers, OCLC numbers) "
        "are dropped because nothing on the item tells them. Empty list = keep all.",
        factory=lambda: list(DEFAULT_IDENTIFIER_TYPES),
    )
    unicode_form: Literal["NFC", "NFD", "NFKC", "NFKD", "none"] = setting(
        "Unicode normalization applied to every string (MARC data often arrives decomposed).",
        "NFC",
    )
