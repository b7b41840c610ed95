"""llama.cpp through llama-cpp-python: load a GGUF file, answer conversations greedily, quantize.

Two ways to answer: llama-cpp-python's own completion loop, one prompt at a time (the export
stage's parity check: the engine as users of the GGUF file run it), and :class:`LlamaRows`, many
rows a ``llama_decode`` under the transformers path's constraints (``predict``, the page).
Prompts are rendered by the chat template through ``models.prompt_text`` and tokenized
by the Hugging Face tokenizer read from the GGUF file itself, so llama.cpp sees exactly the
token ids the transformers path sees.
"""

from __future__ import annotations

import ctypes
import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from folio_llm.decoding.constraints import Decoding

FREE = Decoding(None, None)  # no grammar, no copy constraint

MISSING = "the llama.cpp backend needs llama-cpp-python: pip install 'folio-llm[llamacpp]'"
# llama.cpp's own quantizer types for the GGUF types that the converter cannot write itself
QUANTIZE_FTYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def llama_cpp_module():
    try:
        import llama_cpp
    except ImportError:
        raise ValueError(MISSING) from None
    # llama.cpp logs every tensor it loads or quantizes; keep its errors only
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    return llama_cpp


def threads() -> int:
    """As many threads as torch uses (one knob for both backends: OMP_NUM_THREADS or
    torch.set_num_threads). llama-cpp-python's own default is half the cores; more threads
    than free cores make llama.cpp's spinning workers many times slower."""
    import torch

    return torch.get_num_threads()


def load_gguf(path: str | Path, n_ctx: int = 4096):
    """(llama_cpp.Llama, Hugging Face tokenizer) for a GGUF file."""
    from folio_llm.models import load_tokenizer

    llama_cpp = llama_cpp_module()
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"GGUF file not found: {path}")
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_threads=threads(), n_threads_batch=threads(),
                              verbose=False)
    except ValueError as exc:
        raise ValueError(f"{path}: llama.cpp cannot load it ({exc})") from None
    tokenizer = load_tokenizer(str(path.parent), gguf_file=path.name)
    return llm, tokenizer


def _stops(tokenizer, prompt_width: int):
    """evaluation.generate's stopping rules (end of the JSON object, a repetition loop) as
    llama-cpp-python stopping criteria."""
    import torch
    from llama_cpp import StoppingCriteriaList

    from folio_llm.answers import JsonObjectEnd
    from folio_llm.decoding.generate import RepetitionLoop

    def adapt(criterion):
        return lambda input_ids, logits: bool(criterion(torch.as_tensor(input_ids).unsqueeze(0), None)[0])

    return StoppingCriteriaList([adapt(JsonObjectEnd(tokenizer, prompt_width, 1)),
                                 adapt(RepetitionLoop(prompt_width, 1))])


