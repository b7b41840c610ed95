"""Batched greedy generation with a KV cache: the prompts are rendered by the chat template
(``models.prompt_text``), the same renderer training used.

Two loops give the same greedy answers: transformers' own ``generate`` (``draft_tokens=0``), and
draft-then-verify (``verified_rows``): each step drafts up to ``draft_tokens`` tokens per row
(``decoding.drafting``), runs them through the model in one forward pass, and keeps them while
each is the token greedy decoding picks under the constraints; the first one that is not is
replaced by the model's own choice. A row that is done leaves the batch at once."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tqdm import tqdm

from folio_llm.answers import JsonObjectEnd
from folio_llm.decoding.attention import use_folded_attention
from folio_llm.decoding.doubt import (ScoredAnswer, TokenProbabilities, chosen_probability, closing_tokens,
                                      opened_fields, scored_answer)
from folio_llm.decoding.drafting import DraftStats, NgramIndex, PromptLookup
from folio_llm.models import prompt_text

DRAFT_NGRAM = 3  # the longest tail a draft is looked up by


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
    use_folded_attention(model)  # drafts verified without copying the cache; one-token steps as before
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
             max_new_tokens: int = 640, logits_processor_factory=None, progress: bool = True,
             draft_tokens: int = 0) -> list[str]:
    """Greedy answers for each conversation (its assistant message, if any, is left out).

    Rows are generated in order of prompt length so a batch wastes little on padding;
    answers come back in the input order. ``logits_processor_factory(conversations of the
    batch, prompt width)`` gives fresh logits processors per batch (constrained decoding).
    """
    return [answer.text for answer in generate_scored(model, tokenizer, conversations, batch_size, max_new_tokens,
                                                      logits_processor_factory, progress, draft_tokens=draft_tokens)]


def generate_scored(model, tokenizer, conversations: Sequence[Sequence[dict]], batch_size: int = 16,
                    max_new_tokens: int = 640, logits_processor_factory=None, progress: bool = True,
                    schema: dict | None = None, draft_tokens: int = 0,
                    draft_stats: DraftStats | None = None) -> list[ScoredAnswer]:
    """:func:`generate`'s answers, each with how sure the model was of every field
    (``decoding.doubt``; with the JSON ``schema`` decoding was held to, also of the fields it
    left out). ``draft_tokens`` > 0: decoded by :func:`verified_rows`, drafting that many and
    counting in ``draft_stats``."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    prompts = [prompt_text(tokenizer, messages) for messages in conversations]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[ScoredAnswer] = [ScoredAnswer("")] * len(prompts)
    closes = torch.tensor(closing_tokens(tokenizer, model.config.vocab_size))
    draft_stats = DraftStats() if draft_stats is None else draft_stats
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    answered = NgramIndex(DRAFT_NGRAM)  # the run's answers, drafts for the rows after them
    for batch in tqdm(batches, desc="generate", unit="batch", disable=None if progress else True, leave=False):
        encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        width = encoded["input_ids"].shape[1]
        processors = list(logits_processor_factory([conversations[i] for i in batch], width)
                          if logits_processor_factory is not None else [])
        if draft_tokens > 0:
            unpadded = [row[mask.bool()].tolist() for row, mask in zip(encoded["input_ids"], encoded["attention_mask"])]
            lookup = PromptLookup(unpadded, answered, draft_tokens)
            with torch.inference_mode():
                written = verified_rows(TorchRows(model, encoded, tokenizer.pad_token_id), len(batch), tokenizer,
                                        processors, closes, max_new_tokens, lookup,
                                        stop_at_object_end=logits_processor_factory is None, stats=draft_stats)
            for slot, (row, (tokens, probabilities)) in enumerate(zip(batch, written)):
                answers[row] = scored_answer(tokenizer, tokens, probabilities, schema,
                                             opened=opened_fields(processors, slot))
            continue
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
            answers[row] = scored_answer(tokenizer, tokens, recorder.rows[slot], schema,
                                         opened=opened_fields(processors, slot))
    return answers


class AnswerEnd:
    """Where a row's answer ends, token by token: end-of-turn, ``max_new_tokens``, a repetition
    loop, and (unconstrained decoding: ``stop_at_object_end``) the end of its JSON object. The
    stopping criteria of transformers' ``generate`` for loops that pick tokens themselves."""

    def __init__(self, tokenizer, rows: int, max_new_tokens: int, stop_at_object_end: bool):
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.loops = RepetitionLoop(0, rows)
        self.object_end = JsonObjectEnd(tokenizer, 0, rows) if stop_at_object_end else None

    def __call__(self, row: int, answer: list[int]) -> bool:
        """Row ``row`` has just written the last token of ``answer``: is it done?"""
        if answer[-1] == self.tokenizer.eos_token_id or len(answer) >= self.max_new_tokens:
            return True
        if self.object_end is not None:
            self.object_end.feed(row, self.tokenizer.decode(answer[-1:]))
            if self.object_end.done[row]:
                return True
        return len(answer) >= self.loops.min_span and self.loops.looping(answer)


def constrained_choice(processors, rows: list[int], logits, closes, stats: DraftStats) -> tuple[list[int], list[float]]:
    """The greedy token of each of ``rows`` (``logits``: one line per row) under the constraints
    (``processors``: ``restrict(rows, scores)``), with how likely it was; forced tokens counted."""
    scores = logits.float()
    for processor in processors:
        scores = processor.restrict(rows, scores)
    choices = scores.argmax(dim=-1)
    stats.forced += int((scores.isfinite().sum(dim=-1) == 1).sum())
    return choices.tolist(), chosen_probability(scores, choices, closes).tolist()


