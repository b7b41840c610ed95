"""Decoding: how a model writes its answer, on every path that answers (the evaluate stage,
export parity, predict, the page and the API).

``generate`` (transformers, batched greedy), ``llamacpp`` (a GGUF file through llama-cpp-python)
and ``chat_api`` (any OpenAI-compatible server) produce answers; ``constraints`` resolves the
decoding settings (JSON schema of the target, copy constraint) from params.eval and a
command's options; ``copy_constraint`` holds told fields to spans of the description.
"""
