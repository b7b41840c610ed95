"""What the description styles write around the values, found by rendering a probe record (every
value a word no style writes) in every style: their words (the review's unused text leaves them
out) and the phrases that open a part of a description ("Language: ", "Subjects are "; a copied
value never reaches over one)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from functools import lru_cache

_PROBE = "zyx"  # every value of the probe record starts with it, so a word without it is the template's
FUNCTION_WORDS = frozenset("a an and at by for from in is it its of on or the this to was with".split())
WORD = re.compile(r"\w+")  # a word, as the templates and the unused text count them
# where a part of a description may begin (besides its start): a line, a sentence, a list item, an ISBD area
PART_BOUNDARIES = ("\n", ". ", "; ", "-- ", "— ")
_PART_START = re.compile("|".join(re.escape(boundary) for boundary in PART_BOUNDARIES))
_IDENTIFIER_TYPE = re.compile(r"(?<=\S )(?:ISBN|ISSN|LCCN) $")


def _probe_record() -> dict:
    """A record with every field the styles tell, each value a word the templates never write."""
    from folio_llm.roles import ROLE_PHRASES

    def probe(n: int) -> str:
        return f"{_PROBE}{n}"

    names = [{"name": f"{probe(10 + i)}, {probe(30 + i)}", "contributorNameTypeText": "Personal name",
              "contributorTypeText": role.title(), "primary": i == 0} for i, role in enumerate(ROLE_PHRASES)]
    names.append({"name": probe(60), "contributorNameTypeText": "Corporate name", "primary": False})
    return {
        "title": f"{probe(1)} : {probe(2)} / {probe(3)}",
        "contributors": names,
        "editions": [probe(4)],
        "publication": [{"publisher": probe(5), "place": probe(6), "dateOfPublication": "1999", "role": "Publication"}],
        "identifiers": [{"value": probe(7), "identifierTypeText": "ISBN"}, {"value": probe(8), "identifierTypeText": "ISSN"},
                        {"value": probe(76), "identifierTypeText": "LCCN"}],
        "physicalDescriptions": [probe(9)],
        "series": [{"value": probe(70)}],
        "subjects": [{"value": probe(71)}, {"value": probe(72)}],
        "classifications": [{"classificationNumber": probe(73), "classificationTypeText": "LC"}],
        "languages": ["eng"],
        "instanceTypeText": probe(74),
        "modeOfIssuanceText": probe(75),
    }


def _values(*, type_words: bool = True) -> frozenset[str]:
    """The words of the probe record's values that are not probes (casefolded): the language's
    name, the date, and with ``type_words`` the identifier and classification types."""
    from folio_llm.styles import LANGUAGE_NAMES

    types = {"isbn", "issn", "lccn", "z"} if type_words else set()
    return frozenset({name.casefold() for name in LANGUAGE_NAMES.values()} | {"1999", "lc"} | types)


@lru_cache(maxsize=4)
def _renders(params_key: str) -> tuple[tuple[str, str], ...]:
    """(style, description) of the probe record in every style of ``params_key`` (a DatasetParams
    as JSON), sixteen draws each, whole and with a title and one name only (what a style writes for
    the parts missing: "n.d.")."""
    from folio_llm.prompts import PromptRenderer
    from folio_llm.sections.dataset import DatasetParams
    from folio_llm.styles import STYLES
    from folio_llm.typed_config import build

    params = build(DatasetParams, json.loads(params_key), "dataset")
    renderer, full = PromptRenderer(params, seed=0), _probe_record()
    bare = {"title": full["title"], "contributors": full["contributors"][:1]}
    return tuple((style, renderer.render(record, f"probe-{key}", style).user)
                 for style in STYLES for key in range(16) for record in (full, bare))


def _key(params) -> str:
    return json.dumps(asdict(params), sort_keys=True)


@lru_cache(maxsize=4)
def _template_words(params_key: str) -> frozenset[str]:
    found = {m.group().casefold() for _, text in _renders(params_key) for m in WORD.finditer(text)}
    return frozenset(w for w in found if not w.startswith(_PROBE) and w not in _values()) | FUNCTION_WORDS


def template_words(params) -> frozenset[str]:
    """The words the description styles of ``params`` (a DatasetParams) write around the values."""
    return _template_words(_key(params))


def _fields_of_values() -> dict[str, str]:
    """Each value word of the probe record (casefolded) -> the field holding it."""
    from folio_llm.styles import LANGUAGE_NAMES

    fields = {word.casefold(): field for field, value in _probe_record().items()
              for word in WORD.findall(json.dumps(value)) if word.startswith(_PROBE)}
    fields.update({name.casefold(): "languages" for name in LANGUAGE_NAMES.values()})
    return {**fields, "1999": "publication", "lc": "classifications"}


@lru_cache(maxsize=4)
def _part_labels(params_key: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    from folio_llm.sections.dataset import CSL_STYLES

    field_of = _fields_of_values()
    value = re.compile(rf"{_PROBE}\d+|" + "|".join(rf"\b{re.escape(v)}\b" for v in _values(type_words=False)), re.I)
    labels: dict[str, set[str]] = {}
    for style, text in _renders(params_key):
        if style in CSL_STYLES:  # a citation's "Edited by" is as often part of a title
            continue
        at = 0
        for found in value.finditer(text):
            pieces = _PART_START.split(text[at:found.start()])
            label, opens_a_part, at = pieces[-1], len(pieces) > 1 or at == 0, found.end()
            label = _IDENTIFIER_TYPE.sub("", label)  # "Identifiers: ISBN ": the label ends before the type
            if opens_a_part and (label.endswith(": ") or label[:1].isupper() and len(label.split()) >= 2):
                labels.setdefault(label, set()).add(field_of[found.group().casefold()])
    return tuple((label, tuple(sorted(labels[label]))) for label in sorted(labels, key=lambda l: (-len(l), l)))


def part_labels(params) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The phrases the description styles of ``params`` (a DatasetParams, citations apart) open a
    part with, at the start of the text, a line, a sentence, a list item or an ISBD area, before
    its value, each with the fields whose values follow it: ("Language: ", ("languages",)),
    ("Subjects are ", ("subjects",)), ("place: ", ("publication",)). Longest first."""
    return _part_labels(_key(params))
