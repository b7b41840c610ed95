"""Clause templates filled from a record: "Published[ by {publisher}][; place: {place}]." with
the segments whose values are missing left out, and each field's told values as text."""

from __future__ import annotations

import re

_PLACEHOLDER = re.compile(r"\{(\w+)\}")
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_END_PUNCT = (".", "?", "!")
_DOUBLE_STOP = re.compile(r"(?<!\.)([.?!])\.(?!\.)")
_DANGLING_SEPARATOR = re.compile(r"(:)\s*[,;:]\s*")


def clean(value) -> str:
    """A value as written inside running text: without the ISBD punctuation that closes it in
    the record ("Sage Publications." -> "Sage Publications"; scoring ignores it too)."""
    return str(value or "").strip().rstrip(" .:;,/").strip()


def _fill(text: str, values: dict[str, str]) -> str:
    def put(match: re.Match) -> str:
        return values.get(match.group(1), "")

    return _PLACEHOLDER.sub(put, text)


def render_clause(template: str, values: dict[str, str]) -> str | None:
    """Fill ``template``; ``[segments]`` whose placeholders are empty vanish.

    Returns None when no placeholder of the template has a value. The template is split
    before filling, so brackets inside values ("[publisher not identified]") stay as they are.
    """
    if not any(values.get(name) for name in _PLACEHOLDER.findall(template)):
        return None
    pieces, last = [], 0
    for match in _OPTIONAL.finditer(template):
        pieces.append(_fill(template[last:match.start()], values))
        inner = match.group(1)
        if all(values.get(name) for name in _PLACEHOLDER.findall(inner)):
            pieces.append(_fill(inner, values))
        last = match.end()
    pieces.append(_fill(template[last:], values))
    text = re.sub(r"\s+", " ", "".join(pieces)).strip()
    # a value that already ends a sentence ("... judgeships.") needs no second full stop
    text = _DOUBLE_STOP.sub(r"\1", text)
    # a separator left dangling by a missing value: "Publication:, 2022" -> "Publication: 2022"
    text = _DANGLING_SEPARATOR.sub(r"\1 ", text)
    if not text.endswith(_END_PUNCT):
        text += "."
    return text


def _told_text(field: str, item) -> str:
    if isinstance(item, str):
        return item
    if not isinstance(item, dict):
        return str(item)
    if field == "contributors":
        return item.get("name", "")
    if field == "identifiers":
        kind = item.get("identifierTypeText")
        return f"{kind} {item.get('value', '')}".strip() if kind else item.get("value", "")
    if field == "classifications":
        kind = item.get("classificationTypeText")
        number = item.get("classificationNumber", "")
        return f"{kind} {number}".strip() if kind else number
    if field == "alternativeTitles":
        return item.get("alternativeTitle", "")
    if field == "notes":
        return item.get("note", "")
    return str(item.get("value", ""))


def clause_values(record: dict, field: str, separator: str) -> list[dict[str, str]]:
    """Placeholder values for one field's clause(s): one dict per clause to render."""
    value = record.get(field)
    if value in (None, "", [], {}):
        return []
    if field == "publication":
        return [
            {"date": p.get("dateOfPublication", ""), "publisher": p.get("publisher", ""), "place": p.get("place", "")}
            for p in value if isinstance(p, dict)
        ]
    if isinstance(value, list):
        texts = [t for t in (_told_text(field, v) for v in value) if t]
        return [{field: separator.join(texts)}] if texts else []
    return [{field: str(value)}]
