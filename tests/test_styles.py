"""Description styles on real records: each tells its fields verbatim, untold fields stay out of
the answer, and the write-up's own example comes out as the user wrote it."""
import json

import pytest

from folio_llm.params import ParamsError, parse_params
from folio_llm.params import STYLE_NAMES
from folio_llm.sections.dataset import CSL_STYLES
from folio_llm.prompts import PromptRenderer
from folio_llm.clauses import clean
from folio_llm.styles import natural_name

WRITE_UP = {  # the record behind the example in ../shared/seed/training-llms.md
    "title": "Vacancies in certain judgeships.",
    "subjects": [{"value": "Courts"}, {"value": "Judges"}, {"value": "United States--Officials and employees"},
                 {"value": "Electronic books"}],
    "publication": [{"publisher": "[publisher not identified]", "place": "Washington", "dateOfPublication": "1935"}],
    "instanceTypeText": "text", "modeOfIssuanceText": "single unit",
}


def renderer(**dataset):
    return PromptRenderer(parse_params({"dataset": dataset}).dataset, 42)


def told_values(record: dict, field: str) -> list[str]:
    """The strings a description must carry for ``field`` (names checked apart)."""
    value = record.get(field)
    if field == "title":
        return [clean(value)]
    if field == "publication":
        return [clean(p.get(k)) for p in value for k in ("publisher", "place", "dateOfPublication") if clean(p.get(k))]
    if field == "identifiers":
        return [clean(i["value"]) for i in value if clean(i.get("value"))]
    if field in ("subjects", "series"):
        return [v["value"].strip() for v in value]
    if field in ("editions", "physicalDescriptions"):
        return [v.strip() for v in value]
    return []


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_every_style_tells_its_fields_verbatim(sample_records, style):
    """What the copy constraint relies on: every told value of the answer is a span of the
    description (names apart, which natural order re-forms). A citation restates values (MLA
    capitalizes titles): its answer holds them as the citation writes them."""
    render = renderer(styles={style: 1}).render
    told_somewhere = set()
    for index, record in enumerate(sample_records):
        example = render(record, str(index))
        assert example.style == style and example.user
        answer = json.loads(example.assistant)
        for field in example.transcribed:
            told_somewhere.add(field)
            for value in told_values(answer, field):  # runs of spaces in a value are written as one
                assert " ".join(value.rstrip(" .").split()) in " ".join(example.user.split()), (style, field, value)
        for contributor in answer.get("contributors", []) if "contributors" in example.transcribed else []:
            words = natural_name(contributor["name"]).rstrip(" .,").split()
            assert all(word in example.user for word in words), (contributor["name"], example.user)
    expected = {"title", "contributors", "publication"}
    assert expected | ({"subjects", "identifiers"} if style not in CSL_STYLES else set()) <= told_somewhere


def test_the_write_up_example_in_its_own_style():
    users = {renderer(styles={"oneline": 1}).render(WRITE_UP, str(k)).user for k in range(12)}
    assert ("For Vacancies in certain judgeships. Published in 1935 by [publisher not identified], Washington "
            "Subjects are Courts, Judges, United States--Officials and employees, Electronic books.") in users


def test_isbd_paragraph_has_areas_and_responsibility():
    record = {**WRITE_UP, "contributors": [{"name": "Levine, Mark", "contributorNameTypeText": "Personal name",
                                            "contributorTypeText": "Editor"}],
              "physicalDescriptions": ["iii, 45 p. ; 23 cm."]}
    user = renderer(styles={"isbd": 1}, tell={"roles": 1, "natural_names": 1}).render(record, "1").user
    # the title as the record has it: names after a ' / ' would make its end a guess
    assert user.startswith("Vacancies in certain judgeships. — ") or user.startswith("Vacancies in certain judgeships. -- ")
    assert "Washington : [publisher not identified], 1935" in user and "iii, 45 p. ; 23 cm" in user
    assert "Names: Mark Levine (editor)." in user
    with_responsibility = {**record, "title": "The jazz piano book / Mark Levine."}
    assert renderer(styles={"isbd": 1}).render(with_responsibility, "1").user.startswith(
        "The jazz piano book / Mark Levine. -")


