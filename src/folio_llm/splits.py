"""Reading the split files the dataset stage wrote: chat rows, their meta rows, the training answers."""

from __future__ import annotations

import json
from pathlib import Path

from folio_llm.jsonl import load_jsonl


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
