"""`folio-llm predict`: input reading on real descriptions, the training prompt, the default
model, FOLIO-ready records, and whole runs of the real SmolLM2 through both backends."""
import json
import shutil

import pytest
from click.testing import CliRunner

from folio_llm.cli import main
from folio_llm.jsonl import load_jsonl
from folio_llm.params import parse_params
from folio_llm.predict import BadInput, FolioMapper, Request, conversation, default_model, read_requests, to_record

from conftest import RAW, REFERENCE, repeatable_records

pytestmark = pytest.mark.usefixtures("single_thread")

SYSTEM = parse_params({}).dataset.system_prompts[0]
SCHEMAS = RAW / "folio" / "schemas"


def dataset_rows(real_dataset, n=4):
    return load_jsonl(real_dataset / "openai" / "test.jsonl")[:n]


def test_inputs_are_read_and_bad_lines_reported_by_number(real_dataset, tmp_path):
    rows = dataset_rows(real_dataset)
    users = [r["messages"][1]["content"] for r in rows]
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text("\n".join([
        json.dumps({"description": users[0]}),
        '{"description": "broken',
        json.dumps({"prompt": users[1]}),
        json.dumps({"title": "no description here"}),
        json.dumps(rows[2]),  # an OpenAI chat row from the dataset, answer included
        json.dumps({"description": "  "}),
    ]) + "\n")
    csv = tmp_path / "in.csv"
    csv.write_text('id,Description\n1,"' + users[3].replace('"', '""') + '"\n2,\n')
    items = list(read_requests(["For a title given on the command line."], jsonl, SYSTEM)) + list(
        read_requests([], csv, SYSTEM))
    assert [type(i) for i in items] == [Request, Request, BadInput, Request, BadInput, Request, BadInput, Request,
                                        BadInput]
    assert items[0].where == "description 1"
    assert items[2].where == f"{jsonl}: line 2" and "invalid JSON" in items[2].reason
    assert items[4].where == f"{jsonl}: line 4" and "no 'description'" in items[4].reason
    assert items[6].where == f"{jsonl}: line 6"
    assert items[7].where == f"{csv}: line 2"
    assert items[8].where == f"{csv}: line {3 + users[3].count(chr(10))}"  # the row after a multi-line cell
    assert [i.messages for i in (items[1], items[3], items[7])] == [
        conversation(SYSTEM, users[0]), conversation(SYSTEM, users[1]), conversation(SYSTEM, users[3])]
    assert items[5].messages == rows[2]["messages"][:-1]  # the chat row without its answer


def test_prompt_is_the_training_prompt(real_dataset, tiny_base):
    from folio_llm.models import load_tokenizer
    from folio_llm.models import prompt_text

    tokenizer = load_tokenizer(str(tiny_base))
    for row in dataset_rows(real_dataset):
        [request] = read_requests([row["messages"][1]["content"]], None, SYSTEM)
        assert prompt_text(tokenizer, request.messages) == prompt_text(tokenizer, row["messages"])


