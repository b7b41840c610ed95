"""The model's answer as a checked FOLIO record: the one place that parses an answer (closing a
cut-off one), maps its labels to the tenant's reference UUIDs and checks FOLIO's Instance schema.

Every path that turns answers into records uses it: `folio-llm predict` prints the result as
lines, the page sends it as JSON, evaluation counts FOLIO validity and unknown labels from it.
Warnings are ``{"field", "path", "message"}``, each beside the top-level field it concerns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CUT_OFF = "the answer was cut off (loop or token limit): kept up to its last whole field"
SCHEMA_PREFIX = "FOLIO schema: "
REVIEW = "check {what}: the model was unsure of it (confidence {confidence:.2f})"
UNUSED = "check what the record leaves out: no field holds {runs} of the description"


def field_of(path: str) -> str:
    """The top-level field a path names: 'contributors[0].contributorTypeText' -> 'contributors'."""
    for stop in ".[/":
        path = path.split(stop)[0]
    return path or "record"


class FolioMapper:
    """The tenant's reference data and FOLIO's Instance schema, loaded once."""

    def __init__(self, reference_dir: str | Path, schemas_dir: str | Path):
        from folio_llm.folio.instance import FolioSchema
        from folio_llm.folio.reference import ReferenceData

        if not Path(schemas_dir).is_dir():
            raise ValueError(f"FOLIO schemas folder not found: {schemas_dir}")
        self.reference = ReferenceData.load(reference_dir)
        self.schema = FolioSchema(schemas_dir)

    @classmethod
    def of(cls, reference, schema) -> "FolioMapper":
        """A mapper over reference data and a schema already loaded."""
        mapper = cls.__new__(cls)
        mapper.reference, mapper.schema = reference, schema
        return mapper


@dataclass
class Checked:
    """``record``: the answer's JSON object (labels), None when the answer is none;
    ``instance``: the FOLIO Instance it maps to (UUIDs), with a mapper; ``unknown``: labels
    that match no reference entry (left out); ``schema_errors``: what FOLIO's schema refuses."""

    answer: str | None
    record: dict | None
    instance: dict | None = None
    unknown: list[dict] = field(default_factory=list)
    schema_errors: list[str] = field(default_factory=list)
    cut_off: bool = False
    checked_by_folio: bool = False
    confidence: dict[str, float] = field(default_factory=dict)  # scored field -> decoding.doubt's confidence
    review_below: float = 0.0
    unused: list[str] = field(default_factory=list)  # the description's text no field holds (folio_llm.unused)

    @property
    def valid(self) -> bool | None:
        """FOLIO's Instance schema takes it (None: not checked against FOLIO)."""
        if not self.checked_by_folio:
            return None
        return self.record is not None and not self.schema_errors

    @property
    def error(self) -> str | None:
        """Why there is no usable record, in one line."""
        if self.record is None:
            shown = " ".join((self.answer or "").split())
            return f"the model's answer is not a JSON object: {shown[:80]!r}{'...' if len(shown) > 80 else ''}"
        if self.schema_errors:
            more = f"; and {len(self.schema_errors) - 3} more" if len(self.schema_errors) > 3 else ""
            return f"not a valid FOLIO Instance: {'; '.join(self.schema_errors[:3])}{more}"
        return None

    @property
    def warnings(self) -> list[dict]:
        """Every warning beside the field it concerns: cut off, unknown labels, schema errors."""
        found = [{"field": "record", "path": "", "message": CUT_OFF}] if self.cut_off else []
        found += [{"field": field_of(u["path"]), "path": u["path"],
                   "message": f"{u['label']!r} matches no {u['kind']} entry in the reference data (left out)"}
                  for u in self.unknown]
        for error in self.schema_errors:
            path, _, message = error.partition(": ")
            found.append({"field": field_of(path), "path": path, "message": SCHEMA_PREFIX + message})
        return found + self._review_warnings()

    @property
    def review(self) -> list[str]:
        """The fields to check: those the model was less sure of than ``review_below``."""
        from folio_llm.decoding.doubt import flagged

        return flagged(self.confidence, self.review_below) if self.record is not None else []

    def _review_warnings(self) -> list[dict]:
        from folio_llm.decoding.doubt import SCORED_PARTS, holds

        found = [{"field": "record", "path": "", "kind": "review",
                  "message": UNUSED.format(runs="; ".join(f"“{run}”" for run in self.unused))}] if self.unused else []
        for name in self.review:
            top, inner = SCORED_PARTS[name]
            written = holds(self.record, name)
            found.append({"field": top, "path": f"{top}.{inner}" if inner else top, "kind": "review",
                          "confidence": self.confidence[name],
                          "message": REVIEW.format(what="this value" if written else "whether it is left out",
                                                   confidence=self.confidence[name])})
        return found

    @property
    def usable(self) -> dict | None:
        """What `predict` writes: the FOLIO Instance when mapped (None if FOLIO refuses it), else the record."""
        if self.error:
            return None
        return self.instance if self.checked_by_folio else self.record

    def lines(self) -> list[str]:
        """The warnings as `predict` prints them (the schema's refusal is the error, not a warning)."""
        return [f"{w['path']}: {w['message']}" if w["path"] else w["message"]
                for w in self.warnings if not w["message"].startswith(SCHEMA_PREFIX)]

    def as_json(self) -> dict:
        """What the page shows."""
        return {"answer": self.answer, "record": self.record, "instance": self.instance, "warnings": self.warnings,
                "valid": self.valid, "error": None if self.record is not None else self.error,
                "confidence": self.confidence, "review": self.review, "unused": self.unused}


