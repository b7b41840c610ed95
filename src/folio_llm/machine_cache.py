"""Small per-machine JSON caches under ``~/.cache/folio-llm`` (``FOLIO_LLM_CACHE`` moves it):
measurements of this machine that outlive a run and stay outside DVC outputs. A cache that
cannot be read or written costs a new measurement, never a failed run."""

from __future__ import annotations

import json
import os
from pathlib import Path


def cache_root() -> Path:
    return Path(os.environ.get("FOLIO_LLM_CACHE") or Path.home() / ".cache" / "folio-llm")


def read_entries(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def write_entries(path: Path, entries: dict) -> None:
    """Atomic replace: a concurrent reader sees the old file or the new one, never half."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(entries, indent=2))
        tmp.replace(path)
    except OSError:
        pass
