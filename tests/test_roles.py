"""Roles only where the description says them (folio_llm.roles), on the real sample records as
the dataset stage renders them, roles told and untold."""
import json

import pytest

from folio_llm.params import parse_params
from folio_llm.prompts import PromptRenderer
from folio_llm.roles import role_said, roles_from_words

BY_FOR_AUTHOR = {"oneline", "sentence"}  # styles that put "by" before an author and before a name without a role


def _author(role) -> bool:
    return bool(role) and role.lower().rstrip(".") == "author"


def _rendered(record: dict, style: str, roles: float):
    dataset = {"styles": {style: 1}, "tell": {"roles": roles, "natural_names": 0.0}}
    return PromptRenderer(parse_params({"dataset": dataset}).dataset, 7).render(record, "x")


def _roles(answer: str) -> list:
    return [c.get("contributorTypeText") for c in json.loads(answer).get("contributors", [])]


@pytest.mark.parametrize("style", ["clauses", "oneline", "isbd", "labels", "sentence"])
def test_told_roles_stay_and_untold_ones_go(sample_records, style):
    with_roles = [r for r in sample_records if any(c.get("contributorTypeText") for c in r.get("contributors", []))]
    assert len(with_roles) >= 10
    for record in with_roles:
        answer = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        told = _rendered(record, style, 1.0)
        assert told.roles_told
        kept = _roles(roles_from_words(answer, told.user))
        for role, left in zip(_roles(answer), kept):
            # every role said, but an author's bare "by"
            assert left == (None if _author(role) and style in BY_FOR_AUTHOR else role), (role, told.user)
        if style not in BY_FOR_AUTHOR:
            assert roles_from_words(answer, told.user) == answer  # nothing to take out: byte for byte
        untold = _rendered(record, style, 0.0)
        assert _roles(roles_from_words(answer, untold.user)) == [None] * len(kept), untold.user


def test_a_role_is_said_by_its_word_its_phrase_or_a_citations_abbreviation():
    assert role_said("Editor", "jazz standards / edited by m. levine.")
    assert not role_said("Author", "jazz standards / by m. levine.")  # authors and others alike
    assert role_said("Editor", "levine, m. (ed.). (1989). the jazz piano book.")
    assert role_said("Author", "title: x\nauthor: \nplace: y")
    assert not role_said("Author", "title: x\nname: \nplace: y")
    assert not role_said("Illustrator", "pictures of australia, illustrations.")  # a word inside another is none
    assert not role_said("Editor", "jazz piano. 2nd ed. petaluma, 1989.")  # an edition's "ed."
    assert role_said("", "anything")


def test_a_name_holding_a_role_word_says_nothing_and_no_json_is_left_as_it_is():
    answer = '{"title":"T","contributors":[{"name":"ELA, author","contributorTypeText":"Author"}]}'
    assert _roles(roles_from_words(answer, "T. Name: ELA, author")) == [None]
    assert roles_from_words("not json", "Author: X") == "not json"
    assert roles_from_words('{"title":"T"}', "T") == '{"title":"T"}'


def test_evaluate_scores_the_answers_without_the_roles_their_descriptions_do_not_say(real_dataset):
    """The evaluate stage with eval.roles_need_words, on real test rows answered by their own
    references: the roles of rows that tell none go (contributor types fall there only), the
    told fields' scores stay, and nothing counts as a cut answer."""
    from folio_llm.checking import AnswerChecks
    from folio_llm.evaluation.run import score_answers
    from folio_llm.jsonl import load_jsonl

    rows = load_jsonl(real_dataset / "openai" / "test.jsonl")
    meta = load_jsonl(real_dataset / "meta" / "test.jsonl")
    answers = [m["reference"] for m in meta]
    plain = score_answers(answers, rows, meta, seconds=1.0, output_tokens=None)
    ruled = score_answers(answers, rows, meta, seconds=1.0, output_tokens=None,
                          checks=AnswerChecks(roles_need_words=True))
    assert plain["fields"]["contributor_types"]["score"] == 1.0
    assert ruled["fields"]["contributor_types"]["score"] < 1.0
    assert ruled["macro_transcribed"] == plain["macro_transcribed"] and ruled["macro"] == plain["macro"]
    assert ruled["generation"]["cut_and_closed"] == 0
