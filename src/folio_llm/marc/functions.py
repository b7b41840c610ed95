"""Normalization functions named in FOLIO MARC-to-Instance mapping rules.

Each function takes ``(value, ctx, param)`` and returns a string, like the ``NormalizationFunction``
enum of folio-org/data-import-processing-core: ``value`` is the subfield (or concatenated, or
control-field) data, ``ctx`` the engine's per-record state (``ctx.field`` is the MARC data field
being mapped, ``None`` for control fields; ``ctx.leader``; ``ctx.lookups``) and ``param`` the
condition's ``parameter`` object (may be ``None``).

A function that fails (missing parameter, no data field, string too short...) raises; the engine
then keeps the value unchanged, as ``NormalizationFunctionRunner`` does. A reference label that is
not found gives ``""`` so the target is left out (Java puts a stub UUID there instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from folio_llm.folio.reference import ReferenceData

# String.trim() in Java strips every char <= U+0020, not Unicode whitespace
_JAVA_TRIM = "".join(chr(i) for i in range(33))
_NOT_LINE_END = r"[^\n\r\u0085\u2028\u2029]"
# TRIM_PUNCTUATION's two patterns (Java's \s and . are ASCII-whitespace / non-line-terminator)
_ENDS_SINGLE_LETTER_PERIOD = re.compile(rf"{_NOT_LINE_END}*?[ \t\n\x0b\f\r]{_NOT_LINE_END}\.")
_ENDS_SINGLE_LETTER_COMMA_PERIOD = re.compile(rf"{_NOT_LINE_END}*?[ \t\n\x0b\f\r]{_NOT_LINE_END},\.")
_REGEX_CACHE: dict[str, re.Pattern] = {}

PUBLISHER_ROLES = {0: "Production", 1: "Publication", 2: "Distribution", 3: "Manufacture"}
# leader/07 -> mode of issuance name (IssuanceModeEnum)
ISSUANCE_MODES = {
    **dict.fromkeys("acdm", "single unit"),
    **dict.fromkeys("bs", "serial"),
    "i": "integrating resource",
}
# 856 ind2 -> electronic access relationship name (ElectronicAccessRelationshipEnum)
ELECTRONIC_ACCESS = {
    "0": "resource",
    "1": "version of resource",
    "2": "related resource",
    "8": "no display constant generated",
}


def _index(entries: list[dict], attr: str, strip: bool = False) -> dict[str, str]:
    """Lower-cased ``attr`` -> id, first entry wins (Java's ``findFirst``)."""
    out: dict[str, str] = {}
    for entry in entries:
        value, uuid = entry.get(attr), entry.get("id")
        if isinstance(value, str) and uuid:
            out.setdefault((value.strip() if strip else value).lower(), uuid)
    return out


@dataclass
class Lookups:
    """Label -> UUID indexes built once from :class:`ReferenceData`, matching the Java predicates."""

    instance_types: dict[str, str] = field(default_factory=dict)
    instance_formats: dict[str, str] = field(default_factory=dict)
    classification_types: dict[str, str] = field(default_factory=dict)
    contributor_name_types: dict[str, str] = field(default_factory=dict)
    contributor_codes: dict[str, str] = field(default_factory=dict)
    contributor_codes_ci: dict[str, str] = field(default_factory=dict)
    contributor_names_by_code: dict[str, str] = field(default_factory=dict)
    # name matching of $e: name (lower) -> (order, id), split by whether the name ends with "."
    contributor_plain: dict[str, tuple[int, str]] = field(default_factory=dict)
    contributor_dotted: dict[str, tuple[int, str]] = field(default_factory=dict)
    contributor_dotted_bare: dict[str, tuple[int, str]] = field(default_factory=dict)
    electronic_access: dict[str, str] = field(default_factory=dict)
    subject_sources: dict[str, str] = field(default_factory=dict)
    subject_source_codes: dict[str, str] = field(default_factory=dict)
    subject_types: dict[str, str] = field(default_factory=dict)
    identifier_types: dict[str, str] = field(default_factory=dict)
    identifier_types_untrimmed: dict[str, str] = field(default_factory=dict)
    note_types: dict[str, str] = field(default_factory=dict)
    alternative_title_types: dict[str, str] = field(default_factory=dict)
    issuance_modes: dict[str, str] = field(default_factory=dict)
    date_types: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, reference: ReferenceData) -> "Lookups":
        ref = reference.kind
        lk = cls()
        for entry in ref("instance-types"):
            name, code, uuid = entry.get("name"), entry.get("code"), entry.get("id")
            # SET_INSTANCE_TYPE_ID only considers types with both a name and a code
            if uuid and isinstance(name, str) and name.strip() and isinstance(code, str) and code.strip():
                lk.instance_types.setdefault(name.lower(), uuid)
                lk.instance_types.setdefault(code.lower(), uuid)
        lk.instance_formats = _index(ref("instance-formats"), "code")
        lk.classification_types = _index(ref("classification-types"), "name")
        lk.contributor_name_types = _index(ref("contributor-name-types"), "name")
        for order, entry in enumerate(ref("contributor-types")):
            name, code, uuid = entry.get("name"), entry.get("code"), entry.get("id")
            if not uuid:
                continue
            if isinstance(code, str):
                lk.contributor_codes.setdefault(code, uuid)
                lk.contributor_codes_ci.setdefault(code.lower(), uuid)
                if isinstance(name, str):
                    lk.contributor_names_by_code.setdefault(code.lower(), name)
            if isinstance(name, str):
                low = name.lower()
                if low.endswith("."):
                    lk.contributor_dotted.setdefault(low, (order, uuid))
                    lk.contributor_dotted_bare.setdefault(low[:-1], (order, uuid))
                else:
                    lk.contributor_plain.setdefault(low, (order, uuid))
        lk.electronic_access = _index(ref("electronic-access-relationships"), "name")
        lk.subject_sources = _index(ref("subject-sources"), "name", strip=True)
        lk.subject_source_codes = _index(ref("subject-sources"), "code", strip=True)
        lk.subject_types = _index(ref("subject-types"), "name", strip=True)
        lk.identifier_types = _index(ref("identifier-types"), "name", strip=True)
        lk.identifier_types_untrimmed = _index(ref("identifier-types"), "name")
        lk.note_types = _index(ref("instance-note-types"), "name")
        lk.alternative_title_types = _index(ref("alternative-title-types"), "name")
        lk.issuance_modes = _index(ref("modes-of-issuance"), "name")
        for entry in ref("instance-date-types"):
            if isinstance(entry.get("code"), str) and entry.get("id"):
                lk.date_types.setdefault(entry["code"], entry["id"])
        return lk


