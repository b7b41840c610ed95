"""Review flags: how sure the model was of each field (decoding.doubt), on real answers, a real
tokenizer and real models; how evaluate scores the flags (evaluation.review); predict lists them."""
import json

import pytest
import yaml
from click.testing import CliRunner

from conftest import repeat_request, repeatable_records
from folio_llm.answers import target_schema
from folio_llm.cli import main
from folio_llm.decoding.constraints import Decoding
from folio_llm.decoding.doubt import field_confidence, flagged, leaves, token_ends
from folio_llm.jsonl import load_jsonl
from folio_llm.params import parse_params

SCHEMA = target_schema(parse_params({}).denormalize.fields)


def real_answer(real_dataset) -> str:
    """A real test answer with a publisher and subjects, and no edition."""
    for row in load_jsonl(real_dataset / "openai" / "test.jsonl"):
        answer = row["messages"][-1]["content"]
        record = json.loads(answer)
        if record.get("publication") and record["publication"][0].get("publisher") and record.get("subjects") \
                and "editions" not in record:
            return answer
    raise AssertionError("no test answer with a publisher and subjects but no edition")


def test_every_decision_of_a_real_answer_has_its_characters(real_dataset):
    answer = real_answer(real_dataset)
    record = json.loads(answer)
    found = leaves(answer, SCHEMA)
    values = {leaf.path: answer[leaf.start:leaf.end] for leaf in found if leaf.kind == "value"}
    assert values[("title",)] == '{"title":' + json.dumps(record["title"], ensure_ascii=False)
    publisher = json.dumps(record["publication"][0]["publisher"], ensure_ascii=False)
    assert values[("publication", 0, "publisher")] == '{"publisher":' + publisher
    assert {leaf.path for leaf in found if leaf.kind == "key"} >= {("publication",), ("subjects",)}
    assert ("subjects", "]") in {leaf.path for leaf in found if leaf.kind == "end"}
    # every top-level key of the schema the answer leaves out is a decision too
    absent = {leaf.path for leaf in found if leaf.kind == "absent" and len(leaf.path) == 1}
    assert absent == {(key,) for key in SCHEMA["properties"] if key not in record}
    assert ("editions",) in absent


def test_a_field_is_as_sure_as_the_least_sure_token_that_decided_it(tiny_base, real_dataset):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    answer = real_answer(real_dataset)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ends = token_ends(tokenizer, ids)
    assert ends[-1] == len(answer)
    certain = field_confidence(answer, ends, [1.0] * len(ids), SCHEMA)
    assert set(certain.values()) == {1.0} and "title" in certain and "editions" in certain

    def unsure_at(position: int) -> dict:
        token = next(i for i, end in enumerate(ends) if end > position)
        return field_confidence(answer, ends, [0.3 if i == token else 1.0 for i in range(len(ids))], SCHEMA)

    first_subject = json.loads(answer)["subjects"][0]["value"]
    inside = answer.index(json.dumps(first_subject, ensure_ascii=False)) + 2
    assert flagged(unsure_at(inside), 0.75) == ["subjects"]
    # the key of a left-out field is never written: the choice that skipped it carries its doubt
    skipped_editions = answer.index('"publication"') + 1
    doubted = flagged(unsure_at(skipped_editions), 0.75)
    assert "editions" in doubted and "publisher" in doubted and "title" not in doubted


def test_a_field_begun_against_the_models_choice_is_as_sure_as_that_choice(tiny_base, real_dataset):
    """eval.open_below: a field the constraint began where the model would have left it out
    carries the model's probability of beginning it, however sure its values' tokens were."""
    from transformers import AutoTokenizer

    from folio_llm.decoding.doubt import scored_answer

    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    answer = real_answer(real_dataset)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    confidence = scored_answer(tokenizer, ids, [1.0] * len(ids), SCHEMA, opened={"publication": 0.41}).confidence
    assert {name for name, value in confidence.items() if value < 1} == {"publisher", "place", "publication_year"} \
        & set(confidence)
    assert confidence["publisher"] == 0.41 and confidence["title"] == 1.0


