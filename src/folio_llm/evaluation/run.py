"""Evaluate a model on a test split: generate, score field by field, write predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path

from folio_llm.checking import AnswerChecks
from folio_llm.jsonl import JsonlWriter, atomic_open, write_json


def evaluate_model(model, tokenizer, rows: list[dict], meta: list[dict] | None, *, batch_size: int,
                   max_new_tokens: int, predictions_path: str | Path | None = None,
                   logits_processor_factory=None, label: str = "model", folio_schema=None,
                   reference_data=None, train_answers: list[dict] | None = None,
                   untold_targets: list[str] | None = None, schema: dict | None = None,
                   draft_tokens: int = 0, checks: AnswerChecks = AnswerChecks()) -> dict:
    """Generate with a transformers model (batched; ``schema``: the JSON schema the logits
    processors hold answers to; ``draft_tokens``: draft-then-verify), then :func:`score_answers`."""
    from dataclasses import asdict

    from folio_llm.decoding.drafting import DraftStats
    from folio_llm.decoding.generate import generate_scored

    started = time.perf_counter()
    drafting = DraftStats()
    answers = generate_scored(model, tokenizer, [row["messages"][:-1] for row in rows], batch_size, max_new_tokens,
                              logits_processor_factory, schema=schema, draft_tokens=draft_tokens, draft_stats=drafting)
    seconds = time.perf_counter() - started
    outputs = [a.text for a in answers]
    tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outputs)
    result = score_answers(outputs, rows, meta, seconds=seconds, output_tokens=tokens, predictions_path=predictions_path,
                           label=label, folio_schema=folio_schema, reference_data=reference_data,
                           train_answers=train_answers, untold_targets=untold_targets,
                           confidences=[a.confidence for a in answers], checks=checks)
    if draft_tokens:
        result["drafting"] = asdict(drafting)
    return result


def score_answers(raw_outputs: list[str], rows: list[dict], meta: list[dict] | None, *, seconds: float,
                  output_tokens: int | None, predictions_path: str | Path | None = None, label: str = "model",
                  folio_schema=None, reference_data=None, train_answers: list[dict] | None = None,
                  untold_targets: list[str] | None = None, confidences: list[dict] | None = None,
                  checks: AnswerChecks = AnswerChecks()) -> dict:
    """Score answers (whichever backend wrote them, in ``seconds``), and (optionally) write one
    line per row with its field outcomes. With ``folio_schema`` (a FolioSchema) and
    ``reference_data``, answers are also mapped back to UUIDs and checked against FOLIO's
    Instance schema.

    The reference of a row is the whole record its meta row holds (an answer leaves out what
    the description did not tell, and leaving it out must not score as a free hit). With meta,
    the report adds the scores per description style, the untold values answers invented and,
    given ``train_answers``, the inferred fields beside the training majority; given the
    answers' ``confidences`` (decoding.doubt), how well flagging the fields below
    ``checks.review_below`` finds the wrong told ones (evaluation.review). With
    ``checks.roles_need_words`` the answers lose the roles their description does not say
    (folio_llm.roles) before scoring; with ``checks.template`` (the description styles' own
    words) each answer's unused text (folio_llm.unused) is listed and counts in the review."""
    from folio_llm.answers import closed_answer, validator_for
    from folio_llm.decoding.constraints import description
    from folio_llm.evaluation import breakdown
    from folio_llm.evaluation.scoring import score_record, summarize

    references = [(m or {}).get("reference") or row["messages"][-1]["content"]
                  for row, m in zip(rows, meta or [None] * len(rows))]
    outputs = [closed_answer(o) for o in raw_outputs]
    cut_and_closed = sum(o != r for o, r in zip(outputs, raw_outputs))
    descriptions = [description(row["messages"][:-1]) for row in rows]
    if checks.roles_need_words:
        from folio_llm.roles import roles_from_words

        outputs = [roles_from_words(o, d) for o, d in zip(outputs, descriptions)]
    validator = validator_for(None)
    details = [score_record(output, reference, folio_schema=folio_schema, reference_data=reference_data,
                            _validator_obj=validator) for output, reference in zip(outputs, references)]
    unused = None
    if checks.template is not None:
        from folio_llm.unused import unused_text

        unused = [unused_text(d, detail["parsed"], checks.template) for d, detail in zip(descriptions, details)]
    result = summarize(details, transcribed=[m["transcribed"] for m in meta] if meta else None,
                       inferred=[m["inferred"] for m in meta] if meta else None,
                       folio_checked=folio_schema is not None and reference_data is not None)
    result["generation"] = {"seconds": round(seconds, 1), "output_tokens": output_tokens,
                            "output_tokens_per_s": round(output_tokens / seconds, 1)
                            if seconds and output_tokens is not None else None,
                            "cut_and_closed": cut_and_closed}
    if meta:
        result["styles"] = breakdown.by_style(details, meta)
        result["invented"] = breakdown.invented([d["parsed"] for d in details], meta, untold_targets or [])
        if train_answers:
            result["inferred_vs_majority"] = breakdown.inferred_vs_majority(
                details, [json.loads(r) for r in references], meta, breakdown.majority_values(train_answers))
        if confidences and any(confidences):
            from folio_llm.evaluation.review import invented_fields, review_curve, review_report, told_fields

            pairs = told_fields(details, meta, confidences, unused, checks.template or frozenset())
            result["review"] = review_report(pairs, checks.review_below, invented_fields(details, meta, confidences),
                                             unused)
            result["review"]["curve"] = review_curve(pairs).to_dict("records")
    if predictions_path:
        write_predictions(predictions_path, rows, meta, label, raw_outputs, details, references, confidences,
                          checks.review_below, unused)
    return result


