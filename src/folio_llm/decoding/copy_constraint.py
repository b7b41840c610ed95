"""Copy-constrained decoding: the value of a told field may only be a verbatim span of the description.

A fine-tuned model now and then "improves" what it was told: an invented subtitle, a
publisher it knows better. For the fields a description tells word for word (``COPY_FIELDS``)
this logits processor lets a JSON string hold only a substring of the user's description.

Everything happens on bytes in the JSON-escaped domain, so escapes and multi-byte letters are
exact: the description as it stands inside a JSON string (``json.dumps(description,
ensure_ascii=False)[1:-1]``, UTF-8) and each token as the bytes it adds to the answer. What is
written so far inside a copied string must occur in the description starting where an
(escaped) character starts, not inside a word ("xx, 246 pages" is no span of "xxx, 246 pages");
its closing quote may come only where a word of the description ends (not inside
"Commonwealth": a value cut short is how a model gets round the constraint). No value reaches
over a phrase the description styles open a part with ("Language: ", "Subjects are ", "; place: ",
given as ``labels``, ``templates.part_labels``) where a line, a sentence, a list item or an ISBD
area begins ("Conservation International. Subjects: Birdsongs" is no name), nor over an ISBD
area's "— " (a title is no "Title. — Place : Publisher"), nor starts where
the label of another field's part ends ("English" after "Language: " is no subject). Where the
description labels its subjects ("Subjects: A; B"), a subject is one or more whole items of that
list, and no other field's value starts in it, and the answer lists no more subjects than it has
items (held to the items, a model that would go on otherwise writes them again until it is cut off),
and closes its list of subjects only once it holds each list's last item.
Where labels open the names ("Names: A; B", "Author: A", "Editor: B"), the answer lists no more
names than they hold (a model that would not stop went on with the title's words, then the labels').
No value, nor a part of one, is written a third time, or more often than the description tells
it, and no value is begun that could only be such a repeat (it could then neither close nor go on).

A name (``NAME_FIELDS``) is held to the description's words too, in one of the two forms a
cataloger records it in: as told, from the start of a word ("Levine, Mark", "Cornell University.
Library of Natural Sounds"), or inverted from a name told in natural order ("Peter H. English; "
-> "English, Peter H.", "Eden Summers, 1982-" -> "Summers, Eden, 1982-"), given names whole and
as told, initials and dates kept. A name starts with a capital (or a particle: "de Gaulle"), and
ends before a "; " (where a description separates names), a line break, a subject's "--" or a
role word in brackets ("Marantz, Curtis A. (editor)"), never before a capitalized qualifier in
brackets ("Anglican Church Grammar School (Brisbane, Qld.)", "Spier, R. (Raymond)"). A name
already written twice, or a part of one, is not written again: a model held away from the name
it wanted otherwise loops ("Welcomes a Friend", "Welcomes a Friend", "Welcomes a", ... from the
title "Max Welcomes a Friend").

Structure is the JSON-schema processor's job (``constraints.py``): put this processor after it,
so that a row whose every remaining token this one would forbid is spotted and left unmasked
(counted in ``fallbacks``) rather than emptied.
"""

from __future__ import annotations

import bisect
import functools
import json
import re
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

from folio_llm.sections.eval import COPY_FIELDS

NAME_FIELDS = frozenset({"contributors.name"})
# where a name cannot go on: before the next name ("; ", and a citation's ", and " / ", & " /
# ", et al."), a subject's "--", a line break, "(author)"
NOT_IN_A_NAME = re.compile(rb"(?=;|--|\\n|, (?:and |& |et al\.))| (?=\([a-z])")
NAME_END = frozenset(b".)]-?'")  # what a name may end with besides a letter or digit
# a capitalized qualifier in brackets goes with the name before it ("Anglican Church Grammar School
# (Brisbane, Qld.)", "YourSay Community Panel (A.C.T.)"): no name ends before one
QUALIFIER_FOLLOWS = re.compile(rb" \([A-Z]")
# a name's dates go with it ("Jen Millea, 1961-" is "Millea, Jen, 1961-", never "Millea, Jen"): no name
# ends before ", 1961-", ", 1820-1905", ", -1604", ", 1949 May 28-", ", approximately 1556-", ", fl. 1329"
DATES_FOLLOW = re.compile(
    rb", (?:(?:approximately|active|fl\.|b\.|d\.|born|died) [-\d]|-\d|\d{1,4}\??(?: [A-Z][a-z]+ \d{1,2})?-)")
