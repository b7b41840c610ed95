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

import json
import re
import unicodedata
from pathlib import Path
from typing import Any, Sequence

from folio_llm.answers import parse_output, validator_for
from folio_llm.evaluation import bootstrap
from folio_llm.checking import FolioMapper, check_record
from folio_llm.folio.instance import FolioSchema, as_folio_schema

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
FUZZY_THRESHOLD = 0.95  # FinGreyLit's ALMOST_THRESHOLD on Levenshtein.ratio (= rapidfuzz's fuzz.ratio / 100)

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
# the reference


def _load_reference(reference: Any) -> dict:
    if isinstance(reference, dict):
        return reference
    value = json.loads(reference)
    if not isinstance(value, dict):
        raise ValueError(f"reference is not a JSON object: {str(reference)[:80]!r}")
    return value


# ---------------------------------------------------------------------------------------
# field extraction and comparison


def _items(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _key_value(item: Any, key: str | None) -> Any:
    if isinstance(item, dict):
        return item.get(key) if key else None
    return item if not isinstance(item, list) else None


def _text_set(record: dict, field: str, key: str | None = None) -> set[str]:
    values = {normalize(_key_value(item, key)) for item in _items(record.get(field))}
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
    from rapidfuzz import fuzz

    return 1.0 if a == b or fuzz.ratio(a, b) / 100 >= FUZZY_THRESHOLD else 0.0


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
    validator = _validator_obj or validator_for(schema)
    detail: dict = {
        "parsed": parsed,
        "parse_strict": strict,
        "parse_lenient": parsed is not None,
        "schema_valid": parsed is not None and validator.is_valid(parsed),
        "folio_valid": None,
        "unknown_labels": None,
    }
    folio = as_folio_schema(folio_schema)
    if folio is not None and reference_data is not None:
        if parsed is None:
            detail["folio_valid"] = False
        else:
            checked = check_record(parsed, FolioMapper.of(reference_data, folio))
            detail["folio_valid"] = checked.valid
            detail["unknown_labels"] = checked.unknown
    detail["fields"] = compare_records(truth, parsed) if parsed is not None else _unparsed_fields(truth, unparseable)
    return detail


# ---------------------------------------------------------------------------------------
# the report


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
    :func:`folio_llm.answers.target_schema` of the default ``denormalize.fields``). ``folio_schema`` (path or
    :class:`FolioSchema`) with ``reference_data``: also ``folio_schema_valid_rate``.
    ``n_boot`` bootstrap resamples with ``seed`` for the 95% intervals (0 = none)."""
    predictions, references = list(predictions), list(references)
    transcribed = list(transcribed) if transcribed is not None else None
    inferred = list(inferred) if inferred is not None else None
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    for name, rows in (("transcribed", transcribed), ("inferred", inferred)):
        if rows is not None and len(rows) != len(references):
            raise ValueError(f"{len(rows)} {name} rows but {len(references)} references")
    validator = validator_for(schema)
    folio = as_folio_schema(folio_schema)
    details = [
        score_record(p, r, folio_schema=folio, reference_data=reference_data, unparseable=unparseable,
                     _validator_obj=validator)
        for p, r in zip(predictions, references)
    ]
    return summarize(details, transcribed, inferred, folio_checked=folio is not None and reference_data is not None,
                     n_boot=n_boot, seed=seed, unparseable=unparseable)


_MACROS = ("macro", "macro_present", "macro_transcribed", "macro_inferred")


def summarize(details: Sequence[dict], transcribed: Sequence | None = None, inferred: Sequence | None = None, *,
              folio_checked: bool = False, n_boot: int = 1000, seed: int = 0, unparseable: str = "zero") -> dict:
    """The report over per-record details (:func:`score_record`), so a caller that keeps the
    details (the predictions file) scores each answer once. Arguments as in :func:`score`."""
    details = list(details)
    splits = _split_fields_per_row(transcribed, inferred)
    report = {"n": len(details), **_validity_rates(details)}
    if folio_checked:
        report["folio_unknown_labels"] = sum(len(d["unknown_labels"] or []) for d in details)
    report.update(_macros(details, splits, n_boot, seed))
    report["fields"] = {f: _field_summary(f, [d["fields"][f] for d in details]) for f in FIELDS}
    if splits:
        report["splits"] = {name: _split_scores(details, rows) for name, rows in splits.items()}
    report["macro_fields"] = list(MACRO_FIELDS)
    report["conventions"] = {
        "unparseable": unparseable,
        "both_empty": 1,
        "fuzzy_threshold": FUZZY_THRESHOLD,
        "n_boot": n_boot,
        "seed": seed,
    }
    return report


def _split_fields_per_row(transcribed: Sequence | None, inferred: Sequence | None) -> dict[str, list[set[str]]]:
    """For each split given ("transcribed", "inferred"): the set of target fields of each row."""
    return {name: [_row_fields(r) or set() for r in rows]
            for name, rows in (("transcribed", transcribed), ("inferred", inferred)) if rows is not None}


def _validity_rates(details: list[dict]) -> dict:
    return {
        "parse_rate_strict": _rate(details, "parse_strict"),
        "parse_rate": _rate(details, "parse_lenient"),
        "schema_valid_rate": _rate(details, "schema_valid"),
        "folio_schema_valid_rate": _rate(details, "folio_valid"),
    }


def _rate(details: list[dict], key: str) -> float | None:
    """Share of records whose ``key`` is true; None when any record was not checked."""
    values = [d[key] for d in details]
    if not values or any(v is None for v in values):
        return None
    return sum(bool(v) for v in values) / len(values)


def _macros(details: list[dict], splits: dict[str, list[set[str]]], n_boot: int, seed: int) -> dict:
    """Each macro of ``_MACROS`` and its 95% interval (None for a split not given)."""
    import numpy as np

    scores = _macro_matrix(details, "score", float)
    masks = {"macro": np.ones_like(scores, dtype=bool),
             "macro_present": _macro_matrix(details, "present", bool),
             **{f"macro_{name}": _target_mask(rows, len(details)) for name, rows in splits.items()}}
    intervals = bootstrap.intervals(scores, masks, n_boot, seed)
    report: dict = {}
    for name in _MACROS:
        report[name] = bootstrap.macro(scores, masks[name]) if name in masks else None
        report[f"{name}_ci"] = intervals[name] if name in masks else None
    return report


def _macro_matrix(details: list[dict], key: str, dtype):
    """(records x MACRO_FIELDS) array of one key of each record's field results."""
    import numpy as np

    values = [[d["fields"][f][key] for f in MACRO_FIELDS] for d in details]
    return np.array(values, dtype=dtype).reshape(len(details), len(MACRO_FIELDS))


