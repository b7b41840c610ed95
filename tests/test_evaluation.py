"""Generation and the evaluate command on a tiny llama (real tokenizer) and real test rows."""
import json

import pytest
import yaml
from click.testing import CliRunner

from folio_llm.cli import main
from folio_llm.decoding.generate import generate, load_for_inference
from folio_llm.jsonl import load_jsonl


def test_batched_generation_keeps_input_order(tiny_base, real_dataset):
    model, tokenizer = load_for_inference(tiny_base)
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:5]]
    one_by_one = generate(model, tokenizer, conversations, batch_size=1, max_new_tokens=8, progress=False)
    batched = generate(model, tokenizer, conversations, batch_size=5, max_new_tokens=8, progress=False)
    assert batched == one_by_one
    assert len(set(batched)) > 1  # different prompts, different answers: nothing shuffled


def write_params(path, **eval_settings):
    path.write_text(yaml.safe_dump({"eval": eval_settings}))
    return path


def test_evaluate_command_writes_metrics_and_predictions(tiny_base, real_dataset, tmp_path):
    params = write_params(tmp_path / "params.yaml", max_new_tokens=16, batch_size=4, constrained=False,
                          copy_constraint=False)
    result = CliRunner().invoke(main, [
        "evaluate", "--model", str(tiny_base), "--data", str(real_dataset / "openai" / "test.jsonl"),
        "--out", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "pred.jsonl"), "--limit", "3",
        "--params", str(params)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("macro", "macro_present", "macro_transcribed", "macro_inferred", "parse_rate",
                "schema_valid_rate", "folio_schema_valid_rate", "n", "fields"):
        assert key in metrics
    assert metrics["n"] == 3 and metrics["parse_rate_strict"] == 0.0  # an untrained random model writes no JSON
    rows = load_jsonl(tmp_path / "pred.jsonl")
    assert len(rows) == 3
    assert {"prompt", "reference", "output", "parsed", "fields"} <= set(rows[0])
    assert "title" in rows[0]["told"] and "instanceTypeText" in rows[0]["inferred"]  # what benchmarks/paired.py pairs


@pytest.mark.slow
def test_constrained_decoding_keeps_to_the_target_shape(smollm2_base, real_dataset):
    """The untuned base never writes JSON on its own (parse rate 0 on the test split). Under the
    grammar every answer is JSON of the target shape, or, where the model loops until
    max_new_tokens, a prefix the grammar accepts token by token."""
    import jsonschema
    import xgrammar as xgr

    from folio_llm.decoding.constraints import schema_processor_factory
    from folio_llm.answers import target_schema
    from folio_llm.params import parse_params

    model, tokenizer = load_for_inference(smollm2_base)
    schema = target_schema(parse_params({}).denormalize.fields)
    factory = schema_processor_factory(tokenizer, schema)
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:4]]
    limit = 200
    outputs = generate(model, tokenizer, conversations, batch_size=4, max_new_tokens=limit,
                       logits_processor_factory=factory, progress=False)
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id])
    grammar = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    for output in outputs:
        assert output.startswith('{"title":"')
        try:
            value = json.loads(output)
        except json.JSONDecodeError:  # cut at max_new_tokens: still a prefix the grammar allows
            matcher = xgr.GrammarMatcher(grammar)
            assert all(matcher.accept_token(t) for t in tokenizer(output, add_special_tokens=False)["input_ids"])
            assert not matcher.is_terminated()
        else:
            jsonschema.validate(value, schema)


def test_evaluate_refuses_missing_inputs(tiny_base, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "nomodel"), "--data",
                                       str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "o.json"),
                                       "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "test.jsonl" in result.output and "Traceback" not in result.output