def test_prose_sets_the_title_apart_in_quotes():
    record = {**WRITE_UP, "contributors": [{"name": "Levine, Mark", "contributorNameTypeText": "Personal name"}]}
    user = renderer(styles={"sentence": 1}, tell={"roles": 0, "natural_names": 1}).render(record, "1").user
    assert user.startswith('"Vacancies in certain judgeships" by Mark Levine was published by '
                           "[publisher not identified] in Washington in 1935.")


def test_role_words_and_name_order_are_drawn_per_row():
    record = {**WRITE_UP, "contributors": [{"name": "Levine, Mark", "contributorNameTypeText": "Personal name",
                                            "contributorTypeText": "Editor"}]}
    told = renderer(styles={"labels": 1}, tell={"roles": 1, "natural_names": 1}).render(record, "1")
    assert "Editor: Mark Levine" in told.user.split("\n") and told.roles_told
    plain = renderer(styles={"labels": 1}, tell={"roles": 0, "natural_names": 0}).render(record, "1")
    assert "Name: Levine, Mark" in plain.user.split("\n") and not plain.roles_told
    # the answer keeps the record's form and the role either way
    assert json.loads(told.assistant)["contributors"] == json.loads(plain.assistant)["contributors"]


def test_a_classification_is_in_the_answer_only_when_the_description_gives_it(sample_records):
    with_numbers = [r for r in sample_records if r.get("classifications")]
    assert len(with_numbers) > 20
    render = renderer(tell={"classifications": 0.5}).render
    told = untold = 0
    for index, record in enumerate(with_numbers):
        example = render(record, str(index))
        answer = json.loads(example.assistant)
        if "classifications" in example.transcribed:
            told += 1
            assert answer["classifications"] == record["classifications"]
            for item in record["classifications"]:
                assert item["classificationNumber"] in example.user
        else:
            untold += 1
            assert "classifications" not in answer and "classifications" in example.inferred
        assert example.reference["classifications"] == record["classifications"]  # scored against it
    assert told and untold


def test_the_language_is_told_in_words_on_some_rows_and_always_answered(sample_records):
    records = [r for r in sample_records if r.get("languages") == ["eng"]]
    examples = [renderer(tell={"languages": 0.5}).render(r, str(i)) for i, r in enumerate(records)]
    told = [e for e in examples if "languages" in e.transcribed]
    assert 0 < len(told) < len(examples)
    assert all("English" in e.user for e in told)
    assert all(json.loads(e.assistant)["languages"] == ["eng"] for e in examples)  # inferred where not told


def test_default_styles_are_all_drawn_and_recorded_in_meta(sample_records):
    render = renderer().render
    metas = [render(r, str(i)).meta() for i, r in enumerate(sample_records)]
    assert {m["style"] for m in metas} == set(STYLE_NAMES)
    assert all(json.loads(m["reference"]) for m in metas)


@pytest.mark.parametrize("name, expected", [
    ("Levine, Mark", "Mark Levine"), ("Summers, Eden, 1982-", "Eden Summers, 1982-"),
    ("Victoria. Department of Environment", "Victoria. Department of Environment"), ("Smith, 1900-", "Smith, 1900-"),
])
def test_natural_name(name, expected):
    assert natural_name(name) == expected


@pytest.mark.parametrize("dataset, key", [
    ({"styles": {"haiku": 1}}, "dataset.styles"), ({"styles": {"isbd": 0}}, "dataset.styles"),
    ({"tell": {"roles": 1.5}}, "dataset.tell"),
])
def test_bad_style_settings_name_the_key(dataset, key):
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params({"dataset": dataset})
