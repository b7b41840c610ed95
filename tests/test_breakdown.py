"""Scores per description style, invented values and the majority baselines, on real test rows
with made-up answers (no model needed to check the arithmetic)."""
import json

from folio_llm.evaluation.breakdown import by_style, invented, inferred_vs_majority, majority_values
from folio_llm.evaluation.scoring import score_record
from folio_llm.jsonl import load_jsonl
from folio_llm.params import parse_params

UNTOLD = parse_params({}).dataset.untold_targets


def rows(real_dataset, split="test"):
    answers = [r["messages"][-1]["content"] for r in load_jsonl(real_dataset / "openai" / f"{split}.jsonl")]
    return answers, load_jsonl(real_dataset / "meta" / f"{split}.jsonl")


def test_by_style_has_a_row_per_style_and_copied_answers_score_full_marks_on_told_fields(real_dataset):
    answers, meta = rows(real_dataset)
    references = [m["reference"] for m in meta]
    table = by_style([score_record(a, r) for a, r in zip(answers, references)], meta, n_boot=200)
    assert set(table) == {m["style"] for m in meta} and len(table) >= 4
    assert sum(entry["n"] for entry in table.values()) == len(meta)
    for entry in table.values():
        assert entry["macro_transcribed"] == 1.0  # the answer copies every told field
        low, high = entry["macro_ci"]
        assert low <= entry["macro"] <= high


def test_leaving_out_an_untold_field_is_no_free_hit(real_dataset):
    """The answer holds no classification that the description did not give; the reference
    (the whole record) does, so that field scores as missing."""
    answers, meta = rows(real_dataset)
    pairs = [(a, m) for a, m in zip(answers, meta) if "classifications" in m["inferred"]]
    assert pairs
    for answer, row in pairs:
        detail = score_record(answer, row["reference"])
        assert detail["fields"]["classifications"]["outcome"] == "missing"


def test_invented_counts_untold_values_in_answers(real_dataset):
    answers, meta = rows(real_dataset)
    parsed = [json.loads(a) for a in answers]
    assert all(entry["invented"] == 0 for entry in invented(parsed, meta, UNTOLD).values())
    guessing = [{**p, "classifications": [{"classificationNumber": "QA76"}]} for p in parsed]
    table = invented(guessing, meta, UNTOLD)
    untold = sum("classifications" in m["inferred"] for m in meta)
    assert table["classifications"] == {"untold_rows": untold, "invented": untold, "rate": 1.0}
    assert "languages" not in table  # an untold target is inferred, not invented


def test_inferred_fields_sit_beside_the_training_majority(real_dataset):
    train_answers = [json.loads(a) for a in rows(real_dataset, "train")[0]]
    majority = majority_values(train_answers)
    assert majority["instanceTypeText"] == "text" and majority["languages"] == ["eng"]
    answers, meta = rows(real_dataset)
    references = [json.loads(m["reference"]) for m in meta]
    perfect = [score_record(r, r) for r in references]
    table = inferred_vs_majority(perfect, references, meta, majority)
    assert {"languages", "instanceTypeText", "modeOfIssuanceText", "contributor_types"} <= set(table)
    for entry in table.values():
        assert entry["model"] == 1.0 and 0 <= entry["majority"] <= 1 and entry["gap"] == round(1 - entry["majority"], 4)
    assert table["instanceTypeText"]["majority"] > 0.5  # most records are text
    # answers with the records' names and every role the majority's are the majority's answer: no gap
    typed = [{**r, "contributors": [{**c, "contributorTypeText": majority["contributor_types"]}
                                    for c in r.get("contributors", [])]} for r in references]
    table = inferred_vs_majority([score_record(json.dumps(a), r) for a, r in zip(typed, references)],
                                 references, meta, majority)
    assert table["contributor_types"]["gap"] == 0 and table["contributor_types"]["model"] < 1
