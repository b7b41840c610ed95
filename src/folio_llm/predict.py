"""`folio-llm predict`: short descriptions in, FOLIO Instance JSON out.

Inputs: descriptions on the command line, JSON Lines (a "description" or "prompt" key, or an
OpenAI chat row whose last user message is the description) or CSV (a "description" or
"prompt" column). A line that cannot be used is reported with its number; the rest go on.
Every prompt is the training conversation: the system prompt (params.dataset.system_prompts[0])
and the description, rendered by the model's own chat template.
Backends: transformers (a Hugging Face folder) and llama.cpp (a GGUF file), both batched.
"""

from __future__ import annotations

import csv
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from folio_llm import paths
from folio_llm.checking import AnswerChecks, Checked, FolioMapper, check_answer
from folio_llm.jsonl import read_jsonl

BACKENDS = ("transformers", "llama.cpp")
TEXT_KEYS = ("description", "prompt")


@dataclass(frozen=True)
class Request:
    """One description to answer; ``where`` names it in messages ("books.csv: line 4")."""

    where: str
    messages: list[dict]

    @property
    def description(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class BadInput:
    where: str
    reason: str


def conversation(system_prompt: str, description: str) -> list[dict]:
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": description}]


def _from_row(row, system_prompt: str) -> list[dict] | str:
    """The conversation for one JSONL row, or why there is none."""
    if not isinstance(row, dict):
        return "not a JSON object"
    messages = row.get("messages")
    if messages is not None:
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return "'messages' is not a list of chat messages"
        while messages and messages[-1].get("role") == "assistant":  # a training row: its answer is not asked for
            messages = messages[:-1]
        if not messages or messages[-1].get("role") != "user" or not str(messages[-1].get("content") or "").strip():
            return "'messages' does not end with a user message"
        if messages[0].get("role") != "system":
            messages = [{"role": "system", "content": system_prompt}] + messages
        return [{"role": m.get("role"), "content": str(m.get("content") or "")} for m in messages]
    for key in TEXT_KEYS:
        value = row.get(key)
        if isinstance(value, str) and value.strip():
            return conversation(system_prompt, value.strip())
    return "no 'description', 'prompt' or 'messages' key with text"


def read_requests(descriptions: Sequence[str], input_path: str | Path | None,
                  system_prompt: str) -> Iterator[Request | BadInput]:
    """Requests from command-line descriptions, then from ``input_path`` (.jsonl or .csv)."""
    for number, text in enumerate(descriptions, start=1):
        if text.strip():
            yield Request(f"description {number}", conversation(system_prompt, text.strip()))
        else:
            yield BadInput(f"description {number}", "empty description")
    if input_path is None:
        return
    path = Path(input_path)
    if not path.is_file():
        raise ValueError(f"input not found: {path}")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        for line in read_jsonl(path):
            if line.error:
                where, _, reason = line.error.partition(": ")
                yield BadInput(f"{path}: {where}", reason)
                continue
            result = _from_row(line.value, system_prompt)
            if isinstance(result, str):
                yield BadInput(f"{path}: line {line.lineno}", result)
            else:
                yield Request(f"{path}: line {line.lineno}", result)
    elif suffix == ".csv":
        yield from _read_csv(path, system_prompt)
    else:
        raise ValueError(f"--input {path}: expected a .jsonl or .csv file")


def _read_csv(path: Path, system_prompt: str) -> Iterator[Request | BadInput]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {name.strip().casefold(): name for name in reader.fieldnames or [] if name}
        column = next((columns[key] for key in TEXT_KEYS if key in columns), None)
        if column is None:
            raise ValueError(f"{path}: no 'description' or 'prompt' column (columns: {', '.join(columns) or 'none'})")
        start = reader.line_num + 1  # a quoted cell may hold line breaks: name the line a row starts on
        for row in reader:
            where = f"{path}: line {start}"
            start = reader.line_num + 1
            text = (row.get(column) or "").strip()
            if text:
                yield Request(where, conversation(system_prompt, text))
            else:
                yield BadInput(where, f"empty '{column}'")


# ---------------------------------------------------------------------------------------
# the model


def exported_gguf(params) -> Path:
    """The GGUF file the export stage writes first (params.export): predict's and serve's model
    when none is named."""
    from folio_llm.export import gguf_path

    return gguf_path(paths.GGUF_DIR, params.export.name, params.export.types[0])


def default_model(backend: str | None, gguf_file: str | Path, merged: str | Path = paths.MERGED,
                  base: str | Path = paths.BASE, adapter: str | Path = paths.ADAPTER) -> tuple[Path, Path | None]:
    """What the pipeline produced: the GGUF file for llama.cpp; else the merged model, or the
    base with its adapter."""
    if backend == "llama.cpp":
        if not Path(gguf_file).is_file():
            raise ValueError(f"no GGUF file at {gguf_file} (run `dvc repro export`, or pass --model FILE.gguf)")
        return Path(gguf_file), None
    if (Path(merged) / "config.json").is_file():
        return Path(merged), None
    if not (Path(base) / "config.json").is_file():
        raise ValueError(f"no model found: neither {merged} nor {base} (run `dvc repro`, or pass --model)")
    return Path(base), Path(adapter) if (Path(adapter) / "adapter_config.json").is_file() else None


def pick_backend(model: Path, backend: str | None) -> str:
    is_gguf = model.suffix.lower() == ".gguf"
    if backend is None:
        return "llama.cpp" if is_gguf else "transformers"
    if is_gguf != (backend == "llama.cpp"):
        raise ValueError(f"--backend {backend} cannot load {model} (.gguf files are for llama.cpp, "
                         "Hugging Face folders for transformers)")
    return backend


ANSWERED_NGRAMS = 200_000  # a server's index of earlier answers: a few hundred answers, tens of MB


@dataclass
class Generator:
    """A loaded model that answers conversations greedily, with either backend."""

    backend: str
    model: object
    tokenizer: object
    batch_size: int = 16
    max_new_tokens: int = 768
    schema: dict | None = None  # constrained decoding to this JSON schema
    draft_tokens: int = 0  # draft-then-verify, both backends (decoding.generate.verified_rows)
    _constraint: object = field(default=None, repr=False)
    _answered: object = field(default=None, repr=False)  # llama.cpp: earlier answers, drafts for the next ones

    @classmethod
    def load(cls, model: str | Path, adapter: str | Path | None, backend: str, *, dtype: str = "auto",
             batch_size: int = 16, max_new_tokens: int = 768, decoding=None, draft_tokens: int = 0) -> "Generator":
        """``decoding``: what answers are held to (``decoding.constraints.Decoding``), or None."""
        from folio_llm.decoding.constraints import decoding_constraint

        if backend == "llama.cpp":
            from folio_llm.decoding.llamacpp import load_gguf

            loaded, tokenizer = load_gguf(model)
        else:
            from folio_llm.decoding.generate import load_for_inference

            loaded, tokenizer = load_for_inference(model, adapter, dtype)
        schema = decoding.schema if decoding else None
        return cls(backend, loaded, tokenizer, batch_size, max_new_tokens, schema, draft_tokens,
                   decoding_constraint(tokenizer, decoding))

    def answer(self, conversations: Sequence[Sequence[dict]], progress: bool = True) -> list[str]:
        return [answer.text for answer in self.answer_scored(conversations, progress)]

    def answer_scored(self, conversations: Sequence[Sequence[dict]], progress: bool = True, on_tokens=None) -> list:
        """The answers with how sure the model was of each field (decoding.doubt.ScoredAnswer).
        ``on_tokens(i, tokens)`` (llama.cpp): conversation i's answer so far, after every step."""
        if self.backend == "llama.cpp":
            from folio_llm.decoding.llamacpp import generate_batched

            return generate_batched(self.model, self.tokenizer, conversations, self.batch_size, self.max_new_tokens,
                                    self._constraint, progress=progress, schema=self.schema, on_tokens=on_tokens,
                                    draft_tokens=self.draft_tokens, answered=self.answered_so_far())
        from folio_llm.decoding.generate import generate_scored

        return generate_scored(self.model, self.tokenizer, conversations, self.batch_size, self.max_new_tokens,
                               self._constraint, progress=progress, schema=self.schema,
                               draft_tokens=self.draft_tokens)

    def answered_so_far(self):
        """The n-grams of the answers this generator wrote (a page answers one description at a
        time: the keys every answer repeats are its best drafts), started afresh once it grows
        past ``ANSWERED_NGRAMS``."""
        from folio_llm.decoding.drafting import NgramIndex
        from folio_llm.decoding.generate import DRAFT_NGRAM

        if self._answered is None or len(self._answered.after) > ANSWERED_NGRAMS:
            self._answered = NgramIndex(DRAFT_NGRAM)
        return self._answered

    def close(self) -> None:
        # llama-cpp-python frees a model left to interpreter shutdown with a traceback
        if self.backend == "llama.cpp":
            self.model.close()


# ---------------------------------------------------------------------------------------
# answers to records, as predict prints them


def answered(generator, requests: Sequence, folio: FolioMapper | None = None, *, chunk: int = 0, lock=None,
             progress: bool = True, checks: AnswerChecks = AnswerChecks(),
             on_tokens=None) -> Iterator[tuple[object, str, Checked]]:
    """Each request (anything with ``.messages``) with the model's answer and its ``checks``, in
    order: the one answering loop of `predict` and the page's batch jobs. ``chunk`` requests
    per generation (0: all at once; the transformers path batches them), under ``lock`` when
    the model is shared between threads. ``on_tokens(i, tokens)``: request i's answer as it is
    written, where the backend streams."""
    from folio_llm.decoding.constraints import description
    from folio_llm.decoding.doubt import ScoredAnswer
    from folio_llm.roles import roles_from_words

    size = chunk or max(1, len(requests))
    for start in range(0, len(requests), size):
        part = requests[start:start + size]
        conversations = [r.messages for r in part]
        with lock or nullcontext():
            if hasattr(generator, "answer_scored"):
                answers = generator.answer_scored(conversations, progress=progress, on_tokens=on_tokens and (
                    lambda i, tokens, start=start: on_tokens(start + i, tokens)))
            else:
                answers = [ScoredAnswer(text) for text in generator.answer(conversations, progress=progress)]
        for request, answer in zip(part, answers):
            told = description(request.messages)
            text = roles_from_words(answer.text, told) if checks.roles_need_words else answer.text
            yield request, text, check_answer(text, folio, answer.confidence, checks.review_below, told, checks.template)


@dataclass
class Outcome:
    record: dict | None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def to_record(output: str, folio: FolioMapper | None = None) -> Outcome:
    """The model's answer as the record `predict` writes (FOLIO-ready with ``folio``), its
    warnings as lines, or why there is none (checking.check_answer)."""
    checked = check_answer(output, folio)
    return Outcome(checked.usable, checked.lines(), checked.error)
