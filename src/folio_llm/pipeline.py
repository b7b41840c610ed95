"""What the data stages share: counts that reconcile (read = written + rejected), progress,
the stage report; and the denormalize stage's file loop."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from tqdm import tqdm

from folio_llm.jsonl import JsonlWriter, read_jsonl, write_json


@dataclass
class Counts:
    """read = written + rejected (+ not sampled, for a sampled run)."""

    read: int = 0
    written: int = 0
    rejected: int = 0
    not_sampled: int = 0
    reasons: Counter = field(default_factory=Counter)

    def line(self) -> str:
        text = f"{self.read} read, {self.written} written, {self.rejected} rejected"
        if self.not_sampled:
            text += f", {self.not_sampled} not sampled"
        return text

    def as_dict(self) -> dict:
        return {
            "read": self.read,
            "written": self.written,
            "rejected": self.rejected,
            "not_sampled": self.not_sampled,
            "reject_reasons": dict(self.reasons.most_common()),
        }


def reason_kind(reason: str) -> str:
    """Group reasons for the report: the text before the first detail."""
    return reason.split(":")[0].split(" (")[0].strip()


def progress(items: Iterable, desc: str, unit: str = "rec") -> Iterator:
    return tqdm(items, desc=desc, unit=unit, disable=None, mininterval=1.0, leave=False)


def denormalize_file(input_path: str | Path, out: str | Path, rejects: str | Path, denormalizer) -> Counts:
    counts = Counts()
    with JsonlWriter(out) as writer, JsonlWriter(rejects) as rejected:
        for line in progress(read_jsonl(input_path), "denormalize"):
            counts.read += 1
            reason = line.error
            if reason is None and not isinstance(line.value, dict):
                reason = f"line {line.lineno}: not a JSON object"
            if reason is None:
                record = denormalizer(line.value)
                if not record.get("title"):
                    reason = f"line {line.lineno}: no title"
                else:
                    writer.write(record)
                    counts.written += 1
                    continue
            identifier = line.value.get("hrid") if isinstance(line.value, dict) else None
            rejected.write({"position": line.lineno, "source": str(input_path), "identifier": identifier, "reason": reason})
            counts.rejected += 1
            counts.reasons[reason_kind(reason.split(": ", 1)[-1])] += 1
    return counts


def write_stage_report(report_path: str | Path, counts: Counts, **extra) -> None:
    write_json(report_path, {**counts.as_dict(), **extra})