def json_grammar(schema: dict):
    """A llama.cpp grammar that keeps answers to a JSON schema (constrained decoding), with the
    compact separators of the targets and of the xgrammar path: no optional space after
    punctuation, where an untuned model would otherwise write one."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    gbnf = json_schema_to_gbnf(json.dumps(schema))
    compact = "\n".join('space ::= ""' if line.startswith("space ::=") else line for line in gbnf.splitlines())
    return llama_cpp_module().LlamaGrammar.from_string(compact, verbose=False)


def generate(llm, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 640,
             decoding: Decoding = FREE, progress: bool = True) -> list[str]:
    """Greedy answers for each conversation (its assistant message, if any, is left out), one
    at a time, held to ``decoding`` (its JSON schema as a llama.cpp grammar; the copy constraint
    as a llama-cpp-python logits processor); a row stops at end-of-turn, or where
    evaluation.generate stops it."""
    return [answer.text for answer in generate_scored(llm, tokenizer, conversations, max_new_tokens, decoding,
                                                      progress)]


def generate_scored(llm, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 640,
                    decoding: Decoding = FREE, progress: bool = True) -> list:
    """:func:`generate`'s answers, each with how sure the model was of every field
    (``decoding.doubt.ScoredAnswer``)."""
    from llama_cpp import LogitsProcessorList

    from folio_llm.decoding.doubt import LlamaTokenProbabilities, closing_tokens, opened_fields, scored_answer
    from folio_llm.models import prompt_text

    schema, copy_fields, part_labels = decoding.schema, decoding.copy_fields, decoding.part_labels
    grammar = json_grammar(schema) if schema else None
    if copy_fields:
        from folio_llm.decoding.constraints import description
        from folio_llm.decoding.copy_constraint import CopyIndex, CopyProcessor

        index = CopyIndex.for_tokenizer(tokenizer)
    closes = closing_tokens(tokenizer, llm.n_vocab())

    answers = []
    for messages in tqdm(conversations, desc="generate", unit="prompt", disable=None if progress else True,
                         leave=False):
        ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
        _fits(llm, len(ids), max_new_tokens)
        recorder = LlamaTokenProbabilities(closes)
        processors = [CopyProcessor.for_llamacpp(index, description(messages), len(ids), copy_fields, part_labels,
                                                 decoding.open_below, decoding.key_order)] if copy_fields else []
        result = llm.create_completion(
            ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, grammar=grammar,
            stopping_criteria=_stops(tokenizer, len(ids)), logits_processor=LogitsProcessorList(processors + [recorder]))
        text = result["choices"][0]["text"].strip()
        answers.append(scored_answer(tokenizer, recorder.tokens, recorder.probabilities, schema, text=text,
                                     opened=opened_fields([p.processor for p in processors], 0)))
    return answers


BATCH_TOKENS = 512  # tokens per llama_decode call while the prompts are read
# at most this many tokens a llama_decode while answering, drafts included: one row drafts up to
# 7, 16 rows draft none (where decoding is already bound by arithmetic; benchmarks/RESULTS.md)
DRAFT_PER_DECODE = 8


class LlamaRows:
    """A batch of sequences in a llama.cpp context of their own, one sequence per row, each
    with room for its prompt and ``room`` new tokens: one ``llama_decode`` advances every row
    by a token and its draft (the engine ``decoding.generate.verified_rows`` drives: ``prefill``,
    ``step``, ``keep``, ``select``); a decode of a 135M model reads all its weights, so a few
    more tokens cost less than another decode.

    The context takes ``llm``'s settings (threads, rope, KV types); the KV cache is split per
    sequence (``kv_unified`` off), so a row attends to its own tokens only."""

    def __init__(self, llm, prompts: Sequence[Sequence[int]], room: int):
        import numpy as np

        llama_cpp = llama_cpp_module()
        self.llama_cpp, self.np = llama_cpp, np
        self.prompts = [list(prompt) for prompt in prompts]
        per_row = -(-(max(map(len, self.prompts)) + room) // 256) * 256
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_seq_max = len(self.prompts)
        params.n_ctx = per_row * len(self.prompts)
        params.n_batch = params.n_ubatch = BATCH_TOKENS
        params.kv_unified = False
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise ValueError(f"llama.cpp could not make a context for {len(self.prompts)} rows of {per_row} tokens")
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llm.n_vocab()
        self.batch = llama_cpp.llama_batch_init(BATCH_TOKENS, 0, 1)
        self.seqs = list(range(len(self.prompts)))  # the sequence of each live slot
        self.positions = [len(prompt) for prompt in self.prompts]  # where each sequence's next token goes
        self.fed = [0] * len(self.prompts)  # tokens the last step gave each sequence

    def _decode(self, entries: list[tuple[int, int, int, bool]]):
        """Feed (token, position, sequence, wants logits) entries, ``BATCH_TOKENS`` a
        llama_decode; the logits asked for, in order, as a [n, vocab] array."""
        found = []
        for start in range(0, len(entries), BATCH_TOKENS):
            part = entries[start:start + BATCH_TOKENS]
            batch = self.batch
            for i, (token, position, seq, logits) in enumerate(part):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, position, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            batch.n_tokens = len(part)
            status = self.llama_cpp.llama_decode(self.ctx, batch)
            if status != 0:
                raise RuntimeError(f"llama_decode failed (status {status})")
            found += [self.np.ctypeslib.as_array(self.llama_cpp.llama_get_logits_ith(self.ctx, i), shape=(self.vocab,))
                      .copy() for i, entry in enumerate(part) if entry[3]]
        return self.np.stack(found)

    def prefill(self):
        """Read every prompt: the logits after each one's last token, [rows, 1, vocab]."""
        entries = [(token, position, seq, position == len(prompt) - 1)
                   for seq, prompt in enumerate(self.prompts) for position, token in enumerate(prompt)]
        return self._decode(entries)[:, None, :]

    def step(self, following: Sequence[int], drafts: Sequence[Sequence[int]]):
        """Each live slot's next token and its draft, all in one llama_decode: the logits after
        every one, [slots, 1 + longest draft, vocab] (a shorter draft's rest is never read)."""
        entries = []
        for slot, (token, draft) in enumerate(zip(following, drafts)):
            seq = self.seqs[slot]
            entries += [(fed, self.positions[seq] + k, seq, True) for k, fed in enumerate([token, *draft])]
            self.fed[seq] = 1 + len(draft)
        logits = self._decode(entries)
        out = self.np.zeros((len(following), 1 + max(map(len, drafts)), self.vocab), dtype=self.np.float32)
        start = 0
        for slot, draft in enumerate(drafts):
            out[slot, :1 + len(draft)] = logits[start:start + 1 + len(draft)]
            start += 1 + len(draft)
        return out

    def keep(self, confirmed: Sequence[int]) -> None:
        """Of the last step's tokens, slot i keeps its first 1 + confirmed[i]; the drafted ones
        after them leave the cache, and the next token takes the first position they held."""
        for slot, count in enumerate(confirmed):
            seq = self.seqs[slot]
            fed, self.fed[seq] = self.fed[seq], 0
            if not fed:
                continue
            self.positions[seq] += 1 + count
            if 1 + count < fed:
                self.llama_cpp.llama_memory_seq_rm(self.memory, seq, self.positions[seq], -1)

    def select(self, slots: Sequence[int]) -> None:
        """Keep the rows in ``slots`` (in that order); the others' tokens leave the cache."""
        keep = [self.seqs[slot] for slot in slots]
        for seq in set(self.seqs) - set(keep):
            self.llama_cpp.llama_memory_seq_rm(self.memory, seq, -1, -1)
        self.seqs = keep

    def close(self) -> None:
        self.llama_cpp.llama_batch_free(self.batch)
        self.llama_cpp.llama_free(self.ctx)


