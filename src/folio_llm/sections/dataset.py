"""Section ``dataset``: how descriptions are written, the targets and the splits."""

from __future__ import annotations

from dataclasses import dataclass

from folio_llm.sections.fields import DEFAULT_FIELDS
from folio_llm.typed_config import ParamsError, setting

DEFAULT_SYSTEM_PROMPTS = [
    "As an expert cataloger, you will create the FOLIO inventory JSON record.",
]

# Square brackets mark an optional segment: it is dropped when a placeholder inside is empty.
DEFAULT_CLAUSES: dict[str, list[str]] = {
    "title": ["For {title}", "Title: {title}", "Catalog {title}"],
    "contributors": ["By {contributors}.", "Contributors: {contributors}.", "Names on the item: {contributors}."],
    "editions": ["Edition: {editions}.", "{editions}."],
    "publication": [
        "Published[ by {publisher}][; place: {place}][; date: {date}].",
        "Publication:[ {place}][ : {publisher}][, {date}].",
        "Issued[ in {date}][ by {publisher}][; place: {place}].",
    ],
    "identifiers": ["Identifiers: {identifiers}.", "Numbers on the item: {identifiers}."],
    "physicalDescriptions": ["Extent: {physicalDescriptions}.", "Physical description: {physicalDescriptions}."],
    "series": ["Series: {series}.", "In the series {series}."],
    "subjects": ["Subjects are {subjects}.", "Subjects: {subjects}.", "About {subjects}."],
    "classifications": ["Classified as {classifications}."],
    "languages": ["Language: {languages}."],
    "instanceTypeText": ["Resource type: {instanceTypeText}."],
    "modeOfIssuanceText": ["Issued as a {modeOfIssuanceText}."],
}


@dataclass
class SplitParams:
    train: float = setting("Share of rows for training.", 0.8)
    valid: float = setting("Share of rows for validation.", 0.1)
    test: float = setting("Share of rows for the held-out test set.", 0.1)


# the citation styles: the dataset's name -> the CSL style citeproc-py renders it with
CSL_STYLES = {
    "apa": "apa",
    "mla": "modern-language-association",
    "chicago": "chicago-author-date",
    "harvard": "harvard-cite-them-right",
    "ieee": "ieee",
}
# dataset.untold_targets' entry for the contributors' roles (not a field of its own)
ROLE_TARGET = "contributors.contributorTypeText"
STYLE_NAMES = ("clauses", "oneline", "isbd", "labels", "sentence", *CSL_STYLES)
# IEEE twice the other references: the one style whose names run on into the title after a comma
DEFAULT_STYLE_WEIGHTS = {**{name: 1.0 for name in STYLE_NAMES}, **{name: 0.3 for name in CSL_STYLES}, "ieee": 0.6}


@dataclass
class TellParams:
    roles: float = setting("Share of rows whose names carry their role words ('edited by', '(composer)').", 0.7)
    languages: float = setting(
        "Share of rows that state the language in words (where it has a common name); the rest "
        "leave it to be inferred.", 0.5)
    classifications: float = setting(
        "Share of rows that give the classification number (as CIP data would); elsewhere the "
        "number is not in the target either, so the model never learns to invent one.", 0.2)
    natural_names: float = setting("Share of rows with personal names in natural order ('Mark Levine').", 0.5)
    line_breaks: float = setting("Share of 'clauses' and 'labels' rows written one statement per line.", 0.6)
    leave_out: float = setting(
        "Chance that a training row leaves each told field (the title aside) out of its description "
        "and its answer alike, drawn per row and field: the model learns that what a text does not "
        "tell is not written. Valid and test rows tell everything their record has.", 0.0)