def _java_split_last(text: str, sep: str) -> str:
    """Last element of Java's ``text.split(sep)`` (trailing empty strings dropped)."""
    if not text:
        return ""
    parts = text.split(sep)
    while parts and parts[-1] == "":
        parts.pop()
    return parts[-1]  # IndexError (-> value kept) when text is only separators, as in Java


def _numeric_value(char: str) -> int:
    """Character.getNumericValue for the characters indicators hold."""
    if char.isdigit():
        return int(char)
    if "a" <= char.lower() <= "z":
        return ord(char.lower()) - ord("a") + 10
    return -1


def _java_trim(text: str) -> str:
    return text.strip(_JAVA_TRIM)


# --- text functions -------------------------------------------------------------------------


def char_select(value: str, ctx, param) -> str:
    if not param or "from" not in param or "to" not in param:
        return value
    start, end = param["from"], param["to"]
    if not (isinstance(start, int) and isinstance(end, int)) or not 0 <= start <= end <= len(value):
        raise ValueError("char_select range out of bounds")  # StringIndexOutOfBounds in Java
    return value[start:end]


def remove_ending_punc(value: str, ctx, param) -> str:
    if value and value[-1] in ";:,/+= ":
        return value[:-1]
    return value


def trim(value: str, ctx, param) -> str:
    return _java_trim(value)


def trim_period(value: str, ctx, param) -> str:
    return value[:-1] if value.endswith(".") else value


def trim_punctuation(value: str, ctx, param) -> str:
    text = _java_trim(value)
    if text.endswith("-") or _ENDS_SINGLE_LETTER_PERIOD.fullmatch(text):
        return text
    if _ENDS_SINGLE_LETTER_COMMA_PERIOD.fullmatch(text):
        return text[:-2] + "."
    if text.endswith((".", ",")):
        return text[:-1]
    return text