def test_csv_without_a_description_column_is_a_one_line_error(tmp_path):
    (tmp_path / "in.csv").write_text("id,title\n1,x\n")
    result = CliRunner().invoke(main, ["predict", "--input", str(tmp_path / "in.csv"), "--model", str(tmp_path),
                                       "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: {tmp_path / 'in.csv'}: no 'description' or 'prompt' column (columns: id, title)"]


def test_default_model_is_what_the_pipeline_made(tiny_base, tmp_path):
    models = tmp_path / "models"
    gguf = models / "gguf" / "folio-llm-q8_0.gguf"
    kw = dict(merged=models / "merged", base=models / "base", adapter=models / "adapter")
    with pytest.raises(ValueError, match="no model found"):
        default_model(None, gguf, **kw)
    shutil.copytree(tiny_base, models / "base")
    assert default_model(None, gguf, **kw) == (models / "base", None)
    (models / "adapter").mkdir()
    (models / "adapter" / "adapter_config.json").write_text("{}")
    assert default_model("transformers", gguf, **kw) == (models / "base", models / "adapter")
    shutil.copytree(tiny_base, models / "merged")
    assert default_model(None, gguf, **kw) == (models / "merged", None)
    with pytest.raises(ValueError, match="run `dvc repro export`"):
        default_model("llama.cpp", gguf, **kw)
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF")
    assert default_model("llama.cpp", gguf, **kw) == (gguf, None)


def test_folio_ready_records_validate_against_the_instance_schema(real_dataset):
    mapper = FolioMapper(REFERENCE, SCHEMAS)
    for row in dataset_rows(real_dataset, 30):
        outcome = to_record(row["messages"][-1]["content"], mapper)
        assert outcome.error is None and outcome.warnings == [], outcome
        assert mapper.schema.is_valid(outcome.record)
        assert outcome.record["source"] == "FOLIO"
        label = json.loads(row["messages"][-1]["content"])["instanceTypeText"]
        assert outcome.record["instanceTypeId"] == mapper.reference.id_for("instance-types", label)


def test_an_unknown_label_is_reported_never_invented(real_dataset):
    mapper = FolioMapper(REFERENCE, SCHEMAS)
    answers = [json.loads(row["messages"][-1]["content"]) for row in dataset_rows(real_dataset, 30)]
    record = next(a for a in answers if a.get("contributors"))
    record["instanceTypeText"] = "Clay tablet"
    record["contributors"][0]["contributorNameTypeText"] = "Pen name"
    outcome = to_record(json.dumps(record), mapper)
    assert outcome.record is None  # an Instance needs an instance type: none is made up
    assert outcome.error == ("not a valid FOLIO Instance: contributors/0: 'contributorNameTypeId' is a required "
                             "property; <root>: 'instanceTypeId' is a required property")
    assert outcome.warnings == [
        "contributors[0].contributorNameTypeText: 'Pen name' matches no contributor-name-types entry in the "
        "reference data (left out)",
        "instanceTypeText: 'Clay tablet' matches no instance-types entry in the reference data (left out)"]


def test_a_cut_answer_keeps_its_whole_fields_with_a_warning(real_dataset):
    answer = dataset_rows(real_dataset, 1)[0]["messages"][-1]["content"]
    record = json.loads(answer)
    cut = answer[:answer.index('"languages"') + 14]  # stopped inside the languages list
    outcome = to_record(cut)
    assert outcome.record == {k: v for k, v in record.items()
                              if k not in ("languages", "instanceTypeText", "modeOfIssuanceText")}
    assert outcome.warnings == ["the answer was cut off (loop or token limit): kept up to its last whole field"]


def test_an_answer_that_is_not_json_is_rejected_with_the_reason(tiny_base, tmp_path):
    """An untrained tiny model writes no JSON: the description is reported, nothing is printed."""
    params = tmp_path / "params.yaml"
    params.write_text("eval: {max_new_tokens: 6}\n")
    result = CliRunner().invoke(main, ["predict", "For Vacancies in certain judgeships.", "--model", str(tiny_base),
                                       "--params", str(params)])
    assert result.exit_code == 1 and result.stdout == ""
    lines = [line for line in result.stderr.splitlines() if line.startswith(("rejected", "error"))]
    assert len(lines) == 2
    assert lines[0].startswith("rejected: description 1: the model's answer is not a JSON object: ")
    assert lines[1] == "error: no record written (reasons above)"
    assert "Traceback" not in result.output


def test_backend_and_model_must_agree(tiny_base, tmp_path):
    result = CliRunner().invoke(main, ["predict", "x", "--model", str(tiny_base), "--backend", "llama.cpp",
                                       "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "cannot load" in result.output and len(result.output.splitlines()) == 1


# ---------------------------------------------------------------------------------------
# whole runs with the real SmolLM2. The untuned model writes no record of its own, so each input
# row is a chat row that asks it to repeat a real record's JSON, under the JSON grammar: it gives
# the record back, and everything after generation sees a real model's real output. (Records 1
# and 6 of the test split come back exactly, through both backends.)


def copy_row(system_prompt, answer: str) -> dict:
    return {"messages": [{"role": "system", "content": system_prompt},
                         {"role": "user", "content": "Repeat this text exactly, with nothing else:\n" + answer}]}


def copied_answers(real_dataset):
    return repeatable_records(real_dataset, 2)


@pytest.mark.slow
def test_batch_with_a_bad_line_reports_it_and_finishes_the_rest(smollm2_base, real_dataset, tmp_path):
    first, second = copied_answers(real_dataset)
    lines = [json.dumps(copy_row(SYSTEM, json.dumps(first, ensure_ascii=False, separators=(",", ":")))),
             '{"messages": [', json.dumps({"title": "x"}),
             json.dumps(copy_row(SYSTEM, json.dumps(second, ensure_ascii=False, separators=(",", ":"))))]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, [
        "predict", "--input", str(source), "--model", str(smollm2_base), "--constrained", "--out",
        str(tmp_path / "out.jsonl"), "--rejects", str(tmp_path / "rejects.jsonl"), "--params",
        str(tmp_path / "none.yaml")])
    assert result.exit_code == 0, result.output
    assert f"rejected: {source}: line 2: invalid JSON" in result.stderr
    assert f"rejected: {source}: line 3: no 'description', 'prompt' or 'messages' key with text" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "4 read, 2 written, 2 rejected"
    assert load_jsonl(tmp_path / "out.jsonl") == [first, second]
    assert [r["where"] for r in load_jsonl(tmp_path / "rejects.jsonl")] == [f"{source}: line 2", f"{source}: line 3"]


def unknown_label_requests(real_dataset, tmp_path):
    """Two requests to repeat a record, the second's instance type one the tenant lacks."""
    known, unknown = copied_answers(real_dataset)
    unknown["instanceTypeText"] = "Clay tablet"
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(copy_row(SYSTEM, json.dumps(a, ensure_ascii=False, separators=(",", ":"))))
                              + "\n" for a in (known, unknown)))
    return known, unknown, source


