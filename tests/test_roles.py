"""Roles only where the description says them (folio_llm.roles), on the real sample records as
the dataset stage renders them, roles told and untold."""
import json

import pytest

from folio_llm.params import parse_params
from folio_llm.prompts import PromptRenderer
from folio_llm.roles import role_said, roles_from_words

BY_FOR_AUTHOR = {"oneline", "sentence"}  # styles that put "by" before an author and before a name without a role


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
        assert roles_from_words(answer, told.user) == answer, told.user  # every role said: byte for byte
        untold = _rendered(record, style, 0.0)
        kept = _roles(roles_from_words(answer, untold.user))
        for role, left in zip(_roles(answer), kept):
            if role and role.lower().rstrip(".") == "author" and style in BY_FOR_AUTHOR:
                assert left == role, untold.user  # "by X" says author
            else:
                assert left is None, (role, untold.user)


def test_a_role_is_said_by_its_word_its_phrase_or_a_citations_abbreviation():
    assert role_said("Editor", "jazz standards / edited by m. levine.")
    assert role_said("Author", "jazz standards / by m. levine.")
    assert not role_said("Author", "jazz standards. published by sher music, petaluma.")
    assert role_said("Editor", "levine, m. (ed.). (1989). the jazz piano book.")
    assert role_said("Author", "title: x\nauthor: \nplace: y")
    assert not role_said("Author", "title: x\nname: \nplace: y")
    assert not role_said("Illustrator", "pictures of australia, illustrations.")  # a word inside another is none
    assert role_said("", "anything")


def test_a_name_holding_a_role_word_says_nothing_and_no_json_is_left_as_it_is():
    answer = '{"title":"T","contributors":[{"name":"ELA, author","contributorTypeText":"Author"}]}'
    assert _roles(roles_from_words(answer, "T. Name: ELA, author")) == [None]
    assert roles_from_words("not json", "Author: X") == "not json"
    assert roles_from_words('{"title":"T"}', "T") == '{"title":"T"}'