def remove_substring(value: str, ctx, param) -> str:
    if not param or "substring" not in param:
        return value
    substring = param["substring"]
    return value.replace(substring, "") if substring else value


def remove_prefix_by_indicator(value: str, ctx, param) -> str:
    count = _numeric_value(ctx.field.ind2)
    if 0 < count < len(value):
        # StringUtils.remove drops every occurrence of the prefix, not just the leading one
        return value.replace(value[:count], "")
    return value


def capitalize(value: str, ctx, param) -> str:
    if not value:
        return value
    head = value[0].title()
    return (head if len(head) == 1 else value[0]) + value[1:]


def concat_subfields_by_name(value: str, ctx, param) -> str:
    subfields = ctx.field.subfields
    start = next((i for i, sf in enumerate(subfields) if sf[1] == value), 0)
    stop_codes = {subfields[start][0], *(str(c) for c in (param.get("subfieldsToStopConcat") or ()))}
    end = next((i for i in range(start + 1, len(subfields)) if subfields[i][0] in stop_codes), len(subfields))
    window = subfields[start:end]
    result = [value]
    for code in param["subfieldsToConcat"]:
        result.extend(sf[1] for sf in window if sf[0] == code)
    return " ".join(result)


def set_publisher_role(value: str, ctx, param) -> str:
    return PUBLISHER_ROLES.get(_numeric_value(ctx.field.ind2), "")


def set_note_staff_only_via_indicator(value: str, ctx, param) -> str:
    return "true" if ctx.field.ind1 == "0" else "false"


def set_deleted(value: str, ctx, param) -> str:
    return "true" if value[5] == "d" else "false"


def set_heading_type_by_name(value: str, ctx, param) -> str:
    return param["name"]


# --- reference-data functions ---------------------------------------------------------------


def _by_name(table_attr: str):
    def lookup(value: str, ctx, param) -> str:
        name = param.get("name")
        return getattr(ctx.lookups, table_attr).get(name.lower(), "") if isinstance(name, str) else ""

    lookup.__name__ = f"by_name_{table_attr}"
    return lookup


set_classification_type_id = _by_name("classification_types")
set_contributor_name_type_id = _by_name("contributor_name_types")
set_subject_source_id = _by_name("subject_sources")
set_subject_type_id = _by_name("subject_types")
set_identifier_type_id_by_name = _by_name("identifier_types")
set_alternative_title_type_id = _by_name("alternative_title_types")


def set_note_type_id(value: str, ctx, param) -> str:
    name = param.get("name")
    if not isinstance(name, str):
        return ""
    types = ctx.lookups.note_types
    return types.get(name.lower()) or types.get("general note", "")


def set_identifier_type_id_by_value(value: str, ctx, param) -> str:
    names = param["names"]
    type_name = names[0]
    pattern = param.get("oclc_regex")
    if pattern is not None:
        regex = _REGEX_CACHE.get(pattern)
        if regex is None:
            regex = _REGEX_CACHE[pattern] = re.compile(pattern)
        if regex.fullmatch(value):
            type_name = names[1]
    return ctx.lookups.identifier_types_untrimmed.get(str(type_name).lower(), "")


def set_instance_type_id(value: str, ctx, param) -> str:
    unspecified = param.get("unspecifiedInstanceTypeCode")
    code = _java_split_last(value, "~") if ctx.field is not None else unspecified
    types = ctx.lookups.instance_types
    found = types.get(code.lower()) if isinstance(code, str) else None
    if found is None and isinstance(unspecified, str):
        found = types.get(unspecified.lower())
    return found or ""


def set_instance_format_id(value: str, ctx, param) -> str:
    # 338 arrives as "$a~$b" (the rule's "~" delimiter); the $b code is the one to match
    formats = ctx.lookups.instance_formats
    return formats.get(value.lower()) or formats.get(_java_split_last(value, "~").lower(), "")


def set_contributor_type_id(value: str, ctx, param) -> str:
    return ctx.lookups.contributor_codes_ci.get(value.lower(), "")


def set_contributor_type_text(value: str, ctx, param) -> str:
    return ctx.lookups.contributor_names_by_code.get(value.lower(), value)


