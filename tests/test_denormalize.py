import json
import unicodedata

from conftest import RAW
from folio_llm.params import DenormalizeParams
from folio_llm.records import Denormalizer

SAMPLES = RAW / "folio" / "instances" / "mod-inventory-storage-sample"


def denormalizer(reference, **overrides):
    params = DenormalizeParams(**overrides)
    return Denormalizer(reference, params.fields, params.identifier_types, params.unicode_form)


def sample(name):
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def test_uuids_become_labels_from_reference_data(reference):
    instance = sample("bridget-jones-baby.json")
    record = denormalizer(reference)(instance)
    assert record["instanceTypeText"] == reference.label("instance-types", instance["instanceTypeId"]) == "text"
    assert record["contributors"][0]["name"] == "Fielding, Helen"
    assert record["contributors"][0]["contributorNameTypeText"] == "Personal name"
    assert "Id\"" not in json.dumps(record)
    assert list(record)[:2] == ["hrid", "title"]


def test_only_named_fields_and_keys_are_kept_and_empty_lists_dropped(reference):
    instance = sample("bridget-jones-baby.json")
    instance["editions"] = []
    instance["series"] = []
    record = denormalizer(reference, fields={"title": None, "editions": None, "subjects": ["value"], "series": ["value"]})(instance)
    assert set(record) == {"hrid", "title", "subjects"}
    assert all(set(s) == {"value"} for s in record["subjects"])


def test_identifiers_keep_only_the_configured_types(reference):
    instance = sample("american-bar-association.json")
    kept = denormalizer(reference)(instance)["identifiers"]
    assert {i["identifierTypeText"] for i in kept} <= {"ISSN", "LCCN"}
    everything = denormalizer(reference, identifier_types=[])(instance)["identifiers"]
    assert len(everything) >= len(kept)


def test_unknown_uuids_are_dropped_and_counted(reference):
    instance = {"title": "X", "instanceTypeId": "00000000-0000-4000-8000-000000000000"}
    d = denormalizer(reference)
    assert d(instance) == {"title": "X"}
    assert d.stats.unresolved["instanceTypeId"] == 1


def test_strings_are_unicode_normalized(reference):
    decomposed = unicodedata.normalize("NFD", "Bärenreiter")
    record = denormalizer(reference)({"title": decomposed, "publication": [{"publisher": decomposed}]})
    assert record["title"] == "Bärenreiter" and record["publication"][0]["publisher"] == "Bärenreiter"
    kept = denormalizer(reference, unicode_form="none")({"title": decomposed})
    assert kept["title"] == decomposed


def test_old_schema_string_series_become_objects(reference):
    record = denormalizer(reference)({"title": "T", "series": ["Global Africa ; v. 1"]})
    assert record["series"] == [{"value": "Global Africa ; v. 1"}]
