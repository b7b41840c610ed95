"""params.yaml, one section at a time: each stage reads only the sections it uses.

Every section is a dataclass in its own module here (``sections.train.TrainParams``, ...)
whose fields carry their help text and whose ``check`` (where it has one) refuses values no
stage can use. A stage imports just its own sections, so an edit of one section's settings
or help text re-runs only the stages that read it (DVC hashes the modules a stage imports).
:mod:`folio_llm.params` puts all of them together for the commands that need the whole file.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

from folio_llm.typed_config import ParamsError, convert

SECTION_NAMES = ("seed", "source", "denormalize", "dataset", "model", "train", "eval", "export")
DEFAULT_SEED = 42
SEED_HELP = "Seed for every random draw: sample, phrasings, split."


def read_values(path: str | Path = "params.yaml") -> dict:
    """The file's plain values (a missing file is empty: the embedded defaults); a top-level
    key that names no section is refused here, whichever stage reads the file."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ParamsError(f"params: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    return check_top_level(values)


def check_top_level(values) -> dict:
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParamsError("params: the file must hold a mapping of sections")
    for key in values:
        if key not in SECTION_NAMES:
            raise ParamsError(f"params: unknown key '{key}' (known: {', '.join(sorted(SECTION_NAMES))})")
    return values


def section(values: dict, name: str, kind: type):
    """Section ``name`` of ``values`` as ``kind``, checked; ``seed`` is a plain integer."""
    if name == "seed":
        return convert(values.get("seed", DEFAULT_SEED), int, "seed")
    built = convert(values.get(name), kind, name)
    if hasattr(built, "check"):
        built.check()
    return built


def load_sections(path: str | Path = "params.yaml", **kinds: type) -> SimpleNamespace:
    """The named sections of the params file, e.g. ``load_sections(path, seed=int,
    train=TrainParams)``: ``.seed``, ``.train``."""
    values = read_values(path)
    return SimpleNamespace(**{name: section(values, name, kind) for name, kind in kinds.items()})
