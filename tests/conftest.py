import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FOLIO_LLM_SHARED", REPO.parent / "shared")).resolve()
RAW = SHARED / "data" / "raw"
CONFORMANCE = SHARED / "data" / "conformance"
BIBS = RAW / "marc" / "bibs.mrc"
REFERENCE = RAW / "folio" / "reference-data"
RULES = RAW / "folio" / "mapping-rules" / "marc-bib.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def reference():
    from folio_llm.folio.reference import ReferenceData

    return ReferenceData.load(REFERENCE)
