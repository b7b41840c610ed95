"""llama.cpp with many rows a decode: the same greedy answers as llama-cpp-python's own
completion loop, one prompt at a time, on real test rows under both constraints; and with
drafts verified several tokens a decode."""
import json

import numpy as np
import pytest
from conftest import repeat_request, repeatable_records

from folio_llm.answers import target_schema
from folio_llm.decoding import llamacpp
from folio_llm.decoding.constraints import Decoding, compose, copy_processor_factory, schema_processor_factory
from folio_llm.decoding.drafting import DraftStats, NgramIndex, PromptLookup
from folio_llm.jsonl import load_jsonl
from folio_llm.models import prompt_text
from folio_llm.params import parse_params
from folio_llm.sections.eval import COPY_FIELDS


@pytest.fixture(scope="module")
def gguf(smollm2_gguf, single_thread):
    llm, tokenizer = llamacpp.load_gguf(smollm2_gguf)
    yield llm, tokenizer
    llm.close()


def test_batched_answers_are_the_one_at_a_time_answers_on_real_rows(gguf, real_dataset):
    llm, tokenizer = gguf
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:5]]
    schema = target_schema(parse_params({}).denormalize.fields)
    one_at_a_time = llamacpp.generate_scored(llm, tokenizer, conversations, 120, Decoding(schema, list(COPY_FIELDS)),
                                             progress=False)
    factory = compose(schema_processor_factory(tokenizer, schema), copy_processor_factory(tokenizer, COPY_FIELDS))
    stats = DraftStats()
    # 3 rows a batch: one full batch, one short; rows leave their batch as they end
    batched = llamacpp.generate_batched(llm, tokenizer, conversations, 3, 120, factory, progress=False,
                                        schema=schema, stats=stats)
    assert [a.text for a in batched] == [a.text for a in one_at_a_time]
    assert all(a.text.startswith("{") for a in batched)
    for mine, theirs in zip(batched, one_at_a_time):
        assert mine.confidence.keys() == theirs.confidence.keys()
        assert all(0 < value <= 1 for value in mine.confidence.values())
    assert stats.passes < stats.tokens and 0 < stats.forced < stats.tokens, stats.line()


def test_batched_unconstrained_answers_stop_at_the_end_of_the_object(gguf, real_dataset):
    llm, tokenizer = gguf
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:2]]
    alone = [llamacpp.generate_batched(llm, tokenizer, [c], 1, 48, None, progress=False)[0].text
             for c in conversations]
    together = [a.text for a in llamacpp.generate_batched(llm, tokenizer, conversations, 2, 48, None, progress=False)]
    assert together == alone == llamacpp.generate(llm, tokenizer, conversations, 48, progress=False)



def test_drafted_tokens_the_model_rejects_leave_no_trace_in_the_cache(gguf, real_dataset):
    """Two engines read the same prompt and answer, each first offered other wrong drafts: once
    those are rejected, every later logit is the same to the bit (a step of the same width
    computes the same arithmetic, so any difference is a drafted token still attended to)."""
    llm, tokenizer = gguf
    [row] = load_jsonl(real_dataset / "openai" / "test.jsonl")[:1]
    prompt = tokenizer(prompt_text(tokenizer, row["messages"][:-1]), add_special_tokens=False)["input_ids"]
    answer = tokenizer(row["messages"][-1]["content"], add_special_tokens=False)["input_ids"][:7]
    logits = []
    for wrong in ([11, 12, 13], [2000, 3000, 4000]):
        engine = llamacpp.LlamaRows(llm, [prompt], 32)
        try:
            seen = [engine.prefill()[0, 0]]
            seen += list(engine.step([answer[0]], [wrong])[0][:1])
            engine.keep([0])  # the drafts are wrong: the answer's next token goes where the first was
            seen += list(engine.step([answer[1]], [answer[2:5]])[0])
            engine.keep([2])  # two of three drafted tokens kept
            seen += list(engine.step([answer[4]], [[]])[0])
            engine.keep([0])
            assert engine.positions == [len(prompt) + 5]
        finally:
            engine.close()
        logits.append(np.stack(seen))
    assert (logits[0] == logits[1]).all()
    assert logits[0][-1].argmax() != logits[0][-2].argmax() or logits[0].std() > 0  # real logits, not zeros


def test_drafted_answers_are_the_token_a_step_answers_and_take_fewer_decodes(gguf, described_dataset):
    """Draft-then-verify on llama.cpp, on a request whose answer is a real record the untuned
    model copies from its prompt (the shortest plain one: its margins are wide, where a pass over
    several tokens and a pass over one, whose arithmetic differs, could part a near-tie): the same
    answer and fields' confidences as a token a step, in fewer llama_decode calls, streamed."""
    llm, tokenizer = gguf
    [record] = repeatable_records(described_dataset, 1)
    conversations = [[{"role": "user", "content": repeat_request(record)}]]
    schema = target_schema(parse_params({}).denormalize.fields)
    factory = schema_processor_factory(tokenizer, schema)
    plain, drafted = DraftStats(), DraftStats()
    streamed: list[list[int]] = []
    answered = NgramIndex(3)
    # one row a generation, as the page asks: drafts up to DRAFT_PER_DECODE - 1 tokens
    [step_by_step] = llamacpp.generate_batched(llm, tokenizer, conversations, 1, 400, factory, progress=False,
                                               schema=schema, stats=plain)
    [verified] = llamacpp.generate_batched(llm, tokenizer, conversations, 1, 400, factory, progress=False,
                                           schema=schema, stats=drafted, draft_tokens=7, answered=answered,
                                           on_tokens=lambda _, tokens: streamed.append(list(tokens)))
    assert json.loads(verified.text) == record and verified.text == step_by_step.text
    assert verified.confidence.keys() == step_by_step.confidence.keys()
    # llama.cpp's kernels for one token and for several round differently: 0.017 apart seen (Intel AMX type)
    assert all(abs(verified.confidence[k] - step_by_step.confidence[k]) < 0.05 for k in verified.confidence), \
        (verified.confidence, step_by_step.confidence)
    assert tokenizer.decode(streamed[-1], skip_special_tokens=True).strip() == verified.text
    assert len(streamed) == drafted.passes and len(streamed[0]) < len(streamed[-1])  # after every decode
    assert drafted.tokens == plain.tokens and drafted.confirmed > drafted.tokens / 2, drafted.line()
    assert drafted.passes < plain.passes / 2, (drafted.line(), plain.line())
    assert answered.after, "the answer written is indexed for the caller's next generation"


def test_a_decode_holds_at_most_its_budget_of_tokens_drafts_included():
    answers = NgramIndex(3)
    answers.extend([5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
    lookup = PromptLookup([[1, 2], [1, 2], [1, 2], [1, 2]], answers, length=7, per_pass=8)
    assert lookup.drafts([0], [[5]]) == [[6, 7, 8, 9, 10, 11, 12]]  # 1 + 7
    assert lookup.drafts([0, 1], [[5], [7]]) == [[6, 7, 8], [8, 9, 10]]  # 2 x (1 + 3)
    assert lookup.drafts([0, 1, 2, 3], [[5]] * 4) == [[6]] * 4  # 4 x (1 + 1)
    assert lookup.drafts([0, 1, 2, 3, 0, 1, 2, 3], [[5]] * 8) == [[]] * 8
    assert PromptLookup([[1, 2]], answers, length=4).drafts([0], [[5]]) == [[6, 7, 8, 9]]  # no budget
