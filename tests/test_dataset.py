import json

from folio_llm.dataset import build_examples, dataset_report, openai_problems, write_layouts
from folio_llm.params import parse_params
from folio_llm.sections.dataset import CSL_STYLES
from folio_llm.prompts import LAYOUTS, PromptRenderer
import pytest


@pytest.fixture(scope="module")
def records(sample_records):
    return sample_records


def test_seed_example_shape():
    params = parse_params({"dataset": {"clauses": {
        "title": ["For {title}"], "publication": ["Published[ in {date}][ by {publisher}][, {place}]"],
        "subjects": ["Subjects are {subjects}."]}, "prompt_fields": ["title", "publication", "subjects"],
        "styles": {"clauses": 1}, "tell": {"line_breaks": 0}}})
    record = {
        "title": "Vacancies in certain judgeships.",
        "subjects": [{"value": "Courts"}, {"value": "Judges"}, {"value": "United States--Officials and employees"}],
        "publication": [{"publisher": "[publisher not identified]", "place": "Washington", "dateOfPublication": "1935"}],
        "instanceTypeText": "text",
        "modeOfIssuanceText": "single unit",
    }
    example = PromptRenderer(params.dataset, 42).render(record, "1")
    assert example.system == "As an expert cataloger, you will create the FOLIO inventory JSON record."
    assert example.user == (
        "For Vacancies in certain judgeships. Published in 1935 by [publisher not identified], Washington. "
        "Subjects are Courts; Judges; United States--Officials and employees."
    )
    assert json.loads(example.assistant) == {k: record[k] for k in params.dataset.target_fields if k in record}
    assert example.transcribed == ["title", "publication", "subjects"]
    assert example.inferred == ["instanceTypeText", "modeOfIssuanceText"]


def test_clauses_style_puts_each_clause_on_its_own_line(records):
    """Titles and names hold '. ', so only a line break tells the model where a clause ends."""
    params = parse_params({"dataset": {"styles": {"clauses": 1},
                                       "tell": {"line_breaks": 1, "languages": 0, "classifications": 0}}})
    renderer = PromptRenderer(params.dataset, 42)
    record = next(r for r in records if ". " in r["title"] and r.get("publication"))
    example = renderer.render(record, "x")
    lines = example.user.split("\n")
    assert any(line.endswith(record["title"].rstrip(".") + ".") for line in lines[:1])
    assert len(lines) == len(example.transcribed) + len(record["publication"]) - 1


def test_list_values_are_not_joined_with_commas_in_the_clauses_style(records):
    params = parse_params({"dataset": {"styles": {"clauses": 1}}})
    renderer = PromptRenderer(params.dataset, 42)
    record = next(r for r in records if any("," in s["value"] for s in r.get("subjects", [])))
    example = renderer.render(record, "x")
    joined = "; ".join(s["value"] for s in record["subjects"])
    assert joined in example.user


def test_targets_are_strict_json_with_target_keys_in_order(records):
    params = parse_params({})
    renderer = PromptRenderer(params.dataset, 7)
    for index, record in enumerate(records):
        example = renderer.render(record, str(index))
        parsed = json.loads(example.assistant)
        order = [f for f in params.dataset.target_fields if f in record]
        told_or_inferable = set(example.transcribed) | set(params.dataset.untold_targets)
        assert list(parsed) == [f for f in order if f in told_or_inferable]
        if example.style in CSL_STYLES:  # a citation is scored on the fields it tells
            order = [f for f in order if f in example.transcribed or f not in params.dataset.prompt_fields]
        assert list(example.reference) == order  # evaluation scores against the whole record
        assert set(example.transcribed) | set(example.inferred) == set(order)
        assert not openai_problems(example.messages, params.dataset.max_chars)


def test_phrasings_vary_with_the_seed_but_not_between_runs(records):
    params = parse_params({})
    first = [PromptRenderer(params.dataset, 1).render(r, str(i)).user for i, r in enumerate(records)]
    again = [PromptRenderer(params.dataset, 1).render(r, str(i)).user for i, r in enumerate(records)]
    other = [PromptRenderer(params.dataset, 2).render(r, str(i)).user for i, r in enumerate(records)]
    assert first == again
    assert first != other
    assert len({u.split(" ")[0] for u in first}) > 1  # several title phrasings in use


def test_split_dedup_and_layouts(records, tmp_path):
    params = parse_params({})
    duplicated = records + records[:5]
    result = build_examples(duplicated, params.dataset, 42)
    assert result.duplicates_removed == 5
    counts = {k: len(v) for k, v in result.splits.items()}
    assert sum(counts.values()) == len(records)
    assert all(0.03 * len(records) < counts[name] < 0.2 * len(records) for name in ("valid", "test")), counts
    report = dataset_report(result, params.dataset)
    assert report["duplicates_across_splits"] == 0
    assert report["openai_checks"]["bad_roles"] == report["openai_checks"]["empty_content"] == 0
    write_layouts(result, tmp_path)
    for split, n in counts.items():
        for layout in (*LAYOUTS, "meta"):
            lines = (tmp_path / layout / f"{split}.jsonl").read_text().splitlines()
            assert len(lines) == n
        openai_row = json.loads((tmp_path / "openai" / f"{split}.jsonl").read_text().splitlines()[0])
        assert list(openai_row) == ["messages"]
        completion = json.loads((tmp_path / "completions" / f"{split}.jsonl").read_text().splitlines()[0])
        assert json.loads(completion["completion"]) == json.loads(openai_row["messages"][2]["content"])
        text = json.loads((tmp_path / "text" / f"{split}.jsonl").read_text().splitlines()[0])["text"]
        assert text.endswith(openai_row["messages"][2]["content"])