PUBLISHER = "publication.publisher"
# "Washington, D.C : Electronic Industries Assoc., Engineering Dept, [1965]": after a colon ("Place :
# Publisher, Date", "Publisher: ...") a comma before a capitalized item without a digit is inside the
# publisher's name, not where its date begins
AFTER_A_COLON = re.compile(r": (.*?)(?=\. |;|\\n| \| | — | -- |$)".encode())
NO_DATE_ITEM = re.compile(rb", (?=[A-Z][^,\d]*(?:, |$))")
# an ISBD series area, "... -- 13 pages : illustrations ; 29 cm. -- (EIA standard ; EIA RS-167-C.).": the
# answer left the series out of most descriptions holding one, while it wrote those the other styles tell
ISBD_SERIES_AREA = re.compile(r"\. (?:—|--) \(".encode())
MAX_SAME_NAME = 2  # one person in two roles; a third time (or a part of it) is a model caught in a loop
# another copied value (a subject, a publisher, a date) is written at most this often, or as often as the
# description tells it if more: "Venezia" a fourth time is a loop, not a record
MAX_SAME_VALUE = 2

ANOTHER = "[]"  # (path + ANOTHER, b"", False): an effect that adds an element to the list at path
LAST = "[/]"  # (path + LAST, b"", False): an effect that closes the list at path
# the lists whose length a labelled description bounds, and the copied value counted in each
COUNTED = {"subjects": "subjects.value", "contributors": "contributors.name"}
# what separates the items of a labelled list of subjects (oneline style: ", "; the others: "; ")
SUBJECT_SEPARATORS = re.compile(rb"; |, ")
QUOTE, BACKSLASH = ord('"'), ord("\\")
_ESCAPES = frozenset({b"\\n", b"\\t", b"\\r", b"\\b", b"\\f"})  # an escaped line break ends a word
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

    def feed(self, data: bytes, fields: frozenset, touched: list | None = None, closed: list | None = None) -> None:
        """Advance over ``data``; add (path, text, closed) to ``touched`` for each copied string it
        opens, (list path + ANOTHER, b"", False) for each element it adds to a list of copied
        values and (list path + LAST, b"", False) for each such list it closes; add (path, text)
        to ``closed`` for each copied string it closes."""
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
                else:
                    if opened and touched is not None:
                        touched.append((self.value_path(), self.text, True))
                    if self.mode == "copy" and closed is not None:
                        closed.append((self.value_path(), self.text))
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
                if touched is not None and byte == ord("]") and _holds_copies(self.frames[-1], fields):
                    touched.append((self.frames[-1][1] + LAST, b"", False))
                self.frames = self.frames[:-1]
                self.mode = "value" if self.frames else "done"
            elif byte == ord(","):
                self.expect_key = bool(self.frames) and self.frames[-1][0] == "{"
                if touched is not None and self.frames and _holds_copies(self.frames[-1], fields):
                    touched.append((self.frames[-1][1] + ANOTHER, b"", False))  # another {"value": ...}, {"name": ...}
            elif byte == ord(":"):
                self.expect_key = False
        if opened and touched is not None:
            touched.append((self.value_path(), self.text, False))


def _key_after(state: _Json, piece: bytes, fields: frozenset) -> tuple[bytes | None, bool]:
    """The record's key as written once ``piece`` follows ``state`` at its top level, and whether
    it is still being written; (None, False) where ``piece`` ends the record."""
    after = state.copy()
    after.feed(piece, fields)
    if after.mode == "done" or not after.frames:
        return None, False
    if after.mode == "key" and len(after.frames) == 1:
        return after.text, True
    return after.frames[0][2].encode(), False


