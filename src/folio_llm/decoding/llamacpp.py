"""llama.cpp through llama-cpp-python: load a GGUF file, answer conversations greedily, quantize.

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
    """A llama.cpp grammar that keeps answers to a JSON schema (constrained decoding)."""
    import json

    return llama_cpp_module().LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


def generate(llm, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 640,
             grammar=None, progress: bool = True, copy_fields: Sequence[str] | None = None) -> list[str]:
    """Greedy answers for each conversation (its assistant message, if any, is left out), one
    at a time; a row stops at end-of-turn, or where evaluation.generate stops it. With
    ``copy_fields`` the values of those fields may only be verbatim spans of the description
    (the copy constraint as a llama-cpp-python logits processor)."""
    return [answer.text for answer in generate_scored(llm, tokenizer, conversations, max_new_tokens, grammar,
                                                      progress, copy_fields)]


def generate_scored(llm, tokenizer, conversations: Sequence[Sequence[dict]], max_new_tokens: int = 640,
                    grammar=None, progress: bool = True, copy_fields: Sequence[str] | None = None,
                    schema: dict | None = None) -> list:
    """:func:`generate`'s answers, each with how sure the model was of every field
    (``decoding.doubt.ScoredAnswer``; ``schema``: the JSON schema the grammar holds to)."""
    from llama_cpp import LogitsProcessorList

    from folio_llm.decoding.doubt import LlamaTokenProbabilities, closing_tokens, scored_answer
    from folio_llm.models import prompt_text

    if copy_fields:
        from folio_llm.decoding.constraints import description
        from folio_llm.decoding.copy_constraint import CopyIndex, CopyProcessor

        index = CopyIndex.for_tokenizer(tokenizer)
    closes = closing_tokens(tokenizer, llm.n_vocab())

    answers = []
    for messages in tqdm(conversations, desc="generate", unit="prompt", disable=None if progress else True,
                         leave=False):
        ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
        if len(ids) + max_new_tokens > llm.n_ctx():
            raise ValueError(f"a prompt of {len(ids)} tokens plus {max_new_tokens} new ones exceeds the "
                             f"llama.cpp context of {llm.n_ctx()}")
        recorder = LlamaTokenProbabilities(closes)
        processors = [CopyProcessor.for_llamacpp(index, description(messages), len(ids), copy_fields)] \
            if copy_fields else []
        result = llm.create_completion(
            ids, max_tokens=max_new_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, grammar=grammar,
            stopping_criteria=_stops(tokenizer, len(ids)), logits_processor=LogitsProcessorList(processors + [recorder]))
        text = result["choices"][0]["text"].strip()
        answers.append(scored_answer(tokenizer, recorder.tokens, recorder.probabilities, schema, text=text))
    return answers


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
