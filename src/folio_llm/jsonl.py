"""JSON Lines in and out: line-numbered reading that never raises on a bad line, and
atomic writing so a killed stage never leaves a half-written output behind.

Hand-written rather than the jsonlines package: its reader raises at the first bad line (a
rejects file needs every bad line with its number and the rest read on), and it has no atomic
writer."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator


def dumps(obj: Any) -> str:
    """One canonical JSON line: UTF-8 text kept as is, stable separators."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class JsonLine:
    lineno: int
    value: Any
    error: str | None = None


def read_jsonl(path: str | Path) -> Iterator[JsonLine]:
    """Yield every non-blank line of ``path``: its value, or the reason it is not JSON."""
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                yield JsonLine(lineno, json.loads(raw.decode("utf-8")))
            except UnicodeDecodeError as exc:
                yield JsonLine(lineno, None, f"line {lineno}: not UTF-8 ({exc.reason} at byte {exc.start})")
            except json.JSONDecodeError as exc:
                yield JsonLine(lineno, None, f"line {lineno}: invalid JSON ({exc.msg} at column {exc.colno})")


def load_jsonl(path: str | Path) -> list[Any]:
    """All values of a JSONL file that this project wrote itself; a bad line is an error."""
    values = []
    for line in read_jsonl(path):
        if line.error:
            raise ValueError(f"{path}: {line.error}")
        values.append(line.value)
    return values


@contextmanager
def atomic_open(path: str | Path, mode: str = "w"):
    """Write to a temporary file beside ``path`` and move it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8", newline=None if "b" in mode else "\n") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class JsonlWriter:
    """Atomic JSONL writer that counts what it wrote."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.count = 0
        self._cm = atomic_open(self.path)
        self._handle = None

    def __enter__(self) -> "JsonlWriter":
        self._handle = self._cm.__enter__()
        return self

    def write(self, obj: Any) -> None:
        self._handle.write(dumps(obj) + "\n")
        self.count += 1

    def write_all(self, objs: Iterable[Any]) -> None:
        for obj in objs:
            self.write(obj)

    def __exit__(self, *exc) -> bool:
        return self._cm.__exit__(*exc)


def write_jsonl(path: str | Path, objs: Iterable[Any]) -> int:
    with JsonlWriter(path) as writer:
        writer.write_all(objs)
        return writer.count


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path) as handle:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
