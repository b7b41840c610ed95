"""The description's text no field holds (folio_llm.unused), on real rows of the dataset stage:
listed beside the record by the check, counted by evaluate's review."""
import json

import pytest

from folio_llm.checking import AnswerChecks, check_answer
from folio_llm.jsonl import load_jsonl
from folio_llm.params import parse_params
from folio_llm.sections.dataset import CSL_STYLES
from folio_llm.templates import template_words
from folio_llm.unused import shows_missing, unused_text, words

PARAMS = parse_params({})
TEMPLATE = template_words(PARAMS.dataset)


def rows_with_meta(real_dataset, split: str = "train"):
    rows = load_jsonl(real_dataset / "openai" / f"{split}.jsonl")
    meta = load_jsonl(real_dataset / "meta" / f"{split}.jsonl")
    return [(row["messages"][-2]["content"], json.loads(row["messages"][-1]["content"]), m)
            for row, m in zip(rows, meta)]


def test_the_template_words_are_the_styles_own_and_no_value(real_dataset):
    assert {"title", "published", "edited", "subjects", "series", "extent"} <= TEMPLATE
    assert not TEMPLATE & {"english", "zyx1", "library", "press"}


def test_a_reference_answer_leaves_nothing_of_its_description_unused(real_dataset):
    listed: dict[str, list[int]] = {}
    for description, target, meta in rows_with_meta(real_dataset):
        listed.setdefault(meta["style"], []).append(bool(unused_text(description, target, TEMPLATE)))
    assert len(listed) >= 8
    for style, flags in listed.items():
        if style not in CSL_STYLES:
            assert not any(flags), style
    # a citation's "J. Johnston" is left over where the reference names "Johnston, Judy" (the
    # publisher "Judy Johnston" tells the rest)
    cited = [flag for style, flags in listed.items() if style in CSL_STYLES for flag in flags]
    assert sum(cited) <= 0.15 * len(cited), (sum(cited), len(cited))


def test_a_name_an_answer_leaves_out_is_listed_as_told(real_dataset):
    for description, target, meta in rows_with_meta(real_dataset):
        names = [c["name"] for c in target.get("contributors") or []]
        if meta["style"] in ("labels", "clauses") and len(names) >= 2 and len(words(names[-1])) >= 2 \
                and description.count(names[-1].split(",")[0]) == 1:  # a name told once (not also the publisher)
            break
    else:
        pytest.fail("no labelled real row with two names")
    answer = {**target, "contributors": target["contributors"][:-1]}
    runs = unused_text(description, answer, TEMPLATE)
    assert runs, description
    assert shows_missing(runs, answer, target, "contributors", TEMPLATE)
    assert not shows_missing(runs, answer, target, "title", TEMPLATE)  # the title is all there


def test_names_in_natural_order_and_languages_in_words_count_as_used():
    record = {"title": "Messiah", "contributors": [{"name": "Handel, George Frideric, 1685-1759"}],
              "languages": ["eng", "ger"]}
    assert unused_text("Messiah. By George Frideric Handel, 1685-1759. In English and German.", record, TEMPLATE) == []
    assert unused_text("Messiah / Handel, George Frideric, 1685-1759. Language: English", record, TEMPLATE) == []
    assert unused_text("Messiah. By George Frideric Handel. Series: Great oratorios.", record,
                       TEMPLATE) == ["Great oratorios"]
    # a language left out is shown by its name, though the record holds its code
    runs = unused_text("Messiah. In English and German.", {**record, "languages": ["eng"]}, TEMPLATE)
    assert runs == ["German"] and shows_missing(runs, {**record, "languages": ["eng"]}, record, "languages", TEMPLATE)


def test_the_check_lists_the_unused_text_beside_the_record(real_dataset):
    description, target, _ = next((d, t, m) for d, t, m in rows_with_meta(real_dataset, "test") if t.get("subjects"))
    answer = {**target, "subjects": target["subjects"][:-1]}
    last = target["subjects"][-1]["value"]
    checked = check_answer(json.dumps(answer), None, {}, 0.75, description, TEMPLATE)
    assert checked.unused and any(last in run or run in last for run in checked.unused)
    assert any(line.startswith("check what the record leaves out") for line in checked.lines())
    assert checked.as_json()["unused"] == checked.unused
    assert check_answer(json.dumps(target), None, {}, 0.75, description, TEMPLATE).unused == []
    assert check_answer(json.dumps(answer), None, {}, 0.75, description, None).unused == []  # review_unused off


def test_evaluate_counts_a_wrong_field_the_unused_text_shows_as_flagged(real_dataset):
    from folio_llm.evaluation.run import score_answers
    from folio_llm.splits import load_test_rows

    rows, meta = load_test_rows(real_dataset / "openai" / "test.jsonl")
    answers = [json.loads(row["messages"][-1]["content"]) for row in rows]
    cut = next(i for i, a in enumerate(answers) if len(a.get("subjects") or []) >= 2)
    answers[cut]["subjects"] = answers[cut]["subjects"][:-1]
    sure = [{name: 1.0 for name in ("title", "contributors", "subjects", "publisher", "place")} for _ in rows]
    result = score_answers([json.dumps(a) for a in answers], rows, meta, seconds=1.0, output_tokens=None,
                           confidences=sure, checks=AnswerChecks(0.75, template=TEMPLATE))
    review = result["review"]
    assert review["fields"]["subjects"]["recall"] == 1.0 and review["wrong_in_unused_only"] >= 1
    assert review["false_alarms"] == 0.0  # the unused text flags no right field
    assert review["unused"]["listed"] >= 1 and review["unused"]["answers"] == len(rows)
    without = score_answers([json.dumps(a) for a in answers], rows, meta, seconds=1.0, output_tokens=None,
                            confidences=sure, checks=AnswerChecks(0.75))
    assert without["review"]["fields"]["subjects"]["recall"] == 0.0 and "unused" not in without["review"]
