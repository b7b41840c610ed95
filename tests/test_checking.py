"""One answer -> record check for predict, the page and evaluation: the same result, shown three ways."""
import json

from conftest import RAW, REFERENCE
from folio_llm.checking import CUT_OFF, FolioMapper, check_answer
from folio_llm.evaluation.scoring import score_record
from folio_llm.jsonl import load_jsonl
from folio_llm.predict import to_record

SCHEMAS = RAW / "folio" / "schemas"


def test_predict_the_page_and_evaluation_read_one_check(real_dataset):
    mapper = FolioMapper(REFERENCE, SCHEMAS)
    rows = load_jsonl(real_dataset / "openai" / "test.jsonl")
    record = json.loads(rows[0]["messages"][-1]["content"])
    record["instanceTypeText"] = "Clay tablet"  # no such instance type: left out, and FOLIO needs one
    answer = json.dumps(record, ensure_ascii=False)
    cut = answer[:answer.index('"modeOfIssuanceText"') + 25]  # stopped inside the last field
    checked = check_answer(cut, mapper)

    assert checked.record == {k: v for k, v in record.items() if k != "modeOfIssuanceText"}
    assert checked.cut_off and checked.valid is False
    assert checked.warnings[0] == {"field": "record", "path": "", "message": CUT_OFF}
    assert {"field": "instanceTypeText", "path": "instanceTypeText",
            "message": "'Clay tablet' matches no instance-types entry in the reference data (left out)"} \
        in checked.warnings
    assert {"field": "<root>", "path": "<root>", "message": "FOLIO schema: 'instanceTypeId' is a required property"} \
        in checked.warnings

    page = checked.as_json()
    assert (page["record"], page["valid"], page["warnings"], page["error"]) == \
        (checked.record, False, checked.warnings, None)

    outcome = to_record(cut, mapper)  # predict: lines, and no record FOLIO would refuse
    assert outcome.record is None and outcome.error == checked.error
    assert outcome.error.startswith("not a valid FOLIO Instance: <root>: 'instanceTypeId' is a required property")
    assert outcome.warnings == [CUT_OFF, "instanceTypeText: 'Clay tablet' matches no instance-types entry in the "
                                         "reference data (left out)"]

    detail = score_record(answer, rows[0]["messages"][-1]["content"], folio_schema=mapper.schema,
                          reference_data=mapper.reference)
    assert detail["folio_valid"] is False and detail["unknown_labels"] == checked.unknown


def test_an_answer_that_is_no_record_says_so_the_same_way_everywhere():
    checked = check_answer("I cannot catalog this item, sorry.")
    assert checked.record is None and checked.usable is None and checked.valid is None
    assert checked.error == "the model's answer is not a JSON object: 'I cannot catalog this item, sorry.'"
    assert checked.as_json()["error"] == checked.error == to_record("I cannot catalog this item, sorry.").error