def _target_mask(rows: list[set[str]], n: int):
    """(records x MACRO_FIELDS) mask: the field's target field is in the row's set."""
    import numpy as np

    values = [[TARGET_FIELD[f] in fields for f in MACRO_FIELDS] for fields in rows]
    return np.array(values, dtype=bool).reshape(n, len(MACRO_FIELDS))


def _field_summary(field: str, per: list[dict]) -> dict:
    """One field over all records: mean score, count per outcome, presence, hallucination rate."""
    n = len(per)
    entry: dict = {"score": sum(p["score"] for p in per) / n if n else None}
    for outcome in OUTCOMES:
        entry[outcome] = sum(1 for p in per if p["outcome"] == outcome)
    entry["n_present"] = sum(1 for p in per if p["present"])
    entry["hallucination_rate"] = entry["hallucinated"] / n if n else None
    if field == "contributor_types":
        matched = sum(p.get("matched", 0) for p in per)
        entry["matched_names"] = matched
        entry["accuracy_on_matched"] = sum(p.get("correct", 0) for p in per) / matched if matched else None
    return entry


def _split_scores(details: list[dict], rows: list[set[str]]) -> dict[str, dict]:
    """Per field: the mean score over the records whose row set holds its target field, and how many."""
    out: dict[str, dict] = {}
    for f in FIELDS:
        picked = [d["fields"][f]["score"] for d, fields in zip(details, rows) if TARGET_FIELD[f] in fields]
        out[f] = {"score": sum(picked) / len(picked) if picked else None, "n": len(picked)}
    return out


__all__ = [
    "FIELDS", "MACRO_FIELDS", "TARGET_FIELD", "OUTCOMES", "normalize", "name_key", "compare_records",
    "score_record", "score", "summarize", "set_f1",
]
