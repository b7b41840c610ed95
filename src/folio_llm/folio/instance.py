"""A denormalized record (labels) back to a FOLIO Instance (reference UUIDs), and FOLIO's own
Instance JSON schema to check it against: the inverse of :class:`folio_llm.records.Denormalizer`."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from folio_llm.records import LABEL_KEYS

# label key -> (reference-data kind, UUID key): the inverse of records.LABEL_KEYS
LABEL_TO_ID: dict[str, tuple[str, str]] = {label: (kind, uuid_key) for uuid_key, (kind, label) in LABEL_KEYS.items()}


FREE_TEXT_LABELS = {"contributorTypeText"}  # FOLIO keeps an unmatched one as free text


INSTANCE_SCHEMA = Path("inventory-storage") / "instance-storage" / "instance.json"


def _local_retrieve(uri: str):
    """Fetch a $ref'd schema from the local file system only (no network)."""
    from referencing import Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT4

    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise NoSuchResource(ref=uri)
    path = Path(unquote(parsed.path))
    try:
        contents = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NoSuchResource(ref=uri) from None
    return Resource.from_contents(contents, default_specification=DRAFT4)


class FolioSchema:
    """FOLIO's Instance JSON schema (draft-04) with its relative ``$ref`` files resolved
    from the same folder tree (``../common/uuid.json``, ``../../raml-util/schemas/...``).

    ``path``: the schemas root (holding ``inventory-storage/`` and ``raml-util/``) or the
    ``instance.json`` file itself."""

    def __init__(self, path: str | Path):
        from jsonschema import Draft4Validator
        from referencing import Registry

        path = Path(path)
        if path.is_dir():
            path = path / INSTANCE_SCHEMA
        if not path.is_file():
            raise FileNotFoundError(f"FOLIO instance schema not found: {path}")
        self.path = path.resolve()
        self.uri = self.path.as_uri()
        schema = json.loads(self.path.read_text(encoding="utf-8"))
        # draft-04 takes the base URI for relative $refs from "id"
        self.schema = {**schema, "id": self.uri}
        self.registry = Registry(retrieve=_local_retrieve)
        self.validator = Draft4Validator(self.schema, registry=self.registry)

    def errors(self, instance: dict) -> list[str]:
        return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in self.validator.iter_errors(instance)]

    def is_valid(self, instance: dict) -> bool:
        return self.validator.is_valid(instance)

    def prune(self, instance: Any) -> Any:
        """Fit ``instance`` to the schema's shape without inventing anything: drop the keys a
        closed (additionalProperties: false) object does not allow, and repeated items of a
        uniqueItems array (dropping sourceId/typeId leaves MARC-mapped subjects doubled)."""
        return self._prune(instance, self.schema, self.registry.resolver(base_uri=self.uri))

    def _prune(self, value, node, resolver):
        while isinstance(node, dict) and "$ref" in node:
            resolved = resolver.lookup(node["$ref"])
            node, resolver = resolved.contents, resolved.resolver
        if not isinstance(node, dict):
            return value
        if isinstance(value, dict):
            properties = node.get("properties") or {}
            closed = node.get("additionalProperties") is False
            return {k: self._prune(v, properties[k], resolver) if k in properties else v
                    for k, v in value.items() if k in properties or not closed}
        if isinstance(value, list) and isinstance(node.get("items"), dict):
            items = [self._prune(v, node["items"], resolver) for v in value]
            if node.get("uniqueItems"):
                seen: set[str] = set()
                unique = []
                for item in items:
                    key = json.dumps(item, sort_keys=True, ensure_ascii=False)
                    if key not in seen:
                        seen.add(key)
                        unique.append(item)
                items = unique
            return items
        return value


def as_folio_schema(folio_schema) -> FolioSchema | None:
    if folio_schema is None or isinstance(folio_schema, FolioSchema):
        return folio_schema
    return FolioSchema(folio_schema)


def decoding_labels(reference, identifier_types: Sequence[str] | None = None) -> dict[str, list[str]]:
    """Label key -> the tenant's names a record may hold there (``reference``:
    :class:`~folio_llm.folio.reference.ReferenceData`): what :func:`to_folio` maps back to a UUID,
    as the decoding schema's enums. Free-text labels (a contributor's role) are left out; identifier
    types are those ``identifier_types`` keeps (``denormalize.identifier_types``), if any. A
    language is one of the tenant's codes (ISO 639-2: the model wrote 'it', 'ja', 'ital' and
    'Chinese', which FOLIO shows as no language)."""
    kept = {kind.casefold() for kind in identifier_types or []}
    labels = {}
    for label_key, (kind, _) in LABEL_TO_ID.items():
        if label_key in FREE_TEXT_LABELS:
            continue
        names = {unicodedata.normalize("NFC", entry["name"].strip()) for entry in reference.kind(kind)
                 if isinstance(entry.get("name"), str) and entry["name"].strip()}
        if kind == "identifier-types" and kept:
            names = {name for name in names if name.casefold() in kept}
        if names:
            labels[label_key] = sorted(names)
    if reference.languages:
        labels["languages"] = sorted(reference.languages)
    return labels


def to_folio(record: dict, reference, schema: FolioSchema | str | Path | None = None) -> tuple[dict, list[dict]]:
    """A denormalized record (labels) back to a FOLIO Instance (reference UUIDs).

    ``xxxText`` -> ``xxxId`` and ``xxxTexts`` -> ``xxxIds`` through ``reference``
    (:class:`~folio_llm.folio.reference.ReferenceData`, name or code, case-insensitive). A
    ``contributorTypeText`` that names no contributor type stays as FOLIO's free-text
    ``contributorTypeText``; any other label that matches nothing is dropped (never guessed)
    and listed in ``unknown_labels`` as ``{"path", "kind", "label"}``. ``source`` is set to
    "FOLIO". With ``schema`` (:class:`FolioSchema` or its path) the result is fitted to the
    Instance schema (:meth:`FolioSchema.prune`: keys it does not allow dropped, repeated items
    of uniqueItems arrays removed). Returns ``(instance, unknown_labels)``."""
    unknown: list[dict] = []

    def lookup(kind: str, label: Any, path: str) -> str | None:
        uuid = reference.id_for(kind, label) if isinstance(label, str) else None
        if uuid is None:
            unknown.append({"path": path, "kind": kind, "label": label})
        return uuid

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if not isinstance(value, dict):
            return value
        out: dict = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if key not in LABEL_TO_ID:
                if key not in out:
                    out[key] = walk(item, where)
                continue
            kind, uuid_key = LABEL_TO_ID[key]
            if isinstance(item, list):
                ids = [lookup(kind, label, f"{where}[{i}]") for i, label in enumerate(item)]
                if any(ids):
                    out[uuid_key] = [i for i in ids if i]
            elif key in FREE_TEXT_LABELS:
                uuid = reference.id_for(kind, item) if isinstance(item, str) else None
                if uuid:
                    out[uuid_key] = uuid
                elif item not in (None, ""):
                    out[key] = item
            elif item not in (None, ""):
                uuid = lookup(kind, item, where)
                if uuid:
                    out[uuid_key] = uuid
        return out

    instance = walk(record, "") if isinstance(record, dict) else {}
    instance["source"] = "FOLIO"
    schema = as_folio_schema(schema)
    if schema is not None:
        instance = schema.prune(instance)
    return instance, unknown