def test_each_record_keeps_its_split_and_its_row_in_a_larger_sample(records):
    """Samples are nested: a larger one holds every record of a smaller one. Each record's split
    and row come from the record alone, so no test or valid record of the smaller sample moves."""
    params = parse_params({}).dataset
    small = build_examples(records[::2], params, 42)
    large = build_examples(records, params, 42)
    where = {e.key: (name, e.messages) for name, rows in large.splits.items() for e in rows}
    assert all(small.splits.values())
    for name, rows in small.splits.items():
        for example in rows:
            assert where[example.key][0] == name
            if sum(str(r.get("hrid")) == example.key for r in records) == 1:  # the sample has two "inst000000000022"
                assert where[example.key][1] == example.messages
        larger = [e.key for e in large.splits[name]]
        assert [larger.index(e.key) for e in rows] == sorted(larger.index(e.key) for e in rows)  # same order


def test_same_params_give_byte_identical_files(records, tmp_path):
    params = parse_params({})
    for out in ("a", "b"):
        write_layouts(build_examples(records, params.dataset, 42), tmp_path / out)
    for path in (tmp_path / "a").rglob("*.jsonl"):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()


@pytest.mark.parametrize("values, expected", [
    ({"date": "©2022"}, "Publication: ©2022."),
    ({"date": "2022", "publisher": "P"}, "Publication: P, 2022."),
    ({"date": "2022", "publisher": "[publisher not identified]", "place": "X"}, "Publication: X : [publisher not identified], 2022."),
    ({"place": "Chicago, Ill."}, "Publication: Chicago, Ill."),
    ({}, None),
])
def test_optional_segments_leave_no_dangling_punctuation(values, expected):
    from folio_llm.clauses import render_clause

    assert render_clause("Publication:[ {place}][ : {publisher}][, {date}].", values) == expected


@pytest.mark.parametrize("values, expected", [
    ({"date": "2020", "publisher": "Paul Farina", "place": "Sunbury, Victoria"},
     "Published by Paul Farina; place: Sunbury, Victoria; date: 2020."),
    ({"place": "Sunbury, Victoria", "date": "2020"}, "Published; place: Sunbury, Victoria; date: 2020."),
    ({"publisher": "Blackwell Publishers."}, "Published by Blackwell Publishers."),
])
def test_labelled_publication_parts_keep_commas_apart(values, expected):
    """Publisher and place both hold commas, so the default phrasings label them."""
    from folio_llm.clauses import render_clause

    assert render_clause("Published[ by {publisher}][; place: {place}][; date: {date}].", values) == expected


def test_training_rows_leave_fields_out_of_description_and_target_alike(records):
    """With tell.leave_out, a training row's description tells some of its record's fields
    no more, and its target holds them no more either; valid and test rows are the rows of
    leave_out 0, byte for byte."""
    whole = build_examples(records, parse_params({}).dataset, 42)
    partial = build_examples(records, parse_params({"dataset": {"tell": {"leave_out": 0.3}}}).dataset, 42)
    for split in ("valid", "test"):
        assert [e.messages for e in partial.splits[split]] == [e.messages for e in whole.splits[split]]
    pairs = list(zip(whole.splits["train"], partial.splits["train"]))
    assert [a.key for a, _ in pairs] == [b.key for _, b in pairs]
    shorter = 0
    for full, fewer in pairs:
        assert fewer.target.get("title") == full.target.get("title")  # a title is always told
        left_out = set(full.transcribed) - set(fewer.transcribed)
        assert set(fewer.transcribed) <= set(full.transcribed)
        for field in left_out - set(parse_params({}).dataset.untold_targets):
            assert field not in fewer.target  # not told, not in the answer
        shorter += bool(left_out)
        if full.style in CSL_STYLES:  # a citation is scored on what it tells
            assert set(fewer.reference) <= set(full.reference)
        else:
            assert fewer.reference == full.reference  # the record itself is the same
    assert 0.5 * len(pairs) < shorter < len(pairs)


@pytest.mark.parametrize("style", ["clauses", "oneline", "isbd", "labels", "sentence"])
def test_roles_no_word_tells_leave_the_answer_when_untold_targets_says_so(records, style):
    """Without 'contributors.contributorTypeText' in dataset.untold_targets, names told without
    role words ('By Brenda Jackson') get no contributorTypeText in the answer; told roles stay,
    and the default keeps every role as before."""
    record = next(r for r in records if any(c.get("contributorTypeText") for c in r.get("contributors", [])))
    names_only = ["languages", "instanceTypeText", "modeOfIssuanceText"]

    def answer(roles: float, untold: list[str] | None = None):
        dataset = {"styles": {style: 1}, "tell": {"roles": roles}, **({"untold_targets": untold} if untold else {})}
        example = PromptRenderer(parse_params({"dataset": dataset}).dataset, 42).render(record, "x")
        return example, json.loads(example.assistant)["contributors"]

    example, contributors = answer(0.0, names_only)
    assert [c["name"] for c in contributors] == [c["name"] for c in record["contributors"]]
    assert not any("contributorTypeText" in c for c in contributors) and not example.roles_told
    example, contributors = answer(1.0, names_only)
    assert contributors == record["contributors"] and example.roles_told
    assert answer(0.0)[1] == record["contributors"]
