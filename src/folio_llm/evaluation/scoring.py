"""Field-level scoring of model outputs (JSON text) against reference records (JSON text).

Pure Python (numpy only for the bootstrap); the HF ``evaluate`` module in
``metrics/folio_instance`` is a thin wrapper around :func:`score`.

Per record and scored field the score is in [0, 1] and the outcome is one of

- ``both_empty``   neither side has the field: score 1 (FinGreyLit "not-relevant");
- ``missing``      the reference has it, the prediction does not: 0 ("not-found");
- ``hallucinated`` the prediction has it, the reference does not: 0 ("found-nonexistent");
- ``exact``        both have it and the score is 1;
- ``partial``      both have it and 0 < score < 1 (set-F1 of an overlap, subset or superset);
- ``wrong``        both have it and the score is 0;
- ``unparsed``     the output holds no JSON object: 0 for every field (see ``unparseable``).

"Has it" means a non-empty value after normalization: ``None``, ``""``, ``[]``, ``{}`` and
values that normalize to nothing count as absent, on both sides.

Macro averages follow NatLibFi/FinGreyLit ``eval/eval.py`` (MetadataEvaluator, commit
3a518cb): every (record, field) pair gets a score, a field's score is the mean over records
(``save_md``: ``groupby(field).score.mean()``), and the headline is the unweighted mean of
those field means (the AVERAGE rows of ``eval/combined-results.md``). Both-empty pairs count
1. FinGreyLit turns an unparseable answer into ``{}`` (``evaluate-model.py``), so its
both-empty pairs still count 1; here the default ``unparseable="zero"`` scores every field of
an unparseable answer 0 (stricter: a model that emits garbage gets no credit for fields the
record lacks); ``unparseable="empty"`` reproduces FinGreyLit exactly.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import unquote, urlparse

from folio_llm.records import LABEL_KEYS

FIELDS: tuple[str, ...] = (
    "title",
    "title_fuzzy",
    "contributors",
    "contributor_types",
    "publication_year",
    "publisher",
    "place",
    "subjects",
    "classifications",
    "identifiers",
    "languages",
    "editions",
    "physicalDescriptions",
    "series",
    "instanceTypeText",
    "modeOfIssuanceText",
)
# title_fuzzy duplicates title (a lenient view of the same value) and contributor_types is
# judged only on names both sides share, so both stay out of the macro averages.
MACRO_FIELDS: tuple[str, ...] = tuple(f for f in FIELDS if f not in ("title_fuzzy", "contributor_types"))

# scored field -> the target field it comes from (for the transcribed / inferred split)
TARGET_FIELD: dict[str, str] = {
    **{f: f for f in FIELDS},
    "title_fuzzy": "title",
    "contributor_types": "contributors",
    "publication_year": "publication",
    "publisher": "publication",
    "place": "publication",
}

OUTCOMES = ("exact", "partial", "missing", "hallucinated", "wrong", "both_empty", "unparsed")
FUZZY_THRESHOLD = 0.95  # FinGreyLit's ALMOST_THRESHOLD (there Levenshtein.ratio; here difflib)

# ---------------------------------------------------------------------------------------
# normalization

_WS = re.compile(r"\s+")
_TRAILING = " /:;,."
_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")


def normalize(text: Any) -> str:
    """NFKC, casefold, brackets removed, whitespace collapsed, trailing ISBD punctuation stripped."""
    if text is None or isinstance(text, (dict, list)):
        return ""
    if isinstance(text, bool):
        text = "true" if text else "false"
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = text.replace("[", "").replace("]", "")
    text = _WS.sub(" ", text).strip()
    return text.rstrip(_TRAILING).strip()


def name_key(name: Any) -> str:
    """Order-insensitive key of a name: "Jackson, Brenda" == "Brenda Jackson"; dates kept
    ("Summers, Eden, 1982-" == "Eden Summers, 1982-"). The name's words, each normalized,
    sorted."""
    text = normalize(name).replace(",", " ")
    tokens = sorted(t for t in (tok.strip(_TRAILING) for tok in text.split()) if t)
    return " ".join(tokens)


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


def _load_reference(reference: Any) -> dict:
    if isinstance(reference, dict):
        return reference
    value = json.loads(reference)
    if not isinstance(value, dict):
        raise ValueError(f"reference is not a JSON object: {str(reference)[:80]!r}")
    return value


# ---------------------------------------------------------------------------------------
# target schema

_STRING_FIELDS = {"title", "indexTitle", "hrid", "source", "matchKey", "catalogedDate", "statusUpdatedDate"}
_STRING_LIST_FIELDS = {
    "editions", "physicalDescriptions", "languages", "publicationFrequency", "publicationRange",
    "administrativeNotes",
}
_BOOLEAN_KEYS = {"primary", "staffOnly", "discoverySuppress", "staffSuppress", "previouslyHeld", "deleted"}
_REQUIRED_ITEM_KEYS = {
    "contributors": ["name"],
    "identifiers": ["value"],
    "series": ["value"],
    "subjects": ["value"],
    "classifications": ["classificationNumber"],
    "alternativeTitles": ["alternativeTitle"],
    "notes": ["note"],
}


def _field_schema(name: str, keys: list[str] | None) -> dict:
    if keys:
        properties = {k: {"type": "boolean" if k in _BOOLEAN_KEYS else "string"} for k in keys}
        item = {"type": "object", "properties": properties, "additionalProperties": False}
        required = [k for k in _REQUIRED_ITEM_KEYS.get(name, []) if k in keys]
        if required:
            item["required"] = required
        return {"type": "array", "items": item}
    if name in _STRING_FIELDS or name.endswith("Text"):
        return {"type": "string"}
    if name in _STRING_LIST_FIELDS or name.endswith("Texts"):
        return {"type": "array", "items": {"type": "string"}}
    if name in _BOOLEAN_KEYS:
        return {"type": "boolean"}
    return {}


def target_schema(fields: dict[str, list[str] | None] | None = None) -> dict:
    """JSON schema of the answer's shape from ``denormalize.fields`` (field -> kept keys, or
    None for a scalar / list of strings). Plain draft-2020-12 keywords only (type, properties,
    items, required, additionalProperties), so xgrammar can compile it for constrained
    decoding. ``title`` is required; nothing else is."""
    if fields is None:
        from folio_llm.params import DEFAULT_FIELDS

        fields = DEFAULT_FIELDS
    properties = {name: _field_schema(name, keys) for name, keys in fields.items()}
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if "title" in properties:
        schema["required"] = ["title"]
    return schema


def _validator(schema: dict | None):
    from jsonschema import Draft202012Validator

    if schema is None:
        return _default_validator()
    return Draft202012Validator(schema)


@functools.lru_cache(maxsize=1)
def _default_validator():
    from jsonschema import Draft202012Validator

    return Draft202012Validator(target_schema())


# ---------------------------------------------------------------------------------------
# FOLIO: labels back to UUIDs, and FOLIO's own Instance schema

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


def _as_folio_schema(folio_schema) -> FolioSchema | None:
    if folio_schema is None or isinstance(folio_schema, FolioSchema):
        return folio_schema
    return FolioSchema(folio_schema)


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
    schema = _as_folio_schema(schema)
    if schema is not None:
        instance = schema.prune(instance)
    return instance, unknown


# ---------------------------------------------------------------------------------------
# field extraction and comparison


def _items(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _item_text(item: Any, key: str | None) -> Any:
    if isinstance(item, dict):
        return item.get(key) if key else None
    return item if not isinstance(item, list) else None


def _text_set(record: dict, field: str, key: str | None = None) -> set[str]:
    values = {normalize(_item_text(item, key)) for item in _items(record.get(field))}
    values.discard("")
    return values


def _contributors(record: dict) -> dict[str, str]:
    """name key -> normalized contributor type ("" when none)."""
    out: dict[str, str] = {}
    for item in _items(record.get("contributors")):
        name = item.get("name") if isinstance(item, dict) else item
        key = name_key(name)
        if key:
            kind = normalize(item.get("contributorTypeText")) if isinstance(item, dict) else ""
            out.setdefault(key, kind)
    return out


def _publication_parts(record: dict, part: str) -> set[str]:
    entries = [p for p in _items(record.get("publication")) if isinstance(p, dict)]
    if part == "year":
        years: set[str] = set()
        for p in entries:
            date = p.get("dateOfPublication")
            if isinstance(date, (str, int)):
                years.update(_YEAR.findall(str(date)))
        return years
    values = {normalize(p.get(part)) for p in entries}
    values.discard("")
    return values


def set_f1(truth: set, predicted: set) -> float:
    """F1 of two non-empty sets (FinGreyLit ``_compare_set``)."""
    hits = len(truth & predicted)
    if not hits:
        return 0.0
    precision, recall = hits / len(predicted), hits / len(truth)
    return 2 * precision * recall / (precision + recall)


def _outcome(truth_present: bool, pred_present: bool, score: float) -> str:
    if not truth_present and not pred_present:
        return "both_empty"
    if not pred_present:
        return "missing"
    if not truth_present:
        return "hallucinated"
    if score >= 1.0:
        return "exact"
    return "partial" if score > 0 else "wrong"


def _presence(truth, pred, compare) -> tuple[float, str, bool]:
    """(score, outcome, reference has the field) for two normalized values (empty = absent)."""
    t, p = bool(truth), bool(pred)
    if t and p:
        score = float(compare(truth, pred))
    else:
        score = 1.0 if not t and not p else 0.0
    return score, _outcome(t, p, score), t


def _exact(a, b) -> float:
    return 1.0 if a == b else 0.0


def _fuzzy(a: str, b: str) -> float:
    return 1.0 if a == b or difflib.SequenceMatcher(None, a, b).ratio() >= FUZZY_THRESHOLD else 0.0


def _string(record: dict, field: str) -> str:
    value = record.get(field)
    if isinstance(value, list):  # a one-element list where a string belongs: judge the text
        value = value[0] if len(value) == 1 else None
    return normalize(value)


_SET_FIELDS = {
    "subjects": "value",
    "series": "value",
    "classifications": "classificationNumber",
    "identifiers": "value",
    "languages": None,
    "editions": None,
    "physicalDescriptions": None,
}


def compare_records(truth: dict, pred: dict) -> dict[str, dict]:
    """Every scored field of one parsed prediction against its reference:
    ``{field: {"score", "outcome", "present"}}`` (present: the reference has the field)."""
    out: dict[str, dict] = {}

    def put(field: str, result: tuple[float, str, bool], **extra) -> None:
        score, outcome, present = result
        out[field] = {"score": score, "outcome": outcome, "present": present, **extra}

    title_t, title_p = _string(truth, "title"), _string(pred, "title")
    put("title", _presence(title_t, title_p, _exact))
    put("title_fuzzy", _presence(title_t, title_p, _fuzzy))

    people_t, people_p = _contributors(truth), _contributors(pred)
    put("contributors", _presence(set(people_t), set(people_p), set_f1))
    matched = set(people_t) & set(people_p)
    same_type = sum(1 for k in matched if people_t[k] == people_p[k])
    if people_t and people_p:
        # accuracy of the type on the names both sides share; no shared name: nothing right
        accuracy = same_type / len(matched) if matched else 0.0
        types = (accuracy, _outcome(True, True, accuracy), True)
    else:
        types = _presence(people_t, people_p, _exact)
    put("contributor_types", types, matched=len(matched), correct=same_type)

    for field, part in (("publication_year", "year"), ("publisher", "publisher"), ("place", "place")):
        put(field, _presence(_publication_parts(truth, part), _publication_parts(pred, part), set_f1))
    for field in ("subjects", "classifications", "identifiers", "languages", "editions",
                  "physicalDescriptions", "series"):
        key = _SET_FIELDS[field]
        put(field, _presence(_text_set(truth, field, key), _text_set(pred, field, key), set_f1))
    for field in ("instanceTypeText", "modeOfIssuanceText"):
        put(field, _presence(_string(truth, field), _string(pred, field), _exact))
    return {f: out[f] for f in FIELDS}


def _unparsed_fields(truth: dict, unparseable: str) -> dict[str, dict]:
    if unparseable == "empty":  # FinGreyLit: the prediction is {}
        return compare_records(truth, {})
    present = compare_records(truth, {})
    return {f: {"score": 0.0, "outcome": "unparsed", "present": present[f]["present"],
                **({"matched": 0, "correct": 0} if f == "contributor_types" else {})}
            for f in FIELDS}


# ---------------------------------------------------------------------------------------
# one record


def score_record(prediction_text: Any, reference_text: Any, *, schema: dict | None = None,
                 folio_schema: FolioSchema | str | Path | None = None, reference_data=None,
                 unparseable: str = "zero", _validator_obj=None) -> dict:
    """Per-record detail (JSON-serializable) for the predictions file:

    ``{"parsed": object or None, "parse_strict": bool, "parse_lenient": bool,
    "schema_valid": bool, "folio_valid": bool or None, "unknown_labels": [...] or None,
    "fields": {field: {"score", "outcome", "present"}}}``.

    ``folio_valid`` needs both ``folio_schema`` and ``reference_data``."""
    if unparseable not in ("zero", "empty"):
        raise ValueError("unparseable must be 'zero' or 'empty'")
    truth = _load_reference(reference_text)
    parsed, strict = parse_output(prediction_text)
    validator = _validator_obj or _validator(schema)
    detail: dict = {
        "parsed": parsed,
        "parse_strict": strict,
        "parse_lenient": parsed is not None,
        "schema_valid": parsed is not None and validator.is_valid(parsed),
        "folio_valid": None,
        "unknown_labels": None,
    }
    folio = _as_folio_schema(folio_schema)
    if folio is not None and reference_data is not None:
        if parsed is None:
            detail["folio_valid"] = False
        else:
            instance, unknown = to_folio(parsed, reference_data, folio)
            detail["folio_valid"] = folio.is_valid(instance)
            detail["unknown_labels"] = unknown
    detail["fields"] = compare_records(truth, parsed) if parsed is not None else _unparsed_fields(truth, unparseable)
    return detail


# ---------------------------------------------------------------------------------------
# the report


def _macro(scores, mask):
    """Mean over fields (columns with any pair in ``mask``) of the mean per-record score."""
    import numpy as np

    counts = mask.sum(axis=0)
    sums = np.where(mask, scores, 0.0).sum(axis=0)
    used = counts > 0
    if not used.any():
        return None
    return float((sums[used] / counts[used]).mean())


def _bootstrap(scores, masks: dict, n_boot: int, seed: int) -> dict[str, list[float] | None]:
    """95% percentile intervals of each macro, records resampled with replacement.

    A resample is drawn as multinomial counts per record, so each macro of a resample is
    (counts @ scores) / (counts @ mask) per field, then the mean over fields with pairs."""
    import numpy as np

    n = scores.shape[0]
    if n == 0 or n_boot <= 0:
        return {name: None for name in masks}
    rng = np.random.default_rng(seed)
    out: dict[str, list[float] | None] = {}
    draws = [rng.multinomial(n, np.full(n, 1.0 / n), size=min(256, n_boot - start))
             for start in range(0, n_boot, 256)]
    for name, mask in masks.items():
        values = []
        weighted = np.where(mask, scores, 0.0)
        maskf = mask.astype(float)
        for counts in draws:
            sums, totals = counts @ weighted, counts @ maskf
            with np.errstate(invalid="ignore", divide="ignore"):
                means = np.where(totals > 0, sums / np.where(totals > 0, totals, 1), np.nan)
            used = totals > 0
            per_sample = np.where(used.any(axis=1), np.nansum(means, axis=1) / np.maximum(used.sum(axis=1), 1),
                                  np.nan)
            values.append(per_sample)
        values = np.concatenate(values)
        values = values[~np.isnan(values)]
        out[name] = ([float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]
                     if values.size else None)
    return out


def _row_fields(row: Any) -> set[str] | None:
    if row is None:
        return None
    if isinstance(row, str):
        return {row}
    return set(row)


def score(predictions: Sequence[Any], references: Sequence[Any], transcribed: Sequence | None = None,
          inferred: Sequence | None = None, schema: dict | None = None,
          folio_schema: FolioSchema | str | Path | None = None, reference_data=None, n_boot: int = 1000,
          seed: int = 0, unparseable: str = "zero") -> dict:
    """The report over line-aligned model outputs and references (JSON strings or dicts).

    ``transcribed`` / ``inferred``: per row, the target fields the prompt told / did not tell
    (the dataset's meta rows). ``schema``: the target shape (default
    :func:`target_schema` of the default ``denormalize.fields``). ``folio_schema`` (path or
    :class:`FolioSchema`) with ``reference_data``: also ``folio_schema_valid_rate``.
    ``n_boot`` bootstrap resamples with ``seed`` for the 95% intervals (0 = none)."""
    import numpy as np

    predictions, references = list(predictions), list(references)
    transcribed = list(transcribed) if transcribed is not None else None
    inferred = list(inferred) if inferred is not None else None
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    for name, rows in (("transcribed", transcribed), ("inferred", inferred)):
        if rows is not None and len(rows) != len(references):
            raise ValueError(f"{len(rows)} {name} rows but {len(references)} references")
    validator = _validator(schema)
    folio = _as_folio_schema(folio_schema)
    details = [
        score_record(p, r, folio_schema=folio, reference_data=reference_data, unparseable=unparseable,
                     _validator_obj=validator)
        for p, r in zip(predictions, references)
    ]
    n = len(details)

    def rate(key: str) -> float | None:
        values = [d[key] for d in details]
        if not n or any(v is None for v in values):
            return None
        return sum(bool(v) for v in values) / n

    scores = np.array([[d["fields"][f]["score"] for f in MACRO_FIELDS] for d in details], dtype=float).reshape(
        n, len(MACRO_FIELDS))
    masks = {"macro": np.ones_like(scores, dtype=bool),
             "macro_present": np.array([[d["fields"][f]["present"] for f in MACRO_FIELDS] for d in details],
                                       dtype=bool).reshape(n, len(MACRO_FIELDS))}
    splits: dict[str, dict] = {}
    for name, rows in (("transcribed", transcribed), ("inferred", inferred)):
        if rows is None:
            continue
        sets = [_row_fields(r) or set() for r in rows]
        masks[f"macro_{name}"] = np.array(
            [[TARGET_FIELD[f] in s for f in MACRO_FIELDS] for s in sets], dtype=bool).reshape(n, len(MACRO_FIELDS))
        split_fields = {}
        for f in FIELDS:
            picked = [d["fields"][f]["score"] for d, s in zip(details, sets) if TARGET_FIELD[f] in s]
            split_fields[f] = {"score": sum(picked) / len(picked) if picked else None, "n": len(picked)}
        splits[name] = split_fields

    fields: dict[str, dict] = {}
    for f in FIELDS:
        per = [d["fields"][f] for d in details]
        entry = {"score": sum(p["score"] for p in per) / n if n else None}
        for outcome in OUTCOMES:
            entry[outcome] = sum(1 for p in per if p["outcome"] == outcome)
        entry["n_present"] = sum(1 for p in per if p["present"])
        entry["hallucination_rate"] = entry["hallucinated"] / n if n else None
        if f == "contributor_types":
            matched = sum(p.get("matched", 0) for p in per)
            entry["matched_names"] = matched
            entry["accuracy_on_matched"] = sum(p.get("correct", 0) for p in per) / matched if matched else None
        fields[f] = entry

    report: dict = {
        "n": n,
        "parse_rate_strict": rate("parse_strict"),
        "parse_rate": rate("parse_lenient"),
        "schema_valid_rate": rate("schema_valid"),
        "folio_schema_valid_rate": rate("folio_valid"),
    }
    if folio is not None and reference_data is not None:
        report["folio_unknown_labels"] = sum(len(d["unknown_labels"] or []) for d in details)
    intervals = _bootstrap(scores, masks, n_boot, seed)
    for name in ("macro", "macro_present", "macro_transcribed", "macro_inferred"):
        if name in masks:
            report[name] = _macro(scores, masks[name])
            report[f"{name}_ci"] = intervals[name]
        else:
            report[name] = None
            report[f"{name}_ci"] = None
    report["fields"] = fields
    if splits:
        report["splits"] = splits
    report["macro_fields"] = list(MACRO_FIELDS)
    report["conventions"] = {
        "unparseable": unparseable,
        "both_empty": 1,
        "fuzzy_threshold": FUZZY_THRESHOLD,
        "n_boot": n_boot,
        "seed": seed,
    }
    return report


__all__ = [
    "FIELDS", "MACRO_FIELDS", "TARGET_FIELD", "OUTCOMES", "FolioSchema", "normalize", "name_key",
    "parse_output", "target_schema", "to_folio", "compare_records", "score_record", "score", "set_f1",
]
