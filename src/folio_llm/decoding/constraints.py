"""JSON-schema constrained decoding with xgrammar: every answer parses and fits the target shape."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

MISSING = "constrained decoding needs xgrammar: pip install 'folio-llm[constrained]'"


class SchemaProcessor:
    """A transformers logits processor that masks, row by row, every token the grammar forbids.

    Unlike xgrammar's own HF processor it lets a stopping criterion end a row early (a
    repetition loop): such a row then receives pad tokens, which no JSON grammar accepts, so
    its matcher is simply left alone from then on. Single use: one per ``generate`` call."""

    def __init__(self, compiled, batch_size: int, pad_token_id: int):
        import xgrammar as xgr

        self.xgr = xgr
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch_size)]
        self.bitmask = xgr.allocate_token_bitmask(batch_size, compiled.tokenizer_info.vocab_size)
        self.pad_token_id = pad_token_id
        self.stopped = [False] * batch_size
        self.started = False

    def __call__(self, input_ids, scores):
        if self.started:
            for row, token in enumerate(input_ids[:, -1].tolist()):
                self.accept(row, token)
        self.started = True
        return self.restrict(range(len(self.matchers)), scores)

    def accept(self, row: int, token: int) -> None:
        """Row ``row`` wrote ``token`` (greedy decoding chose it under this processor's mask)."""
        matcher = self.matchers[row]
        if self.stopped[row] or matcher.is_terminated():
            return
        if token == self.pad_token_id:
            self.stopped[row] = True
        elif not matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token} it allowed a step before")

    def restrict(self, rows, scores):
        """Mask ``scores`` (one line per row of ``rows``, in order) to what each row's grammar allows next."""
        rows = list(rows)
        bitmask = self.bitmask[:len(rows)]
        for slot, row in enumerate(rows):
            if self.stopped[row] or self.matchers[row].is_terminated():
                bitmask[slot] = -1  # all bits set: nothing forbidden
            else:
                self.matchers[row].fill_next_token_bitmask(bitmask, slot)
        masked = scores.to("cpu") if scores.device.type != "cuda" else scores
        self.xgr.apply_token_bitmask_inplace(masked, bitmask.to(masked.device))
        return masked.to(scores.device)


def schema_processor_factory(tokenizer, schema: dict):
    """A function (conversations of a batch, prompt width) -> [fresh logits processor].

    The grammar is compiled once. Whitespace is fixed to the compact separators the targets
    use, so constrained answers look like the training answers token for token."""
    try:
        import xgrammar as xgr
    except ImportError:
        raise ValueError(MISSING) from None
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer), stop_token_ids=[tokenizer.eos_token_id])
    compiled = xgr.GrammarCompiler(info).compile_json_schema(
        json.dumps(schema), any_whitespace=False, separators=(",", ":"))
    return lambda conversations, width: [SchemaProcessor(compiled, len(conversations), tokenizer.pad_token_id)]


def copy_processor_factory(tokenizer, fields, labels=(), open_below=(), key_order=()):
    """A function (conversations of a batch, prompt width) -> [copy-constraint processor]: the
    values of ``fields`` may only be verbatim spans of each row's description (its user message),
    within the parts the ``labels`` open (``Decoding.part_labels``); the fields of ``open_below``
    are begun where the model leaves them out less surely (``Decoding.open_below``), and a field
    an ISBD area tells is not passed (``Decoding.key_order``: the record's keys in order)."""
    from folio_llm.decoding.copy_constraint import CopyIndex, CopyProcessor

    index = CopyIndex.for_tokenizer(tokenizer)
    return lambda conversations, width: [CopyProcessor(index, [description(c) for c in conversations], width,
                                                       fields, labels, open_below, key_order)]


def description(conversation) -> str:
    """The user's description in a conversation: its last user message."""
    return next(m["content"] for m in reversed(list(conversation)) if m["role"] == "user")


def compose(*factories):
    """One factory giving every processor of ``factories`` in order (the grammar's first: the
    copy constraint must see what the grammar already forbade). None when there is none."""
    factories = [f for f in factories if f is not None]
    if not factories:
        return None
    return lambda conversations, width: [p for f in factories for p in f(conversations, width)]


@dataclass(frozen=True)
class Decoding:
    """What decoding is held to: the targets' JSON schema, the fields whose values must be
    verbatim spans of the description (None: not held), and the part labels no such span
    reaches over, each with the fields its part tells (``templates.part_labels``)."""

    schema: dict | None
    copy_fields: list[str] | None
    part_labels: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # eval.open_below with the copy constraint: (field, threshold, the record's keys after it)
    open_below: tuple[tuple[str, float, tuple[str, ...]], ...] = ()
    key_order: tuple[str, ...] = ()  # the record's keys in order (dataset.target_fields), with the copy constraint


def decoding_settings(params, constrained: bool | None = None, copy: bool | None = None,
                      reference_data=None) -> Decoding:
    """``params.eval``'s choice, a command's ``--constrained``/``--copy`` overriding it. With
    ``eval.tenant_labels`` the type labels may only be the tenant's: those of ``reference_data``
    (a folder; default ``params.source.reference_data``), left free where it does not exist."""
    from folio_llm.answers import target_schema
    from folio_llm.templates import part_labels

    schema = params.eval.constrained if constrained is None else constrained
    copy = params.eval.copy_constraint if copy is None else copy
    labels = _tenant_labels(str(reference_data or params.source.reference_data),
                            tuple(params.denormalize.identifier_types)) if params.eval.tenant_labels else None
    within_parts = copy and params.eval.copy_within_parts
    return Decoding(target_schema(params.denormalize.fields, labels) if schema else None,
                    params.eval.copy_fields if copy else None,
                    part_labels(params.dataset) if within_parts else (),
                    _open_below(params) if copy else (), tuple(params.dataset.target_fields) if copy else ())


def _open_below(params) -> tuple:
    order = list(params.dataset.target_fields)
    return tuple((field, below, tuple(order[order.index(field) + 1:] if field in order else ()))
                 for field, below in sorted(params.eval.open_below.items()) if below > 0)


@functools.lru_cache(maxsize=4)
def _tenant_labels(reference_data: str, identifier_types: tuple[str, ...]) -> dict[str, list[str]] | None:
    from pathlib import Path

    from folio_llm.folio.instance import decoding_labels
    from folio_llm.folio.reference import ReferenceData

    if not Path(reference_data).is_dir():
        return None
    return decoding_labels(ReferenceData.load(reference_data), identifier_types)


def decoding_constraint(tokenizer, decoding: Decoding | None):
    """The logits-processor factory for ``decoding`` (:func:`decoding_settings`): the JSON schema
    of the targets, then the copy constraint; None when it holds answers to neither."""
    if decoding is None:
        return None
    return compose(schema_processor_factory(tokenizer, decoding.schema) if decoding.schema else None,
                   copy_processor_factory(tokenizer, decoding.copy_fields, decoding.part_labels, decoding.open_below,
                                          decoding.key_order)
                   if decoding.copy_fields else None)
