"""FOLIO reference data: UUID <-> label lookups for instance types, contributor types, ...

A reference-data directory holds one sub-folder per kind (``instance-types/``,
``contributor-types/``...), each with one JSON file per entry, as
mod-inventory-storage ships it. A kind may also be one JSON file holding a list, or an API
response (``{"instanceTypes": [...], "totalRecords": n}``), named either in kebab-case
(``instance-types.json``) or camelCase (``instanceTypes.json``) as a tenant dump names it.
``languages.js`` (stripes-components) or ``languages.json`` gives ISO 639-2 language names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

# each reference-data kind (its file or folder here, its endpoint in FOLIO) -> the list key of the
# endpoint's answer (FOLIO's names are not all regular)
KINDS = {
    "alternative-title-types": "alternativeTitleTypes",
    "classification-types": "classificationTypes",
    "contributor-name-types": "contributorNameTypes",
    "contributor-types": "contributorTypes",
    "electronic-access-relationships": "electronicAccessRelationships",
    "identifier-types": "identifierTypes",
    "instance-date-types": "instanceDateTypes",
    "instance-formats": "instanceFormats",
    "instance-note-types": "instanceNoteTypes",
    "instance-relationship-types": "instanceRelationshipTypes",
    "instance-statuses": "instanceStatuses",
    "instance-types": "instanceTypes",
    "modes-of-issuance": "issuanceModes",
    "nature-of-content-terms": "natureOfContentTerms",
    "statistical-code-types": "statisticalCodeTypes",
    "statistical-codes": "statisticalCodes",
    "subject-sources": "subjectSources",
    "subject-types": "subjectTypes",
}


# file names that data-import-processing-core's test resources use for some kinds
ALIASES = {
    "resource-identifiers": "identifier-types",
    "format-identifiers": "instance-formats",
}


class ReferenceDataError(ValueError):
    """Reference data that cannot be read; the message names the file."""


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def _camel(kind: str) -> str:
    head, *rest = kind.split("-")
    return head + "".join(part.capitalize() for part in rest)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReferenceDataError(f"cannot read reference data file {path}: {exc}") from None


def _entries_from(payload, kind: str, path: Path) -> list[dict]:
    if isinstance(payload, list):
        return [e for e in payload if isinstance(e, dict)]
    if isinstance(payload, dict):
        wrapped = payload.get(_camel(kind))
        if isinstance(wrapped, list):
            return [e for e in wrapped if isinstance(e, dict)]
        if "id" in payload:
            return [payload]
        lists = [v for v in payload.values() if isinstance(v, list)]
        if len(lists) == 1:
            return [e for e in lists[0] if isinstance(e, dict)]
    raise ReferenceDataError(f"{path}: expected a {kind} entry, a list of them, or an API response")


def _parse_languages_js(text: str) -> dict[str, str]:
    pattern = re.compile(r"alpha3:\s*'([^']*)'.*?name:\s*'((?:[^'\\]|\\.)*)'")
    return {code: name.replace("\\'", "'") for code, name in pattern.findall(text)}


@dataclass
class ReferenceData:
    """All reference entries of one tenant, indexed by kind, id, name and code."""

    entries: dict[str, list[dict]] = field(default_factory=dict)
    languages: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_id: dict[str, dict[str, dict]] = {}
        self._by_label: dict[str, dict[str, dict]] = {}
        for kind, items in self.entries.items():
            self._index(kind, items)

    def _index(self, kind: str, items: list[dict]) -> None:
        by_id = self._by_id.setdefault(kind, {})
        by_label = self._by_label.setdefault(kind, {})
        for item in items:
            if item.get("id"):
                by_id[item["id"]] = item
            # names win over codes when both could match the same text
            for key in ("code", "name"):
                value = item.get(key)
                if isinstance(value, str) and value:
                    by_label[value.casefold()] = item

    @classmethod
    def load(cls, directory: str | Path) -> "ReferenceData":
        root = Path(directory)
        if not root.is_dir():
            raise ReferenceDataError(f"reference data directory not found: {root}")
        entries: dict[str, list[dict]] = {}
        for child in sorted(root.iterdir()):
            if child.is_dir():
                kind = child.name
                items: list[dict] = []
                for path in sorted(child.glob("*.json")):
                    items.extend(_entries_from(_read_json(path), kind, path))
                entries[kind] = items
            elif child.suffix == ".json":
                kind = _kebab(child.stem)
                kind = ALIASES.get(kind, kind)
                if kind not in KINDS:
                    continue
                entries.setdefault(kind, []).extend(_entries_from(_read_json(child), kind, child))
        languages: dict[str, str] = {}
        if (root / "languages.js").is_file():
            languages = _parse_languages_js((root / "languages.js").read_text(encoding="utf-8"))
        elif (root / "languages.json").is_file():
            payload = _read_json(root / "languages.json")
            languages = {e["alpha3"]: e["name"] for e in payload if "alpha3" in e and "name" in e}
        if not entries:
            raise ReferenceDataError(f"no reference data found in {root}")
        return cls(entries=entries, languages=languages)

    def kind(self, kind: str) -> list[dict]:
        return self.entries.get(kind, [])

    def by_id(self, kind: str, uuid: str | None) -> dict | None:
        return self._by_id.get(kind, {}).get(uuid) if uuid else None

    def label(self, kind: str, uuid: str | None) -> str | None:
        entry = self.by_id(kind, uuid)
        return entry.get("name") if entry else None

    def find(self, kind: str, label: str | None) -> dict | None:
        """The entry whose name or code equals ``label`` (case-insensitive)."""
        if not label:
            return None
        return self._by_label.get(kind, {}).get(label.strip().casefold())

    def id_for(self, kind: str, label: str | None) -> str | None:
        entry = self.find(kind, label)
        return entry.get("id") if entry else None
