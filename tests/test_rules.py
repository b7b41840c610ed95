"""RuleEngine against FOLIO's Java mapper output and on the real bibliographic file."""

import copy
import json
import unicodedata

import pymarc
import pytest
from conftest import BIBS, CONFORMANCE, RULES, load_benchmark

from folio_llm.marc.functions import FUNCTIONS, SPLIT_FUNCTIONS
from folio_llm.marc.rules import MappingRulesError, RuleEngine


@pytest.fixture(scope="module")
def rules():
    return json.loads(RULES.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def engine(rules, reference):
    return RuleEngine(rules, reference)


@pytest.fixture(scope="module")
def bibs():
    with open(BIBS, "rb") as fh:
        return list(pymarc.MARCReader(fh, to_unicode=True, force_utf8=True))


@pytest.fixture(scope="module")
def mapped(engine, bibs):
    return [engine.map(record) for record in bibs]


@pytest.fixture(scope="module")
def by_hrid(bibs, mapped):
    return {instance.get("hrid"): (record, instance) for record, instance in zip(bibs, mapped)}


def _record(*fields, leader="00000nam a2200000 i 4500"):
    record = pymarc.Record(leader=leader)
    for tag, *rest in fields:
        if tag < "010":
            record.add_field(pymarc.Field(tag=tag, data=rest[0]))
        else:
            indicators, pairs = rest
            subfields = [pymarc.Subfield(code, value) for code, value in pairs]
            record.add_field(pymarc.Field(tag=tag, indicators=list(indicators), subfields=subfields))
    return record


# --- conformance -------------------------------------------------------------------------


def test_conformance_with_java_mapper():
    conformance = load_benchmark("conformance")
    per_field, overall, mismatches = conformance.measure(CONFORMANCE)
    for name, score in per_field.items():
        print(f"{name}={score:.4f}")
    print(f"overall={overall:.4f}")
    for hrid, name, ours, theirs in mismatches:
        print(f"MISMATCH {hrid} {name}: ours={ours!r} golden={theirs!r}")
    assert overall >= 0.98
    assert min(per_field.values()) >= 0.9


def test_every_function_named_in_the_rules_is_implemented(rules):
    conformance_rules = json.loads((CONFORMANCE / "rules.json").read_text(encoding="utf-8"))
    names = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("conditions"), list):
                for cond in node["conditions"]:
                    names.update(n.strip() for n in cond["type"].split(","))
            if isinstance(node.get("subFieldSplit"), dict):
                assert node["subFieldSplit"]["type"] in SPLIT_FUNCTIONS
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(rules)
    walk(conformance_rules)
    assert names and names <= set(FUNCTIONS)


# --- the real file -----------------------------------------------------------------------


def test_maps_every_bib_record(bibs, mapped, engine):
    assert len(bibs) == 4909
    assert engine.unknown_functions == []
    assert all(instance["source"] == "MARC" for instance in mapped)
    with_title = sum(1 for instance in mapped if instance.get("title"))
    assert with_title >= 0.99 * len(mapped)


def test_reference_ids_resolve_across_the_file(bibs, mapped, reference):
    for record, instance in zip(bibs, mapped):
        assert reference.by_id("modes-of-issuance", instance.get("modeOfIssuanceId")), record
        assert reference.by_id("instance-types", instance.get("instanceTypeId")), record
        for contributor in instance["contributors"]:
            if "contributorTypeId" in contributor:
                assert reference.by_id("contributor-types", contributor["contributorTypeId"])
        for identifier in instance["identifiers"]:
            assert reference.by_id("identifier-types", identifier["identifierTypeId"])


def test_contributors_and_identifiers(by_hrid, reference):
    # 100 1\$aMcAlister, Merran,$eauthor. / 700 1\$aTeunissen, Coen,$eauthor. / 020 \\$a9781922478597$qPDF
    _, instance = by_hrid["8655727"]
    author = reference.id_for("contributor-types", "Author")
    personal = reference.id_for("contributor-name-types", "Personal name")
    first, second = instance["contributors"][:2]
    assert first == {"name": "McAlister, Merran", "contributorTypeId": author,
                     "contributorNameTypeId": personal, "primary": True}
    assert second["name"] == "Teunissen, Coen" and second["primary"] is False
    assert second["contributorTypeId"] == author
    isbn = reference.id_for("identifier-types", "ISBN")
    assert {"identifierTypeId": isbn, "value": "9781922478597 PDF"} in instance["identifiers"]
    assert instance["instanceTypeId"] == reference.id_for("instance-types", "txt")
    assert instance["modeOfIssuanceId"] == reference.id_for("modes-of-issuance", "single unit")
    assert instance["dates"] == {"dateTypeId": reference.id_for("instance-date-types", "s"), "date1": "2022"}
    # 020 \\$z9781876829582 is an invalid ISBN
    _, instance = by_hrid["7861386"]
    invalid = reference.id_for("identifier-types", "Invalid ISBN")
    assert {"identifierTypeId": invalid, "value": "9781876829582"} in instance["identifiers"]