class TorchRows:
    """A left-padded batch in a transformers model with its KV cache: the engine
    :func:`verified_rows` drives. The cache keeps the drafted tokens the model did not confirm;
    they are masked out of attention and positions count only the kept ones, so every kept token
    sees exactly the context plain greedy decoding gives it."""

    def __init__(self, model, encoded, pad_token_id: int):
        from transformers import DynamicCache

        self.model, self.pad_token_id = model, pad_token_id
        self.ids, self.mask = encoded["input_ids"], encoded["attention_mask"]
        self.cache = DynamicCache(config=model.config)
        self.kept = self.mask.sum(dim=-1)  # tokens each slot has in the cache, drafts it did not keep not counted
        self.fed = 0  # tokens per slot the last step added to the cache

    def prefill(self):
        """Read the prompts: the logits after each one's last token, [rows, 1, vocab]."""
        positions = (self.mask.cumsum(dim=-1) - 1).masked_fill(self.mask == 0, 1)
        return self.model(input_ids=self.ids, attention_mask=self.mask, position_ids=positions, cache=self.cache,
                          use_cache=True, logits_to_keep=1).logits

    def step(self, following: list[int], drafts: list[list[int]]):
        """Each live slot's next token and its draft in one forward pass: the logits after every
        one, [slots, 1 + longest draft, vocab] (a shorter draft's padding is never read)."""
        import torch

        width = self.fed = 1 + max(len(draft) for draft in drafts)
        step_ids = torch.tensor([[token] + draft + [self.pad_token_id] * (width - 1 - len(draft))
                                 for token, draft in zip(following, drafts)], dtype=self.ids.dtype)
        positions = self.kept[:, None] + torch.arange(width)[None, :]
        attending = torch.cat([self.mask, torch.ones(len(following), width, dtype=self.mask.dtype)], dim=-1)
        return self.model(input_ids=step_ids, attention_mask=attending, position_ids=positions, cache=self.cache,
                          use_cache=True, logits_to_keep=width).logits

    def keep(self, confirmed: list[int]) -> None:
        """Of the last step's tokens, slot i keeps its first 1 + confirmed[i]: the rest are masked."""
        import torch

        if self.fed:
            grown = torch.tensor([[1] * (1 + count) + [0] * (self.fed - 1 - count) for count in confirmed],
                                 dtype=self.mask.dtype)
            self.mask, self.kept = torch.cat([self.mask, grown], dim=-1), self.kept + grown.sum(dim=-1)

    def select(self, slots: list[int]) -> None:
        """Keep the slots in ``slots`` (in that order); the others leave the batch."""
        import torch

        index = torch.tensor(slots)
        self.cache.batch_select_indices(index)
        self.mask, self.kept = self.mask[index], self.kept[index]


def verified_rows(engine, rows: int, tokenizer, processors, closes, max_new_tokens: int,
                  lookup: PromptLookup | None, stop_at_object_end: bool, stats: DraftStats,
                  on_tokens=None) -> list[tuple[list[int], list[float]]]:
    """Greedy answers of the ``rows`` rows of ``engine`` (:class:`TorchRows`,
    ``llamacpp.LlamaRows``), drafted by ``lookup`` (None: a token per row a step) and verified:
    per row its tokens and the probability of each under the constraints (``processors``, which
    take each row's tokens one by one: ``restrict(rows, scores)``, ``accept(row, token)``).
    A row that is done leaves the batch at once; ``on_tokens(row, tokens)`` after every step."""
    import torch

    tokens: list[list[int]] = [[] for _ in range(rows)]
    probabilities: list[list[float]] = [[] for _ in range(rows)]
    finished = AnswerEnd(tokenizer, rows, max_new_tokens, stop_at_object_end)
    live = list(range(rows))  # the row in each slot of the engine's batch
    logits = torch.as_tensor(engine.prefill())
    stats.passes, stats.row_steps = stats.passes + 1, stats.row_steps + rows
    drafts: list[list[int]] = [[] for _ in live]
    while True:
        confirmed, following, done = [0] * len(live), [0] * len(live), [False] * len(live)
        checking = list(range(len(live)))
        for step in range(logits.shape[1]):
            if not checking:
                break
            choices, chosen = constrained_choice(processors, [live[slot] for slot in checking],
                                                 logits[checking, step], closes, stats)
            still = []
            for slot, token, probability in zip(checking, choices, chosen):
                row = live[slot]
                tokens[row].append(token)
                probabilities[row].append(probability)
                for processor in processors:
                    processor.accept(row, token)
                if finished(row, tokens[row]):
                    done[slot] = True
                elif step < len(drafts[slot]) and drafts[slot][step] == token:
                    confirmed[slot] += 1
                    still.append(slot)
                else:
                    following[slot] = token
            checking = still
        stats.tokens += len(live) + sum(confirmed)
        stats.confirmed += sum(confirmed)
        engine.keep(confirmed)
        for slot, row in enumerate(live):
            if lookup is not None:
                lookup.wrote(tokens[row], len(tokens[row]) - 1 - confirmed[slot])
            if on_tokens is not None:
                on_tokens(row, tokens[row])
        stay = [slot for slot in range(len(live)) if not done[slot]]
        if not stay:
            return [(tokens[row], probabilities[row]) for row in range(rows)]
        if len(stay) < len(live):
            engine.select(stay)
            live, following = [live[s] for s in stay], [following[s] for s in stay]
        drafts = lookup.drafts(live, [tokens[row] for row in live]) if lookup is not None else [[] for _ in live]
        stats.passes, stats.row_steps = stats.passes + 1, stats.row_steps + len(live)
        stats.drafted += sum(len(draft) for draft in drafts)
        logits = torch.as_tensor(engine.step(following, drafts))
