"""Copy-constrained decoding: the value of a told field may only be a verbatim span of the description.

A fine-tuned model now and then "improves" what it was told: an invented subtitle, a
publisher it knows better. For the fields a description tells word for word (``COPY_FIELDS``)
this logits processor lets a JSON string hold only a substring of the user's description.

Everything happens on bytes in the JSON-escaped domain, so escapes and multi-byte letters are
exact: the description as it stands inside a JSON string (``json.dumps(description,
ensure_ascii=False)[1:-1]``, UTF-8) and each token as the bytes it adds to the answer. What is
written so far inside a copied string must occur in the description starting where an
(escaped) character starts; its closing quote may come only where a word of the description
ends (not inside "Commonwealth": a value cut short is how a model gets round the constraint). Structure
is the JSON-schema processor's job (``constraints.py``): put this processor after it, so that a
row whose every remaining token this one would forbid is spotted and left unmasked (counted in
``fallbacks``) rather than emptied.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Iterable

COPY_FIELDS = ("title", "contributors.name", "publication.publisher", "publication.place",
               "publication.dateOfPublication", "subjects.value", "identifiers.value", "editions",
               "physicalDescriptions", "series.value")
QUOTE, BACKSLASH = ord('"'), ord("\\")
NEG_INF = float("-inf")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character standing for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


def token_bytes(tokenizer) -> list[bytes]:
    """The bytes each token id adds to the text: exact for byte-level BPE, else via decode."""
    table = _byte_decoder()
    pieces = [p or "" for p in tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))]
    if all(ch in table for piece in pieces for ch in piece):
        return [bytes(table[ch] for ch in piece) for piece in pieces]
    return [tokenizer.decode([i]).encode() for i in range(len(tokenizer))]


@dataclass
class _Json:
    """Where an answer stands in its JSON: the open containers as (bracket, path, last key), and
    the string being written. A path is the keys down to a value, lists skipped: contributors.name."""

    frames: tuple = ()
    mode: str = "value"  # value (between strings) | key | str (a free string) | copy | done
    escape: bool = False
    text: bytes = b""  # the key or copied string so far, as written (escaped)
    expect_key: bool = False

    def copy(self) -> _Json:
        return _Json(self.frames, self.mode, self.escape, self.text, self.expect_key)

    def signature(self) -> tuple:
        return self.frames, self.mode, self.escape, self.text if self.mode == "key" else b"", self.expect_key

    def value_path(self) -> str:
        bracket, path, key = self.frames[-1] if self.frames else ("[", "", "")
        return path if bracket == "[" else f"{path}.{key}".lstrip(".")

    def feed(self, data: bytes, fields: frozenset, touched: list | None = None) -> None:
        """Advance over ``data``; add (text, closed) to ``touched`` for each copied string it opens."""
        opened = False
        for byte in data:
            if self.mode == "done":
                return
            if self.mode in ("key", "str", "copy"):
                if self.escape or byte != QUOTE:
                    self.escape = not self.escape and byte == BACKSLASH
                    if self.mode != "str":
                        self.text += bytes((byte,))
                    continue
                if self.mode == "key":
                    bracket, path, _ = self.frames[-1]
                    self.frames = self.frames[:-1] + ((bracket, path, self.text.decode(errors="replace")),)
                elif opened and touched is not None:
                    touched.append((self.text, True))
                opened, self.mode = False, "value"
            elif byte == QUOTE:
                if self.expect_key:
                    self.mode = "key"
                else:
                    self.mode = "copy" if self.value_path() in fields else "str"
                    opened = self.mode == "copy"
                self.text = b""
            elif byte in b"{[":
                self.frames += ((chr(byte), self.value_path(), ""),)
                self.expect_key = byte == ord("{")
            elif byte in b"}]" and self.frames:
                self.frames = self.frames[:-1]
                self.mode = "value" if self.frames else "done"
            elif byte == ord(","):
                self.expect_key = bool(self.frames) and self.frames[-1][0] == "{"
            elif byte == ord(":"):
                self.expect_key = False
        if opened and touched is not None:
            touched.append((self.text, False))


class CopyIndex:
    """Per-tokenizer tables, built once: each token's bytes, every token prefix (to stop a walk
    along the description early), and for each text s the tokens s + '"' + rest."""

    _built: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __init__(self, pieces: list[bytes], stop_ids: Iterable[int]):
        self.pieces = pieces
        self.stop_ids = frozenset(stop_ids)
        self.by_bytes: dict[bytes, list[int]] = {}
        self.prefixes: set[bytes] = set()
        self.closing: dict[bytes, list[tuple[int, bytes]]] = {}
        for token, piece in enumerate(pieces):
            if not piece or token in self.stop_ids:
                continue
            self.by_bytes.setdefault(piece, []).append(token)
            self.prefixes.update(piece[:n] for n in range(1, len(piece) + 1))
            at = piece.find(b'"')
            while at >= 0:
                self.closing.setdefault(piece[:at], []).append((token, piece[at + 1:]))
                at = piece.find(b'"', at + 1)
        self.quoted = sorted({token for entries in self.closing.values() for token, _ in entries})
        self._effects: dict[tuple, list] = {}
        self._openers: dict[tuple, list] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer) -> CopyIndex:
        index = cls._built.get(tokenizer)
        if index is None:
            index = cls._built[tokenizer] = cls(token_bytes(tokenizer), tokenizer.all_special_ids)
        return index

    def effects(self, state: _Json, data: bytes, fields: frozenset) -> list:
        """The copied strings that ``data`` opens from ``state`` (not inside one), memoized."""
        key = (fields, state.signature(), data)
        if key not in self._effects:
            touched: list = []
            state.copy().feed(data, fields, touched)
            self._effects[key] = touched
        return self._effects[key]

    def openers(self, state: _Json, fields: frozenset) -> list:
        """(token, effects) for the tokens that would open a copied string from ``state``; only a
        token holding a quote can."""
        key = (fields, state.signature())
        if key not in self._openers:
            pairs = [(t, self.effects(state, self.pieces[t], fields)) for t in self.quoted]
            # an empty copied string is always found: only tokens that also write into it matter
            self._openers[key] = [(t, touched) for t, touched in pairs if any(text for text, _ in touched)]
        return self._openers[key]


def _word(byte: int) -> bool:
    """A byte of a word: an ASCII letter or digit, or part of a non-ASCII character."""
    return byte >= 0x80 or chr(byte).isalnum()


class _Row:
    """One answer being written against one description."""

    def __init__(self, index: CopyIndex, description: str, fields: frozenset):
        self.index, self.fields = index, fields
        escaped = json.dumps(description, ensure_ascii=False)[1:-1]
        self.desc = escaped.encode()
        self.starts, at, i = {0}, 0, 0  # byte offsets where an escaped character starts
        while i < len(escaped):
            step = (6 if escaped[i + 1] == "u" else 2) if escaped[i] == "\\" else 1
            at, i = at + len(escaped[i:i + step].encode()), i + step
            self.starts.add(at)
        # a copied value may end only where a word ends: closing "Commonwealth ..." after "Comm"
        # is the way out a model takes when the word it wanted is not in the description
        self.ends_at = {at for at in self.starts
                        if at == len(self.desc) or not (_word(self.desc[at]) and _word(self.desc[at - 1]))}
        self.state, self.stopped = _Json(), False
        self._spans: dict[bytes, tuple] = {}
        self._found: dict[tuple, bool] = {}

    def feed(self, tokens: list[int]) -> None:
        for token in tokens:
            self.stopped = self.stopped or token in self.index.stop_ids or token >= len(self.index.pieces)
            if self.stopped:
                return
            self.state.feed(self.index.pieces[token], self.fields)

    def ends(self, text: bytes) -> list[int]:
        """Where the occurrences of ``text`` that start on a character end."""
        if not text:
            return sorted(self.starts)
        out, at = [], self.desc.find(text)
        while at >= 0:
            out += [at + len(text)] if at in self.starts else []
            at = self.desc.find(text, at + 1)
        return out

    def found(self, text: bytes, closed: bool) -> bool:
        key = (text, closed)
        if key not in self._found:
            self._found[key] = any(not closed or end in self.ends_at for end in self.ends(text))
        return self._found[key]

    def spans(self, text: bytes) -> tuple[set[int], dict[int, bytes]]:
        """For a copied string holding ``text``: the tokens that go on along the description, and
        the tokens s + '"' + rest that go on by s and close it where a character ends."""
        if text not in self._spans:
            ids, closing, ends = set(), {}, self.ends(text)
            if any(start in self.ends_at for start in ends):
                closing.update(self.index.closing.get(b"", ()))
            for start in ends:
                for end in range(start + 1, len(self.desc) + 1):
                    span = self.desc[start:end]
                    if span not in self.index.prefixes:  # no token is that long
                        break
                    ids.update(self.index.by_bytes.get(span, ()))
                    if end in self.ends_at:
                        closing.update(self.index.closing.get(span, ()))
            self._spans[text] = ids, closing
        return self._spans[text]

    def mask(self) -> tuple[bool, list[int]] | None:
        """(True, the only tokens allowed) inside a copied string, (False, tokens forbidden)
        elsewhere, or None: nothing to forbid."""
        state = self.state
        if self.stopped or state.mode == "done":
            return None
        if state.mode != "copy":
            bad = [t for t, touched in self.index.openers(state, self.fields)
                   if not all(self.found(*item) for item in touched)]
            return (False, bad) if bad else None
        ids, closing = self.spans(state.text)
        closed = state.copy()
        closed.mode, closed.text, closed.escape = "value", b"", False
        allowed = set(ids)
        for token, rest in closing.items():
            # rest may open the next copied string (editions: ...","2nd ed)
            if QUOTE not in rest or all(self.found(*item) for item in self.index.effects(closed, rest, self.fields)):
                allowed.add(token)
        return True, sorted(allowed)


class CopyProcessor:
    """A transformers logits processor (after ``SchemaProcessor``): for each row of a batch, masks
    the tokens that would put into a copied field text not found in that row's description.

    Rows are left-padded prompts ``prompt_width`` wide; a row that has emitted a special token
    (end-of-turn, then pads) is done and left alone. Single use: one per ``generate`` call."""

    def __init__(self, index: CopyIndex, descriptions: list[str], prompt_width: int,
                 fields: Iterable[str] = COPY_FIELDS):
        self.fields = frozenset(fields)
        self.rows = [_Row(index, description, self.fields) for description in descriptions]
        self.prompt_width = prompt_width
        self.seen = 0
        self.fallbacks = 0

    def __call__(self, input_ids, scores):
        new = input_ids[:, self.prompt_width + self.seen:].tolist()
        self.seen += len(new[0]) if new else 0
        for row, tokens, line in zip(self.rows, new, scores):
            row.feed(tokens)
            self._apply(row.mask(), line)
        return scores

    def _apply(self, mask: tuple[bool, list[int]] | None, line) -> None:
        """Mask one row (a torch or numpy vector) in place, unless that leaves no token open."""
        if mask is None:
            return
        keep, ids = mask
        open_ids = int((line[ids] > NEG_INF).sum()) if ids else 0
        if keep and open_ids:
            kept = line[ids]
            line[:] = NEG_INF
            line[ids] = kept
        elif not keep and open_ids < int((line > NEG_INF).sum()):
            line[ids] = NEG_INF
        else:
            self.fallbacks += 1

    @classmethod
    def for_llamacpp(cls, index: CopyIndex, description: str, prompt_len: int, fields: Iterable[str] = COPY_FIELDS):
        """A llama-cpp-python ``logits_processor``: (input_ids, scores) of one sequence, numpy,
        input_ids holding prompt and answer so far. The processor is its ``.processor``."""
        processor = cls(index, [description], prompt_len, fields)

        def process(input_ids, scores):
            processor(input_ids[None, :], scores[None, :])
            return scores

        process.processor = processor
        return process
