"""Evaluate a model on a test split: generate, score field by field, write predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path

from folio_llm.jsonl import JsonlWriter, load_jsonl, write_json


def meta_for(data_path: Path) -> list[dict] | None:
    """The line-aligned meta rows (transcribed / inferred fields) the dataset stage writes
    beside the layouts: data/datasets/meta/<split>.jsonl for data/datasets/<layout>/<split>.jsonl."""
    candidate = data_path.parent.parent / "meta" / data_path.name
    return load_jsonl(candidate) if candidate.is_file() else None


def load_test_rows(data_path: str | Path, limit: int = 0) -> tuple[list[dict], list[dict] | None]:
    data_path = Path(data_path)
    if not data_path.is_file():
        raise ValueError(f"test data not found: {data_path} (run `dvc repro dataset` first)")
    rows = load_jsonl(data_path)
    for number, row in enumerate(rows, start=1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if not messages or messages[-1].get("role") != "assistant":
            raise ValueError(f"{data_path}: line {number}: not a chat row ending with the assistant's answer")
    meta = meta_for(data_path)
    if meta is not None and len(meta) != len(rows):
        meta = None
    if limit:
        rows = rows[:limit]
        meta = meta[:limit] if meta else None
    return rows, meta


def load_train_answers(data_path: str | Path) -> list[dict] | None:
    """The answers of the training split beside the test split (for the majority baselines)."""
    train = Path(data_path).with_name("train.jsonl")
    if not train.is_file() or train == Path(data_path):
        return None
    return [json.loads(row["messages"][-1]["content"]) for row in load_jsonl(train)]


def evaluate_model(model, tokenizer, rows: list[dict], meta: list[dict] | None, *, batch_size: int,
                   max_new_tokens: int, predictions_path: str | Path | None = None,
                   logits_processor_factory=None, label: str = "model", folio_schema=None,
                   reference_data=None, train_answers: list[dict] | None = None,
                   untold_targets: list[str] | None = None) -> dict:
    """Generate, score, and (optionally) write one line per row with its field outcomes.
    With ``folio_schema`` (a FolioSchema) and ``reference_data``, answers are also mapped back
    to UUIDs and checked against FOLIO's Instance schema.

    The reference of a row is the whole record its meta row holds (an answer leaves out what
    the description did not tell, and leaving it out must not score as a free hit). With meta,
    the report adds the scores per description style, the untold values answers invented and,
    given ``train_answers``, the inferred fields beside the training majority."""
    from folio_llm.evaluation import breakdown
    from folio_llm.evaluation.generate import close_cut_json, generate
    from folio_llm.evaluation.scoring import score, score_record

    references = [(m or {}).get("reference") or row["messages"][-1]["content"]
                  for row, m in zip(rows, meta or [None] * len(rows))]
    started = time.perf_counter()
    outputs = generate(model, tokenizer, [row["messages"][:-1] for row in rows], batch_size, max_new_tokens,
                       logits_processor_factory)
    seconds = time.perf_counter() - started
    raw_outputs = outputs
    outputs = [close_cut_json(o) or o for o in raw_outputs]
    result = score(
        outputs, references,
        transcribed=[m["transcribed"] for m in meta] if meta else None,
        inferred=[m["inferred"] for m in meta] if meta else None,
        folio_schema=folio_schema, reference_data=reference_data,
    )
    generated_tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in raw_outputs)
    result["generation"] = {"seconds": round(seconds, 1), "output_tokens": generated_tokens,
                            "output_tokens_per_s": round(generated_tokens / seconds, 1) if seconds else None,
                            "cut_and_closed": sum(o != r for o, r in zip(outputs, raw_outputs))}
    details = [score_record(output, reference, folio_schema=folio_schema, reference_data=reference_data)
               for output, reference in zip(outputs, references)]
    if meta:
        result["styles"] = breakdown.by_style(outputs, references, meta)
        result["invented"] = breakdown.invented([d["parsed"] for d in details], meta, untold_targets or [])
        if train_answers:
            result["inferred_vs_majority"] = breakdown.inferred_vs_majority(
                details, [json.loads(r) for r in references], meta, breakdown.majority_values(train_answers))
    if predictions_path:
        with JsonlWriter(predictions_path) as writer:
            for index, (row, output, raw, reference, detail) in enumerate(
                    zip(rows, outputs, raw_outputs, references, details)):
                writer.write({
                    "id": meta[index]["id"] if meta else index + 1,
                    **({"style": meta[index].get("style")} if meta else {}),
                    "model": label,
                    "prompt": row["messages"][-2]["content"],
                    "reference": reference,
                    "output": output,
                    **({"cut_output": raw} if raw != output else {}),
                    **detail,
                })
    return result


def folio_checks(schemas_dir: str | Path, reference_dir: str | Path):
    """(FolioSchema, ReferenceData) for the FOLIO-schema check, or (None, None) when either
    folder is missing (the check is then left out of the report)."""
    from folio_llm.evaluation.scoring import FolioSchema
    from folio_llm.folio.reference import ReferenceData

    if not Path(schemas_dir).is_dir() or not Path(reference_dir).is_dir():
        return None, None
    return FolioSchema(schemas_dir), ReferenceData.load(reference_dir)


def field_table(results: dict[str, dict]) -> list[dict]:
    """One row per field with each model's score: the base-vs-tuned plot's data."""
    names = list(next(iter(results.values()))["fields"])
    return [{"field": name, **{label: round(r["fields"][name]["score"], 4) for label, r in results.items()}}
            for name in names]


def write_field_table(path: str | Path, results: dict[str, dict]) -> None:
    import csv

    rows = field_table(results)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def write_style_table(path: str | Path, results: dict[str, dict]) -> None:
    """One row per description style with each model's macro over the fields it was told."""
    import csv

    styles = next(iter(results.values())).get("styles") or {}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["style", "n", *results])
        writer.writeheader()
        for style, entry in styles.items():
            writer.writerow({"style": style, "n": entry["n"], **{
                label: round(r["styles"][style]["macro_transcribed"] or 0.0, 4) for label, r in results.items()}})


def write_metrics(path: str | Path, result: dict) -> None:
    write_json(path, result)
