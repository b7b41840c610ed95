"""The whole of params.yaml: every section (:mod:`folio_llm.sections`) in one typed object.

``load_params`` refuses an unknown key or a value of the wrong type with a message that names
the key; `folio-llm check-params` (run by `make repro` before `dvc repro`) checks the whole file
at once, so a typo in a late section is caught before the first stage works. The stages
themselves read only their own sections. Defaults are the embedded defaults: an empty
params.yaml runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from folio_llm.sections import DEFAULT_SEED, SEED_HELP, SECTION_NAMES, check_top_level, read_values
from folio_llm.sections.dataset import STYLE_NAMES, DatasetParams, SplitParams, TellParams  # noqa: F401
from folio_llm.sections.denormalize import DEFAULT_IDENTIFIER_TYPES, DenormalizeParams  # noqa: F401
from folio_llm.sections.eval import EvalParams
from folio_llm.sections.export import ExportParams
from folio_llm.sections.fields import DEFAULT_FIELDS  # noqa: F401
from folio_llm.sections.model import ModelParams
from folio_llm.sections.source import SourceParams
from folio_llm.sections.train import LoraParams, TrainParams  # noqa: F401
from folio_llm.typed_config import ParamsError, build, setting


@dataclass
class Params:
    seed: int = setting(SEED_HELP, DEFAULT_SEED)
    source: SourceParams = setting("Stage 'instances': where the records come from.", factory=SourceParams)
    denormalize: DenormalizeParams = setting(
        "Stage 'denormalize': labels instead of UUIDs, fields to keep.", factory=DenormalizeParams
    )
    dataset: DatasetParams = setting("Stage 'dataset': prompts, targets and splits.", factory=DatasetParams)
    model: ModelParams = setting("Stage 'base': the model to fine-tune.", factory=ModelParams)
    train: TrainParams = setting("Stage 'train': LoRA fine-tuning.", factory=TrainParams)
    eval: EvalParams = setting("Stage 'evaluate': base vs tuned, field by field.", factory=EvalParams)
    export: ExportParams = setting(
        "Stage 'export': merged model, GGUF files for llama.cpp / Ollama / GPT4All.", factory=ExportParams)


def _check(params: Params) -> None:
    """Each section's own check, then what ties two sections together."""
    for name in SECTION_NAMES:
        check = getattr(getattr(params, name), "check", None)
        if check:
            check()
    kept = set(params.denormalize.fields)
    missing = [f for f in params.dataset.target_fields if f not in kept]
    if missing:
        raise ParamsError(f"params: dataset.target_fields: {missing} not kept by denormalize.fields")
    unknown = [f for f in params.eval.open_below if f not in params.dataset.target_fields]
    if unknown:
        raise ParamsError(f"params: eval.open_below: {unknown} are no fields of dataset.target_fields")


def parse_params(values: dict | None) -> Params:
    params = build(Params, check_top_level(values))
    _check(params)
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    return parse_params(read_values(path))


def as_dict(params: Any) -> Any:
    return dataclasses.asdict(params)
