"""What the overall scores hide: the scores per description style, values that no description
gave (invented), and each inferred field beside the majority-class baseline."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

# inferred fields scored beside a majority baseline: scored field -> target field
INFERRED = {"languages": "languages", "instanceTypeText": "instanceTypeText",
            "modeOfIssuanceText": "modeOfIssuanceText", "contributor_types": "contributors"}


def by_style(details: Sequence[dict], meta: Sequence[dict], n_boot: int = 1000) -> dict:
    """Per style: rows, macro, and the macros over told and inferred fields, with 95% intervals
    (``details``: each row's :func:`~folio_llm.evaluation.scoring.score_record`)."""
    from folio_llm.evaluation.scoring import summarize

    groups: dict[str, list[int]] = {}
    for index, row in enumerate(meta):
        groups.setdefault(row.get("style", "clauses"), []).append(index)
    table = {}
    for style, rows in sorted(groups.items()):
        report = summarize([details[i] for i in rows], transcribed=[meta[i]["transcribed"] for i in rows],
                           inferred=[meta[i]["inferred"] for i in rows], n_boot=n_boot)
        table[style] = {"n": len(rows), **{key: report[key] for key in (
            "macro", "macro_ci", "macro_transcribed", "macro_transcribed_ci", "macro_inferred", "macro_inferred_ci")}}
    return table


def invented(parsed: Sequence[dict | None], meta: Sequence[dict], untold_targets: Sequence[str]) -> dict:
    """Per target field that is answered only when told: in how many answers it has a value
    although the row's description did not tell it (e.g. a classification number)."""
    counts: dict[str, dict] = {}
    for record, row in zip(parsed, meta):
        for field in row["inferred"]:
            if field in untold_targets:
                continue
            entry = counts.setdefault(field, {"untold_rows": 0, "invented": 0})
            entry["untold_rows"] += 1
            entry["invented"] += bool(record and record.get(field) not in (None, "", [], {}))
    for entry in counts.values():
        entry["rate"] = round(entry["invented"] / entry["untold_rows"], 4)
    return dict(sorted(counts.items()))


def _majority(values: list) -> object:
    counted = Counter(repr(v) for v in values)
    if not counted:
        return None
    top = counted.most_common(1)[0][0]
    return next(v for v in values if repr(v) == top)


def majority_values(train_answers: Sequence[dict]) -> dict:
    """The most common value of each inferred field in the training answers."""
    values = {field: _majority([a[field] for a in train_answers if field in a])
              for field in ("languages", "instanceTypeText", "modeOfIssuanceText")}
    # no role is a value too: most contributors of a catalog may have none
    values["contributor_types"] = _majority([c.get("contributorTypeText") for a in train_answers
                                             for c in a.get("contributors") or [] if isinstance(c, dict)])
    return values


def _with_majority(truth: dict, field: str, value) -> dict:
    guess = dict(truth)
    if field == "contributor_types":
        guess["contributors"] = [{**c, "contributorTypeText": value} for c in truth.get("contributors") or []]
    elif value is not None:
        guess[field] = value
    return guess


def inferred_vs_majority(details: Sequence[dict], references: Sequence[dict], meta: Sequence[dict],
                         majority: dict) -> dict:
    """Per inferred field, on the rows whose description does not tell it: the model's score
    and the score of always answering the training majority, and the gap between them.
    Contributor types are scored on the names an answer has, so their majority answer is the
    model's own answer with every role the majority one: the gap is the roles', not the names'."""
    from folio_llm.evaluation.scoring import compare_records

    table = {}
    for field, target in INFERRED.items():
        rows = [i for i, row in enumerate(meta) if target in references[i] and (
            not row.get("roles_told") if field == "contributor_types" else target in row["inferred"])]
        if not rows:
            continue
        model = sum(details[i]["fields"][field]["score"] for i in rows) / len(rows)
        guessed = [details[i].get("parsed") if field == "contributor_types" else references[i] for i in rows]
        baseline = sum(compare_records(references[i], _with_majority(guess if isinstance(guess, dict) else {}, field,
                                                                     majority[field]))[field]["score"]
                       for i, guess in zip(rows, guessed)) / len(rows)
        table[field] = {"rows": len(rows), "model": round(model, 4), "majority": round(baseline, 4),
                        "gap": round(model - baseline, 4), "majority_value": majority[field]}
    return table
