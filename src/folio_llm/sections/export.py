"""Section ``export``: the merged model and the GGUF files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from folio_llm.typed_config import ParamsError, setting


@dataclass
class ExportParams:
    types: list[Literal["f16", "q8_0", "q4_k_m"]] = setting(
        "GGUF files to write (models/gguf/<name>-<type>.gguf) for llama.cpp, Ollama and GPT4All: "
        "'q8_0' (half the size of f16, same answers in practice), 'f16', 'q4_k_m' (smallest; "
        "quantized from f16 by llama.cpp). The first one is the Modelfile's and predict's.",
        factory=lambda: ["q8_0"],
    )
    name: str = setting("Model name inside the GGUF files and in their file names.", "folio-llm")
    gpt4all: list[Literal["f16", "q8_0", "q4_k_m"]] = setting(
        "Types (among 'types') of which a copy for GPT4All and other older llama.cpp engines is "
        "written (models/gguf/<name>-<type>-gpt4all.gguf): an older pre-tokenizer name with the same "
        "split rules and a plain ChatML chat template, kept only when llama.cpp tokenizes every test "
        "conversation to the same ids as the original ([] = none).",
        factory=lambda: ["q8_0"],
    )
    parity_rows: int = setting(
        "Test prompts answered by both the merged model and each GGUF file, compared in "
        "metrics/export.json (0 = no parity check). Each adds its answer's time in every engine "
        "to the stage; the logit check compares the first 64 answer tokens of each.",
        8,
    )

    def check(self) -> None:
        if not self.types or len(set(self.types)) != len(self.types):
            raise ParamsError("params: export.types: needs at least one GGUF type, each once")
        if not self.name or not re.fullmatch(r"[\w.-]+", self.name):
            raise ParamsError("params: export.name: letters, digits, '.', '_' and '-' only (it names files)")
        if self.parity_rows < 0:
            raise ParamsError("params: export.parity_rows: must be >= 0")
        if not set(self.gpt4all) <= set(self.types):
            raise ParamsError(f"params: export.gpt4all: {sorted(set(self.gpt4all) - set(self.types))} "
                              "not in export.types (a GPT4All copy is made from a written file)")
