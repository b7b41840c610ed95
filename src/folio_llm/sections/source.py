"""Section ``source`` (stage ``instances``): where the records come from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from folio_llm.typed_config import ParamsError, setting


@dataclass
class SourceParams:
    kind: Literal["marc", "folio-json", "folio-api"] = setting(
        "Where records come from: 'marc' (binary MARC21, MARCXML, OAI-PMH) mapped with FOLIO's "
        "rules, 'folio-json' (Instance JSON files, JSON arrays, JSON Lines, API responses), or "
        "'folio-api' (a snapshot of a live tenant written by `folio-llm fetch-folio`: path is its "
        "folder; point rules and reference_data at its mapping-rules/marc-bib.json and reference-data).",
        "marc",
    )
    path: str = setting("File or folder of source records (folders are read recursively).", "data/raw/marc")
    rules: str = setting(
        "FOLIO MARC-bib mapping rules (GET /mapping-rules/marc-bib).",
        "data/raw/folio/mapping-rules/marc-bib.json",
    )
    reference_data: str = setting(
        "Folder of the tenant's reference data (instance types, contributor types, ...).",
        "data/raw/folio/reference-data",
    )
    sample_size: int = setting(
        "How many usable records to draw at random (0 = all). Samples are nested: the sample "
        "of 500 is part of the sample of 1000 for the same seed.",
        1000,
    )
    query: str = setting(
        "kind 'folio-api': CQL filter on the tenant's instances for `folio-llm fetch-folio` "
        "(e.g. 'source==MARC'; empty = all instances; no sortBy).",
        "",
    )

    def check(self) -> None:
        if self.sample_size < 0:
            raise ParamsError("params: source.sample_size: must be >= 0 (0 = all records)")
        if "sortby" in self.query.lower():
            raise ParamsError("params: source.query: leave sortBy out (the sample reads in id order)")
