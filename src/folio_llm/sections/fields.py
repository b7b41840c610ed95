"""The FOLIO Instance fields a record keeps by default, in order, with the keys kept of each
list of objects: ``denormalize.fields`` and ``dataset.target_fields`` both start from it."""

from __future__ import annotations

DEFAULT_FIELDS: dict[str, list[str] | None] = {
    "title": None,
    "contributors": ["name", "contributorNameTypeText", "contributorTypeText", "primary"],
    "editions": None,
    "publication": ["publisher", "place", "dateOfPublication", "role"],
    "identifiers": ["value", "identifierTypeText"],
    "physicalDescriptions": None,
    "series": ["value"],
    "subjects": ["value"],
    "classifications": ["classificationNumber", "classificationTypeText"],
    "languages": None,
    "instanceTypeText": None,
    "modeOfIssuanceText": None,
}