@dataclass
class DatasetParams:
    prompt_fields: list[str] = setting(
        "Fields the user prompt mentions, in order: what a cataloger reads off the item in hand. "
        "Target fields not listed here must be inferred by the model.",
        factory=lambda: [
            "title", "contributors", "editions", "publication", "identifiers",
            "physicalDescriptions", "series", "subjects",
        ],
    )
    target_fields: list[str] = setting(
        "Fields the assistant's JSON holds, in this key order (from the denormalized record).",
        factory=lambda: list(DEFAULT_FIELDS),
    )
    system_prompts: list[str] = setting(
        "System prompt phrasings; each row draws one (seeded).", factory=lambda: list(DEFAULT_SYSTEM_PROMPTS)
    )
    clauses: dict[str, list[str]] = setting(
        "Per prompt field, the phrasings of its clause; each row draws one per field (seeded). "
        "Placeholders: the field name; for publication {date}, {publisher}, {place}. "
        "[optional segments] vanish when a placeholder inside them is empty.",
        factory=lambda: {k: list(v) for k, v in DEFAULT_CLAUSES.items()},
    )
    list_separator: str = setting(
        "Joins list values in the prompt. Not a comma: subjects and names hold commas.", "; "
    )
    clause_separator: str = setting(
        "Joins the clauses of a 'clauses' row written with line breaks (tell.line_breaks). A new "
        "line, because titles and names hold '. ': with a space the model cannot tell where a title "
        "ends.",
        "\n",
    )
    styles: dict[str, float] = setting(
        "Description styles and their weights; each row draws one (seeded): 'clauses' (the phrasings "
        "above), 'oneline' (the write-up's 'For Title. Published in 1935 by X, Place Subjects are A, B.'), "
        "'isbd' ('Title / names. — Place : Publisher, Date. — Extent.'), 'labels' ('Title: …' lines), "
        "'sentence' (free prose), and references as bibliographies cite them, rendered by citeproc-py: "
        "'apa', 'mla', 'chicago' (author-date), 'harvard' (Cite Them Right), 'ieee'. A reference tells "
        "less (initials, no place in APA, MLA and Chicago, the year alone): its answer holds only what it tells.",
        factory=lambda: dict(DEFAULT_STYLE_WEIGHTS))
    tell: TellParams = setting("What rows state beyond the prompt fields, as shares of rows.", factory=TellParams)
    untold_targets: list[str] = setting(
        "Target fields the answer holds even when the description does not tell them (the model "
        "infers them). Any other target field is in the answer only when the description tells it; "
        "evaluation still scores against the whole record. 'contributors.contributorTypeText' "
        "keeps the contributors' roles in answers whose description names them without role words; "
        "without it those answers hold the names only (measured: no fewer roles written where the "
        "record has none, benchmarks/RESULTS.md).",
        factory=lambda: ["languages", "instanceTypeText", "modeOfIssuanceText", ROLE_TARGET])
    split: SplitParams = setting("Train/valid/test shares (must sum to 1).", factory=SplitParams)
    max_chars: int = setting(
        "Rows whose system + user + assistant text is longer than this are flagged as over-length "
        "in the report (about 4 characters per token).",
        4000,
    )

    def check(self) -> None:
        shares = (self.split.train, self.split.valid, self.split.test)
        if any(s < 0 for s in shares) or abs(sum(shares) - 1.0) > 1e-6:
            raise ParamsError(f"params: dataset.split: shares must be >= 0 and sum to 1, got {shares}")
        unknown = [f for f in self.prompt_fields if f not in self.clauses]
        if unknown:
            raise ParamsError(f"params: dataset.prompt_fields: no clause phrasing for {unknown} in dataset.clauses")
        for name, phrasings in self.clauses.items():
            if not phrasings:
                raise ParamsError(f"params: dataset.clauses.{name}: needs at least one phrasing")
        styles = self.styles
        if (set(styles) - set(STYLE_NAMES) or not any(w > 0 for w in styles.values())
                or any(w < 0 for w in styles.values())):
            raise ParamsError(f"params: dataset.styles: weights >= 0 for {', '.join(STYLE_NAMES)}, at least one "
                              f"> 0, got {styles}")
        tell = vars(self.tell)
        if any(not 0 <= v <= 1 for v in tell.values()):
            raise ParamsError(f"params: dataset.tell: shares must be in [0, 1], got {tell}")
        if not self.system_prompts:
            raise ParamsError("params: dataset.system_prompts: needs at least one phrasing")
