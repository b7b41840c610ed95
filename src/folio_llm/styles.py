"""Description styles: one record written the ways people describe an item in hand.

A model trained on one renderer learns that renderer, not cataloging: described in another way
the same records score far lower on the fields the description tells (benchmarks/RESULTS.md,
"Description styles"). Each row is therefore drawn in one of
several styles, and what a row tells beyond the prompt fields (role words, the language, a
classification number from CIP data, names in natural order, line breaks) is drawn per row too.
Every style returns the text and the target fields it tells.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from folio_llm.clauses import clause_values, clean, render_clause
from folio_llm.roles import ROLE_PHRASES
from folio_llm.sections.dataset import CSL_STYLES, DatasetParams

# MARC language codes a description would name in words (the rest are told by code or not at all)
LANGUAGE_NAMES = {
    "eng": "English", "ger": "German", "fre": "French", "spa": "Spanish", "ita": "Italian",
    "rus": "Russian", "ara": "Arabic", "chi": "Chinese", "jpn": "Japanese", "kor": "Korean",
    "lat": "Latin", "pol": "Polish", "por": "Portuguese", "dut": "Dutch", "ind": "Indonesian",
    "heb": "Hebrew", "hun": "Hungarian", "tha": "Thai", "swe": "Swedish", "dan": "Danish",
    "nor": "Norwegian", "fin": "Finnish", "gre": "Greek", "tur": "Turkish", "cze": "Czech",
}


@dataclass(frozen=True)
class Telling:
    """What one row states beyond the prompt fields, drawn per row."""

    roles: bool
    language: bool
    classification: bool
    natural_names: bool
    line_breaks: bool

    @classmethod
    def draw(cls, rng: random.Random, params: DatasetParams) -> "Telling":
        tell = params.tell
        return cls(rng.random() < tell.roles, rng.random() < tell.languages, rng.random() < tell.classifications,
                   rng.random() < tell.natural_names, rng.random() < tell.line_breaks)


def id_text(identifier: tuple[str, str]) -> str:
    return " ".join(part for part in identifier if part)


def natural_name(name: str) -> str:
    """"Levine, Mark" -> "Mark Levine"; "Summers, Eden, 1982-" -> "Eden Summers, 1982-"."""
    parts = name.split(", ")
    if len(parts) < 2 or any(ch.isdigit() for ch in parts[1]) or not parts[1].strip():
        return name
    return " ".join([parts[1], parts[0]]) + "".join(", " + p for p in parts[2:])


def _role(contributor: dict) -> str:
    return str(contributor.get("contributorTypeText") or "").strip().rstrip(".").lower()


class Parts:
    """A record's values as a description states them, and the target fields they tell."""

    def __init__(self, record: dict, telling: Telling, separator: str, fields: list[str],
                 left_out: frozenset[str] = frozenset()):
        self.record, self.telling, self.separator = record, telling, separator
        self.told: set[str] = set()
        # a style that restates values (a citation's "Levine, M.", its year alone) gives them here,
        # in the record's shapes; its answer and reference then hold only what it tells
        self.restated: dict[str, object] = {}
        # the prompt fields, plus what a row may tell beyond them, less what this row leaves out
        self.fields = (set(fields) | {"languages", "classifications"}) - left_out

    def _use(self, field: str, value):
        if field not in self.fields:
            return type(value)()
        if value:
            self.told.add(field)
        return value

    def title(self) -> str:
        return self._use("title", str(self.record.get("title") or "").strip())

    def names(self) -> list[tuple[str, str]]:
        """(name as written, its role word or '') per contributor."""
        out = []
        for c in self.record.get("contributors") or []:
            name = str(c.get("name") or "").strip()
            if not name:
                continue
            if self.telling.natural_names and c.get("contributorNameTypeText") == "Personal name":
                name = natural_name(name)
            out.append((name, _role(c) if self.telling.roles else ""))
        return self._use("contributors", out)

    def texts(self, field: str, key: str | None = None) -> list[str]:
        values = [v.get(key) if isinstance(v, dict) else v for v in self.record.get(field) or []]
        return self._use(field, [str(v).strip() for v in values if v and str(v).strip()])

    def identifiers(self) -> list[tuple[str, str]]:
        """(type label or '', value) per identifier."""
        ids = [(str(i.get("identifierTypeText") or ""), clean(i.get("value")))
               for i in self.record.get("identifiers") or [] if clean(i.get("value"))]
        return self._use("identifiers", ids)

    def publications(self) -> list[dict]:
        pubs = [{"publisher": clean(p.get("publisher")), "place": clean(p.get("place")),
                 "date": clean(p.get("dateOfPublication"))}
                for p in self.record.get("publication") or [] if isinstance(p, dict)]
        return self._use("publication", [p for p in pubs if any(p.values())])

    def language(self) -> str:
        if not self.telling.language:
            return ""
        codes = self.record.get("languages") or []
        if not codes or any(c not in LANGUAGE_NAMES for c in codes):
            return ""
        return self._use("languages", " and ".join(LANGUAGE_NAMES[c] for c in codes))

    def classification(self) -> str:
        if not self.telling.classification:
            return ""
        items = [f"{c.get('classificationTypeText', '')} {c.get('classificationNumber', '')}".strip()
                 for c in self.record.get("classifications") or [] if c.get("classificationNumber")]
        return self._use("classifications", self.separator.join(items))

    def join(self, values: list[str]) -> str:
        return self.separator.join(values)


