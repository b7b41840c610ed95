"""How well the review flags point a cataloger at the wrong fields (``decoding.doubt``).

Over the told fields of every answer (the fields its description tells, so a cataloger can
check them against it): recall is the share of the wrong ones flagged, false alarms the share
of the right ones flagged. A told field the answer left out counts as wrong; it is judged on
the choice that skipped it, and counts as not flagged where that choice is not known. A wrong
told field also counts as flagged when the description's text the record does not use shows
what it misses (folio_llm.unused): that text is listed beside the record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from folio_llm.evaluation.scoring import MACRO_FIELDS, TARGET_FIELD

CURVE_THRESHOLDS = tuple(round(0.05 * step, 2) for step in range(1, 20)) + (0.97, 0.99)


@dataclass(frozen=True)
class ToldField:
    field: str
    style: str | None
    wrong: bool
    confidence: float | None  # None: not in the answer
    in_unused: bool = False  # what it misses is in the description's text the record does not use
    answer: int | None = None  # its answer's position

    def flagged(self, below: float) -> bool:
        return self.in_unused or self.unsure(below)

    def unsure(self, below: float) -> bool:
        return self.confidence is not None and self.confidence < below


def told_fields(details: Sequence[dict], meta: Sequence[dict], confidences: Sequence[dict],
                unused: Sequence[list[str]] | None = None, template: frozenset[str] = frozenset()) -> list[ToldField]:
    """Every (answer, told macro field) pair with its outcome and the model's confidence; with
    each answer's ``unused`` text (folio_llm.unused, ``template`` its template words), whether
    that text shows what a wrong field misses."""
    import json

    from folio_llm.unused import shows_missing

    pairs = []
    for index, (detail, row, confidence) in enumerate(zip(details, meta, confidences)):
        told = set(row.get("transcribed") or [])
        runs = unused[index] if unused else []
        reference = json.loads(row["reference"]) if runs else None
        for name in MACRO_FIELDS:
            outcome = detail["fields"][name]
            if TARGET_FIELD[name] not in told or outcome["outcome"] == "both_empty":
                continue
            wrong = outcome["score"] < 1
            shown = wrong and bool(runs) and shows_missing(runs, detail.get("parsed"), reference, name, template)
            pairs.append(ToldField(name, row.get("style"), wrong, confidence.get(name), shown, index))
    return pairs


def invented_fields(details: Sequence[dict], meta: Sequence[dict], confidences: Sequence[dict]) -> list[ToldField]:
    """Every value an answer wrote for a macro field its description does not tell and its
    record lacks (made up), with the model's confidence in it."""
    made_up = []
    for detail, row, confidence in zip(details, meta, confidences):
        told = set(row.get("transcribed") or [])
        for name in MACRO_FIELDS:
            if TARGET_FIELD[name] not in told and detail["fields"][name]["outcome"] == "hallucinated":
                made_up.append(ToldField(name, row.get("style"), True, confidence.get(name)))
    return made_up


def rates(pairs: Sequence[ToldField], below: float) -> dict:
    wrong = [p for p in pairs if p.wrong]
    right = [p for p in pairs if not p.wrong]
    return {
        "wrong": len(wrong),
        "right": len(right),
        "recall": round(sum(p.flagged(below) for p in wrong) / len(wrong), 4) if wrong else None,
        "false_alarms": round(sum(p.flagged(below) for p in right) / len(right), 4) if right else None,
        "wrong_left_out": sum(p.confidence is None for p in wrong),
        "wrong_in_unused_only": sum(p.in_unused and not p.unsure(below) for p in wrong),
    }


def unused_report(pairs: Sequence[ToldField], unused: Sequence[list[str]]) -> dict:
    """How often the unused text is listed, and how often beside an answer whose told fields
    are all right (where it can only be noise)."""
    wrong_answers = {p.answer for p in pairs if p.wrong}
    listed = [i for i, runs in enumerate(unused) if runs]
    return {"answers": len(unused), "listed": len(listed),
            "listed_all_told_right": sum(i not in wrong_answers for i in listed)}


def review_report(pairs: Sequence[ToldField], below: float, made_up: Sequence[ToldField] = (),
                  unused: Sequence[list[str]] | None = None) -> dict:
    """Recall and false alarms at ``below``, in all, per field and per description style; the
    share of the values made up for untold fields that are flagged; and how often the unused
    text is listed."""
    fields = sorted({p.field for p in pairs}, key=MACRO_FIELDS.index)
    styles = sorted({p.style for p in pairs if p.style})
    return {
        "below": below,
        **rates(pairs, below),
        **({"unused": unused_report(pairs, unused)} if unused is not None else {}),
        "made_up": {"n": len(made_up), "flagged": round(sum(p.flagged(below) for p in made_up) / len(made_up), 4)
                    if made_up else None},
        "fields": {name: rates([p for p in pairs if p.field == name], below) for name in fields},
        "styles": {style: rates([p for p in pairs if p.style == style], below) for style in styles},
    }


def review_curve(pairs: Sequence[ToldField], thresholds: Sequence[float] = CURVE_THRESHOLDS):
    """A DataFrame of recall and false alarms at each threshold: the trade-off plot's data."""
    import pandas as pd

    at = [rates(pairs, t) for t in thresholds]
    return pd.DataFrame([{"below": t, "recall": r["recall"] or 0.0, "false_alarms": r["false_alarms"] or 0.0}
                         for t, r in zip(thresholds, at)])