def test_generation_stops_after_one_complete_json_object(tiny_base, real_dataset):
    import torch

    from folio_llm.answers import JsonObjectEnd
    from folio_llm.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_base))
    answer = load_jsonl(real_dataset / "openai" / "test.jsonl")[0]["messages"][-1]["content"]
    tricky = '{"title":"Braces {in} a \\"quoted\\" title}","subjects":[{"value":"x"}]}'
    for text in (answer, tricky):
        ids = tokenizer(text + " and then some rambling {", add_special_tokens=False)["input_ids"]
        stop = JsonObjectEnd(tokenizer, prompt_width=0, batch_size=1)
        done_at = None
        for step in range(1, len(ids) + 1):
            if stop(torch.tensor([ids[:step]]), None)[0] and done_at is None:
                done_at = step
        assert done_at is not None
        assert json.loads(tokenizer.decode(ids[:done_at])) == json.loads(text)


def test_repetition_loop_ends_a_looping_row_and_no_real_answer(tiny_base, real_dataset):
    """A subject repeated until max_new_tokens (what the tuned model's unparseable answers
    looked like) is caught after four copies; none of the real test answers is."""
    import torch

    from folio_llm.decoding.generate import RepetitionLoop
    from folio_llm.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_base))

    def stops_at(text):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        stop = RepetitionLoop(prompt_width=0, batch_size=1)
        return next((step for step in range(1, len(ids) + 1) if stop(torch.tensor([ids[:step]]), None)[0]), None)

    for row in load_jsonl(real_dataset / "openai" / "test.jsonl"):
        assert stops_at(row["messages"][-1]["content"]) is None
    prefix = '{"title":"Catholics in America","subjects":[{"value":"Catholic Church"}'
    loop = prefix + ',{"value":"Catholics - United States"}' * 6
    step = stops_at(loop)
    assert step is not None
    assert tokenizer.decode(tokenizer(loop, add_special_tokens=False)["input_ids"][:step]).count("Catholics - United") == 4


def test_a_cut_answer_is_closed_at_its_last_complete_value(real_dataset):
    """Every prefix of real answers (what a loop stop or max_new_tokens leaves) closes into one
    JSON object holding what was complete: nothing invented, nothing half-written."""
    from folio_llm.answers import close_cut_json

    for row in load_jsonl(real_dataset / "openai" / "test.jsonl")[:5]:
        answer = row["messages"][-1]["content"]
        record = json.loads(answer)
        assert close_cut_json(answer) is None  # complete: left as it is
        for cut in range(1, len(answer)):
            closed = close_cut_json(answer[:cut])
            if closed is None:
                continue
            value = json.loads(closed)
            assert closed.startswith(answer[:len(closed) - 3].rstrip("]}"))
            for key, item in value.items():  # every value is whole, or a list of whole items
                expected = record[key]
                assert item == expected or (isinstance(item, list) and expected[:len(item)] == item), (cut, key)
        assert json.loads(close_cut_json(answer[:-1])) is not None
    assert close_cut_json("Here is the record you asked for") is None
    assert json.loads(close_cut_json('{"title":"A","subjects":[{"value":"B"},{"value":"B"},{"val')) == {
        "title": "A", "subjects": [{"value": "B"}, {"value": "B"}]}


def test_copy_constraint_holds_told_values_to_the_description(tiny_base, real_dataset, tmp_path):
    """A random tiny model under the JSON grammar and the copy constraint: every title,
    publisher, place, date and subject it writes is a verbatim span of its description."""
    from folio_llm.answers import close_cut_json
    from folio_llm.answers import parse_output

    params = write_params(tmp_path / "params.yaml", max_new_tokens=120, batch_size=4)
    result = CliRunner().invoke(main, [
        "evaluate", "--model", str(tiny_base), "--data", str(real_dataset / "openai" / "test.jsonl"),
        "--out", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "pred.jsonl"), "--limit", "4",
        "--params", str(params), "--copy"])
    assert result.exit_code == 0, result.output
    checked = 0
    for row in load_jsonl(tmp_path / "pred.jsonl"):
        record, _ = parse_output(close_cut_json(row.get("cut_output", row["output"])) or row["output"])
        assert record is not None
        values = [record.get("title")] + [p.get(k) for p in record.get("publication") or []
                                          for k in ("publisher", "place", "dateOfPublication")]
        values += [s.get("value") for s in record.get("subjects") or []]
        for value in values:
            if value:
                assert value in row["prompt"], (value, row["prompt"])
                checked += 1
    assert checked >= 4
