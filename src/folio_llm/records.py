"""Denormalize FOLIO Instances: reference UUIDs become labels a model can read and write.

``xxxId`` becomes ``xxxText`` (``instanceTypeId`` -> ``instanceTypeText``, as in the seed's
example) and ``xxxIds`` becomes ``xxxTexts``. The mapping is one table, so the inverse
(labels back to a tenant's UUIDs) can use the same table.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from dataclasses import dataclass, field

from folio_llm.folio.reference import ReferenceData

# UUID key -> (reference-data kind, label key)
LABEL_KEYS: dict[str, tuple[str, str]] = {
    "instanceTypeId": ("instance-types", "instanceTypeText"),
    "modeOfIssuanceId": ("modes-of-issuance", "modeOfIssuanceText"),
    "statusId": ("instance-statuses", "statusText"),
    "contributorTypeId": ("contributor-types", "contributorTypeText"),
    "contributorNameTypeId": ("contributor-name-types", "contributorNameTypeText"),
    "identifierTypeId": ("identifier-types", "identifierTypeText"),
    "classificationTypeId": ("classification-types", "classificationTypeText"),
    "alternativeTitleTypeId": ("alternative-title-types", "alternativeTitleTypeText"),
    "instanceNoteTypeId": ("instance-note-types", "instanceNoteTypeText"),
    "relationshipId": ("electronic-access-relationships", "relationshipText"),
    "sourceId": ("subject-sources", "sourceText"),
    "typeId": ("subject-types", "typeText"),
    "dateTypeId": ("instance-date-types", "dateTypeText"),
    "instanceFormatIds": ("instance-formats", "instanceFormatTexts"),
    "natureOfContentTermIds": ("nature-of-content-terms", "natureOfContentTermTexts"),
    "statisticalCodeIds": ("statistical-codes", "statisticalCodeTexts"),
}

IDENTITY_KEY = "hrid"  # carried through for tracing rows back to source records


@dataclass
class DenormalizeStats:
    records: int = 0
    unresolved: Counter = field(default_factory=Counter)  # UUID key -> count of unknown UUIDs
    fields_present: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "records": self.records,
            "fields_present": dict(sorted(self.fields_present.items())),
            "unresolved_ids": dict(sorted(self.unresolved.items())),
        }


def _is_empty(value) -> bool:
    return value is None or value == "" or value == [] or value == {}


class Denormalizer:
    def __init__(
        self,
        reference: ReferenceData,
        fields: dict[str, list[str] | None],
        identifier_types: list[str] | None = None,
        unicode_form: str = "NFC",
    ):
        self.reference = reference
        self.fields = fields
        self.identifier_types = {t.casefold() for t in identifier_types or []}
        self.unicode_form = None if unicode_form == "none" else unicode_form
        self.stats = DenormalizeStats()

    def _text(self, value: str) -> str:
        value = value.strip()
        return unicodedata.normalize(self.unicode_form, value) if self.unicode_form else value

    def _labels(self, value):
        """Recursively replace known UUID keys by labels; normalize strings; drop empties."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, list):
            items = [self._labels(v) for v in value]
            return [v for v in items if not _is_empty(v)]
        if not isinstance(value, dict):
            return value
        out: dict = {}
        for key, item in value.items():
            if key in LABEL_KEYS:
                kind, label_key = LABEL_KEYS[key]
                if isinstance(item, list):
                    labels = [self.reference.label(kind, uuid) for uuid in item]
                    self.stats.unresolved[key] += sum(1 for label in labels if label is None)
                    labels = [self._text(label) for label in labels if label]
                    if labels:
                        out[label_key] = labels
                elif item:
                    label = self.reference.label(kind, item)
                    if label is None:
                        self.stats.unresolved[key] += 1
                    else:
                        out[label_key] = self._text(label)
                continue
            if key in out:  # a label from the UUID wins over free text of the same name
                continue
            item = self._labels(item)
            if not _is_empty(item):
                out[key] = item
        return out

    def _keep(self, name: str, value, keys: list[str] | None):
        if name == "identifiers" and self.identifier_types and isinstance(value, list):
            value = [
                v for v in value
                if isinstance(v, dict) and str(v.get("identifierTypeText", "")).casefold() in self.identifier_types
            ]
        if keys is None or not isinstance(value, list):
            return value
        kept = []
        for item in value:
            if isinstance(item, str) and "value" in keys:  # older schema: series/subjects as strings
                item = {"value": item}
            if isinstance(item, dict):
                item = {k: item[k] for k in keys if k in item and not _is_empty(item[k])}
            if not _is_empty(item):
                kept.append(item)
        return kept

    def __call__(self, instance: dict) -> dict:
        labelled = self._labels(instance)
        record: dict = {}
        if labelled.get(IDENTITY_KEY):
            record[IDENTITY_KEY] = labelled[IDENTITY_KEY]
        for name, keys in self.fields.items():
            if name not in labelled:
                continue
            value = self._keep(name, labelled[name], keys)
            if not _is_empty(value):
                record[name] = value
                self.stats.fields_present[name] += 1
        self.stats.records += 1
        return record
