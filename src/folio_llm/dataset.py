"""Prompt/target pairs, a seeded train/valid/test split, every layout, and the dataset report."""

from __future__ import annotations

import hashlib
import json
import statistics
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from folio_llm.jsonl import JsonlWriter, write_json
from folio_llm.sections.dataset import DatasetParams
from folio_llm.prompts import LAYOUTS, Example, PromptRenderer

SPLITS = ("train", "valid", "test")
ROLES = ("system", "user", "assistant")


@dataclass
class DatasetResult:
    splits: dict[str, list[Example]]
    duplicates_removed: int = 0
    rejected: list[dict] = field(default_factory=list)


def record_key(record: dict, position: int) -> str:
    """A record's own name: its hrid, else a digest of its fields (the same record gets the same
    key in any sample, wherever it stands)."""
    if record.get("hrid"):
        return str(record["hrid"])
    digest = hashlib.blake2b(json.dumps(record, sort_keys=True, ensure_ascii=False).encode(), digest_size=6)
    return f"record-{digest.hexdigest()}" if record else str(position)


def split_draw(key: str, seed: int) -> float:
    """A number in [0, 1) drawn from the record's key alone."""
    digest = hashlib.blake2b(f"{seed}:split:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


def split_of(draw: float, shares: dict[str, float]) -> str:
    if draw < shares["test"]:
        return "test"
    return "valid" if draw < shares["test"] + shares["valid"] else "train"


def build_examples(records: Iterable[dict], params: DatasetParams, seed: int) -> DatasetResult:
    """Render, de-duplicate and split. A record whose target or prompt repeats an earlier
    one is dropped, so no prompt and no answer can appear in two splits. Each record's split
    is drawn from its own key, so a larger sample (sources are nested samples) keeps every
    valid and test record of a smaller one where it was: adding records moves none into
    training, and runs on samples of different sizes compare on the smaller one's test rows."""
    renderer = PromptRenderer(params, seed)
    shares = {"train": params.split.train, "valid": params.split.valid, "test": params.split.test}
    seen_targets: set[str] = set()
    seen_prompts: set[str] = set()
    drawn: list[tuple[float, Example, dict]] = []  # (split draw, example, its record)
    rejected: list[dict] = []
    duplicates = 0
    for index, record in enumerate(records, start=1):
        key = record_key(record, index)
        example = renderer.render(record, key)
        if not example.user or not example.target:
            rejected.append({"position": index, "identifier": key, "reason": "nothing to prompt with or nothing to answer"})
            continue
        prompt_key = json.dumps({f: record.get(f) for f in params.prompt_fields}, sort_keys=True, ensure_ascii=False)
        if example.assistant in seen_targets or prompt_key in seen_prompts:
            duplicates += 1
            continue
        seen_targets.add(example.assistant)
        seen_prompts.add(prompt_key)
        drawn.append((split_draw(key, seed), example, record))
    drawn.sort(key=lambda item: item[0])  # a seeded order within each split, the same in any sample
    splits: dict[str, list[Example]] = {name: [] for name in SPLITS}
    for draw, example, record in drawn:
        name = split_of(draw, shares)
        if name == "train" and params.tell.leave_out > 0:  # valid and test rows tell all they have
            example = renderer.render(record, example.key, leave_out=params.tell.leave_out)
        splits[name].append(example)
    return DatasetResult(splits, duplicates, rejected)


def write_layouts(result: DatasetResult, out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    for split, examples in result.splits.items():
        with ExitStack() as stack:
            writers = {
                name: stack.enter_context(JsonlWriter(out_dir / name / f"{split}.jsonl"))
                for name in (*LAYOUTS, "meta")
            }
            for example in examples:
                for layout, row in example.layouts().items():
                    writers[layout].write(row)
                writers["meta"].write(example.meta())


def _distribution(values: list[int]) -> dict:
    if not values:
        return {"min": 0, "median": 0, "p95": 0, "max": 0, "mean": 0}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 1),
    }