def _by(names: list[tuple[str, str]], default: str = "") -> str:
    """"by A; B; edited by C" — names grouped under their role words, in order; ``default``
    stands before names without one. Names are joined by '; ': they hold commas and 'and'."""
    groups: list[tuple[str, list[str]]] = []
    for name, role in names:
        phrase = ROLE_PHRASES.get(role, default) if role else default
        if role and role not in ROLE_PHRASES:
            name = f"{name} ({role})"
        if groups and groups[-1][0] == phrase:
            groups[-1][1].append(name)
        else:
            groups.append((phrase, [name]))
    return "; ".join(f"{phrase} {'; '.join(ns)}".strip() for phrase, ns in groups)


def _listed(names: list[tuple[str, str]]) -> str:
    """"A; B (editor)" — names with their role words in brackets."""
    return "; ".join(f"{name} ({role})" if role else name for name, role in names)


def _publication_sentence(pub: dict) -> str:
    text = "Published"
    if pub["date"]:
        text += f" in {pub['date']}"
    if pub["publisher"]:
        text += f" by {pub['publisher']}"
    if pub["place"]:
        text += f", {pub['place']}"
    return text


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text.endswith((".", "?", "!")) else text + "."


def clauses(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
    """The project's clause phrasings (params.dataset.clauses), one clause per field."""
    record = dict(parts.record)
    names = parts.names()
    if names:
        record["contributors"] = [{"name": f"{n} ({r})" if r else n} for n, r in names]
    texts = []
    for field in params.prompt_fields:
        phrasings = params.clauses[field]
        template = phrasings[rng.randrange(len(phrasings))]
        rendered = [r for r in (render_clause(template, v) for v in clause_values(record, field, parts.separator)) if r]
        if rendered:
            parts.told.add(field)
            texts.extend(rendered)
    for field, value in (("languages", parts.language()), ("classifications", parts.classification())):
        if value:
            texts.append(render_clause(params.clauses[field][rng.randrange(len(params.clauses[field]))],
                                       {field: value}))
    return (params.clause_separator if parts.telling.line_breaks else " ").join(texts)


def oneline(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
    """The write-up's own style: 'For Title. By names. Published in 1935 by X, Place Subjects are A, B.'"""
    text = _sentence(f"For {parts.title()}")
    names = parts.names()
    if names:
        by = _by(names, "by")
        text += " " + _sentence(by[:1].upper() + by[1:])
    for edition in parts.texts("editions"):
        text += " " + _sentence(edition)
    for pub in parts.publications():
        text += " " + _publication_sentence(pub) + rng.choice([" ", ". "])
    extent = parts.texts("physicalDescriptions")
    if extent:
        text = text.rstrip() + " " + _sentence("; ".join(extent))
    series = parts.texts("series", "value")
    if series:
        text = text.rstrip() + " " + _sentence("Series " + "; ".join(series))
    ids = parts.identifiers()
    if ids:
        text = text.rstrip() + " " + _sentence(", ".join(map(id_text, ids)))
    for label, value in (("In", parts.language()), ("Classified as", parts.classification())):
        if value:
            text = text.rstrip() + f" {label} {value}."
    subjects = parts.texts("subjects", "value")
    if subjects:
        text = text.rstrip() + " Subjects are " + _sentence(", ".join(subjects))
    return text.strip()


def isbd(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
    """An ISBD paragraph: 'Title / names. — Edition. — Place : Publisher, Date. — Extent. — (Series)'."""
    dash = rng.choice([". — ", ". -- "])
    # the title as the record holds it (with its own statement of responsibility, if any): names
    # added after ' / ' would make the end of the title a guess
    areas = [parts.title().rstrip(" .")]
    names = parts.names()
    areas += parts.texts("editions")
    for pub in parts.publications():
        area = pub["place"]
        if pub["publisher"]:
            area = f"{area} : {pub['publisher']}" if area else pub["publisher"]
        if pub["date"]:
            area = f"{area}, {pub['date']}" if area else pub["date"]
        areas.append(area)
    areas += parts.texts("physicalDescriptions")
    areas += [f"({s})" for s in parts.texts("series", "value")]
    areas += [id_text(i) for i in parts.identifiers()]
    language = parts.language()
    if language:
        areas.append(f"Text in {language}")
    text = dash.join(a.rstrip(" .") if not a.endswith(("..", ")")) else a for a in areas if a) + "."
    if names:
        text += " Names: " + _sentence(_listed(names))
    subjects = parts.texts("subjects", "value")
    if subjects:
        text += " Subjects: " + _sentence("; ".join(subjects))
    classification = parts.classification()
    if classification:
        text += f" Classification: {classification}."
    return text


def labels(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
    """'Label: value' lines, as pasted from a form or a spreadsheet."""
    lines = [f"Title: {parts.title()}"]
    for name, role in parts.names():
        known = role in ROLE_PHRASES  # other roles ("publisher") would read as another label
        lines.append(f"{role.capitalize() if known else 'Name'}: {name}{f' ({role})' if role and not known else ''}")
    lines += [f"Edition: {e}" for e in parts.texts("editions")]
    for pub in parts.publications():
        lines += [f"{label}: {pub[key]}" for label, key in (("Publisher", "publisher"), ("Place", "place"),
                                                            ("Date", "date")) if pub[key]]
    lines += [f"Extent: {e}" for e in parts.texts("physicalDescriptions")]
    lines += [f"Series: {s}" for s in parts.texts("series", "value")]
    lines += [f"{kind or 'Identifier'}: {value}" for kind, value in parts.identifiers()]
    subjects = parts.texts("subjects", "value")
    if subjects:
        lines.append("Subjects: " + "; ".join(subjects))
    for label, value in (("Language", parts.language()), ("Classification", parts.classification())):
        if value:
            lines.append(f"{label}: {value}")
    return ("\n" if parts.telling.line_breaks else "; ").join(lines)


def sentence(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
    """Free prose: '"Title" by A was published by X in Place in 1989. It is about A; B.' (the
    title in quotes, as prose sets it apart)."""
    text = f'"{parts.title().rstrip(" ./")}"'
    names = parts.names()
    if names:
        text += f" {_by(names, 'by')}"
    pubs = parts.publications()
    if pubs:
        pub = pubs[0]
        text += " was published" + (f" by {pub['publisher']}" if pub["publisher"] else "")
        text += (f" in {pub['place']}" if pub["place"] else "") + (f" in {pub['date']}" if pub["date"] else "")
        text = _sentence(text)
        for other in pubs[1:]:
            text += " " + _sentence(_publication_sentence(other))
    else:
        text = _sentence(text + " is the item")
    for edition in parts.texts("editions"):
        text += f" This is the {edition.rstrip('.')}."
    for sentence_, value in (
            ("It has {}.", "; ".join(parts.texts("physicalDescriptions")).rstrip(".")),
            ("It is part of the series {}.", "; ".join(parts.texts("series", "value")).rstrip(".")),
            ("Its numbers are {}.", ", ".join(map(id_text, parts.identifiers()))),
            ("It is written in {}.", parts.language()),
            ("It is about {}.", "; ".join(parts.texts("subjects", "value")).rstrip(".")),
            ("The CIP data classes it at {}.", parts.classification())):
        if value:
            text += " " + sentence_.format(value)
    return text.strip()


def citation(csl_style: str) -> Callable[[Parts, random.Random, DatasetParams], str]:
    """A reference as a bibliography or reading list has it, in the CSL style ``csl_style``
    (citations.py): the title, the names it cites, the publication as the style gives it."""
    def cited(parts: Parts, rng: random.Random, params: DatasetParams) -> str:
        from folio_llm.citations import cite

        reference = cite(parts.record, csl_style, parts.fields)
        parts.restated = reference.values
        parts.told.update(reference.values)
        return reference.text

    cited.__doc__ = f"A reference in the CSL style {csl_style!r}."
    return cited


STYLES: dict[str, Callable[[Parts, random.Random, DatasetParams], str]] = {
    "clauses": clauses, "oneline": oneline, "isbd": isbd, "labels": labels, "sentence": sentence,
    **{name: citation(csl) for name, csl in CSL_STYLES.items()},
}


def draw_style(rng: random.Random, weights: dict[str, float]) -> str:
    names = [name for name, weight in weights.items() if weight > 0]
    return rng.choices(names, weights=[weights[n] for n in names])[0]


def describe(record: dict, style: str, rng: random.Random, params: DatasetParams,
             left_out: frozenset[str] = frozenset()) -> tuple[str, Parts]:
    """(description, what it tells: ``Parts.told``, ``.restated``, ``.telling``) of ``record`` in
    ``style``, telling none of the fields ``left_out``."""
    telling = Telling.draw(rng, params)
    parts = Parts(record, telling, params.list_separator, params.prompt_fields, left_out)
    text = STYLES[style](parts, rng, params)
    return text, parts