def _contributor_by_name(text: str, lk: Lookups) -> str:
    """First contributor type whose name equals ``text`` the way Java compares them."""
    text = _java_trim(text).lower()
    candidates = []
    if text.endswith("."):
        candidates += [lk.contributor_dotted.get(text), lk.contributor_plain.get(text[:-1])]
    elif text.endswith((";", ",")):
        candidates += [lk.contributor_dotted.get(text[:-1]), lk.contributor_plain.get(text[:-1])]
    else:
        candidates += [lk.contributor_dotted_bare.get(text), lk.contributor_plain.get(text)]
    found = [c for c in candidates if c is not None]
    return min(found)[1] if found else ""


def set_contributor_type_id_by_code_or_name(value: str, ctx, param) -> str:
    lk = ctx.lookups
    code_sf = param.get("contributorCodeSubfield")
    name_sf = param.get("contributorNameSubfield")
    has_types = lk.contributor_codes or lk.contributor_plain or lk.contributor_dotted
    if not has_types or not code_sf or not name_sf:
        return ""
    subfields = ctx.field.subfields
    for sf in subfields:
        if sf[0] == code_sf[0] and sf[1] in lk.contributor_codes:
            return lk.contributor_codes[sf[1]]
    for sf in subfields:
        if sf[0] == name_sf[0]:
            found = _contributor_by_name(sf[1], lk)
            if found:
                return found
    return ""


def set_electronic_access_relations_id(value: str, ctx, param) -> str:
    if ctx.field is None:
        return ""
    name = ELECTRONIC_ACCESS.get(ctx.field.ind2, "no information provided")
    return ctx.lookups.electronic_access.get(name, "")


def set_subject_source_id_by_code(value: str, ctx, param) -> str:
    return ctx.lookups.subject_source_codes.get(_java_trim(value).lower(), "")


def set_issuance_mode_id(value: str, ctx, param) -> str:
    symbol = value[7]
    modes = ctx.lookups.issuance_modes
    if not modes:
        return ""
    default = modes.get("unspecified", "")
    return modes.get(ISSUANCE_MODES.get(symbol, "unspecified"), default)


def set_date_type_id(value: str, ctx, param) -> str:
    types = ctx.lookups.date_types
    code = value[6] if len(value) > 6 else " "
    # an 008/06 outside the code list is treated like "|" (no attempt to code)
    return types.get(code) or types.get("|", "")


FUNCTIONS = {
    "char_select": char_select,
    "remove_ending_punc": remove_ending_punc,
    "trim": trim,
    "trim_period": trim_period,
    "trim_punctuation": trim_punctuation,
    "remove_substring": remove_substring,
    "remove_prefix_by_indicator": remove_prefix_by_indicator,
    "capitalize": capitalize,
    "concat_subfields_by_name": concat_subfields_by_name,
    "set_publisher_role": set_publisher_role,
    "set_note_staff_only_via_indicator": set_note_staff_only_via_indicator,
    "set_deleted": set_deleted,
    "set_heading_type_by_name": set_heading_type_by_name,
    "set_classification_type_id": set_classification_type_id,
    "set_contributor_name_type_id": set_contributor_name_type_id,
    "set_subject_source_id": set_subject_source_id,
    "set_subject_source_id_by_code": set_subject_source_id_by_code,
    "set_subject_type_id": set_subject_type_id,
    "set_identifier_type_id_by_name": set_identifier_type_id_by_name,
    "set_identifier_type_id_by_value": set_identifier_type_id_by_value,
    "set_alternative_title_type_id": set_alternative_title_type_id,
    "set_note_type_id": set_note_type_id,
    "set_instance_type_id": set_instance_type_id,
    "set_instance_format_id": set_instance_format_id,
    "set_contributor_type_id": set_contributor_type_id,
    "set_contributor_type_text": set_contributor_type_text,
    "set_contributor_type_id_by_code_or_name": set_contributor_type_id_by_code_or_name,
    "set_electronic_access_relations_id": set_electronic_access_relations_id,
    "set_issuance_mode_id": set_issuance_mode_id,
    "set_date_type_id": set_date_type_id,
}


def split_every(value: str, param) -> list[str]:
    """``subFieldSplit`` ``split_every``: fixed-length chunks (Guava ``Splitter.fixedLength``)."""
    size = int(param)
    if size <= 0:
        raise ValueError("split size must be positive")
    if not value:
        return [""]
    return [value[i : i + size] for i in range(0, len(value), size)]


SPLIT_FUNCTIONS = {"split_every": split_every}