@pytest.mark.slow
def test_scored_generation_writes_the_same_answers_on_both_backends(smollm2_base, smollm2_gguf, described_dataset):
    """The confidence is read beside decoding, never changing it: transformers and llama.cpp
    answers are those of plain generation, every field the answer holds is scored, and a token
    the grammar forces costs no confidence."""
    from folio_llm.decoding import generate as transformers_path
    from folio_llm.decoding import llamacpp
    from folio_llm.decoding.constraints import schema_processor_factory

    [record] = repeatable_records(described_dataset, 1)
    conversations = [[{"role": "user", "content": repeat_request(record)}]]

    model, tokenizer = transformers_path.load_for_inference(smollm2_base)
    factory = schema_processor_factory(tokenizer, SCHEMA)
    plain = transformers_path.generate(model, tokenizer, conversations, 1, 400, factory, progress=False)
    [scored] = transformers_path.generate_scored(model, tokenizer, conversations, 1, 400, factory, progress=False,
                                                schema=SCHEMA)
    assert [scored.text] == plain and json.loads(scored.text) == record
    assert set(scored.confidence) >= {"title", "publisher", "subjects", "editions"}
    assert all(0 < value <= 1 for value in scored.confidence.values())

    llm, gguf_tokenizer = llamacpp.load_gguf(smollm2_gguf)
    try:
        held = Decoding(SCHEMA, None)
        plain = llamacpp.generate(llm, gguf_tokenizer, conversations, 400, held, progress=False)
        [scored_here] = llamacpp.generate_scored(llm, gguf_tokenizer, conversations, 400, held, progress=False)
    finally:
        llm.close()
    assert [scored_here.text] == plain and set(scored_here.confidence) == set(scored.confidence)


@pytest.mark.slow
def test_predict_lists_the_fields_to_review_beside_the_record(smollm2_base, described_dataset, tmp_path):
    record = next(r for r in repeatable_records(described_dataset, 50)
                  if r.get("publication") and r["publication"][0].get("publisher") and "editions" not in r)
    outputs = {}
    for below in (0.0, 1.0):
        params = tmp_path / f"params-{below}.yaml"
        params.write_text(yaml.safe_dump({"eval": {"review_below": below}}))
        result = CliRunner().invoke(main, ["predict", repeat_request(record), "--model", str(smollm2_base),
                                           "--constrained", "--no-copy", "--params", str(params)])
        assert result.exit_code == 0, result.output
        outputs[below] = result
    assert json.loads(outputs[0.0].stdout) == json.loads(outputs[1.0].stdout) == record  # the record is unchanged
    assert "check this value" not in outputs[0.0].stderr
    review = [line for line in outputs[1.0].stderr.splitlines() if "the model was unsure of it" in line]
    assert any(line.startswith("warning: description 1: title: check this value") for line in review)
    assert any("publication.publisher: check this value" in line for line in review)
    assert any("editions: check whether it is left out" in line for line in review)


def test_review_rates_count_the_told_fields_flagged(real_dataset):
    from folio_llm.evaluation.review import invented_fields, review_curve, review_report, told_fields
    from folio_llm.evaluation.scoring import score_record

    rows = load_jsonl(real_dataset / "openai" / "test.jsonl")[:6]
    meta = load_jsonl(real_dataset / "meta" / "test.jsonl")[:6]
    answers = []
    for row, m in zip(rows, meta):
        record = json.loads(row["messages"][-1]["content"])
        record["title"] = "Something else"  # every title wrong, everything else right
        if "editions" not in json.loads(m["reference"]):
            record["editions"] = ["A made-up edition"]  # and an edition no record has
        answers.append(json.dumps(record))
    details = [score_record(a, m["reference"]) for a, m in zip(answers, meta)]
    confidences = [{"title": 0.2, "subjects": 0.6, "contributors": 0.9, "editions": 0.5} for _ in answers]
    pairs = told_fields(details, meta, confidences)
    made_up = invented_fields(details, meta, confidences)
    assert made_up and {p.field for p in made_up} == {"editions"}
    report = review_report(pairs, 0.75, made_up)
    assert report["made_up"] == {"n": len(made_up), "flagged": 1.0}
    assert report["fields"]["title"] == {"wrong": 6, "right": 0, "recall": 1.0, "false_alarms": None,
                                         "wrong_left_out": 0, "wrong_in_unused_only": 0}
    flagged_right = sum(report["fields"].get(name, {"right": 0})["right"] for name in ("subjects", "editions"))
    assert report["wrong"] + report["right"] == len(pairs)
    assert report["false_alarms"] == pytest.approx(round(flagged_right / report["right"], 4))
    curve = review_curve(pairs)
    assert list(curve.columns) == ["below", "recall", "false_alarms"]
    assert curve["recall"].is_monotonic_increasing and curve["false_alarms"].is_monotonic_increasing
