"""The one renderer: denormalized record -> chat messages -> every dataset layout.

The user prompt is what a cataloger reads off the item in hand, one clause per prompt field;
the assistant's answer is the record's target fields as strict JSON. Phrasings are drawn per
row from a seeded generator, so the same params always give the same text.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from folio_llm.roles import without_roles
from folio_llm.sections.dataset import CSL_STYLES, ROLE_TARGET, DatasetParams
from folio_llm.styles import describe, draw_style

def target_json(target: dict) -> str:
    """The assistant's answer: strict JSON, non-ASCII kept, compact (fewer tokens than spaced)."""
    return json.dumps(target, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class Example:
    """One rendered row: the chat messages, which target fields the description tells, and
    the whole record as the reference evaluation scores against."""

    key: str
    messages: list[dict]
    target: dict
    transcribed: list[str]
    inferred: list[str]
    style: str = "clauses"
    reference: dict | None = None
    roles_told: bool = False

    @property
    def system(self) -> str:
        return self.messages[0]["content"]

    @property
    def user(self) -> str:
        return self.messages[1]["content"]

    @property
    def assistant(self) -> str:
        return self.messages[2]["content"]

    def layouts(self) -> dict[str, dict]:
        """This row in every layout the training backends read."""
        return {
            "openai": {"messages": self.messages},
            "chat": {"messages": self.messages},
            "completions": {"prompt": f"{self.system}\n\n{self.user}", "completion": self.assistant},
            "text": {"text": f"{self.system}\n\nQ: {self.user}\nA: {self.assistant}"},
        }

    def meta(self) -> dict:
        return {"id": self.key, "style": self.style, "transcribed": self.transcribed, "inferred": self.inferred,
                "roles_told": self.roles_told,
                "reference": target_json(self.reference if self.reference is not None else self.target)}


LAYOUTS = ("openai", "chat", "completions", "text")


class PromptRenderer:
    def __init__(self, params: DatasetParams, seed: int):
        self.params = params
        self.seed = seed

    def left_out(self, record: dict, key: str, share: float) -> frozenset[str]:
        """The fields a row leaves out, drawn from its own generator (a row that leaves nothing
        out is the row ``share`` 0 gives, draw for draw)."""
        if share <= 0:
            return frozenset()
        rng = random.Random(f"{self.seed}:{key}:leave-out")
        return frozenset(f for f in [*self.params.prompt_fields, "languages", "classifications"]
                         if f != "title" and record.get(f) and rng.random() < share)

    def record_fields(self, record: dict) -> dict:
        """The record's target fields: the reference evaluation scores against."""
        return {f: record[f] for f in self.params.target_fields if f in record}

    def render(self, record: dict, key: str, style: str | None = None, leave_out: float = 0.0) -> Example:
        """The row for ``record``: its style drawn from params.dataset.styles unless given;
        each told field but the title left out of description and target with chance ``leave_out``."""
        rng = random.Random(f"{self.seed}:{key}")
        system = self.params.system_prompts[rng.randrange(len(self.params.system_prompts))]
        drawn = draw_style(rng, self.params.styles)
        left_out = self.left_out(record, key, leave_out)
        user, parts = describe(record, style or drawn, rng, self.params, left_out)
        told, telling = parts.told, parts.telling
        reference = self.record_fields(record)
        if parts.restated:  # a text that tells part of the record is scored on that part
            reference = {f: parts.restated.get(f, v) for f, v in reference.items()
                         if f in told or f not in self.params.prompt_fields}
        untold = set(self.params.untold_targets)
        target = {f: v for f, v in reference.items() if f in told or f in untold}
        style = style or drawn
        if "contributors" in target and not telling.roles and style not in CSL_STYLES and ROLE_TARGET not in untold:
            target["contributors"] = without_roles(target["contributors"])
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": target_json(target)},
        ]
        transcribed = [f for f in reference if f in told]
        inferred = [f for f in reference if f not in told]
        return Example(key, messages, target, transcribed, inferred, style, reference,
                       telling.roles and "contributors" in told)
