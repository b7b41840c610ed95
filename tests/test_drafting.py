"""Draft-then-verify decoding: drafts by prompt lookup, attention over drafts, and the same
answers as plain greedy decoding on real test rows (float32: the arithmetic of both is exact
enough that every token and every field's confidence must agree)."""
import pytest
import torch

from folio_llm.answers import target_schema
from folio_llm.decoding.attention import use_folded_attention
from folio_llm.decoding.constraints import compose, copy_processor_factory, schema_processor_factory
from folio_llm.decoding.drafting import DraftStats, NgramIndex, PromptLookup
from folio_llm.decoding.generate import generate_scored, load_for_inference
from folio_llm.jsonl import load_jsonl
from folio_llm.models import prompt_text
from folio_llm.params import parse_params
from folio_llm.sections.eval import COPY_FIELDS

# confidences are kept to 4 decimals: float32 values a hair apart may round one unit apart (seen
# on the Intel AMX type)
ROUNDING = 1.5e-4


def test_a_draft_is_what_followed_the_latest_earlier_occurrence_of_the_tail():
    index = NgramIndex(longest=3)
    answer = [1, 2, 3, 4, 1, 2, 3]
    index.extend(answer)
    assert index.following(answer, 3, 4) == [4, 1, 2, 3]  # [1, 2, 3] before position 3, not the tail itself
    assert index.following(answer, 1, 2) == [4, 1]
    assert index.following([9, 8], 2, 4) == []
    answer.append(7)
    index.extend(answer, start=7)
    assert index.following([3], 1, 9) == [7]  # the latest occurrence wins


def test_prompt_lookup_drafts_a_description_span_then_what_another_answer_wrote(tiny_base, real_dataset):
    _, tokenizer = load_for_inference(tiny_base, dtype="float32")
    rows = load_jsonl(real_dataset / "openai" / "test.jsonl")[:2]
    prompts = [tokenizer(prompt_text(tokenizer, r["messages"][:-1]), add_special_tokens=False)["input_ids"]
               for r in rows]
    answers = [tokenizer(r["messages"][-1]["content"], add_special_tokens=False)["input_ids"] for r in rows]
    lookup = PromptLookup(prompts, NgramIndex(3), length=4)
    title = rows[0]["messages"][-2]["content"].split(" ")[:3]
    head = tokenizer(" ".join(title), add_special_tokens=False)["input_ids"]
    cut = next(i for i in range(2, len(prompts[0])) if prompts[0][i - 2:i] == head[:2])
    assert lookup.draft(0, prompts[0][cut - 2:cut]) == prompts[0][cut:cut + 4]  # goes on along the description
    keys = answers[1][:6]  # '{"title":"' and what follows in row 1's answer
    lookup.wrote(keys, 0)
    assert lookup.draft(0, keys[:3]) == keys[3:6]  # row 0 drafts what row 1 wrote
    assert len(lookup.draft(0, keys[:3])) <= 4


def test_folded_attention_gives_the_logits_of_the_plain_path_for_several_new_tokens(tiny_base):
    from transformers import AutoModelForCausalLM, DynamicCache

    plain = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation="sdpa").eval()
    folded = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32, attn_implementation="sdpa").eval()
    use_folded_attention(folded)
    ids = torch.randint(100, 1000, (3, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 17, dtype=torch.long)
    mask[0, :4] = 0  # left padding
    mask[1, 9] = 0  # a drafted token that was not kept
    outputs = []
    with torch.inference_mode():
        for model in (plain, folded):
            cache = DynamicCache(config=model.config)
            model(ids, attention_mask=mask[:, :12], cache=cache, use_cache=True)
            new = torch.tensor([[5, 6, 7, 8, 9]] * 3)
            positions = mask[:, :12].sum(dim=-1, keepdim=True) + torch.arange(5)
            outputs.append(model(new, attention_mask=mask, position_ids=positions, cache=cache,
                                 use_cache=True).logits)
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)


def both_ways(model, tokenizer, conversations, factory, schema, draft_tokens=4, max_new_tokens=96):
    plain = generate_scored(model, tokenizer, conversations, 4, max_new_tokens, factory, progress=False, schema=schema)
    stats = DraftStats()
    drafted = generate_scored(model, tokenizer, conversations, 4, max_new_tokens, factory, progress=False,
                              schema=schema, draft_tokens=draft_tokens, draft_stats=stats)
    return plain, drafted, stats


def constraints(tokenizer):
    schema = target_schema(parse_params({}).denormalize.fields)
    return schema, compose(schema_processor_factory(tokenizer, schema), copy_processor_factory(tokenizer, COPY_FIELDS))


def test_drafted_answers_are_the_plain_answers_on_real_rows_under_both_constraints(tiny_base, real_dataset):
    model, tokenizer = load_for_inference(tiny_base, dtype="float32")
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:6]]
    schema, factory = constraints(tokenizer)
    plain, drafted, stats = both_ways(model, tokenizer, conversations, factory, schema)
    assert [a.text for a in drafted] == [a.text for a in plain]
    for mine, theirs in zip(drafted, plain):
        assert mine.confidence.keys() == theirs.confidence.keys()
        assert mine.confidence == pytest.approx(theirs.confidence, abs=ROUNDING)
    assert stats.confirmed > 0 and stats.passes < stats.tokens  # drafts were kept: fewer passes than tokens
    unconstrained_plain, unconstrained, _ = both_ways(model, tokenizer, conversations, None, None, max_new_tokens=24)
    assert [a.text for a in unconstrained] == [a.text for a in unconstrained_plain]


@pytest.mark.slow
def test_drafting_on_the_real_base_model_keeps_every_answer_and_saves_passes(smollm2_base, real_dataset):
    model, tokenizer = load_for_inference(smollm2_base, dtype="float32")
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:4]]
    schema, factory = constraints(tokenizer)
    plain, drafted, stats = both_ways(model, tokenizer, conversations, factory, schema, max_new_tokens=160)
    assert [a.text for a in drafted] == [a.text for a in plain]
    for mine, theirs in zip(drafted, plain):
        assert mine.confidence == pytest.approx(theirs.confidence, abs=ROUNDING)
    assert stats.tokens / stats.row_steps > 1.5, stats.line()
