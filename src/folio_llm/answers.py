"""Model answers: the target JSON shape they must have, parsing them, and closing one that
was cut off. Generation (stop rule), evaluation, export and predict all read answers here."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

# ---------------------------------------------------------------------------------------
# the target shape

_STRING_FIELDS = {"title", "indexTitle", "hrid", "source", "matchKey", "catalogedDate", "statusUpdatedDate"}


_STRING_LIST_FIELDS = {
    "editions", "physicalDescriptions", "languages", "publicationFrequency", "publicationRange",
    "administrativeNotes",
}


_BOOLEAN_KEYS = {"primary", "staffOnly", "discoverySuppress", "staffSuppress", "previouslyHeld", "deleted"}


# what FOLIO's Instance schema requires of each item (a type's label stands for its required id)
_REQUIRED_ITEM_KEYS = {
    "contributors": ["name", "contributorNameTypeText"],
    "identifiers": ["value", "identifierTypeText"],
    "series": ["value"],
    "subjects": ["value"],
    "classifications": ["classificationNumber", "classificationTypeText"],
    "alternativeTitles": ["alternativeTitle"],
    "notes": ["note"],
}


def _string(name: str, labels: dict[str, list[str]]) -> dict:
    return {"type": "string", "enum": labels[name]} if name in labels else {"type": "string"}


def _field_schema(name: str, keys: list[str] | None, labels: dict[str, list[str]]) -> dict:
    if keys:
        properties = {k: {"type": "boolean"} if k in _BOOLEAN_KEYS else _string(k, labels) for k in keys}
        item = {"type": "object", "properties": properties, "additionalProperties": False}
        required = [k for k in _REQUIRED_ITEM_KEYS.get(name, []) if k in keys]
        if required:
            item["required"] = required
        return {"type": "array", "items": item}
    if name in _STRING_FIELDS or name.endswith("Text"):
        return _string(name, labels)
    if name in _STRING_LIST_FIELDS or name.endswith("Texts"):
        return {"type": "array", "items": _string(name, labels)}
    if name in _BOOLEAN_KEYS:
        return {"type": "boolean"}
    return {}


def target_schema(fields: dict[str, list[str] | None] | None = None,
                  labels: dict[str, list[str]] | None = None) -> dict:
    """JSON schema of the answer's shape from ``denormalize.fields`` (field -> kept keys, or
    None for a scalar / list of strings). Plain draft-2020-12 keywords only (type, properties,
    items, required, additionalProperties, enum), so xgrammar and llama.cpp can compile it for
    constrained decoding. ``title`` is required; nothing else is. ``labels``: label key
    (``identifierTypeText``...) -> the only strings it may hold (``folio.instance.decoding_labels``)."""
    if fields is None:
        from folio_llm.sections.fields import DEFAULT_FIELDS

        fields = DEFAULT_FIELDS
    properties = {name: _field_schema(name, keys, labels or {}) for name, keys in fields.items()}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if "title" in properties:
        schema["required"] = ["title"]
    return schema


def validator_for(schema: dict | None):
    from jsonschema import Draft202012Validator

    if schema is None:
        return _default_validator()
    return Draft202012Validator(schema)


@functools.lru_cache(maxsize=1)
def _default_validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(target_schema())


# ---------------------------------------------------------------------------------------
# parsing

_FENCE = re.compile(r"```[\w-]*[ \t]*\n?(.*?)(?:```|\Z)", re.S)


def _first_object(text: str) -> dict | None:
    """The JSON object starting at the first '{' of ``text`` (trailing text ignored)."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_output(text: Any) -> tuple[dict | None, bool]:
    """(the JSON object in ``text`` or None, whether ``text`` is strictly one JSON object).

    Strict: ``json.loads(text)`` (surrounding whitespace allowed) gives an object. Lenient:
    otherwise the first object inside a code fence (```json ... ```), or the object starting
    at the first '{' with leading and trailing prose ignored. A truncated object parses in
    neither way (only the first '{' is tried, so an inner complete object is never taken
    for the record)."""
    if isinstance(text, dict):
        return text, True
    if not isinstance(text, str):
        return None, False
    try:
        value = json.loads(text)
        if isinstance(value, dict):
            return value, True
    except (json.JSONDecodeError, RecursionError):
        pass
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        value = _first_object(candidate)
        if value is not None:
            return value, False
    return None, False


# ---------------------------------------------------------------------------------------
# answers cut off before their JSON object closed

class JsonScanner:
    """Where a JSON text stands, one character at a time: the open containers (their closing
    brackets) and whether inside a string. Text before the first bracket (prose) is skipped.
    Both the stop rule and the closing of cut answers read JSON through it."""

    def __init__(self):
        self.stack: list[str] = []
        self.in_string = self.escape = False

    def feed(self, char: str) -> str | None:
        """'open', 'close', 'comma' for structure outside strings, else None. A closing bracket
        with nothing open is 'stray'."""
        if self.in_string:
            if self.escape:
                self.escape = False
            elif char == "\\":
                self.escape = True
            elif char == '"':
                self.in_string = False
            return None
        if char == '"' and self.stack:
            self.in_string = True
        elif char in "{[":
            self.stack.append("}" if char == "{" else "]")
            return "open"
        elif char in "}]":
            if not self.stack:
                return "stray"
            self.stack.pop()
            return "close"
        elif char == "," and self.stack:
            return "comma"
        return None

    def closing(self) -> str:
        return "".join(reversed(self.stack))


class JsonObjectEnd:
    """Stopping criterion: a row is done once its answer holds one complete JSON value.

    Nothing after the closing brace is ever scored, and a base model that rambles on after
    its JSON would otherwise run to max_new_tokens. Scans incrementally, one new token per row
    per step."""

    def __init__(self, tokenizer, prompt_width: int, batch_size: int):
        self.tokenizer = tokenizer
        self.prompt_width = prompt_width
        self.scanners = [JsonScanner() for _ in range(batch_size)]
        self.done = [False] * batch_size

    def feed(self, row: int, text: str) -> None:
        scanner = self.scanners[row]
        for char in text:
            if self.done[row]:
                return
            self.done[row] = scanner.feed(char) == "close" and not scanner.stack

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if input_ids.shape[1] > self.prompt_width:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.feed(row, self.tokenizer.decode([token]))
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def close_cut_json(text: str) -> str | None:
    """An answer cut off inside its JSON object (a repetition loop or max_new_tokens ended it),
    cut back to its last complete value and closed: the record as far as it was written.

    None when ``text`` is not the prefix of one JSON object or already parses. The cut comes
    after the last whole field of the record or whole item of a list (an item that is an
    object is kept only complete); what follows is dropped and the open containers closed."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        json.loads(stripped)
        return None
    except json.JSONDecodeError:
        pass
    scanner = JsonScanner()
    best: tuple[int, str] | None = None
    for index, char in enumerate(stripped):
        event = scanner.feed(char)
        if event == "stray":
            return None
        stack = scanner.stack
        if event in ("close", "comma") and stack and (stack[-1] == "]" or len(stack) == 1):
            best = (index + 1 if event == "close" else index, scanner.closing())
    if best is None:
        return None
    candidate = stripped[:best[0]] + best[1]
    try:
        json.loads(candidate)
    except json.JSONDecodeError:
        return None
    return candidate


def closed_answer(text: str) -> str:
    """``text`` with a cut-off JSON object closed (:func:`close_cut_json`), else unchanged."""
    return close_cut_json(text) or text