def generate_batched(llm, tokenizer, conversations: Sequence[Sequence[dict]], batch_size: int = 16,
                     max_new_tokens: int = 640, logits_processor_factory=None, progress: bool = True,
                     schema: dict | None = None, stats=None, on_tokens=None, draft_tokens: int = 0,
                     answered=None) -> list:
    """:func:`generate_scored`'s answers, ``batch_size`` rows a ``llama_decode``
    (:class:`LlamaRows`), under the transformers path's constraints
    (``decoding.constraints``: xgrammar's JSON schema, the copy constraint), greedy; the tokens
    written and forced counted in ``stats`` (``decoding.drafting.DraftStats``). ``draft_tokens``
    > 0: draft-then-verify (``decoding.generate.verified_rows``), drafts looked up in each row's
    prompt and in ``answered`` (``drafting.NgramIndex``: the answers written before, kept by a
    caller that answers again; a new one otherwise). ``on_tokens(i, tokens)``: called after
    every step with conversation i's answer so far."""
    import torch

    from folio_llm.decoding.doubt import ScoredAnswer, closing_tokens, opened_fields, scored_answer
    from folio_llm.decoding.drafting import DraftStats, NgramIndex, PromptLookup
    from folio_llm.decoding.generate import DRAFT_NGRAM, verified_rows
    from folio_llm.models import prompt_text

    encoded = [tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
               for messages in conversations]
    for ids in encoded:
        _fits(llm, len(ids), max_new_tokens + draft_tokens)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    closes = torch.tensor(closing_tokens(tokenizer, llm.n_vocab()))
    answers: list = [ScoredAnswer("")] * len(encoded)
    answered = NgramIndex(DRAFT_NGRAM) if answered is None else answered
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="generate", unit="batch", disable=None if progress else True, leave=False):
        processors = list(logits_processor_factory([conversations[i] for i in batch], 0)
                          if logits_processor_factory is not None else [])
        prompts = [encoded[i] for i in batch]
        engine = LlamaRows(llm, prompts, max_new_tokens + draft_tokens)
        try:
            written = verified_rows(engine, len(batch), tokenizer, processors, closes, max_new_tokens,
                                    PromptLookup(prompts, answered, draft_tokens, DRAFT_PER_DECODE)
                                    if draft_tokens > 0 else None,
                                    logits_processor_factory is None, stats if stats is not None else DraftStats(),
                                    on_tokens and (lambda row, tokens, batch=batch: on_tokens(batch[row], tokens)))
        finally:
            engine.close()
        for row, (tokens, probabilities) in zip(batch, written):
            answers[row] = scored_answer(tokenizer, tokens, probabilities, schema,
                                         opened=opened_fields(processors, batch.index(row)))
    return answers


