"""How sure the model was of each field, so a cataloger knows which fields to check.

A field's confidence is the lowest probability, under the decoding constraints, of the tokens
that decided it: its key (the choice to write the field at all), its value, the token that
closed the value (where copying stopped) and the end of its list; for a field the answer
left out, the choice that skipped it. Under the JSON-schema grammar a forced token has
probability 1, so only the model's own choices lower a confidence; a value closed with or
without trailing punctuation counts as one choice (the record is scored without it). Fields
below ``eval.review_below`` are flagged for review beside the record.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

# scored field (evaluation.scoring.FIELDS) -> (top-level key, the key inside each of its items
# that holds the value; None: every value under the top-level key)
SCORED_PARTS: dict[str, tuple[str, str | None]] = {
    "title": ("title", None),
    "contributors": ("contributors", "name"),
    "publication_year": ("publication", "dateOfPublication"),
    "publisher": ("publication", "publisher"),
    "place": ("publication", "place"),
    "subjects": ("subjects", "value"),
    "classifications": ("classifications", None),
    "identifiers": ("identifiers", None),
    "languages": ("languages", None),
    "editions": ("editions", None),
    "physicalDescriptions": ("physicalDescriptions", None),
    "series": ("series", "value"),
    "instanceTypeText": ("instanceTypeText", None),
    "modeOfIssuanceText": ("modeOfIssuanceText", None),
}


LIST_END = "]"  # path step of the decision to end a list (no further item)


@dataclass(frozen=True)
class Leaf:
    """One decision of an answer, with the characters of the tokens that made it:

    - ``value``: a scalar (path ("publication", 0, "publisher")), from the separator before its
      key (before the value, in a list) to the end of the value;
    - ``key``: the choice to write a key whose value is a list or an object;
    - ``end``: the choice to end a list (path ends with LIST_END);
    - ``absent``: a key of the schema the answer left out; its characters are those of the
      choice that skipped it (the next key written, or the end of the object)."""

    path: tuple
    start: int
    end: int
    kind: str = "value"


_SCALAR = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?|true|false|null")


def _properties(schema: dict | None) -> list[str]:
    return list((schema or {}).get("properties") or [])


def leaves(text: str, schema: dict | None = None) -> list[Leaf]:
    """Every decision of the JSON object in ``text`` with its character span; with the JSON
    ``schema`` the answer was held to, also the keys it left out. An answer cut off keeps
    the decisions before the cut."""
    found: list[Leaf] = []

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    def obj(i: int, path: tuple, node: dict | None) -> int:
        written = []  # (key, start of its separator, end of its name)
        i = skip(i + 1)
        after_value = i
        if text[i] != "}":
            while True:
                key_at = skip(i)
                key, i = json.decoder.scanstring(text, key_at + 1)
                written.append((key, after_value, i))
                i = skip(i)
                if text[i] != ":":
                    raise ValueError("expected ':'")
                child = ((node or {}).get("properties") or {}).get(key)
                i = skip(value(i + 1, path + (key,), max(key_at - 1, 0), child))
                after_value = i
                if text[i] == "}":
                    break
                if text[i] != ",":
                    raise ValueError("expected ',' or '}'")
                i += 1
        order = _properties(node)
        names = [k for k, _, _ in written]
        for key in order:
            if key in names:
                continue
            later = [(start, end) for k, start, end in written if k in order and order.index(k) > order.index(key)]
            start, end = later[0] if later else (after_value, i + 1)
            found.append(Leaf(path + (key,), start, end, "absent"))
        return i + 1

    def array(i: int, path: tuple, node: dict | None) -> int:
        i, index = skip(i + 1), 0
        if text[i] == "]":
            return i + 1
        while True:
            i = skip(value(i, path + (index,), i - 1, (node or {}).get("items")))
            if text[i] == "]":
                found.append(Leaf(path + (LIST_END,), i, i + 1, "end"))
                return i + 1
            if text[i] != ",":
                raise ValueError("expected ',' or ']'")
            i, index = i + 1, index + 1

    def value(i: int, path: tuple, start: int, node: dict | None) -> int:
        i = skip(i)
        char = text[i]
        if char in "{[":
            if path and isinstance(path[-1], str):
                found.append(Leaf(path, start, i + 1, "key"))
            return obj(i, path, node) if char == "{" else array(i, path, node)
        if char == '"':
            _, end = json.decoder.scanstring(text, i + 1)
        else:
            match = _SCALAR.match(text, i)
            if not match:
                raise ValueError("not JSON")
            end = match.end()
        found.append(Leaf(path, start, end))
        return end

    begin = text.find("{")
    if begin >= 0:
        try:
            value(begin, (), begin, schema)
        except (ValueError, IndexError):
            pass
    return found


def token_ends(tokenizer, ids: Sequence[int]) -> list[int]:
    """The end of each token in the decoded text of ``ids`` (special tokens decode to nothing)."""
    return [len(tokenizer.decode(ids[:n], skip_special_tokens=True)) for n in range(1, len(ids) + 1)]


def field_confidence(text: str, ends: Sequence[int], probabilities: Sequence[float],
                     schema: dict | None = None) -> dict[str, float]:
    """Scored field -> the lowest probability of the tokens that decided it. ``ends[i]`` is
    where token i ends in ``text``; ``probabilities[i]`` how likely the model held it. A field
    the answer holds is judged on its values, keys and list ends; one it left out (given the
    ``schema``) on the choice that skipped it."""
    decided = [(leaf, _lowest(leaf, ends, probabilities)) for leaf in leaves(text, schema)]
    confidence: dict[str, float] = {}
    for scored, (top, inner) in SCORED_PARTS.items():
        mine = [(leaf, p) for leaf, p in decided if leaf.path[0] == top and (
            inner is None or len(leaf.path) == 1 or leaf.path[-1] in (inner, LIST_END))]
        written = [p for leaf, p in mine if leaf.kind != "absent"]
        if any(leaf.kind == "value" for leaf, _ in mine):
            confidence[scored] = round(min(written), 4)
        elif any(leaf.kind == "absent" for leaf, _ in mine):
            confidence[scored] = round(min(p for leaf, p in mine if leaf.kind == "absent"), 4)
    return confidence


def _lowest(leaf: Leaf, ends: Sequence[int], probabilities: Sequence[float]) -> float:
    lowest, begin = 1.0, 0
    for end, probability in zip(ends, probabilities):
        if begin >= leaf.end:
            break
        if end > leaf.start:
            lowest = min(lowest, probability)
        begin = end
    return lowest


def holds(record: dict, name: str) -> bool:
    """Does the record give a value for the scored field ``name``?"""
    return bool(values_of(record, name))


def values_of(record: dict, name: str) -> list[str]:
    """The strings the record gives for the scored field ``name``."""
    top, inner = SCORED_PARTS[name]
    value = record.get(top)
    items = value if isinstance(value, list) else [value]
    if inner is not None:
        items = [item.get(inner) for item in items if isinstance(item, dict)]
    found = []
    for item in items:
        if isinstance(item, dict):  # a classification: its number and type
            item = " ".join(str(v) for v in item.values() if isinstance(v, str))
        if isinstance(item, str) and item:
            found.append(item)
    return found


def flagged(confidence: dict[str, float], below: float) -> list[str]:
    """The fields to review: those the model was less sure of than ``below``."""
    return [name for name, value in confidence.items() if value < below]


@dataclass
class ScoredAnswer:
    """An answer and how sure the model was of each of its fields (empty: not measured)."""

    text: str
    confidence: dict[str, float] = field(default_factory=dict)


def scored_answer(tokenizer, tokens: Sequence[int], probabilities: Sequence[float], schema: dict | None = None,
                  text: str | None = None, opened: dict[str, float] | None = None) -> ScoredAnswer:
    """Generated tokens (the end-of-turn token and anything after it dropped) as the answer
    text with its field confidence. ``text``: the answer as the engine wrote it, when it
    detokenized itself; the confidence is left out should it differ from the tokens' text, but
    for a last token the tokens lack (llama.cpp's recorder never sees the token that reaches the
    length limit: the fields it decided are judged without it)."""
    tokens = list(tokens)
    if tokenizer.eos_token_id in tokens:
        tokens = tokens[:tokens.index(tokenizer.eos_token_id)]
    raw = tokenizer.decode(tokens, skip_special_tokens=True)
    decoded = raw.strip()
    if text is not None and not text.startswith(decoded):
        return ScoredAnswer(text)
    lead = len(raw) - len(raw.lstrip())
    ends = [end - lead for end in token_ends(tokenizer, tokens)]
    confidence = field_confidence(decoded, ends, probabilities[:len(tokens)], schema)
    for scored, (top, _) in SCORED_PARTS.items():
        if scored in confidence and top in (opened or {}):
            confidence[scored] = min(confidence[scored], opened[top])
    return ScoredAnswer(decoded if text is None else text, confidence)


def opened_fields(processors, row: int) -> dict[str, float]:
    """The record fields the processors began in ``row`` although the model would have left
    them out (``eval.open_below``), each with how likely the model held beginning it: that is
    the field's confidence, whatever its values' tokens were."""
    return {field: p for processor in processors if hasattr(processor, "opened")
            for field, p in processor.opened(row).items()}


_TRAILING = " /:;,."  # what scoring.normalize strips from the end of a value


def closing_tokens(tokenizer, size: int | None = None) -> list[bool]:
    """Per token id below ``size`` (the model's vocabulary; default the tokenizer's): does it
    end a JSON string, after nothing but trailing punctuation? Two such tokens write the same
    value once normalized ('1 online resource' or '1 online resource.')."""
    closes = getattr(tokenizer, "_closing_tokens", None)
    if closes is None:
        texts = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        decoded = [tokenizer.convert_tokens_to_string([t]) if t is not None else "" for t in texts]
        closes = [d.lstrip(_TRAILING).startswith('"') for d in decoded]
        tokenizer._closing_tokens = closes  # one pass over the vocabulary per tokenizer
    size = size or len(closes)
    return closes[:size] + [False] * (size - len(closes))


def chosen_probability(logits, chosen, closes, k: int = 4):
    """Per row, the probability of the chosen token; when it closes the value, plus that of
    the other tokens among the ``k`` most likely that close it too (torch: logits [rows, vocab],
    chosen [rows], closes [vocab] bool). No softmax over the vocabulary is kept: a log-sum-exp
    and the top ``k`` are all it takes."""
    logits = logits.float()
    norm = logits.logsumexp(dim=-1, keepdim=True)
    top, ids = logits.topk(k, dim=-1)
    top = (top - norm).exp()
    picked = (logits.gather(-1, chosen[:, None]) - norm).exp()[:, 0]
    alike = closes[ids] & (ids != chosen[:, None]) & closes[chosen][:, None]
    return (picked + (top * alike).sum(dim=-1)).clamp(max=1.0)


class TokenProbabilities:
    """A transformers logits processor, last in the list: records for every row how likely the
    token greedy decoding picks (the most likely one) was, under the constraints before it."""

    def __init__(self, batch_size: int, closes):
        self.rows: list[list[float]] = [[] for _ in range(batch_size)]
        self.closes = closes

    def __call__(self, input_ids, scores):
        chosen = chosen_probability(scores, scores.argmax(dim=-1), self.closes)
        for row, probability in enumerate(chosen.tolist()):
            self.rows[row].append(probability)
        return scores


class LlamaTokenProbabilities:
    """The same record on llama-cpp-python's path, one prompt at a time, as its last logits
    processor: each call keeps the distribution, and the next call (whose ``input_ids`` end
    with the token sampled from it) records that token and its probability. llama.cpp applies
    its grammar after the logits processors, so here a probability is under the copy
    constraint but not the grammar."""

    def __init__(self, closes: Sequence[bool]):
        import torch

        self.closes = torch.tensor(closes)
        self.tokens: list[int] = []
        self.probabilities: list[float] = []
        self._last = None

    def __call__(self, input_ids, scores):
        import torch

        if self._last is not None:
            token = int(input_ids[-1])
            self.tokens.append(token)
            self.probabilities.append(float(chosen_probability(self._last, torch.tensor([token]), self.closes)[0]))
        self._last = torch.from_numpy(scores.copy())[None, :]  # llama.cpp reuses its buffer
        return scores
