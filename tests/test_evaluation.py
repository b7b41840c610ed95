"""Generation and the evaluate command on a tiny llama (real tokenizer) and real test rows."""
import json

import pytest
import yaml
from click.testing import CliRunner

from folio_llm.cli import main
from folio_llm.evaluation.generate import generate, load_for_inference
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
    params = write_params(tmp_path / "params.yaml", max_new_tokens=16, batch_size=4)
    result = CliRunner().invoke(main, [
        "evaluate", "--model", str(tiny_base), "--data", str(real_dataset / "openai" / "test.jsonl"),
        "--out", str(tmp_path / "eval.json"), "--predictions", str(tmp_path / "pred.jsonl"), "--limit", "3",
        "--params", str(params)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("macro", "macro_present", "macro_transcribed", "macro_inferred", "parse_rate",
                "schema_valid_rate", "folio_schema_valid_rate", "n", "fields"):
        assert key in metrics
    assert metrics["n"] == 3 and metrics["parse_rate"] == 0.0  # an untrained random model writes no JSON
    rows = load_jsonl(tmp_path / "pred.jsonl")
    assert len(rows) == 3
    assert {"prompt", "reference", "output", "parsed", "fields"} <= set(rows[0])


@pytest.mark.slow
def test_constrained_decoding_always_writes_json_of_the_target_shape(smollm2_base, real_dataset):
    """The untuned base never writes JSON on its own (parse rate 0 on the test split); under
    the grammar every answer is JSON of the target shape."""
    import jsonschema

    from folio_llm.evaluation.constrained import schema_processor_factory
    from folio_llm.evaluation.scoring import target_schema
    from folio_llm.params import parse_params

    model, tokenizer = load_for_inference(smollm2_base)
    schema = target_schema(parse_params({}).denormalize.fields)
    factory = schema_processor_factory(tokenizer, schema)
    conversations = [r["messages"][:-1] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")[:2]]
    outputs = generate(model, tokenizer, conversations, batch_size=2, max_new_tokens=600,
                       logits_processor_factory=factory, progress=False)
    for output in outputs:
        assert output.startswith("{")
        try:
            value = json.loads(output)
        except json.JSONDecodeError:
            pytest.fail(f"constrained output is not JSON (cut at max_new_tokens?): {output[:200]}")
        jsonschema.validate(value, schema)


def test_evaluate_refuses_missing_inputs(tiny_base, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "nomodel"), "--data",
                                       str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "o.json"),
                                       "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "test.jsonl" in result.output and "Traceback" not in result.output


def test_generation_stops_after_one_complete_json_object(tiny_base, real_dataset):
    import torch

    from folio_llm.evaluation.generate import JsonObjectEnd
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