def _fits(llm, prompt_tokens: int, max_new_tokens: int) -> None:
    if prompt_tokens + max_new_tokens > llm.n_ctx():
        raise ValueError(f"a prompt of {prompt_tokens} tokens plus {max_new_tokens} new ones exceeds the "
                         f"llama.cpp context of {llm.n_ctx()}")


def token_logits(path: str | Path, sequences: Sequence[Sequence[int]]) -> list:
    """llama.cpp's logits at every position of each token sequence, fed as given (row i scores
    the token after position i). A context of its own, no larger than the longest sequence:
    logits for every position take n_ctx x vocabulary floats."""
    import numpy as np

    llama_cpp = llama_cpp_module()
    n_ctx = max(len(ids) for ids in sequences) + 1
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), logits_all=True,
                          n_threads=threads(), n_threads_batch=threads(), verbose=False)
    try:
        rows = []
        for ids in sequences:
            llm.reset()
            llm.eval(list(ids))
            rows.append(np.array(llm.scores[:len(ids)], dtype=np.float32))
        return rows
    finally:
        llm.close()


def quantize(source: str | Path, out: str | Path, kind: str) -> Path:
    """Quantize a GGUF file (f16 or f32) with llama.cpp's own quantizer (``llama_model_quantize``)."""
    llama_cpp = llama_cpp_module()
    if kind not in QUANTIZE_FTYPES:
        raise ValueError(f"llama.cpp quantization to '{kind}' is not wired up (known: {', '.join(QUANTIZE_FTYPES)})")
    if not hasattr(llama_cpp, "llama_model_quantize"):
        raise ValueError(f"{kind} needs llama_model_quantize, which this llama-cpp-python does not expose")
    if not Path(source).is_file():
        raise ValueError(f"GGUF file not found: {source}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTIZE_FTYPES[kind])
    params.nthread = threads()
    out = Path(out)
    with captured_stderr() as log:
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(out).encode(), ctypes.byref(params))
    if status != 0 or not out.is_file():
        last = (log[0].strip().splitlines() or [f"status {status}"])[-1]
        raise ValueError(f"llama.cpp could not quantize {source} to {kind} ({last})")
    return out


@contextmanager
def captured_stderr():
    """File descriptor 2 into a temporary file: llama.cpp's quantizer prints a line per tensor
    from C, past Python's logging."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile(mode="w+", errors="replace") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            log.seek(0)
            text.append(log.read())