def test_serial_with_links(by_hrid, reference):
    _, instance = by_hrid["8541907"]
    assert instance["modeOfIssuanceId"] == reference.id_for("modes-of-issuance", "serial")
    assert instance["publicationFrequency"] == ["Annual"]
    assert instance["publicationRange"] == ["Began with: 2016"]
    relations = [reference.label("electronic-access-relationships", e.get("relationshipId"))
                 for e in instance["electronicAccess"]]
    assert relations == ["Resource", "Related resource", "Related resource"]
    assert instance["electronicAccess"][0]["uri"] == "https://nla.gov.au/nla.obj-2873566493"


def test_880_becomes_the_field_its_subfield_6_names(by_hrid):
    # 880 10$6245-01$aมหาวิทยาลัยอุบลราชธานี =$bUbon Ratchathani University -> a 246 variant title
    _, instance = by_hrid["7130964"]
    titles = [t["alternativeTitle"] for t in instance["alternativeTitles"]]
    assert "มหาวิทยาลัยอุบลราชธานี = Ubon Ratchathani University" in titles
    title = unicodedata.normalize("NFC", instance["title"])  # the record is in decomposed form
    assert title == "Mahāwitthayālai ʻUbon Rātchathānī = Ubon Ratchathani University."


# --- rules drive the output --------------------------------------------------------------


def test_customized_rules_change_the_output(rules, reference, by_hrid):
    record, standard = by_hrid["8655727"]
    custom = copy.deepcopy(rules)
    custom["245"][0]["subfield"] = ["a"]  # title from $a only
    custom["245"][0]["rules"] = [{"conditions": [{"type": "trim_punctuation"}]}]
    custom["020"][0]["entity"][0]["rules"][0]["conditions"][0]["parameter"]["name"] = "Local identifier"
    custom["300"][0]["target"] = "administrativeNotes"  # physical description -> administrative note
    del custom["100"]
    instance = RuleEngine(custom, reference).map(record)
    assert standard["title"] != instance["title"] == record["245"]["a"].rstrip(" /:.")
    local = reference.id_for("identifier-types", "Local identifier")
    assert {"identifierTypeId": local, "value": "9781922478597 PDF"} in instance["identifiers"]
    assert instance["physicalDescriptions"] == []
    assert instance["administrativeNotes"] == standard["physicalDescriptions"]
    assert [c["name"] for c in instance["contributors"]] == [c["name"] for c in standard["contributors"][1:]]


def test_indicators_and_entity_per_repeated_subfield(engine, reference):
    record = _record(
        ("008", "170124s2017    nyua     b    001 0 eng  "),
        ("041", "0 ", [("a", "engfre"), ("h", "ger")]),
        ("245", "14", [("a", "The title :"), ("b", "sub /"), ("c", "by me.")]),
        ("650", " 0", [("a", "Cats"), ("x", "Behavior.")]),
        ("650", " 7", [("a", "Cats"), ("2", "lcsh")]),
        ("600", "10", [("a", "Smith, John,"), ("d", "1900-1990"), ("x", "Homes.")]),
        ("020", "  ", [("a", "111"), ("a", "222"), ("z", "333")]),
    )
    instance = engine.map(record)
    assert instance["languages"] == ["eng", "fre"]
    assert instance["title"] == "The title : sub / by me."
    assert instance["indexTitle"] == "Title : sub /"  # no punctuation rule on indexTitle
    lcsh = reference.id_for("subject-sources", "Library of Congress Subject Headings")
    topical = reference.id_for("subject-types", "Topical term")
    assert instance["subjects"][:2] == [
        {"value": "Cats--Behavior", "typeId": topical, "sourceId": lcsh},
        {"value": "Cats", "typeId": topical, "sourceId": lcsh},  # _7 with $2 lcsh
    ]
    assert instance["subjects"][2]["value"] == "Smith, John, 1900-1990--Homes"
    assert [i["value"] for i in instance["identifiers"]] == ["111", "222", "333"]