def write_predictions(path: str | Path, rows: list[dict], meta: list[dict] | None, label: str,
                      raw_outputs: list[str | None], details: list[dict] | None = None,
                      references: list[str] | None = None, confidences: list[dict] | None = None,
                      review_below: float = 0.0, unused: list[list[str]] | None = None) -> None:
    """One line per answered row: its prompt, the target fields its description tells and those
    the model infers, reference, answer, (when scored) field outcomes
    and (when measured) the model's confidence per field, the fields flagged for review and the
    description's text the record does not use.
    A row without an answer (a server that stopped answering) is left out."""
    from folio_llm.answers import closed_answer
    from folio_llm.decoding.doubt import flagged

    with JsonlWriter(path) as writer:
        for index, (row, raw) in enumerate(zip(rows, raw_outputs)):
            if raw is None:
                continue
            output = closed_answer(raw)
            writer.write({
                "id": meta[index]["id"] if meta else index + 1,
                **({"style": meta[index].get("style"), "told": meta[index].get("transcribed"),
                    "inferred": meta[index].get("inferred")} if meta else {}),
                "model": label,
                "prompt": row["messages"][-2]["content"],
                "reference": references[index] if references else row["messages"][-1]["content"],
                "output": output,
                **({"cut_output": raw} if raw != output else {}),
                **(details[index] if details else {}),
                **({"confidence": confidences[index], "review": flagged(confidences[index], review_below)}
                   if confidences and confidences[index] else {}),
                **({"unused": unused[index]} if unused is not None else {}),
            })


def folio_checks(schemas_dir: str | Path, reference_dir: str | Path):
    """(FolioSchema, ReferenceData) for the FOLIO-schema check, or (None, None) when either
    folder is missing (the check is then left out of the report)."""
    from folio_llm.folio.instance import FolioSchema
    from folio_llm.folio.reference import ReferenceData

    if not Path(schemas_dir).is_dir() or not Path(reference_dir).is_dir():
        return None, None
    return FolioSchema(schemas_dir), ReferenceData.load(reference_dir)


def field_table(results: dict[str, dict]):
    """A DataFrame of one row per field with each model's score: the base-vs-tuned plot's data."""
    import pandas as pd

    names = list(next(iter(results.values()))["fields"])
    rows = [{"field": name, **{label: round(r["fields"][name]["score"], 4) for label, r in results.items()}}
            for name in names]
    return pd.DataFrame(rows)


def style_table(results: dict[str, dict]):
    """A DataFrame of one row per description style with each model's macro over the fields it was told."""
    import pandas as pd

    styles = next(iter(results.values())).get("styles") or {}
    rows = [{"style": style, "n": entry["n"], **{
        label: round(r["styles"][style]["macro_transcribed"] or 0.0, 4) for label, r in results.items()}}
        for style, entry in styles.items()]
    return pd.DataFrame(rows, columns=["style", "n", *results])


def write_field_table(path: str | Path, results: dict[str, dict]) -> None:
    _write_csv(path, field_table(results))


def write_style_table(path: str | Path, results: dict[str, dict]) -> None:
    _write_csv(path, style_table(results))


def write_review_table(path: str | Path, result: dict) -> None:
    """Recall of the wrong told fields and false alarms on the right ones at each threshold
    (one model's ``review`` report): the trade-off plot's data."""
    import pandas as pd

    _write_csv(path, pd.DataFrame((result.get("review") or {}).get("curve") or [],
                                  columns=["below", "recall", "false_alarms"]))


def _write_csv(path: str | Path, table) -> None:
    # "\r\n": the csv module's line ending, which these tables (dvc plots) have always had
    with atomic_open(path) as handle:
        table.to_csv(handle, index=False, lineterminator="\r\n")


def write_metrics(path: str | Path, result: dict) -> None:
    write_json(path, result)