@dataclass(frozen=True)
class AnswerChecks:
    """What is done to each answer after it is written (params.eval): fields the model was less
    sure of than ``review_below`` flagged for review (a served model gives no confidence); the
    roles its description does not say dropped (``roles_need_words``, folio_llm.roles); with the
    description styles' ``template`` words, the description's text no field holds listed
    (folio_llm.unused)."""

    review_below: float = 0.0
    roles_need_words: bool = False
    template: frozenset[str] | None = None

    @classmethod
    def of(cls, params) -> "AnswerChecks":
        from folio_llm.unused import review_template

        return cls(params.eval.review_below, params.eval.roles_need_words, review_template(params))


def check_record(record: dict, folio: FolioMapper | None, answer: str | None = None, cut_off: bool = False) -> Checked:
    """A record (an answer's JSON object, or one edited on the page) mapped and checked."""
    if folio is None:
        return Checked(answer, record, cut_off=cut_off)
    from folio_llm.folio.instance import to_folio

    instance, unknown = to_folio(record, folio.reference, folio.schema)
    return Checked(answer, record, instance, unknown, folio.schema.errors(instance), cut_off, True)


def check_answer(answer: str, folio: FolioMapper | None = None, confidence: dict[str, float] | None = None,
                 review_below: float = 0.0, description: str = "", template: frozenset[str] | None = None) -> Checked:
    """The model's answer parsed (a cut-off one closed after its last whole field), then mapped
    and checked with ``folio``; the fields whose ``confidence`` is below ``review_below`` are
    flagged for review and, with the description styles' ``template`` words, the text of the
    ``description`` no field holds is listed (folio_llm.unused)."""
    from dataclasses import replace

    from folio_llm.answers import close_cut_json, parse_output

    closed = close_cut_json(answer)
    record, _ = parse_output(closed or answer)
    if record is None:
        return Checked(answer, None, checked_by_folio=folio is not None)
    checked = check_record(record, folio, answer, cut_off=bool(closed))
    unused = []
    if template is not None:
        from folio_llm.unused import unused_text

        unused = unused_text(description, record, template)
    return replace(checked, confidence=dict(confidence or {}), review_below=review_below, unused=unused)
