"""A tenant snapshot: a seeded random sample of Instances, with the tenant's reference data and
MARC mapping rules, saved as files so that the later stages run without the tenant.

    instances.jsonl                    the sample, in the order it was drawn
    reference-data/<kind>.json         the tenant's answer per kind ({"instanceTypes": [...], ...})
    mapping-rules/marc-bib.json        GET /mapping-rules/marc-bib
    manifest.json                      seed, query, strategy, counts, date; never a credential

The sample never reads the whole inventory. ``uuid`` (the default) draws random UUIDs and takes
the records that follow each in id order (``id>="…" sortBy id``): one index seek per draw in
FOLIO's PostgreSQL. ``offset`` draws random positions (``offset=n``): exactly uniform, but the
database walks past n rows for each, and it needs an exact count first. Both take
``page_size`` neighbours in id order per draw: with random (v4) ids neighbours are unrelated
records, and a record's chance no longer hangs on one gap between ids. ``id_spread`` in the
manifest checks that the ids are random. When the query matches at most twice the sample
size, or the sample size is 0 (all), the matching records are read in id order instead (no
bias at all, and fewer requests). ``benchmarks/folio_sampling.py`` measures the strategies.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import statistics
import tempfile
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterable, Iterator

from folio_llm.folio.api import INSTANCES_PATH, FolioApi, FolioApiError, RetryPolicy
from folio_llm.folio.reference import KINDS
from folio_llm.jsonl import JsonlWriter, write_json
from folio_llm.sampling import NestedSample

STRATEGIES = ("uuid", "offset")
INSTANCES_FILE = "instances.jsonl"
MANIFEST_FILE = "manifest.json"
RULES_PATH = "/mapping-rules/marc-bib"
SCAN_PAGE = 1000
MIN_GAPS = 20  # fewer gaps between neighbouring ids tell too little to judge their spread



class SnapshotError(ValueError):
    """A snapshot that cannot be written or read; the message names the folder or setting."""


# --- reading ----------------------------------------------------------------------------

def snapshot_instances(path: str | Path) -> Path:
    """The instances file of a snapshot folder (or ``path`` itself, when it is a file)."""
    path = Path(path)
    if path.is_dir():
        path = path / INSTANCES_FILE
        if not path.is_file():
            raise SnapshotError(f"no {INSTANCES_FILE} in {path.parent}: write a snapshot there with "
                                f"`folio-llm fetch-folio --out {path.parent}`")
    elif not path.exists():
        raise SnapshotError(f"input not found: {path}")
    return path


# --- sampling ---------------------------------------------------------------------------

def cql_query(query: str = "", condition: str | None = None) -> str:
    """The CQL for ``query`` (a filter) narrowed by ``condition``, sorted by id."""
    parts = [p for p in (condition, f"({query})" if query else None) if p]
    return (" and ".join(parts) or "cql.allRecords=1") + " sortBy id"


def check_query(query: str) -> None:
    if re.search(r"\bsortby\b", query, re.IGNORECASE):
        raise SnapshotError(f"query {query!r}: leave sortBy out (the sample reads in id order)")


class InstancePages:
    """Instance storage as the samplers read it: a count, and pages of a CQL query."""

    def __init__(self, api: FolioApi):
        self.api = api

    def count(self, cql: str, exact: bool) -> int:
        params = {"totalRecords": "exact"} if exact else {}
        _, total = self.api.get_list(INSTANCES_PATH, "instances", query=cql, limit=0, **params)
        if total is None:
            raise FolioApiError(f"GET {INSTANCES_PATH}: the answer has no totalRecords")
        return total

    def page(self, cql: str, limit: int, offset: int = 0) -> list[dict]:
        params = {"offset": offset} if offset else {}
        return self.api.get_list(INSTANCES_PATH, "instances", query=cql, limit=limit, **params)[0]


def _record_id(record: dict, where_from: str) -> str:
    rid = record.get("id") if isinstance(record, dict) else None
    if not isinstance(rid, str) or not rid:
        raise FolioApiError(f"{where_from}: an entry without an id")
    return rid


def read_by_id(fetch: Callable[[str, int], list[dict]], query: str = "", what: str = "") -> Iterator[dict]:
    """Every record of ``query``, in id order, a page at a time (``id>"last"``: no deep offsets)."""
    last = None
    while True:
        batch = fetch(cql_query(query, f'id>"{last}"' if last else None), SCAN_PAGE)
        yield from batch
        if len(batch) < SCAN_PAGE:
            return
        last = _record_id(batch[-1], what)


def _draw_uuid(pages, rng: random.Random, query: str, page_size: int, matching: int) -> list[dict]:
    boundary = uuid.UUID(int=rng.getrandbits(128))
    batch = pages.page(cql_query(query, f'id>="{boundary}"'), page_size)
    if len(batch) < page_size:  # past the highest id: go on from the lowest, as on a circle
        batch += pages.page(cql_query(query), page_size - len(batch))
    return batch


def _draw_offset(pages, rng: random.Random, query: str, page_size: int, matching: int) -> list[dict]:
    start = rng.randrange(matching)
    batch = pages.page(cql_query(query), page_size, start)
    if len(batch) < page_size:  # past the last position: go on from the first
        batch += pages.page(cql_query(query), page_size - len(batch))
    return batch


def _gaps(batch: list[dict]) -> list[int]:
    """Distances between neighbouring ids in a page (modulo 2^128: a page may wrap around)."""
    numbers = []
    for record in batch:
        try:
            numbers.append(uuid.UUID(record["id"]).int)
        except (KeyError, TypeError, ValueError):
            return []
    return [(b - a) % 2**128 for a, b in zip(numbers, numbers[1:])]


def id_spread(gaps: list[int], matching: int) -> float | None:
    """The median gap between neighbouring ids seen, over the median gap between ``matching``
    random UUIDs (ln 2 * 2^128 / matching): about 1 when the ids are random (v4, or v5 of
    legacy ids); far from 1 when they are sequential or clustered, and ``uuid`` sampling then
    favours the records after the large gaps."""
    if len(gaps) < MIN_GAPS or matching < 2:
        return None
    return statistics.median(gaps) / (math.log(2) * 2**128 / matching)


def ids_look_random(spread: float, gaps: int) -> bool:
    """Whether ``spread`` (from ``gaps`` gaps) is within chance of 1. The median of n
    exponential gaps has a relative standard deviation of about 1.44 / sqrt(n); four of them
    (at least 25%) are allowed."""
    tolerance = max(0.25, 4 * 1.44 / math.sqrt(gaps))
    return 1 / (1 + tolerance) <= spread <= 1 + tolerance


@dataclass
class Sample:
    records: Iterable[dict]
    matching: int
    strategy: str  # "uuid", "offset", or "scan" (every matching record read)
    draws: int = 0
    spread: float | None = None
    gaps: int = 0


def draw_sample(pages, size: int, seed: int, query: str = "", strategy: str = "uuid",
                page_size: int = 10) -> Sample:
    """A seeded random sample of ``size`` records matching ``query`` (0 = all of them).

    Records join in draw order, so for the same seed, strategy and page size the sample of 500
    is the first 500 of the sample of 1000. ``pages`` is an :class:`InstancePages`."""
    if strategy not in STRATEGIES:
        raise SnapshotError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if page_size < 1 or size < 0:
        raise SnapshotError("page size must be >= 1 and sample size >= 0")
    matching = pages.count(cql_query(query), exact=strategy == "offset")
    if size == 0 or matching <= 2 * size:
        records: Iterable[dict] = read_by_id(pages.page, query, f"GET {INSTANCES_PATH}")
        if size:
            nested = NestedSample(size, seed)
            for position, record in enumerate(records):
                nested.offer(position, record)
            records = nested.items()
        return Sample(records, matching, "scan")
    draw = _draw_uuid if strategy == "uuid" else _draw_offset
    rng = random.Random(seed)
    chosen: dict[str, dict] = {}
    gaps: list[int] = []
    draws = 0
    most = 20 * math.ceil(size / page_size) + 100
    while len(chosen) < size:
        if draws == most:
            hint = " the ids are clustered: use strategy 'offset'" if strategy == "uuid" else " is the inventory changing?"
            raise SnapshotError(f"{len(chosen)} distinct records of {size} after {draws} draws:{hint}")
        draws += 1
        batch = draw(pages, rng, query, page_size, matching)
        gaps += _gaps(batch)
        for record in batch:
            rid = _record_id(record, f"GET {INSTANCES_PATH}")
            if rid not in chosen and len(chosen) < size:
                chosen[rid] = record
    return Sample(list(chosen.values()), matching, strategy, draws, id_spread(gaps, matching), len(gaps))


# --- writing ----------------------------------------------------------------------------

def _fetch_reference(api: FolioApi, folder: Path) -> tuple[dict[str, int], list[str]]:
    """Every kind the tenant serves, as ``<kind>.json``; the kinds it has not (404) are listed."""
    counts: dict[str, int] = {}
    missing: list[str] = []
    for kind, key in KINDS.items():
        path = f"/{kind}"
        try:
            entries = list(read_by_id(lambda cql, limit: api.get_list(path, key, query=cql, limit=limit)[0],
                                      what=f"GET {path}"))
        except FolioApiError as exc:
            if exc.status == 404:  # an older release, or a module the tenant does not run
                missing.append(kind)
                continue
            raise
        write_json(folder / f"{kind}.json", {key: entries, "totalRecords": len(entries)})
        counts[kind] = len(entries)
    return counts, missing


def _fetch_rules(api: FolioApi, file: Path) -> bool:
    try:
        rules = api.get(RULES_PATH)
    except FolioApiError as exc:
        if exc.status == 404:
            return False
        raise
    if not isinstance(rules, dict):
        raise FolioApiError(f"GET {RULES_PATH}: the answer is not a rules object")
    write_json(file, rules)
    return True


def _check_target(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SnapshotError(f"{out} is a file, not a snapshot folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST_FILE).is_file():
        raise SnapshotError(f"{out} is not empty and holds no {MANIFEST_FILE}: it is no snapshot to replace; "
                            "choose another folder")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Put the finished folder ``tmp`` at ``out``, replacing an earlier snapshot there."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def fetch_snapshot(out: str | Path, *, sample_size: int, seed: int, query: str = "", strategy: str = "uuid",
                   page_size: int = 10, api: FolioApi | None = None, retry: RetryPolicy | None = None) -> dict:
    """Draw the sample and fetch the reference data and mapping rules into the folder ``out``.

    Everything is written to a temporary folder beside ``out`` and moved into place at the
    end, so a fetch that fails leaves nothing behind and an earlier snapshot as it was.
    ``api`` is an open session (kept open); without it one is opened from the environment's
    credentials with ``retry``. Returns the manifest."""
    out = Path(out)
    check_query(query)
    if strategy not in STRATEGIES:
        raise SnapshotError(f"strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    _check_target(out)
    session = api or FolioApi.connect(retry=retry)
    requests_before = 0 if api is None else session.requests  # a new session's count includes its login
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        reference, missing = _fetch_reference(session, tmp / "reference-data")
        rules = _fetch_rules(session, tmp / "mapping-rules" / "marc-bib.json")
        sample = draw_sample(InstancePages(session), sample_size, seed, query, strategy, page_size)
        with JsonlWriter(tmp / INSTANCES_FILE) as writer:
            writer.write_all(sample.records)
        manifest = {
            "fetched": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "sample_size": sample_size,
            "seed": seed,
            "query": query,
            "strategy": sample.strategy,
            "page_size": page_size,
            "matching": sample.matching,
            "instances": writer.count,
            "draws": sample.draws,
            "id_spread": None if sample.spread is None else round(sample.spread, 3),
            "id_gaps": sample.gaps,
            "requests": session.requests - requests_before,
            "reference_data": reference,
            "reference_data_missing": missing,
            "mapping_rules": rules,
            "folioclient": metadata.version("folioclient"),
        }
        write_json(tmp / MANIFEST_FILE, manifest)
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if api is None:
            session.close(logout=False)
        raise
    if api is None:
        session.close()
    return manifest


def snapshot_notes(manifest: dict) -> list[str]:
    """What a user of the snapshot should know: missing parts, ids that are not random."""
    notes = []
    if manifest.get("reference_data_missing"):
        notes.append(f"the tenant serves no {', '.join(manifest['reference_data_missing'])} (HTTP 404); left out")
    if not manifest.get("mapping_rules"):
        notes.append(f"the tenant serves no {RULES_PATH} (HTTP 404); no mapping rules in the snapshot")
    spread = manifest.get("id_spread")
    if manifest.get("strategy") == "uuid" and spread is not None and \
            not ids_look_random(spread, manifest.get("id_gaps") or MIN_GAPS):
        notes.append(f"the tenant's instance ids are not random (id_spread {spread}): the 'uuid' sample favours "
                     "records after large gaps between ids; fetch again with strategy 'offset'")
    return notes