def predict_folio_ready(model, source, params):
    return CliRunner().invoke(main, [
        "predict", "--input", str(source), "--model", str(model), "--constrained", "--folio-ready",
        "--reference-data", str(REFERENCE), "--schemas", str(SCHEMAS), "--params", str(params)])


@pytest.mark.slow
def test_folio_ready_through_llama_cpp(smollm2_gguf, real_dataset, tmp_path):
    """With the type labels left free (eval.tenant_labels off), a label the tenant lacks is
    reported and left out, and the record FOLIO would refuse is rejected with the reason."""
    known, unknown, source = unknown_label_requests(real_dataset, tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text("eval:\n  tenant_labels: false\n")
    result = predict_folio_ready(smollm2_gguf, source, params)
    assert result.exit_code == 0, result.output
    [record] = [json.loads(line) for line in result.stdout.splitlines()]
    mapper = FolioMapper(REFERENCE, SCHEMAS)
    assert mapper.schema.errors(record) == []
    assert record["title"] == known["title"] and record["source"] == "FOLIO"
    assert record["instanceTypeId"] == mapper.reference.id_for("instance-types", known["instanceTypeText"])
    assert (f"warning: {source}: line 2: instanceTypeText: 'Clay tablet' matches no instance-types entry in the "
            "reference data (left out)") in result.stderr
    assert f"rejected: {source}: line 2: not a valid FOLIO Instance: <root>: 'instanceTypeId' is a required " \
           "property" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_tenant_labels_keep_every_type_label_to_the_reference_data(smollm2_gguf, real_dataset, tmp_path):
    """The default (eval.tenant_labels): asked to repeat a label the tenant lacks, the model can
    only write one of the tenant's, so both records map to UUIDs and FOLIO takes them."""
    known, unknown, source = unknown_label_requests(real_dataset, tmp_path)
    result = predict_folio_ready(smollm2_gguf, source, tmp_path / "none.yaml")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    mapper = FolioMapper(REFERENCE, SCHEMAS)
    assert [r["title"] for r in records] == [known["title"], unknown["title"]]
    assert all(mapper.schema.errors(r) == [] for r in records)
    instance_types = {entry["id"] for entry in mapper.reference.kind("instance-types")}
    assert records[1]["instanceTypeId"] in instance_types
    assert "matches no" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "2 read, 2 written, 0 rejected"


@pytest.mark.slow
def test_post_is_a_dry_run_until_yes_and_then_creates_the_instance(smollm2_gguf, real_dataset, tmp_path,
                                                                   monkeypatch):
    from folio_server import FolioServer, Tenant

    [known, _] = copied_answers(real_dataset)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(copy_row(SYSTEM, json.dumps(known, ensure_ascii=False, separators=(",", ":")))) + "\n")
    args = ["predict", "--input", str(source), "--model", str(smollm2_gguf), "--constrained", "--folio-ready",
            "--reference-data", str(REFERENCE), "--schemas", str(SCHEMAS), "--params", str(tmp_path / "none.yaml"),
            "--post"]
    tenant = Tenant([], {}, {}, "fs01", "cataloger", "s3cret-Pw")
    with FolioServer(tenant) as url:
        for name, value in (("FOLIO_URL", url), ("FOLIO_TENANT", "fs01"), ("FOLIO_USERNAME", "cataloger"),
                            ("FOLIO_PASSWORD", "s3cret-Pw")):
            monkeypatch.setenv(name, value)
        dry = CliRunner().invoke(main, args)
        assert dry.exit_code == 0, dry.output
        assert "dry run (add --yes to send):\nPOST /instance-storage/instances" in dry.stderr
        assert tenant.created == []
        sent = CliRunner().invoke(main, args + ["--yes"])
        assert sent.exit_code == 0, sent.output
    [created] = tenant.created
    assert created["title"] == known["title"] and created["source"] == "FOLIO"
    assert f"created instance {created['id']}" in sent.stderr
    assert "s3cret-Pw" not in dry.output + sent.output
    refused = CliRunner().invoke(main, [a for a in args if a != "--folio-ready"])
    assert refused.exit_code == 2 and "--post needs --folio-ready" in refused.output
