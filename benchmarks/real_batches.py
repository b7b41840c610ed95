"""The first micro-batches of the default run, collated: what the training benchmarks step on."""
from __future__ import annotations

from pathlib import Path


def first_batches(params, base: str, data: str, count: int) -> tuple[object, list[dict]]:
    """(tokenizer, the first ``count`` length-bucketed batches of the default run, collated)."""
    from folio_llm.models import load_tokenizer
    from folio_llm.training.data import collate, load_splits
    from folio_llm.training.steps import StepPlan

    tokenizer = load_tokenizer(base)
    train_rows, _ = load_splits(tokenizer, Path(data), params.max_length)
    plan = StepPlan([len(r) for r in train_rows.rows], params, 42)
    groups = [group[0] for _, group in zip(range(count), plan.groups(0))]
    return tokenizer, [collate([train_rows.rows[j] for j in indices], tokenizer.pad_token_id) for indices in groups]
