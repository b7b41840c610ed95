"""Drafts for draft-then-verify decoding: prompt lookup over a row's prompt and the run's answers.

Most of what the model writes is already on the page: the JSON keys every answer repeats, and
the values copied from the description. A draft is the few tokens that followed the latest
earlier occurrence of a row's last n tokens (longest n first), looked up in that row's own
prompt, then in every answer written so far in the run, its own and the other rows' (they write
the same keys a few steps ahead or behind). The model checks a whole draft in one forward pass
and keeps only what greedy decoding would have chosen (``generate``), so a draft decides how fast
an answer comes, never what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class DraftStats:
    """What draft-then-verify did: forward passes (the prompts' included), row-steps (one row in
    one pass), tokens written, drafted, and kept from drafts, and tokens the constraints forced (the
    only one allowed)."""

    passes: int = 0
    row_steps: int = 0
    tokens: int = 0
    drafted: int = 0
    confirmed: int = 0
    forced: int = 0

    def line(self) -> str:
        steps = max(self.row_steps, 1)
        return (f"{self.tokens} tokens in {self.passes} passes: {self.tokens / steps:.2f} tokens per row-step, "
                f"{self.confirmed}/{self.drafted} drafted tokens kept, {self.forced / max(self.tokens, 1):.0%} forced")


class NgramIndex:
    """Where each n-gram (n <= ``longest``) of some token sequences last occurred, and so what
    followed it. The sequences may grow: a draft read from a growing answer goes on with it."""

    def __init__(self, longest: int):
        self.longest = longest
        self.after: dict[tuple[int, ...], tuple[list[int], int]] = {}

    def extend(self, tokens: list[int], start: int = 0) -> None:
        """Index the n-grams of ``tokens`` that end before positions ``start``..end, so every
        n-gram indexed has something after it (a row's last n tokens never draft themselves)."""
        for end in range(max(start, 1), len(tokens)):
            for n in range(1, min(self.longest, end) + 1):
                self.after[tuple(tokens[end - n:end])] = (tokens, end)

    def following(self, tail: Sequence[int], n: int, count: int) -> list[int]:
        """The ``count`` tokens that followed the latest occurrence of the last ``n`` of
        ``tail``; [] when it never occurred."""
        hit = self.after.get(tuple(tail[-n:]))
        if hit is None:
            return []
        tokens, end = hit
        return tokens[end:end + count]


class PromptLookup:
    """Drafts of up to ``length`` tokens for the rows of one batch (``prompts``: each row's
    prompt tokens, padding left out), sharing ``answers``, the index of the run's answers.
    ``per_pass``: at most this many tokens in one forward pass, the rows' own next tokens
    included, for an engine whose pass costs grow with every token it reads (llama.cpp on a CPU:
    a pass over many rows is already bound by arithmetic, and a draft there costs more than it
    saves); None: no such limit."""

    def __init__(self, prompts: Sequence[Sequence[int]], answers: NgramIndex, length: int,
                 per_pass: int | None = None):
        self.length = length
        self.per_pass = per_pass
        self.answers = answers
        self.prompts = []
        for prompt in prompts:
            index = NgramIndex(answers.longest)
            index.extend(list(prompt))
            self.prompts.append(index)

    def drafts(self, rows: Sequence[int], answers: Sequence[Sequence[int]]) -> list[list[int]]:
        """What may come after each answer so far (``answers[i]``: that of row ``rows[i]``),
        within the ``per_pass`` budget."""
        length = self.length if self.per_pass is None else min(self.length, (self.per_pass - len(rows)) // len(rows))
        return [self.draft(row, tokens, length) for row, tokens in zip(rows, answers)] if length > 0 \
            else [[] for _ in rows]

    def draft(self, row: int, tokens: Sequence[int], length: int | None = None) -> list[int]:
        """What may come after ``tokens``, the answer of ``row`` so far (up to ``length`` tokens,
        the lookup's own by default)."""
        length = self.length if length is None else length
        for n in range(min(self.answers.longest, len(tokens)), 0, -1):
            for index in (self.prompts[row], self.answers):
                found = index.following(tokens, n, length)
                if found:
                    return found
        return []

    def wrote(self, tokens: list[int], before: int) -> None:
        """A row's answer ``tokens`` grew from ``before`` tokens: index what it wrote."""
        self.answers.extend(tokens, before)
