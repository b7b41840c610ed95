"""Chat rows -> token ids and labels, and length-bucketed batches with little padding.

The chat template is the one renderer of prompts: training, evaluation and prediction all call
``models.prompt_text`` (``encode_chat`` here builds on it), so they cannot disagree. Loss is on the answer only:
system and user tokens are masked (-100), the end-of-turn token that closes the answer is
in the loss, and the pad token differs from it.
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

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def encode_chat(tokenizer, messages: Sequence[dict]) -> Encoded:
    """Token ids of the whole conversation up to and including the answer's end-of-turn
    token, with labels only on the answer and that token."""
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
    return Encoded(ids, labels)


@dataclass
class EncodedSplit:
    rows: list[Encoded]
    too_long: int

    @property
    def tokens(self) -> int:
        return sum(len(r) for r in self.rows)


def encode_rows(tokenizer, rows: Sequence[dict], max_length: int) -> EncodedSplit:
    kept, too_long = [], 0
    for row in rows:
        encoded = encode_chat(tokenizer, row["messages"])
        if len(encoded) > max_length:
            too_long += 1
            continue
        kept.append(encoded)
    return EncodedSplit(kept, too_long)


def load_splits(tokenizer, data_dir, max_length: int) -> tuple[EncodedSplit, EncodedSplit]:
    """The encoded train and valid splits of a chat-layout folder (valid may be absent)."""
    from pathlib import Path

    from folio_llm.jsonl import load_jsonl

    data_dir = Path(data_dir)
    train = encode_rows(tokenizer, load_jsonl(data_dir / "train.jsonl"), max_length)
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
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
