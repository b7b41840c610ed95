"""Source records -> FOLIO Instances: MARC through the mapping rules, or Instance JSON as is.

Every unit of input yields exactly one ``SourceItem``: an Instance, or the reason it cannot be
used. Callers write the rejects; read = usable + rejected always holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from folio_llm.jsonl import JsonlWriter
from folio_llm.pipeline import Counts, progress, reason_kind
from folio_llm.sampling import NestedSample

MARC_SUFFIXES = {".mrc", ".marc", ".dat", ".bin", ".xml", ".gz", ".mrk21"}
JSON_SUFFIXES = {".json", ".jsonl", ".ndjson"}


class SourceError(ValueError):
    """A source that cannot be read at all; the message names it."""


@dataclass(frozen=True)
class SourceItem:
    position: int
    source: str
    identifier: str | None
    instance: dict | None = None
    reason: str | None = None

    def reject(self) -> dict:
        return {"position": self.position, "source": self.source, "identifier": self.identifier, "reason": self.reason}


def expand_paths(paths: Iterable[str | Path], suffixes: set[str]) -> list[Path]:
    """Files as given; folders expanded recursively to the files with a known suffix."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
            if not found:
                raise SourceError(f"no {'/'.join(sorted(suffixes))} files in folder {path}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise SourceError(f"input not found: {path}")
    return files


def _has_title(instance: dict) -> bool:
    title = instance.get("title")
    return isinstance(title, str) and bool(title.strip())


def iter_marc_instances(paths: Iterable[str | Path], engine) -> Iterator[SourceItem]:
    from folio_llm.marc.reader import MarcReadError, iter_marc

    files = expand_paths(paths, MARC_SUFFIXES)
    try:
        for item in iter_marc(files):
            if item.record is None:
                yield SourceItem(item.position, item.source, item.identifier, reason=item.error)
                continue
            try:
                instance = engine.map(item.record)
            except Exception as exc:  # a rules/record combination the engine did not foresee
                yield SourceItem(item.position, item.source, item.identifier,
                                 reason=f"mapping failed: {type(exc).__name__}: {exc}")
                continue
            if not _has_title(instance):
                yield SourceItem(item.position, item.source, item.identifier, reason="no title (245$a) after mapping")
                continue
            yield SourceItem(item.position, item.source, item.identifier, instance)
    except MarcReadError as exc:
        raise SourceError(str(exc)) from None


def _instances_in_json(value) -> list | None:
    """The Instance objects in a parsed JSON document, or None if it holds none we know."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if isinstance(value.get("instances"), list):
            return value["instances"]
        return [value]
    return None


def _json_units(path: Path) -> Iterator[tuple[object, str | None]]:
    """(value, error) per unit: one per JSONL line, one per element of a JSON document."""
    from folio_llm.jsonl import read_jsonl

    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for line in read_jsonl(path):
            yield line.value, line.error
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        yield None, f"not a JSON document ({exc})"
        return
    units = _instances_in_json(document)
    if units is None:
        yield None, "not an Instance, a list of Instances, or an API response with 'instances'"
        return
    if not units:
        yield None, "no instances in file"
    for unit in units:
        yield unit, None


def iter_json_instances(paths: Iterable[str | Path]) -> Iterator[SourceItem]:
    position = 0
    for path in expand_paths(paths, JSON_SUFFIXES):
        for value, error in _json_units(path):
            position += 1
            identifier = None
            if isinstance(value, dict):
                identifier = value.get("hrid") or value.get("id")
            if error is None and not isinstance(value, dict):
                error = f"not a JSON object (got {type(value).__name__})"
            if error is None and not _has_title(value):
                error = "no title"
            if error:
                yield SourceItem(position, str(path), identifier, reason=error)
            else:
                yield SourceItem(position, str(path), identifier, value)


def convert(items: Iterable[SourceItem], out: str | Path, rejects: str | Path,
            sample_size: int = 0, seed: int = 0) -> Counts:
    """Write usable Instances and the rejects. With ``sample_size``, a seeded sample of the
    usable ones (held in memory, ``sample_size`` at most); without, everything, streamed."""
    counts = Counts()
    sample = NestedSample(sample_size, seed) if sample_size else None
    with JsonlWriter(out) as writer, JsonlWriter(rejects) as rejected:
        for item in progress(items, "instances"):
            counts.read += 1
            if item.instance is None:
                rejected.write(item.reject())
                counts.rejected += 1
                counts.reasons[reason_kind(item.reason or "unknown")] += 1
            elif sample is None:
                writer.write(item.instance)
            else:
                sample.offer(item.position, item.instance)
        if sample is not None:
            writer.write_all(sample.items())
        counts.written = writer.count
    counts.not_sampled = counts.read - counts.rejected - counts.written
    return counts


def source_items(kind: str, paths: list[str], rules: str | None = None,
                 reference_data: str | None = None) -> Iterator[SourceItem]:
    if kind == "folio-json":
        return iter_json_instances(paths)
    if kind == "folio-api":
        from folio_llm.folio.snapshot import snapshot_instances

        return iter_json_instances([snapshot_instances(path) for path in paths])
    from folio_llm.marc.rules import RuleEngine

    engine = RuleEngine.from_files(rules, reference_data)
    return iter_marc_instances(paths, engine)
