"""llama.cpp with many rows a decode: the same greedy answers as llama-cpp-python's own
completion loop, one prompt at a time, on real test rows under both constraints."""
import pytest

from folio_llm.answers import target_schema
from folio_llm.decoding import llamacpp
from folio_llm.decoding.constraints import compose, copy_processor_factory, schema_processor_factory
from folio_llm.decoding.drafting import DraftStats
from folio_llm.jsonl import load_jsonl
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
    one_at_a_time = llamacpp.generate_scored(llm, tokenizer, conversations, 120, llamacpp.json_grammar(schema),
                                             progress=False, copy_fields=list(COPY_FIELDS), schema=schema)
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