def _holds_copies(frame: tuple, fields: frozenset) -> bool:
    """Whether ``frame`` is a list whose elements hold copied values."""
    return frame[0] == "[" and any(field.startswith(frame[1] + ".") for field in fields)


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
        # only a token holding a quote can open a copied string, a comma add to a list of them, a
        # bracket close one
        list_marks = {token for token, piece in enumerate(pieces)
                      if (b"," in piece or b"]" in piece) and token not in self.stop_ids}
        self.may_open = sorted({token for entries in self.closing.values() for token, _ in entries} | list_marks)
        self._effects: dict[tuple, list] = {}
        self._openers: dict[tuple, list] = {}
        self._choices: dict[tuple, tuple] = {}

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

    def key_choices(self, state: _Json, field: str, fields: frozenset) -> tuple[list[int], list[int]]:
        """From ``state``, where the record's next key begins: (the tokens that begin ``field``,
        the tokens that begin another key or end the record), memoized."""
        # a key being begun: its first bytes decide, wherever in the record it stands
        key = (field, "key") if state.mode == "key" else (fields, state.signature(), field)
        if key not in self._choices:
            name, opening, skipping = field.encode(), [], []
            for token, piece in enumerate(self.pieces):
                if token in self.stop_ids or not piece:
                    continue
                if state.mode == "key":  # the key's first bytes, and its closing quote if the token holds it
                    text = piece.split(b'"')[0]
                    begins = name.startswith(text) if b'"' not in piece else text == name
                elif b'"' in piece or b"}" in piece:
                    text, partial = _key_after(state, piece, fields)
                    begins = text is not None and (name.startswith(text) if partial else text == name)
                    text = b"}" if text is None else text
                else:
                    continue
                if text:
                    (opening if begins else skipping).append(token)
            self._choices[key] = opening, skipping
        return self._choices[key]

    def passing(self, state: _Json, field: str, order: tuple[str, ...], fields: frozenset) -> list[int]:
        """From ``state``, where a key of the record is begun or being written: the tokens that
        make it a key after ``field`` in ``order`` (the record's keys) or end the record, where
        it could no longer be ``field`` nor a key before it; memoized."""
        key = (fields, state.signature(), field, order)
        if key not in self._choices:
            at = order.index(field)
            before, after = [k.encode() for k in order[:at + 1]], [k.encode() for k in order[at + 1:]]
            tokens = []
            for token, piece in enumerate(self.pieces):
                if token in self.stop_ids or not piece or (
                        state.mode != "key" and b'"' not in piece and b"}" not in piece):
                    continue
                text, _ = _key_after(state, piece, fields)
                if text is None or (any(k.startswith(text) for k in after)
                                    and not any(k.startswith(text) for k in before)):
                    tokens.append(token)
            self._choices[key] = tokens
        return self._choices[key]

    def openers(self, state: _Json, fields: frozenset) -> list:
        """(token, effects) for the tokens that would open a copied string, or add an element to a
        list of them, from ``state``."""
        key = (fields, state.signature())
        if key not in self._openers:
            pairs = [(t, self.effects(state, self.pieces[t], fields)) for t in self.may_open]
            # an empty copied string left open is always found: only tokens that also write into it,
            # or close it, matter
            self._openers[key] = [(t, touched) for t, touched in pairs
                                  if any(text or closed or path.endswith((ANOTHER, LAST))
                                         for path, text, closed in touched)]
        return self._openers[key]


def _word(byte: int) -> bool:
    """A byte of a word: an ASCII letter or digit, or part of a non-ASCII character."""
    return byte >= 0x80 or chr(byte).isalnum()


# lower-case words a surname may start with ("Charles de Gaulle" -> "de Gaulle, Charles")
_PARTICLES = frozenset("d' da das de del della der des di do dos du la le van von ter ten ibn bin bint y".split())
_AFTER_A_NAME = frozenset("and with was is et und y e".split())
_AT_BEGINNING = frozenset({0})
_ISBD_AREA = re.compile("— ".encode())
_ESCAPED_WORD = re.compile(r'(?:\\["\\/]|[^\s\\])+')  # "\n", "\t" and "\u0009" separate words too
_NAME_WORD = re.compile(r"\(?[^\W\d_][\w.'’ʹʻʼ\u0300-\u036f-]*\)?")  # combining marks: Natalʹi͡a


def _capitalized(word: str) -> bool:
    first = word.lstrip("(")[:1]
    return first.isupper() or word in _PARTICLES


def _may_start_name(text: bytes) -> bool:
    word = text.decode(errors="ignore").split(" ")[0]
    return not word[:1].islower() or word in _PARTICLES


@dataclass
class _Source:
    """A text a copied value may be a span of: where such a span may start, and where it may end."""

    text: bytes
    starts: frozenset
    ends_at: frozenset
    cuts: tuple = ()  # sorted offsets no span may reach over

    def bound(self, start: int) -> int:
        """How far a span from ``start`` may reach."""
        at = bisect.bisect_left(self.cuts, start)
        return self.cuts[at] if at < len(self.cuts) else len(self.text)

    def ends(self, value: bytes) -> list[int]:
        """Where the occurrences of ``value`` that start at a start end."""
        if not value:
            return sorted(self.starts)
        if self.starts == _AT_BEGINNING:
            return [len(value)] if self.text.startswith(value) and len(value) <= self.bound(0) else []
        out, at = [], self.text.find(value)
        while at >= 0:
            out += [at + len(value)] if at in self.starts and at + len(value) <= self.bound(at) else []
            at = self.text.find(value, at + 1)
        return out

    def for_names(self, starts: frozenset | None = None) -> _Source:
        """This text as names are copied from it: spans cut before what NOT_IN_A_NAME finds,
        ending on a letter, a digit or NAME_END."""
        ends_at = frozenset(at for at in self.ends_at if at and (_word(self.text[at - 1]) or self.text[at - 1] in NAME_END)
                            and not QUALIFIER_FOLLOWS.match(self.text, at) and not DATES_FOLLOW.match(self.text, at))
        cuts = tuple(sorted({*self.cuts, *(m.end() for m in NOT_IN_A_NAME.finditer(self.text))}))
        return _Source(self.text, self.starts if starts is None else starts, ends_at, cuts)


