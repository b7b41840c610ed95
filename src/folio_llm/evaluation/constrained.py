"""JSON-schema constrained decoding with xgrammar: every answer parses and fits the target shape."""

from __future__ import annotations

import json

MISSING = "constrained decoding needs xgrammar: pip install 'folio-llm[constrained]'"


def schema_processor_factory(tokenizer, schema: dict):
    """A function batch_size -> fresh logits processor (xgrammar's processors are single-use).

    The grammar is compiled once. Whitespace is fixed to the compact separators the targets
    use, so constrained answers look like the training answers token for token."""
    try:
        import xgrammar as xgr
        from xgrammar.contrib.hf import LogitsProcessor
    except ImportError:
        raise ValueError(MISSING) from None
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id])
    compiled = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    return lambda batch_size: LogitsProcessor(compiled)