def openai_problems(messages: list[dict], max_chars: int) -> list[str]:
    """What the OpenAI fine-tuning format check would complain about in one row."""
    problems = []
    roles = tuple(m.get("role") for m in messages)
    if roles != ROLES:
        problems.append(f"roles {roles} != {ROLES}")
    if any(not isinstance(m.get("content"), str) or not m["content"].strip() for m in messages):
        problems.append("empty content")
    if sum(len(m.get("content") or "") for m in messages) > max_chars:
        problems.append("over-length")
    return problems


def dataset_report(result: DatasetResult, params: DatasetParams) -> dict:
    all_examples = [e for split in SPLITS for e in result.splits[split]]
    n = len(all_examples)
    coverage: dict[str, dict] = {}
    for name in params.target_fields:
        present = sum(1 for e in all_examples if name in (e.reference if e.reference is not None else e.target))
        answered = sum(1 for e in all_examples if name in e.target)
        transcribed = sum(1 for e in all_examples if name in e.transcribed)
        coverage[name] = {
            "present": round(present / n, 4) if n else 0.0,
            "transcribed": round(transcribed / n, 4) if n else 0.0,
            "inferred": round((answered - transcribed) / n, 4) if n else 0.0,
            "left_out": round((present - answered) / n, 4) if n else 0.0,
        }
    overlaps = {}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            users_a = {e.user for e in result.splits[a]}
            targets_a = {e.assistant for e in result.splits[a]}
            overlaps[f"{a}/{b}"] = sum(
                1 for e in result.splits[b] if e.user in users_a or e.assistant in targets_a
            )
    problems: Counter = Counter()
    for example in all_examples:
        problems.update(openai_problems(example.messages, params.max_chars))
    return {
        "rows": n,
        "counts": {split: len(result.splits[split]) for split in SPLITS},
        "duplicates_removed": result.duplicates_removed,
        "rejected": len(result.rejected),
        "duplicates_across_splits": sum(overlaps.values()),
        "overlap_by_pair": overlaps,
        "field_coverage": coverage,
        "styles": dict(sorted(Counter(e.style for e in all_examples).items())),
        "prompt_chars": _distribution([len(e.user) for e in all_examples]),
        "target_chars": _distribution([len(e.assistant) for e in all_examples]),
        "openai_checks": {
            "bad_roles": sum(v for k, v in problems.items() if k.startswith("roles")),
            "empty_content": problems["empty content"],
            "over_length": problems["over-length"],
            "max_chars": params.max_chars,
        },
    }


def summary_text(report: dict) -> str:
    counts = report["counts"]
    lines = [
        "# Dataset summary",
        "",
        f"{report['rows']} rows: {counts['train']} train, {counts['valid']} valid, {counts['test']} test; "
        f"{report['duplicates_removed']} duplicates removed, {report['rejected']} rejected; "
        f"{report['duplicates_across_splits']} shared across splits.",
        "",
        f"Prompt length (chars): median {report['prompt_chars']['median']}, p95 {report['prompt_chars']['p95']}, "
        f"max {report['prompt_chars']['max']}. Target length (chars): median {report['target_chars']['median']}, "
        f"p95 {report['target_chars']['p95']}, max {report['target_chars']['max']}.",
        "",
        "OpenAI format checks: "
        + ", ".join(f"{k} {v}" for k, v in report["openai_checks"].items()),
        "",
        "Per field, share of rows: in the reference the row is scored against (the record; for a "
        "citation, the part it tells); told by the description; in the answer without being told "
        "(inferred); left out of the answer because nothing told it.",
        "",
        "| field | present | told | inferred | left out |",
        "|---|---|---|---|---|",
    ]
    for name, cov in report["field_coverage"].items():
        lines.append(f"| {name} | {cov['present']:.1%} | {cov['transcribed']:.1%} | {cov['inferred']:.1%} "
                     f"| {cov.get('left_out', 0.0):.1%} |")
    styles = report.get("styles")
    if styles:
        lines += ["", "Rows per description style: " + ", ".join(f"{k} {v}" for k, v in styles.items()) + "."]
    return "\n".join(lines) + "\n"


def write_report(report: dict, report_path: str | Path, summary_path: str | Path) -> None:
    write_json(report_path, report)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(summary_text(report), encoding="utf-8")