@functools.lru_cache(maxsize=8)
def _label_pattern(labels: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[re.Pattern, dict] | None:
    if not labels:
        return None
    from folio_llm.templates import PART_BOUNDARIES

    def escaped(text: str) -> str:
        return json.dumps(text, ensure_ascii=False)[1:-1]

    fields = {escaped(label): frozenset(of) for label, of in labels}
    after = "|".join(f"(?<={re.escape(escaped(boundary))})" for boundary in PART_BOUNDARIES)
    alternatives = "|".join(re.escape(label) for label in fields)
    return re.compile(rf"(?:^|{after})(?:{alternatives})"), fields


def _parts(escaped: str, labels: tuple) -> tuple[tuple[int, int, frozenset], ...]:
    """(where its label starts, where its value starts, the label's fields) of each part a label
    (``templates.part_labels``) opens in the escaped description, where a line, a sentence, a
    list item or an ISBD area begins; offsets in bytes."""
    found = _label_pattern(labels)
    if found is None:
        return ()
    pattern, fields = found
    return tuple((len(escaped[:m.start()].encode()), len(escaped[:m.end()].encode()), fields[m.group()])
                 for m in pattern.finditer(escaped))


def _scope(path: str) -> tuple[bool, str, bool]:
    """What decides the sources of a copied path: is it a name, its record field, is it a publisher."""
    return path in NAME_FIELDS, path.split(".")[0], path == PUBLISHER


def _inside_publishers(text: bytes) -> frozenset:
    """Where a publisher told after a colon goes on past a comma (AFTER_A_COLON, NO_DATE_ITEM)."""
    return frozenset(colon.start(1) + comma.start() for colon in AFTER_A_COLON.finditer(text)
                     for comma in NO_DATE_ITEM.finditer(colon.group(1)))


def _name_ends_here(escaped: str, words: list, last: int, end: int) -> bool:
    """Whether a name told in natural order may end at ``end``, in the word at ``last``: before
    punctuation, a line break, a bracket, a dash or a word like "and", not before a capitalized
    word (the name goes on: "Francis Thornton Chew") nor another word ("Max Welcomes a Friend")."""
    if last + 1 == len(words) or end != words[last].end() or escaped[end:words[last + 1].start()] != " ":
        return True
    after = words[last + 1].group().rstrip(".,;:/")
    return after in _AFTER_A_NAME or not after[:1].isalpha()


def _inversions(escaped: str, desc: _Source, foreign: frozenset = frozenset()) -> list[_Source]:
    """Each name a description may tell in natural order, "Given Names Surname" followed by the
    rest of the description, as the text "Surname, Given Names" + that rest: it may start only at
    its beginning and end only after the given names; none told where ``foreign`` (byte offsets)
    a part of another field begins."""
    words = list(_ESCAPED_WORD.finditer(escaped))
    sources = []
    for first in range(len(words)):
        if len(escaped[:words[first].start()].encode()) in foreign:
            continue
        for last in range(first + 1, min(first + 7, len(words))):
            run = words[first:last + 1]
            if any(escaped[a.end():b.start()] != " " for a, b in zip(run, run[1:])):
                break
            surname_end = run[-1].start() + len(run[-1].group().rstrip(".,;:/"))
            texts = [w.group() for w in run[:-1]] + [escaped[run[-1].start():surname_end]]
            if not all(_NAME_WORD.fullmatch(t) and _capitalized(t) for t in texts):
                break
            if texts[0] in _PARTICLES:
                break
            if not texts[-1][-1].isalnum() or not _name_ends_here(escaped, words, last, surname_end):
                continue  # an initial is no surname, nor a word the text goes on after
            for split in range(max(1, len(texts) - 3), min(len(texts), 5)):
                given = escaped[run[0].start():run[split - 1].end()]
                surname = escaped[run[split].start():surname_end]
                head = f"{surname}, {given}".encode()
                at = len(escaped[:surname_end].encode())
                sources.append(_Source(head + desc.text[at:], _AT_BEGINNING, frozenset(
                    {len(head)} | {len(head) + end - at for end in desc.ends_at if end > at}),
                    tuple(len(head) + cut - at for cut in desc.cuts if cut > at)).for_names())
    return sources


def _bare(value: bytes) -> bytes:
    """A value as the scorer compares it, without trailing ISBD punctuation (``clauses.clean``
    on escaped bytes)."""
    return value.rstrip(b" .,;:/")


class _Row:
    """One answer being written against one description."""

    def __init__(self, index: CopyIndex, description: str, fields: frozenset, labels: tuple = ()):
        self.index, self.fields = index, fields
        self.escaped = json.dumps(description, ensure_ascii=False)[1:-1]
        desc = self.escaped.encode()
        starts, at, i = {0}, 0, 0  # byte offsets where an escaped character starts
        while i < len(self.escaped):
            step = (6 if self.escaped[i + 1] == "u" else 2) if self.escaped[i] == "\\" else 1
            at, i = at + len(self.escaped[i:i + step].encode()), i + step
            starts.add(at)
        # a copied value may start and end only where a word does: closing "Commonwealth ..."
        # after "Comm" is the way out a model takes when the word it wanted is not in the
        # description, and "xx, 246 pages" taken from "xxx, 246 pages" the way in
        bounds = frozenset(at for at in starts if at in (0, len(desc)) or not (_word(desc[at]) and _word(desc[at - 1])
                                                                         and desc[at - 2:at] not in _ESCAPES))
        self.parts = _parts(self.escaped, labels)
        # no value reaches over a part label, nor over an ISBD area's "— " (no record value holds
        # one; a title ran on through the edition, publication and extent areas)
        areas = [found.start() for found in _ISBD_AREA.finditer(desc)] if labels else []
        self.desc = _Source(desc, bounds, bounds, tuple(sorted({*(start for start, _, _ in self.parts), *areas})))
        self.subject_lists = self._lists("subjects")
        self.subjects, self.subject_items, self.last_subjects = self._subject_items()
        self.name_items = self._name_items()
        self.areas = frozenset({"series"} if ISBD_SERIES_AREA.search(desc) else ())  # fields not to be left out
        self._sources: dict[tuple, list[_Source]] = {}
        self.state, self.stopped = _Json(), False
        self.written: dict[str, Counter] = {}  # path: how often each bare value was written
        self.keys: set[str] = set()  # the record's keys written
        self.opened: dict[str, float] = {}  # eval.open_below: field -> how likely the model held beginning it
        self._spans: dict[tuple, tuple] = {}
        self._found: dict[tuple, bool] = {}
        self._told: dict[bytes, int] = {}

    def sources(self, path: str) -> list[_Source]:
        """What a value of ``path`` may be copied from: the description, without the starts of
        the parts another field's label opens (and for a name, also each name told in natural
        order, inverted)."""
        scope = _scope(path)
        if scope not in self._sources:
            desc, foreign = self.desc, self._foreign(scope[1])
            if scope[0]:
                word_starts = frozenset(
                    at for at in desc.starts if at < len(desc.text) and _word(desc.text[at]) and at not in foreign
                    and (at == 0 or not _word(desc.text[at - 1])) and _may_start_name(desc.text[at:at + 8]))
                self._sources[scope] = [desc.for_names(word_starts), *_inversions(self.escaped, desc, foreign)]
            elif scope[1] == "subjects" and self.subject_lists:
                self._sources[scope] = [self.subjects]
            else:
                ends = desc.ends_at - _inside_publishers(desc.text) if scope[2] else desc.ends_at
                self._sources[scope] = [_Source(desc.text, desc.starts - foreign, ends, desc.cuts)]
        return self._sources[scope]

    def _foreign(self, field: str) -> frozenset:
        """Where no value of ``field`` may begin: where the value of a part another field's label
        opens begins, and (but for subjects) anywhere in a labelled list of subjects."""
        foreign = {value_start for _, value_start, fields in self.parts if field not in fields}
        if field != "subjects":
            foreign.update(at for start, end in self.subject_lists for at in range(start, end))
        return frozenset(foreign)

    def _lists(self, field: str) -> list[tuple[int, int]]:
        """(start, end) of each part a label of ``field`` alone opens ("Subjects: ", "It is about ",
        "Names: ", "Editor: "): to the next part's label or line break."""
        text, cuts, lists = self.desc.text, self.desc.cuts, []
        for _, start, fields in self.parts:
            if fields == {field}:
                after = [cut for cut in cuts if cut > start]
                line_break = text.find(b"\\n", start)
                lists.append((start, min([*after, *([line_break] if line_break >= 0 else []), len(text)])))
        return lists

    def _subject_items(self) -> tuple[_Source | None, int, tuple[bytes, ...]]:
        """Where the description labels its subjects, a subject is one or more whole items of
        such a list: it starts where an item starts and ends where one ends, and never reaches
        over a "; " (no heading holds one). "Industrial" from "Industrial equipment--Safety
        measures", "Design" from "Apartments--Design and construction" and "Commonwealth" from
        the title were real answers. Returns that source, how many items the lists hold and the
        last item of each (bare)."""
        if not self.subject_lists:
            return None, 0, ()
        text, starts, ends, cuts, items, lasts = self.desc.text, set(), set(), set(self.desc.cuts), 0, []
        for start, end in self.subject_lists:
            last, last_start = len(text[start:end].rstrip(b" ")) + start, start
            starts.add(start)
            items += 1
            for separator in SUBJECT_SEPARATORS.finditer(text, start, end):
                starts.add(separator.end())
                ends.add(separator.start())
                cuts.update([separator.start()] if separator.group() == b"; " else [])
                if separator.end() < last:
                    items, last_start = items + 1, separator.end()
            ends.update({last, last - 1} if text[last - 1:last] == b"." else {last})
            lasts.append(_bare(text[last_start:last]))
        return (_Source(text, frozenset(starts & self.desc.starts), frozenset(ends), tuple(sorted(cuts))), items,
                tuple(last for last in lasts if last))

    def _name_items(self) -> int:
        """How many names the parts a names label opens hold ("Names: A; B (editor)", one a line
        in "Author: A" / "Editor: B"), or 0 where no label opens one: every name of a record is
        told in such a part, so an answer that lists more is a model that would not stop (it
        went on with "Fiji", "Place of publication" ... until it was cut off)."""
        text, items = self.desc.text, 0
        for start, end in self._lists("contributors"):
            items += 1 + text[start:end].rstrip(b" ;").count(b"; ")
        return items

    def feed(self, tokens: list[int]) -> None:
        for token in tokens:
            self.stopped = self.stopped or token in self.index.stop_ids or token >= len(self.index.pieces)
            if self.stopped:
                return
            self.feed_bytes(self.index.pieces[token])

    def feed_bytes(self, data: bytes) -> None:
        closed: list = []
        self.state.feed(data, self.fields, closed=closed)
        if self.state.frames and self.state.frames[0][2]:
            self.keys.add(self.state.frames[0][2])
        for path, text in closed:
            self.written.setdefault(path, Counter())[_bare(text)] += 1

    def allows(self, touched: list, closing: str = "", closing_text: bytes = b"") -> bool:
        """Whether every copied string in ``touched`` (``CopyIndex.effects``) is found, every
        element it adds to a list has room and every list it closes is complete; ``closing``,
        ``closing_text``: the path and text of a value closing before them."""
        return all(self.room(path.removesuffix(ANOTHER), closing) if path.endswith(ANOTHER)
                   else self.complete(path.removesuffix(LAST), closing, closing_text) if path.endswith(LAST)
                   else self.found(path, text, closed) for path, text, closed in touched)

    def room(self, field: str, closing: str = "") -> bool:
        """Whether the answer may list another value of ``field``: a labelled list of subjects
        has room for as many subjects as it has items, labelled names for as many names."""
        limit = {"subjects": self.subject_items, "contributors": self.name_items}.get(field, 0)
        if not limit:
            return True
        return sum(self.written.get(COUNTED[field], {}).values()) + (closing == COUNTED[field]) < limit

    def complete(self, field: str, closing: str = "", closing_text: bytes = b"") -> bool:
        """Whether the answer may close its list of ``field``: a list of subjects only once it
        holds the last item of each labelled list of subjects (the model closed the list one
        item short, "Electronic books" or "Australian" left out, more often than anywhere else)."""
        if field != "subjects" or not self.last_subjects:
            return True
        path = COUNTED[field]
        written = [*self.written.get(path, {}), *([_bare(closing_text)] if closing == path else [])]
        return all(any(value.endswith(last) for value in written) for last in self.last_subjects)

    def found(self, path: str, text: bytes, closed: bool) -> bool:
        """Whether a copied string of ``path`` holding ``text`` (``closed``: and closing there)
        is a span of a source that may still close: one opened only to repeat a value written as
        often as it may be could neither close nor go on, and the constraint would step aside."""
        written = self.repeated(path, text)
        key = (_scope(path), text, closed, written)
        if key not in self._found:
            self._found[key] = any(end in ends if closed else bool(ends) for source in self.sources(path)
                                   for end in source.ends(text)
                                   for ends in [self.open_ends(path, source, end, text, written)[0]])
        return self._found[key]

    def repeated(self, path: str, text: bytes) -> tuple:
        """The values of ``path`` written that a value beginning with ``text`` would repeat or be
        a part of, when together written at least twice: (value, times) pairs, or () when none."""
        head = _bare(text)
        written = tuple((value, count) for value, count in self.written.get(path, {}).items() if value.startswith(head))
        return written if sum(count for _, count in written) >= min(MAX_SAME_NAME, MAX_SAME_VALUE) else ()

    def may_close(self, path: str, value: bytes, written: tuple) -> bool:
        """Whether ``value`` (bare) may close a copied string of ``path`` once ``written``
        (``repeated``) holds what it would repeat: not empty, and the values it would repeat or be
        a part of written fewer times than a name may be (MAX_SAME_NAME) or than the description
        tells another value (``times_told``). "[2016" and "[" after "[2016]" twice were a real loop."""
        limit = MAX_SAME_NAME if path in NAME_FIELDS else self.times_told(value)
        return bool(value) and sum(count for seen, count in written if seen.startswith(value)) < limit

    def open_ends(self, path: str, source: _Source, start: int, text: bytes, written: tuple) -> tuple[frozenset, int]:
        """Where a value holding ``text``, going on from ``start`` in ``source``, may close, and
        how far it may reach, once ``written`` (``repeated``) holds what it may repeat."""
        bound, ends = source.bound(start), source.ends_at
        if written:
            ends = frozenset(end for end in ends if start <= end <= bound
                             and self.may_close(path, _bare(text + source.text[start:end]), written))
            bound = min(bound, max(ends, default=start))
        return ends, bound

    def times_told(self, value: bytes) -> int:
        """How often a value other than a name may be written: MAX_SAME_VALUE, or as often as
        the description tells it."""
        if value not in self._told:
            self._told[value] = max(MAX_SAME_VALUE, len(self.desc.ends(value)))
        return self._told[value]

    def spans(self, path: str, text: bytes) -> tuple[set[int], dict[int, bytes]]:
        """For a copied string holding ``text``: the tokens that go on along the description, and
        the tokens s + '"' + rest that go on by s and close it where a character ends. A value that
        would repeat one written as often as it may be (``may_close``) is no way to close, nor to
        go on when nothing else lies beyond."""
        written = self.repeated(path, text)
        key = (_scope(path), text, written)
        if key not in self._spans:
            ids, closing = set(), {}
            for source in self.sources(path):
                for start in source.ends(text):
                    ends, bound = self.open_ends(path, source, start, text, written)
                    if start in ends:
                        closing.update(self.index.closing.get(b"", ()))
                    for end in range(start + 1, bound + 1):
                        span = source.text[start:end]
                        if span not in self.index.prefixes:  # no token is that long
                            break
                        ids.update(self.index.by_bytes.get(span, ()))
                        if end in ends:
                            closing.update(self.index.closing.get(span, ()))
            self._spans[key] = ids, closing
        return self._spans[key]

    def mask(self) -> tuple[bool, list[int]] | None:
        """(True, the only tokens allowed) inside a copied string, (False, tokens forbidden)
        elsewhere, or None: nothing to forbid."""
        state = self.state
        if self.stopped or state.mode == "done":
            return None
        if state.mode != "copy":
            bad = [t for t, touched in self.index.openers(state, self.fields) if not self.allows(touched)]
            return (False, bad) if bad else None
        ids, closing = self.spans(state.value_path(), state.text)
        closed = state.copy()
        closed.mode, closed.text, closed.escape = "value", b"", False
        allowed = set(ids)
        for token, rest in closing.items():
            # rest may open the next copied string (editions: ...","2nd ed)
            if self.allows(self.index.effects(closed, rest, self.fields), state.value_path(), state.text):
                allowed.add(token)
        return True, sorted(allowed)


class CopyProcessor:
    """A transformers logits processor (after ``SchemaProcessor``): for each row of a batch, masks
    the tokens that would put into a copied field text not found in that row's description.

    Rows are left-padded prompts ``prompt_width`` wide; a row that has emitted a special token
    (end-of-turn, then pads) is done and left alone. Single use: one per ``generate`` call."""

    def __init__(self, index: CopyIndex, descriptions: list[str], prompt_width: int,
                 fields: Iterable[str] = COPY_FIELDS, labels: Sequence[tuple] = (), open_below: Sequence[tuple] = (),
                 key_order: Sequence[str] = ()):
        self.fields = frozenset(fields)
        self.rows = [_Row(index, description, self.fields, tuple(labels)) for description in descriptions]
        self.open_below = tuple(open_below)  # (field, below, the keys after it): Decoding.open_below
        self.key_order = tuple(key_order)  # the record's keys in order: Decoding.key_order
        self.prompt_width = prompt_width
        self.seen = 0
        self.fallbacks = 0

    def __call__(self, input_ids, scores):
        new = input_ids[:, self.prompt_width + self.seen:].tolist()
        self.seen += len(new[0]) if new else 0
        for row, tokens in zip(self.rows, new):
            row.feed(tokens)
        return self.restrict(range(len(self.rows)), scores)

    def accept(self, row: int, token: int) -> None:
        """Row ``row`` wrote ``token``."""
        self.rows[row].feed([token])

    def restrict(self, rows, scores):
        """Mask ``scores`` (one line per row of ``rows``, in order) to what each row may copy next."""
        for row, line in zip(rows, scores):
            self._apply(self.rows[row].mask(), line)
            for field, below, later in self.open_below:
                self._begin(self.rows[row], line, field, below, later)
            for field in self.rows[row].areas:
                self._not_passed(self.rows[row], line, field)
        return scores

    def _begin(self, row: _Row, line, field: str, below: float, later: tuple) -> None:
        """Where the record's next key begins, ``field`` is not written yet nor passed, and the
        model leaves it out less surely than ``below``: only the tokens that begin it stay open
        (a citation's authors were left out, the model unsure: benchmarks/RESULTS.md)."""
        state = row.state
        if row.stopped or len(state.frames) != 1 or not (
                (state.mode == "key" and not state.text) or (state.mode == "value" and state.expect_key)):
            return
        if row.keys.intersection((field, *later)):
            return
        opening, skipping = row.index.key_choices(state, field, self.fields)
        if not opening or not skipping:
            return
        probabilities = _softmax(line)
        begin, leave = float(probabilities[opening].sum()), float(probabilities[skipping].sum())
        if begin > 0 and leave < below * (begin + leave):
            line[skipping] = NEG_INF
            row.opened[field] = round(begin / (begin + leave), 4)

    def _not_passed(self, row: _Row, line, field: str) -> None:
        """Where the record's next key is begun or being written and ``field``, told in an ISBD
        area of its own (``_Row.areas``), is not written yet nor passed: the tokens that would
        pass it are closed. Like ``_begin``, a field the model would have left out is flagged."""
        state = row.state
        if (row.stopped or field not in self.key_order or len(state.frames) != 1 or state.mode not in ("key", "value")
                or row.keys.intersection(self.key_order[self.key_order.index(field):])):
            return
        passing = row.index.passing(state, field, self.key_order, self.fields)
        if not passing:
            return
        probabilities = _softmax(line)
        leave = float(probabilities[passing].sum())
        if leave < 1.0 - 1e-6:
            line[passing] = NEG_INF
            if leave > 0.5:
                row.opened[field] = round(1.0 - leave, 4)

    def opened(self, row: int) -> dict[str, float]:
        """The fields begun in row ``row`` that the model would have left out (``open_below``),
        each with how likely it held beginning it."""
        return self.rows[row].opened

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
    def for_llamacpp(cls, index: CopyIndex, description: str, prompt_len: int, fields: Iterable[str] = COPY_FIELDS,
                     labels: Sequence[tuple] = (), open_below: Sequence[tuple] = (), key_order: Sequence[str] = ()):
        """A llama-cpp-python ``logits_processor``: (input_ids, scores) of one sequence, numpy,
        input_ids holding prompt and answer so far. The processor is its ``.processor``."""
        processor = cls(index, [description], prompt_len, fields, labels, open_below, key_order)

        def process(input_ids, scores):
            processor(input_ids[None, :], scores[None, :])
            return scores

        process.processor = processor
        return process


def _softmax(line):
    """Probabilities of one row of scores, torch or numpy."""
    if hasattr(line, "softmax"):
        return line.float().softmax(-1)
    import numpy as np

    weights = np.exp(line - line.max())
    return weights / weights.sum()


def copied_values(description: str, answer: str, fields: Iterable[str] = COPY_FIELDS,
                  labels: Sequence[tuple] = ()) -> list[tuple[str, str, bool]]:
    """(path, value, allowed) of each copied value of ``answer`` (compact JSON, as the model
    writes it): whether the copy constraint would let it be written against ``description``,
    with or without the trailing ISBD punctuation the scorer ignores."""
    row, out = _Row(None, description, frozenset(fields), tuple(labels)), []
    for byte in answer.encode():
        state = row.state
        if state.mode == "copy" and byte == QUOTE and not state.escape:
            path = state.value_path()
            allowed = row.found(path, state.text, True) or row.found(path, _bare(state.text), True)
            out.append((path, json.loads(b'"' + state.text + b'"'), allowed))
        row.feed_bytes(bytes((byte,)))
    return out
