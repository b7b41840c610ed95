"""Field-by-field agreement of RuleEngine with Instances made by FOLIO's Java mapper.

    python benchmarks/conformance.py [--dir CONFORMANCE_DIR] [--diff] [--speed]

The conformance directory holds ``cornell-bibs.mrc``, ``cornell-instances.json`` (the Java output,
same order), ``rules.json`` and the reference data used. The golden UUIDs are one stub value, so
keys ending in ``Id``/``Ids`` are dropped on both sides; a missing field equals an empty one.
Prints one ``field=agreement`` line per field, then ``overall=...``; ``--speed`` adds the
throughput on the raw bibliographic file (default rules and reference data) after that.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import pymarc

from folio_llm.marc.rules import RuleEngine

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FOLIO_LLM_SHARED", REPO.parent / "shared")).resolve()
CONFORMANCE = SHARED / "data" / "conformance"
RAW = SHARED / "data" / "raw"
BIBS = RAW / "marc" / "bibs.mrc"
RULES = RAW / "folio" / "mapping-rules" / "marc-bib.json"
REFERENCE = RAW / "folio" / "reference-data"

FIELDS = (
    "title", "alternativeTitles", "editions", "series", "identifiers", "contributors", "subjects",
    "classifications", "publication", "physicalDescriptions", "languages", "notes",
    "publicationFrequency", "publicationRange", "dates", "electronicAccess",
)


def neutralize(value):
    """Drop UUID-valued keys (``...Id``/``...Ids``); empty containers become None."""
    if isinstance(value, dict):
        value = {k: neutralize(v) for k, v in value.items() if not k.endswith(("Id", "Ids"))}
        value = {k: v for k, v in value.items() if v is not None}
        return value or None
    if isinstance(value, list):
        return [neutralize(v) for v in value] or None
    return value


def read_records(path: Path) -> list[pymarc.Record]:
    with open(path, "rb") as fh:
        return list(pymarc.MARCReader(fh, to_unicode=True, force_utf8=True))


def measure(directory: Path = CONFORMANCE):
    """``(per_field, overall, mismatches)``; mismatches are ``(hrid, field, ours, golden)``."""
    engine = RuleEngine.from_files(directory / "rules.json", directory)
    records = read_records(directory / "cornell-bibs.mrc")
    golden = json.loads((directory / "cornell-instances.json").read_text(encoding="utf-8"))
    if len(records) != len(golden):
        raise SystemExit(f"{len(records)} records but {len(golden)} golden instances")
    hits = dict.fromkeys(FIELDS, 0)
    mismatches = []
    for record, expected in zip(records, golden):
        actual = engine.map(record)
        for name in FIELDS:
            ours, theirs = neutralize(actual.get(name)), neutralize(expected.get(name))
            if ours == theirs:
                hits[name] += 1
            else:
                mismatches.append((expected.get("hrid"), name, ours, theirs))
    per_field = {name: hits[name] / len(golden) for name in FIELDS}
    overall = sum(hits.values()) / (len(golden) * len(FIELDS))
    return per_field, overall, mismatches


def speed(bibs: Path = BIBS, rules: Path = RULES, reference: Path = REFERENCE) -> dict[str, float]:
    """Records per second on one core: mapping alone, and reading + mapping streamed."""
    engine = RuleEngine.from_files(rules, reference)
    records = read_records(bibs)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for record in records:
            engine.map(record)
        best = min(best, time.perf_counter() - start)
    del records
    start = time.perf_counter()
    with open(bibs, "rb") as fh:
        count = sum(1 for record in pymarc.MARCReader(fh, to_unicode=True, force_utf8=True)
                    if engine.map(record) is not None)
    streamed = time.perf_counter() - start
    return {"map_records_per_s": count / best, "read_and_map_records_per_s": count / streamed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=CONFORMANCE, help="conformance directory")
    parser.add_argument("--diff", action="store_true", help="print each disagreement")
    parser.add_argument("--speed", action="store_true", help="also time the mapping of bibs.mrc")
    args = parser.parse_args(argv)
    per_field, overall, mismatches = measure(args.dir)
    for name, score in per_field.items():
        print(f"{name}={score:.4f}")
    print(f"overall={overall:.4f}")
    if args.speed:
        for name, value in speed().items():
            print(f"{name}={value:.0f}")
    if args.diff:
        for hrid, name, ours, theirs in mismatches:
            print(f"\n# {hrid} {name}\n  ours:   {json.dumps(ours, ensure_ascii=False)}"
                  f"\n  golden: {json.dumps(theirs, ensure_ascii=False)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