def test_contributor_type_matching_like_java(engine, reference):
    record = _record(
        ("100", "1 ", [("a", "Kani, John,"), ("e", "conceptor;"), ("e", "court report")]),
        ("700", "1 ", [("a", "Brown, Sterling K,."), ("e", "actress;"), ("e", "interviewer.")]),
        ("700", "1 ", [("a", "Morrison, Rachel"), ("c", "(Cinematographer),"), ("e", "director of photorgaphy.")]),
        ("700", "1 ", [("a", "Boguslawski, Pawel"), ("4", "aut"), ("4", "edt")]),
        ("710", "2 ", [("a", "London Symphony Orchestra."), ("e", "oth"), ("4", "aut")]),
    )
    contributors = engine.map(record)["contributors"]
    type_of = lambda c: reference.label("contributor-types", c.get("contributorTypeId"))  # noqa: E731
    assert [(c["name"], type_of(c), c.get("contributorTypeText")) for c in contributors] == [
        ("Kani, John", "Conceptor", None),
        ("Brown, Sterling K.", "Interviewer", None),
        ("Morrison, Rachel (Cinematographer)", None, "director of photorgaphy."),
        ("Boguslawski, Pawel", "Author", None),
        ("London Symphony Orchestra", "Author", None),
    ]
    corporate = reference.id_for("contributor-name-types", "Corporate name")
    assert contributors[4]["contributorNameTypeId"] == corporate


def test_odd_records_do_not_raise(engine):
    odd = [
        _record(),
        _record(("245", "10", [])),
        _record(("008", "short"), ("245", "00", [("a", "")])),
        _record(("100", "1 ", [("d", "1900-")]), ("245", "10", [("a", "T|itle\\")])),
        _record(("880", "  ", [("a", "no linkage")]), ("880", "  ", [("6", "1")]), ("041", "  ", [("a", "")])),
        _record(("700", "  ", [("a", "X"), ("4", "zzz"), ("e", "unknown role")]), ("856", "4 ", [("z", "no uri")])),
        _record(("020", "  ", [("c", "$10")]), ("050", "  ", [("b", ".x")]), ("336", "  ", [("b", "nope")])),
        _record(leader="zzzzzdzzzz22zzzzzzzz4500"),
    ]
    for record in odd:
        instance = engine.map(record)
        assert instance["source"] == "MARC"
    assert engine.map(odd[3])["title"] == "T itle"  # "|" -> " ", trailing backslash dropped
    assert engine.map(odd[5])["electronicAccess"] == []
    assert engine.map(odd[5])["contributors"][0]["contributorTypeText"] == "unknown role"


# --- invalid rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad, where",
    [
        ([], "mapping rules"),
        ({"245": {"target": "title"}}, "245"),
        ({"245": [{"subfield": ["a"]}]}, "245"),
        ({"245": [{"target": "title", "subfield": "a"}]}, "245"),
        ({"100": [{"entity": [{"target": "contributors.name", "subfield": ["a"], "rules": [{}]}]}]}, "100"),
        ({"650": [{"target": "subjects.value", "subfield": ["a"], "rules": [{"conditions": [{"parameter": {}}]}]}]}, "650"),
        ({"020": [{"target": "identifiers.value", "subfield": ["a"], "applyRulesOnConcatenatedData": "yes"}]}, "020"),
    ],
)
def test_invalid_rules_raise(bad, where, reference):
    with pytest.raises(MappingRulesError, match=where):
        RuleEngine(bad, reference)


def test_unreadable_rules_file_names_the_file(tmp_path):
    broken = tmp_path / "marc-bib.json"
    broken.write_text('{"245": [', encoding="utf-8")
    with pytest.raises(MappingRulesError, match="marc-bib.json"):
        RuleEngine.from_files(broken, CONFORMANCE)
    with pytest.raises(MappingRulesError, match="missing.json"):
        RuleEngine.from_files(tmp_path / "missing.json", CONFORMANCE)
    broken.write_text('{"245": [{"subfield": ["a"]}]}', encoding="utf-8")
    with pytest.raises(MappingRulesError, match="marc-bib.json.*245"):
        RuleEngine.from_files(broken, CONFORMANCE)
