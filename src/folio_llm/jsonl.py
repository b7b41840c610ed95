"""JSON Lines through the jsonlines package: line-numbered reading that never raises on a bad line, atomic writing."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

import jsonlines


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
        lines = _NumberedLines(handle)
        reader = jsonlines.Reader(lines, loads=lines.loads)
        while True:
            try:
                value = reader.read(allow_none=True, skip_empty=True)
            except EOFError:
                return
            except jsonlines.InvalidLineError as exc:
                yield JsonLine(exc.lineno, None, _bad_line_reason(exc))
            else:
                yield JsonLine(lines.lineno, value)


# jsonlines drops one of these from the start of a line; json.loads rejects them, and so does this module
_DROPPED_BY_JSONLINES = ("\x1e".encode(), "\ufeff".encode())


class _NumberedLines:
    """A file's lines as jsonlines reads them, keeping the number and bytes of the last one."""

    def __init__(self, handle: BinaryIO):
        self._handle = handle
        self.lineno = 0
        self.line = b""

    def __iter__(self) -> Iterator[bytes]:
        for lineno, line in enumerate(self._handle, start=1):
            self.lineno, self.line = lineno, line
            yield line

    def loads(self, text: str) -> Any:
        if self.line.startswith(_DROPPED_BY_JSONLINES):
            text = self.line.decode("utf-8")
        return json.loads(text)


def _bad_line_reason(exc: jsonlines.InvalidLineError) -> str:
    cause = exc.__cause__
    if isinstance(cause, UnicodeDecodeError):
        return f"line {exc.lineno}: not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, json.JSONDecodeError):
        return f"line {exc.lineno}: invalid JSON ({cause.msg} at column {cause.colno})"
    # a ValueError that is no parse error (an integer over Python's digit limit) is not a bad line
    raise cause


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
        self._writer: jsonlines.Writer | None = None

    def __enter__(self) -> "JsonlWriter":
        self._writer = jsonlines.Writer(self._cm.__enter__(), dumps=dumps)
        return self

    def write(self, obj: Any) -> None:
        self._writer.write(obj)
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
