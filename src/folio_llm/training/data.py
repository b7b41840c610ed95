"""Chat rows -> token ids and labels, and length-bucketed batches with little padding.

The chat template is the one renderer of prompts: training, evaluation and prediction all call
``models.prompt_text`` (``encode_chat`` here builds on it), so they cannot disagree. Loss is on the answer only:
system and user tokens are masked (-100), the end-of-turn token that closes the answer is
in the loss, and the pad token differs from it. Each answer token also carries a loss weight:
``structure_weight`` for the tokens the JSON-schema constraint forces at generation
(``decided_characters``), 1 for the rest.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from folio_llm.models import prompt_text

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    weights: tuple[float, ...] | None = None  # loss weight of each label (None: every answer token 1)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def decided_characters(answer: str) -> list[bool]:
    """Which characters of a JSON answer the model decides, as opposed to the ones the
    JSON-schema constraint forces once those are written: a key's name after its first
    character, the quotes around a key, the colon, the quote opening a string value and the
    bracket opening a value. Values, the first character of each key (which field comes next)
    and the punctuation after a value (another item, or the end of a list) are decided.
    Text that is not JSON is decided throughout."""
    decided = [True] * len(answer)
    stack: list[str] = []  # '{' or '[' of each open container
    expect_key = False
    i = 0
    while i < len(answer):
        char = answer[i]
        if char == '"':
            end = i + 1
            while end < len(answer) and answer[end] != '"':
                end += 2 if answer[end] == "\\" else 1
            if expect_key:  # the quotes and the name but its first character
                for j in range(i, min(end + 1, len(answer))):
                    decided[j] = j == i + 1
            else:
                decided[i] = False
            i = end + 1
            continue
        if char == ":":
            decided[i] = False
            expect_key = False
            i += 1
            if i < len(answer) and answer[i] in "[{":  # the schema fixes the type of every value
                decided[i] = False
                stack.append(answer[i])
                expect_key = answer[i] == "{"
                i += 1
            continue
        if char in "[{":
            stack.append(char)
        elif char in "]}":
            if stack:
                stack.pop()
        if char in "{,":
            expect_key = bool(stack) and stack[-1] == "{"
        i += 1
    return decided


def encode_chat(tokenizer, messages: Sequence[dict], structure_weight: float = 1.0) -> Encoded:
    """Token ids of the whole conversation up to and including the answer's end-of-turn
    token, with labels only on the answer and that token; with ``structure_weight`` != 1, the
    answer tokens holding no decided character get that loss weight."""
    prompt = prompt_text(tokenizer, messages)
    full = tokenizer.apply_chat_template(list(messages), tokenize=False)
    if not full.startswith(prompt):
        raise ValueError("the chat template renders the prompt differently inside the whole conversation")
    eot = tokenizer.eos_token
    answer_end = full.find(eot, len(prompt))
    if answer_end < 0:
        raise ValueError(f"the chat template does not close the answer with {eot!r}")
    answer_end += len(eot)
    encoding = tokenizer(full[:answer_end], add_special_tokens=False, return_offsets_mapping=True)
    ids = encoding["input_ids"]
    labels = [token if start >= len(prompt) else IGNORE for token, (start, _) in zip(ids, encoding["offset_mapping"])]
    if ids[-1] != tokenizer.eos_token_id:
        raise ValueError("the answer's end-of-turn text did not tokenize to the end-of-turn token")
    if structure_weight == 1.0:
        return Encoded(ids, labels)
    decided = decided_characters(full[len(prompt):answer_end - len(eot)]) + [True] * len(eot)
    weights = tuple(
        0.0 if label == IGNORE
        else 1.0 if any(decided[max(start - len(prompt), 0):max(end - len(prompt), 1)]) else structure_weight
        for label, (start, end) in zip(labels, encoding["offset_mapping"]))
    return Encoded(ids, labels, weights)


@dataclass
class EncodedSplit:
    rows: list[Encoded]
    too_long: int

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)


def encode_rows(tokenizer, rows: Sequence[dict], max_length: int, structure_weight: float = 1.0) -> EncodedSplit:
    kept, too_long = [], 0
    for row in rows:
        encoded = encode_chat(tokenizer, row["messages"], structure_weight)
        if len(encoded) > max_length:
            too_long += 1
            continue
        kept.append(encoded)
    return EncodedSplit(kept, too_long)


def load_splits(tokenizer, data_dir, max_length: int,
                structure_weight: float = 1.0) -> tuple[EncodedSplit, EncodedSplit]:
    """The encoded train and valid splits of a chat-layout folder (valid may be absent). Only
    the training rows carry ``structure_weight``: the validation loss weighs every token alike."""
    from pathlib import Path

    from folio_llm.jsonl import load_jsonl

    data_dir = Path(data_dir)
    train = encode_rows(tokenizer, load_jsonl(data_dir / "train.jsonl"), max_length, structure_weight)
    valid_path = data_dir / "valid.jsonl"
    valid = encode_rows(tokenizer, load_jsonl(valid_path) if valid_path.exists() else [], max_length)
    if not train.rows:
        raise ValueError(f"{data_dir / 'train.jsonl'}: no rows fit train.max_length={max_length}")
    return train, valid


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: int, epoch: int,
                     window: int = 50) -> list[list[int]]:
    """Indices in batches of rows of similar length: shuffle, sort within windows of
    ``window`` batches, cut, shuffle the batches. Padding waste stays small while the order
    still changes every epoch."""
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start:start + span], key=lambda i: lengths[i])
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(rows: Sequence[Encoded], pad_id: int) -> dict:
    """Right-padded batch. Pads sit after every real token, so a causal mask alone keeps real
    tokens from seeing them and the model needs no padding mask (see ``losses``)."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        attention[i, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
    if any(row.weights is not None for row in rows):
        batch["weights"] = torch.tensor([list(loss_weights(row)) + [0.0] * (width - len(row)) for row in rows])
    return batch


def loss_weights(row: Encoded) -> tuple[float, ...]:
    """The loss weight of each label of a row: its own, or 1 on every answer token."""
    if row.weights is not None:
        return row.weights
    return tuple(0.0 if label == IGNORE else 1.0 for label in row.labels)
