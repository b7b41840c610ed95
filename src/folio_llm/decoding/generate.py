"""Batched greedy generation with a KV cache: the prompts are rendered by the chat template
(``models.prompt_text``), the same renderer training used."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from folio_llm.answers import JsonObjectEnd
from folio_llm.decoding.doubt import ScoredAnswer, TokenProbabilities, closing_tokens, scored_answer
from folio_llm.models import prompt_text


def inference_dtype(dtype: str) -> str:
    """'auto' -> bfloat16 on a GPU that has it, and on a CPU where it is measured faster than
    float32 (``folio_llm.precision``); else float32."""
    if dtype != "auto":
        return dtype
    import torch

    if torch.cuda.is_available():
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    from folio_llm.precision import fastest_cpu_precision

    return "bfloat16" if fastest_cpu_precision("generate") == "bf16" else "float32"


def load_for_inference(model_dir: str | Path, adapter_dir: str | Path | None = None, dtype: str = "auto"):
    """Base model (+ LoRA adapter merged in, so generation pays nothing for it) and tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    from folio_llm.models import load_tokenizer

    dtype = inference_dtype(dtype)
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"model folder not found or not a Hugging Face model: {model_dir}")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype), attn_implementation="sdpa")
    tokenizer_dir = model_dir
    if adapter_dir is not None:
        from peft import PeftModel

        adapter_dir = Path(adapter_dir)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ValueError(f"adapter folder not found or not a peft adapter: {adapter_dir}")
        model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        if (adapter_dir / "tokenizer_config.json").is_file():
            tokenizer_dir = adapter_dir
    tokenizer = load_tokenizer(str(tokenizer_dir))
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    model.eval()
    return model, tokenizer


class RepetitionLoop:
    """Stopping criterion: a row is done once its answer ends in the same block of tokens
    repeated ``repeats`` times in a row (spanning at least ``min_span`` tokens).

    Under greedy decoding such a loop never ends by itself: the row would run to
    max_new_tokens and hold its whole batch there. Catalog records do repeat themselves (FOLIO's
    mapper keeps a subject that a record lists three times), but none of the 1,000 default
    targets holds four identical consecutive blocks, so four ends only hopeless rows."""

    def __init__(self, prompt_width: int, batch_size: int, repeats: int = 4, min_span: int = 24,
                 max_period: int = 200):
        self.prompt_width = prompt_width
        self.repeats = repeats
        self.min_span = min_span
        self.max_period = max_period
        self.done = [False] * batch_size

    def looping(self, tokens: list[int]) -> bool:
        last = tokens[-1]
        for period in range(1, min(self.max_period, len(tokens) // self.repeats) + 1):
            if tokens[-1 - period] != last or period * self.repeats < self.min_span:
                continue
            block = tokens[-period:]
            if all(tokens[-(k + 1) * period:-k * period] == block for k in range(1, self.repeats)):
                return True
        return False

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if input_ids.shape[1] - self.prompt_width >= self.min_span:
            answers = input_ids[:, self.prompt_width:].tolist()
            for row, tokens in enumerate(answers):
                self.done[row] = self.done[row] or self.looping(tokens)
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def generate(model, tokenizer, conversations: Sequence[Sequence[dict]], batch_size: int = 16,
             max_new_tokens: int = 640, logits_processor_factory=None, progress: bool = True) -> list[str]:
    """Greedy answers for each conversation (its assistant message, if any, is left out).

    Rows are generated in order of prompt length so a batch wastes little on padding;
    answers come back in the input order. ``logits_processor_factory(conversations of the
    batch, prompt width)`` gives fresh logits processors per batch (constrained decoding).
    """
    return [answer.text for answer in generate_scored(model, tokenizer, conversations, batch_size, max_new_tokens,
                                                      logits_processor_factory, progress)]


def generate_scored(model, tokenizer, conversations: Sequence[Sequence[dict]], batch_size: int = 16,
                    max_new_tokens: int = 640, logits_processor_factory=None, progress: bool = True,
                    schema: dict | None = None) -> list[ScoredAnswer]:
    """:func:`generate`'s answers, each with how sure the model was of every field
    (``decoding.doubt``; with the JSON ``schema`` decoding was held to, also of the fields it
    left out)."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    prompts = [prompt_text(tokenizer, messages) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[ScoredAnswer] = [ScoredAnswer("")] * len(prompts)
    closes = torch.tensor(closing_tokens(tokenizer, model.config.vocab_size))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in tqdm(batches, desc="generate", unit="batch", disable=None if progress else True, leave=False):
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        width = encoded["input_ids"].shape[1]
        processors = list(logits_processor_factory([conversations[i] for i in batch], width)
                          if logits_processor_factory is not None else [])
        recorder = TokenProbabilities(len(batch), closes)
        # under a grammar the answer ends with end-of-turn right after the object anyway
        stop = StoppingCriteriaList([RepetitionLoop(width, len(batch))] + (
            [] if logits_processor_factory else [JsonObjectEnd(tokenizer, width, len(batch))]))
        with torch.inference_mode():
            output = model.generate(
                **encoded, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, stopping_criteria=stop,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                logits_processor=LogitsProcessorList(processors + [recorder]),
            )
        for slot, (row, tokens) in enumerate(zip(batch, output[:, width:].tolist())):
            while tokens and tokens[-1] == tokenizer.pad_token_id != tokenizer.eos_token_id:  # stopped early
                tokens.pop()
            answers[row] = scored_answer(tokenizer, tokens, recorder.rows[slot], schema)
    return answers
