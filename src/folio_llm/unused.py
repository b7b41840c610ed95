"""What a description tells that the record leaves out: the words no value of the answer holds.

The model's confidence misses the mistakes it is sure of, and the commonest is a part left out
(the last name of a list, a corporate body on its own line, a series in a citation). The words
of the description that no value of the record holds show them: "not used: Mills & Boon Series
Special Releases" beside a record whose contributors end before it. Words the description
styles themselves write ("Title:", "Published in", "edited by") are not content and never
count as unused (``folio_llm.templates``).
"""

from __future__ import annotations

from dataclasses import dataclass

from folio_llm.templates import WORD


@dataclass(frozen=True)
class Word:
    text: str  # casefolded
    start: int
    end: int


def words(text: str) -> list[Word]:
    return [Word(m.group().casefold(), m.start(), m.end()) for m in WORD.finditer(text)]


def _strings(value, key: str | None = None):
    """(key holding it, string) for every string inside an answer's value."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, key)
    elif isinstance(value, dict):
        for inner, item in value.items():
            yield from _strings(item, inner)


def _as_told(key: str | None, value: str) -> str:
    """A value as a description tells it: a language in words, though recorded by its code."""
    from folio_llm.styles import LANGUAGE_NAMES

    return LANGUAGE_NAMES.get(value, value) if key == "languages" else value


def _told_forms(value: str) -> list[list[str]]:
    """The word sequences a value may be told as: as written, and a name 'Last, First, dates' as
    'First Last, dates'."""
    forms = [[w.text for w in words(value)]]
    parts = value.split(", ")
    if len(parts) > 1:  # "Handel, George Frideric, 1685-1759" told "George Frideric Handel, 1685-1759"
        forms.append([w.text for part in [parts[1], parts[0], *parts[2:]] for w in words(part)])
    return forms


def _occurrences(sequence: list[str], part: list[str]) -> list[int]:
    size = len(part)
    return [i for i in range(len(sequence) - size + 1) if sequence[i:i + size] == part] if size else []


def used_words(description: str, record: dict) -> list[bool]:
    """Per word of ``description``: does a value of ``record`` hold it? A value is looked for as
    a run of words (a name also in natural order); one re-formed by the model ("Education" and
    "Higher--..." for "Education, Higher--...") holds its own words of three letters or more."""
    told = [w.text for w in words(description)]
    used = [False] * len(told)
    for key, value in _strings(record):
        forms = _told_forms(_as_told(key, value))
        found = False
        for form in forms:
            for at in _occurrences(told, form):
                used[at:at + len(form)] = [True] * len(form)
                found = True
        if not found:
            own = {w for w in forms[0] if len(w) >= 3 or w.isdigit()}
            used = [u or w in own for u, w in zip(used, told)]
    return used


def unused_text(description: str, record: dict | None, template: frozenset[str]) -> list[str]:
    """The runs of ``description`` no value of ``record`` holds, as written, each with at least
    one word that is not the ``template``'s (template_words) and trimmed of the template's words."""
    if not record or not description:
        return []
    told = words(description)
    used = used_words(description, record)
    runs, index = [], 0
    while index < len(told):
        if used[index]:
            index += 1
            continue
        end = index
        while end < len(told) and not used[end]:
            end += 1
        content = [i for i in range(index, end) if told[i].text not in template]
        if content:
            runs.append(description[told[content[0]].start:told[content[-1]].end])
        index = end
    return runs


def shows_missing(runs: list[str], answer: dict | None, reference: dict, name: str, template: frozenset[str]) -> bool:
    """Do the unused ``runs`` show what the answer misses of the scored field ``name``: a value
    of the ``reference`` the answer lacks, at least half of whose own words are in them?"""
    from folio_llm.decoding.doubt import values_of

    shown = {w.text for run in runs for w in words(run)}
    written = {v.casefold() for v in values_of(answer or {}, name)}
    for value in values_of(reference, name):
        if value.casefold() in written:
            continue
        own = [w.text for w in words(_as_told(name, value)) if w.text not in template]
        if own and 2 * sum(w in shown for w in own) >= len(own):
            return True
    return False


def review_template(params) -> frozenset[str] | None:
    """The template words of ``params`` (a Params) where params.eval.review_unused lists the
    unused text, else None."""
    from folio_llm.templates import template_words

    return template_words(params.dataset) if params.eval.review_unused else None
