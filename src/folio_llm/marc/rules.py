"""Apply FOLIO's MARC bibliographic -> Instance mapping rules (``GET /mapping-rules/marc-bib``).

A Python port of the default mapper in folio-org/data-import-processing-core
(``defaultmapper.processor.Processor`` plus ``MarcToInstanceMapper``'s post-processing). The rules
JSON drives everything; this module only knows the shape of an Instance (``SCHEMA``), which plays
the part of the Java ``Instance`` class the Processor fills by reflection.

The Java control flow is kept on purpose, quirks included (how objects of one field are shared
between rules, indicator matching, ``ignoreSubsequentSubfields`` state, ``"|"`` becoming a space),
because tenants' rules are written against it. Deliberate differences: an unresolved reference
label leaves the UUID out instead of writing a stub UUID, a malformed field is skipped instead of
failing the whole record, blank control-field data is not mapped, and ``custom`` (JavaScript)
conditions count as failed.

One module over 450 lines on purpose: it mirrors one Java processor and its function table
(``marc/functions.py``) step by step, so a rule's behaviour can be checked against the Java side
in one read; conformance: 1.0000 on FOLIO's own 20 Cornell records (benchmarks/conformance.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pymarc

from folio_llm.folio.reference import ReferenceData
from folio_llm.marc.functions import FUNCTIONS, SPLIT_FUNCTIONS, Lookups


class MappingRulesError(ValueError):
    """Unreadable or invalid mapping rules; the message names the file and/or tag."""


# --- the Instance's shape ------------------------------------------------------------------
# class -> {property: spec}; spec is ("prim", type) | ("plist", type, unique) |
# ("olist", class, unique) | ("obj", class). "unique" is uniqueItems (a Java Set): only sets of
# strings drop duplicates, objects are added empty and filled later so they never compare equal.
_S, _B = ("prim", str), ("prim", bool)
SCHEMA: dict[str, dict[str, tuple]] = {
    "Instance": {
        **dict.fromkeys(
            ("id", "hrid", "source", "title", "indexTitle", "instanceTypeId", "modeOfIssuanceId",
             "catalogedDate", "statusId", "statusUpdatedDate"), _S),
        **dict.fromkeys(("previouslyHeld", "staffSuppress", "discoverySuppress", "deleted"), _B),
        "_version": ("prim", int),
        **dict.fromkeys(("editions", "publicationFrequency", "publicationRange"), ("plist", str, True)),
        **dict.fromkeys(
            ("instanceFormatIds", "physicalDescriptions", "languages", "administrativeNotes",
             "statisticalCodeIds", "natureOfContentTermIds"), ("plist", str, False)),
        "alternativeTitles": ("olist", "AlternativeTitle", True),
        "series": ("olist", "Series", True),
        "identifiers": ("olist", "Identifier", False),
        "contributors": ("olist", "Contributor", False),
        "subjects": ("olist", "Subject", True),
        "classifications": ("olist", "Classification", False),
        "publication": ("olist", "Publication", False),
        "electronicAccess": ("olist", "ElectronicAccess", False),
        "notes": ("olist", "Note", False),
        "precedingTitles": ("olist", "PrecedingTitle", False),
        "succeedingTitles": ("olist", "SucceedingTitle", False),
        "parentInstances": ("olist", "ParentInstance", False),
        "childInstances": ("olist", "ChildInstance", False),
        "dates": ("obj", "Dates"),
    },
    "AlternativeTitle": dict.fromkeys(("alternativeTitleTypeId", "alternativeTitle", "authorityId"), _S),
    "Series": dict.fromkeys(("value", "authorityId"), _S),
    "Identifier": dict.fromkeys(("value", "identifierTypeId"), _S),
    "Contributor": {
        **dict.fromkeys(("name", "contributorTypeId", "contributorTypeText", "contributorNameTypeId",
                         "authorityId"), _S),
        "primary": _B,
    },
    "Subject": dict.fromkeys(("value", "authorityId", "sourceId", "typeId"), _S),
    "Classification": dict.fromkeys(("classificationNumber", "classificationTypeId"), _S),
    "Publication": dict.fromkeys(("publisher", "place", "dateOfPublication", "role"), _S),
    "ElectronicAccess": dict.fromkeys(
        ("uri", "linkText", "materialsSpecification", "publicNote", "relationshipId"), _S),
    "Note": {"instanceNoteTypeId": _S, "note": _S, "staffOnly": _B},
    "PrecedingTitle": {
        **dict.fromkeys(("id", "precedingInstanceId", "title", "hrid", "isbnId", "issnId", "isbnValue",
                         "issnValue"), _S),
        "identifiers": ("olist", "TitleIdentifier", False),
    },
    "SucceedingTitle": {
        **dict.fromkeys(("id", "succeedingInstanceId", "title", "hrid", "isbnId", "issnId", "isbnValue",
                         "issnValue"), _S),
        "identifiers": ("olist", "TitleIdentifier", False),
    },
    "TitleIdentifier": dict.fromkeys(("value", "identifierTypeId"), _S),
    "ParentInstance": dict.fromkeys(("id", "superInstanceId", "instanceRelationshipTypeId"), _S),
    "ChildInstance": dict.fromkeys(("id", "subInstanceId", "instanceRelationshipTypeId"), _S),
    "Dates": dict.fromkeys(("dateTypeId", "date1", "date2"), _S),
}
_LIST_FIELDS = tuple(k for k, spec in SCHEMA["Instance"].items() if spec[0] in ("plist", "olist"))
_UUID_RUN = re.compile(r"(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12} ){2,}")


def _new_item(cls: str) -> dict:
    """A fresh list element, with the defaults the generated Java class has."""
    if cls == "Note":
        return {"staffOnly": False}
    if cls in ("PrecedingTitle", "SucceedingTitle"):
        return {"identifiers": []}
    return {}


def _converter(prim: type):
    if prim is bool:
        return lambda text: text.lower() == "true"  # Boolean.valueOf
    if prim is int:
        return int
    return None  # strings stay as they are


def _resolve(path: tuple[str, ...]):
    """Java ``isMappingValid`` plus the leaf type: ``(valid, converter)``.

    Like the Java code, a non-list object segment does not move to the nested class, so
    ``dates.date1`` is not a valid target for ordinary rules (only for ``createSingleObject``).
    """
    cls, spec = "Instance", None
    for i, seg in enumerate(path):
        spec = SCHEMA[cls].get(seg)
        if spec is None:
            return False, None
        if spec[0] == "olist":
            cls = spec[1]
        elif spec[0] == "plist" and i == len(path) - 1:
            return True, _converter(spec[1])
    if spec is None or spec[0] != "prim":
        return False, None
    return True, _converter(spec[1])


# --- compiled rules ------------------------------------------------------------------------


class _Condition:
    __slots__ = ("funcs", "callables", "param", "value", "ldr", "custom", "plain")


class _Rule:
    __slots__ = ("conditions", "value", "custom")


class _Target:
    """One ``{"target": ..., "subfield": [...]}`` rule (an entity member or a whole entry)."""

    __slots__ = ("path", "valid", "convert", "subfields", "rules", "groups", "ngroups", "separator",
                 "apply_post", "required", "exclusive", "split", "ignore_subsequent", "alternative",
                 "create_single")


class _Mapping:
    """One element of a tag's rule list: indicators plus one target or an entity of targets."""

    __slots__ = ("indicators", "targets", "entity", "per_repeated", "ignore_fields", "keep_backslash")


def _fail(where: str, message: str):
    raise MappingRulesError(f"{where}: {message}")


def _opt_bool(raw: dict, key: str, where: str) -> bool:
    value = raw.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        _fail(where, f"'{key}' must be true or false")
    return value


def _str_list(raw: dict, key: str, where: str, default=None) -> list[str] | None:
    value = raw.get(key, default)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail(where, f"'{key}' must be a list of strings")
    return value


def _compile_rules(raw, where: str) -> tuple[_Rule, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        _fail(where, "'rules' must be a list")
    rules = []
    for rule_raw in raw:
        if not isinstance(rule_raw, dict):
            _fail(where, "each rule must be an object")
        conditions_raw = rule_raw.get("conditions")
        if not isinstance(conditions_raw, list):
            _fail(where, "each rule needs a 'conditions' list")
        rule = _Rule()
        rule.value = rule_raw.get("value")
        if rule.value is not None and not isinstance(rule.value, str):
            _fail(where, "a rule's 'value' must be a string")
        conditions, custom = [], False
        for cond_raw in conditions_raw:
            if not isinstance(cond_raw, dict) or not isinstance(cond_raw.get("type"), str):
                _fail(where, "each condition needs a 'type' string")
            cond = _Condition()
            names = [name.strip() for name in cond_raw["type"].split(",")]
            custom = custom or "custom" in names
            # (name, function); function None = unknown name, which Java leaves as a no-op
            cond.funcs = tuple((name, FUNCTIONS.get(name.lower())) for name in names)
            cond.param = cond_raw.get("parameter")
            if cond.param is not None and not isinstance(cond.param, dict):
                _fail(where, "a condition's 'parameter' must be an object")
            cond.value = cond_raw.get("value")
            if cond.value is not None and not isinstance(cond.value, str):
                _fail(where, "a condition's 'value' must be a string")
            cond.ldr = cond_raw.get("LDR") is not None
            cond.custom = custom
            cond.plain = cond.value is None and not cond.ldr and not custom
            cond.callables = tuple(fn for _, fn in cond.funcs if fn is not None)
            conditions.append(cond)
        rule.conditions = tuple(conditions)
        rule.custom = custom
        rules.append(rule)
    return tuple(rules)


def _compile_target(raw, where: str, control: bool) -> _Target:
    if not isinstance(raw, dict):
        _fail(where, "each rule must be an object")
    target = raw.get("target")
    if not isinstance(target, str):
        _fail(where, "each rule needs a 'target' string")
    where = f"{where} -> {target or '(empty target)'}"
    t = _Target()
    t.path = tuple(target.split("."))
    t.valid, t.convert = _resolve(t.path)
    subfields = _str_list(raw, "subfield", where, default=[] if control else None)
    if subfields is None:
        _fail(where, "'subfield' list is missing")
    t.subfields = frozenset(subfields)
    t.rules = _compile_rules(raw.get("rules"), where)
    t.separator = None
    delimiters = raw.get("subFieldDelimiter")
    if delimiters is not None:
        if not isinstance(delimiters, list):
            _fail(where, "'subFieldDelimiter' must be a list")
        compiled = []
        for d in delimiters:
            if not isinstance(d, dict) or not isinstance(d.get("value"), str):
                _fail(where, "each subFieldDelimiter needs a 'value' string")
            subs = _str_list(d, "subfields", where, default=[])
            if not subs:
                t.separator = d["value"]  # the delimiter between subfield groups
            compiled.append((d["value"], tuple(subs)))
        t.groups = {}
        for index, (value, subs) in enumerate(compiled):
            for code in subs:
                t.groups[code] = (index, value)
        t.ngroups = max(len(compiled), 1)
    else:
        t.groups, t.ngroups = None, 1
    t.apply_post = _opt_bool(raw, "applyRulesOnConcatenatedData", where)
    required = _str_list(raw, "requiredSubfield", where)
    exclusive = _str_list(raw, "exclusiveSubfield", where)
    t.required = frozenset(required) if required else None
    t.exclusive = frozenset(exclusive) if exclusive else None
    t.split = None
    split = raw.get("subFieldSplit")
    if split is not None:
        if not isinstance(split, dict) or not isinstance(split.get("type"), str):
            _fail(where, "'subFieldSplit' needs a 'type'")
        func = SPLIT_FUNCTIONS.get(split["type"].lower())
        if func is not None:
            t.split = (func, split.get("value"))
    t.ignore_subsequent = _opt_bool(raw, "ignoreSubsequentSubfields", where)
    t.create_single = _opt_bool(raw, "createSingleObject", where)
    alternative = raw.get("alternativeMapping")
    t.alternative = None
    if alternative:
        t.alternative = _compile_target(alternative, f"{where} (alternativeMapping)", control)
    return t


def _compile_mapping(raw, tag: str, index: int) -> _Mapping:
    where = f"tag {tag} rule #{index}"
    if not isinstance(raw, dict):
        _fail(where, "must be an object")
    control = tag == "LDR" or (tag < "010" and tag.isdigit())
    m = _Mapping()
    indicators = raw.get("indicators")
    if indicators is not None:
        if not isinstance(indicators, dict):
            _fail(where, "'indicators' must be an object")
        m.indicators = (indicators.get("ind1"), indicators.get("ind2"))
    else:
        m.indicators = None
    entity = raw.get("entity")
    m.entity = entity is not None
    if m.entity:
        if not isinstance(entity, list):
            _fail(where, "'entity' must be a list")
        m.targets = tuple(_compile_target(e, f"{where} entity", control) for e in entity)
    elif raw.get("fieldReplacementBy3Digits") is True and not raw.get("target"):
        m.targets = ()  # an 880-style replacement entry maps nothing itself
    else:
        m.targets = (_compile_target(raw, where, control),)
    m.per_repeated = _opt_bool(raw, "entityPerRepeatedSubfield", where)
    m.ignore_fields = _opt_bool(raw, "ignoreSubsequentFields", where)
    m.keep_backslash = _opt_bool(raw, "keepTrailingBackslash", where)
    return m


def _compile_replacement(raw: dict, where: str):
    """``fieldReplacementBy3Digits``: (subfield codes, {first 3 chars of data: new tag})."""
    table = {}
    for item in raw.get("fieldReplacementRule") or []:
        if not isinstance(item, dict):
            _fail(where, "each fieldReplacementRule must be an object")
        table[item.get("sourceDigits")] = item.get("targetField")
    return tuple(_str_list(raw, "subfield", where, default=[])), table


class _Field:
    __slots__ = ("tag", "ind1", "ind2", "subfields")


class _State:
    """Per-record mutable state: the Java Processor's instance fields plus the function context."""

    __slots__ = ("instance", "leader", "field", "lookups", "create_new", "separator", "keep_backslash",
                 "entity_requested", "per_repeated", "ignored_fields", "ignored_subfields")


class RuleEngine:
    """Maps pymarc records to FOLIO Instance dicts with one tenant's rules and reference data."""

    def __init__(self, rules: dict, reference: ReferenceData):
        if not isinstance(rules, dict) or not rules:
            raise MappingRulesError("mapping rules must be a non-empty JSON object of tag -> rule list")
        self.reference = reference
        self.lookups = Lookups.build(reference)
        self._mappings: dict[str, tuple[_Mapping, ...]] = {}
        self._replacements: dict[str, tuple] = {}
        self._by_indicators: dict[str, dict[tuple[str, str], tuple[_Mapping, ...]]] = {}
        for tag, entries in rules.items():
            if not isinstance(entries, list):
                raise MappingRulesError(f"tag {tag}: rules must be a list")
            self._mappings[tag] = tuple(_compile_mapping(raw, tag, i) for i, raw in enumerate(entries))
            replacements = tuple(
                _compile_replacement(raw, f"tag {tag} rule #{i}")
                for i, raw in enumerate(entries)
                if isinstance(raw, dict) and raw.get("fieldReplacementBy3Digits") is True
            )
            if replacements:
                self._replacements[tag] = replacements
            self._by_indicators[tag] = {}
        self.unknown_functions = sorted({
            name for mappings in self._mappings.values() for m in mappings for t in m.targets
            for r in (t.rules or ()) for c in r.conditions for name, fn in c.funcs
            if fn is None and name != "custom"
        })

    @classmethod
    def from_files(cls, rules_path, reference_dir) -> "RuleEngine":
        path = Path(rules_path)
        try:
            rules = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MappingRulesError(f"cannot read mapping rules {path}: {exc}") from None
        try:
            return cls(rules, ReferenceData.load(reference_dir))
        except MappingRulesError as exc:
            raise MappingRulesError(f"{path}: {exc}") from None

    # --- per record ------------------------------------------------------------------------

    def map(self, record: pymarc.Record) -> dict:
        """The FOLIO Instance (a dict) the rules make of ``record``."""
        st = _State()
        st.instance = instance = {name: [] for name in _LIST_FIELDS}
        st.leader = str(record.leader) if record.leader is not None else None
        st.field = None
        st.lookups = self.lookups
        st.separator = None
        st.keep_backslash = False
        st.entity_requested = st.per_repeated = False
        st.ignored_fields = set()
        st.ignored_subfields = set()
        mappings = self._mappings
        data_fields = []
        if st.leader is not None and "LDR" in mappings:
            self._control_field(st, mappings["LDR"], st.leader)
        for fld in record.fields:
            if fld.control_field:
                entries = mappings.get(fld.tag)
                if entries is not None and fld.data is not None:
                    self._control_field(st, entries, fld.data)
            else:
                data_fields.append(fld)
        for fld in data_fields:
            self._data_field(st, fld)
        return _post_process(instance)

    def _control_field(self, st: _State, entries, data: str) -> None:
        remember = [None]
        st.create_new = True
        st.field = None
        for m in entries:
            for t in m.targets:
                value = self._process_rules(st, t.rules, data)
                if not value.strip():
                    continue
                if t.create_single:
                    _fill_single_object(st.instance, t.path, value)
                elif t.valid:
                    val = _convert(t, value)
                    if val is not None:
                        self._build_object(st, t.path, val, remember)
                else:
                    continue
                st.create_new = False

    def _data_field(self, st: _State, fld: pymarc.Field) -> None:
        tag = fld.tag
        subfields = fld.subfields
        replacements = self._replacements.get(tag)
        if replacements:
            tag = _replaced_tag(tag, subfields, replacements)
        by_ind = self._by_indicators.get(tag)
        if by_ind is None:
            return
        ind1, ind2 = fld.indicators if fld.indicators else (" ", " ")
        ind1, ind2 = str(ind1), str(ind2)
        applicable = by_ind.get((ind1, ind2))
        if applicable is None:
            applicable = by_ind[(ind1, ind2)] = _applicable(self._mappings[tag], ind1, ind2)
        if not applicable:
            return
        field = _Field()
        field.tag, field.ind1, field.ind2, field.subfields = tag, ind1, ind2, subfields
        st.field = field
        st.create_new = True
        remember = [None]
        for m in applicable:
            if m.ignore_fields:
                if tag in st.ignored_fields:
                    continue
                st.ignored_fields.add(tag)
            self._process_mapping(st, m, remember)

    def _process_mapping(self, st: _State, m: _Mapping, remember: list) -> None:
        """Java ``processSubFieldMapping``."""
        st.entity_requested = m.entity
        st.per_repeated = m.per_repeated
        st.keep_backslash = m.keep_backslash
        arrays: list[list] = []
        for t in m.targets:
            if t.required is not None or t.exclusive is not None:
                codes = {sf[0] for sf in st.field.subfields}
                if (t.required is not None and not t.required <= codes) or (
                        t.exclusive is not None and t.exclusive & codes):
                    st.ignored_subfields.clear()
                    return
            self._handle_fields(st, t, arrays, remember)
        if m.entity:
            st.create_new = True
        st.ignored_subfields.clear()

    def _handle_fields(self, st: _State, t: _Target, arrays: list, remember: list) -> None:
        """Java ``handleFields``: gather one target's subfield data and build the value."""
        if t.separator is not None:
            st.separator = t.separator  # Java keeps it in the Processor, so it outlives this target
        if not t.valid:
            return
        field = st.field
        if t.split is not None:
            field.subfields = _expand(field.subfields, t.split)
        subfields = field.subfields
        wanted = t.subfields
        if wanted:
            for sf in subfields:
                if sf[0] in wanted:
                    break
            else:
                return
        elif not subfields:
            return
        # one text per delimiter group (Java's StringBuilders); subfields outside every group go
        # to the first one, joined by a space
        groups = t.groups
        texts = [""] * t.ngroups
        apply_post = t.apply_post
        per_repeated = st.per_repeated
        build_each = per_repeated and st.entity_requested
        ignored = st.ignored_subfields
        for i, (code, data) in enumerate(subfields):
            if wanted and code not in wanted:
                continue
            if t.ignore_subsequent:
                if code in ignored:
                    continue
                ignored.add(code)
            if not wanted:
                continue  # handleSubFields ignores subfields when the rule lists none
            if not apply_post:
                data = self._process_rules(st, t.rules, data)
            group = groups.get(code) if groups is not None else None
            if group is not None:
                index, delimiter = group
                texts[index] = texts[index] + delimiter + data if texts[index] else data
            elif per_repeated or not texts[0]:
                texts[0] = data
            else:
                texts[0] = texts[0] + " " + data
            if build_each:
                if len(arrays) <= i:
                    arrays.extend([None] for _ in range(i + 1 - len(arrays)))
                cell = arrays[i]
                st.create_new = cell[0] is None
                self._create_new_object(st, t, _joined(texts, st.separator), cell)
        if not build_each:
            complete = _joined(texts, st.separator)
            if apply_post:
                complete = self._process_rules(st, t.rules, complete)
            if self._create_new_object(st, t, complete, remember):
                st.create_new = False
            if not complete and t.alternative is not None:
                ignored.clear()
                self._handle_fields(st, t.alternative, arrays, remember)

    def _create_new_object(self, st: _State, t: _Target, data: str, remember: list) -> bool:
        if not data:
            return False
        val = _convert(t, data)
        return val is not None and self._build_object(st, t.path, val, remember)

    @staticmethod
    def _build_object(st: _State, path: tuple[str, ...], val, remember: list) -> bool:
        """Java ``buildObject``: walk ``path``, creating or reusing list elements, set the leaf."""
        obj, cls = st.instance, "Instance"
        for seg in path:
            spec = SCHEMA[cls].get(seg)
            if spec is None:
                return False
            kind = spec[0]
            if kind == "prim":
                if type(val) is not spec[1]:
                    return False
                obj[seg] = val
            elif kind == "plist":
                coll = obj.setdefault(seg, [])
                if not (spec[2] and val in coll):
                    coll.append(val)
            elif kind == "olist":
                item_cls = spec[1]
                if st.create_new:
                    item = _new_item(item_cls)
                    obj.setdefault(seg, []).append(item)
                    current = (item, item_cls)
                else:
                    previous = remember[0]
                    # a remembered element of another type: Java falls back to the parent object
                    current = previous if previous is not None and previous[1] == item_cls else (obj, cls)
                remember[0] = current
                obj, cls = current
            else:  # a nested single object
                obj = obj.get(seg)
                if obj is None:
                    return False
                cls = spec[1]
        return True

    def _process_rules(self, st: _State, rules, value: str) -> str:
        """Java ``processRules``: run each rule's conditions, then escape the result."""
        if rules:
            original = value
            for rule in rules:
                const = rule.value
                met = True
                for cond in rule.conditions:
                    if cond.plain and met:
                        # no value test, LDR or script: just chain the functions (skipped when a
                        # constant replaces their output anyway)
                        if const is None:
                            param = cond.param
                            for func in cond.callables:
                                try:
                                    value = func(value, st, param)
                                except Exception:  # the runner keeps the value when a function throws
                                    pass
                    else:
                        value, met = self._process_condition(st, cond, value, original, met, const)
                if met and const is not None and not rule.custom:
                    value = const
                    break
        # Escaper: a trailing backslash goes, "|" (the SRS record delimiter) becomes a space
        if value.endswith("\\") and not st.keep_backslash:
            value = value[:-1]
        if "|" in value:
            value = value.replace("|", " ")
        return value

    @staticmethod
    def _process_condition(st: _State, cond: _Condition, value: str, original: str, met: bool, const):
        if cond.ldr and st.leader is not None:
            value = st.leader
        expected = cond.value
        param = cond.param
        for name, func in cond.funcs:
            if name == "custom":
                met = False  # JavaScript conditions are not supported: they fail, as a failing script does
                continue
            if func is None:
                result = value
            else:
                try:
                    result = func(value, st, param)
                except Exception:  # NormalizationFunctionRunner keeps the value when a function throws
                    result = value
            if expected is not None and result != expected and not cond.custom:
                met = False
                break
            if const is None:
                value = result
        if not met:
            return original, False
        return value, True


def _applicable(mappings: tuple[_Mapping, ...], ind1: str, ind2: str) -> tuple[_Mapping, ...]:
    """The entries of a tag that apply to a field with these indicators (Java's two checks)."""
    declared = [m.indicators for m in mappings if m.indicators is not None]
    if not declared:
        return mappings
    # Java's fallback check reads `i1 == a || (a == "*" && (i2 == b || b == "*"))` (operator
    # precedence), so an entry whose ind1 equals the field's hides the defaults whatever ind2 is
    hide_defaults = any(
        ind1 == a or (a == "*" and (ind2 == b or b == "*")) for a, b in declared)
    out = []
    for m in mappings:
        if m.indicators is None:
            if not hide_defaults:
                out.append(m)
        else:
            a, b = m.indicators
            if (ind1 == a or a == "*") and (ind2 == b or b == "*"):
                out.append(m)
    return tuple(out)


def _replaced_tag(tag: str, subfields, replacements) -> str:
    for codes, table in replacements:
        for code in codes:
            data = next((sf[1] for sf in subfields if sf[0] == code), None)
            if data is None or len(data) < 3:
                continue  # Java fails the whole record here; we leave the tag alone
            tag = table.get(data[:3]) or data[:3]
    return tag


def _expand(subfields, split) -> list:
    func, param = split
    out = []
    for code, data in subfields:
        try:
            parts = func(data, param)
        except (TypeError, ValueError):
            parts = [data]
        out.extend(pymarc.Subfield(code, part) for part in parts)
    return out


def _joined(texts: list[str], separator) -> str:
    if len(texts) == 1:
        return texts[0]
    parts = [text for text in texts if text]
    # Java appends a null separator as the text "null"
    return (separator if separator is not None else "null").join(parts)


def _convert(t: _Target, data: str):
    if t.convert is None:
        return data
    try:
        return t.convert(data)
    except ValueError:
        return None


def _fill_single_object(instance: dict, path: tuple[str, ...], value: str) -> None:
    """``createSingleObject``: set a property of a nested object (e.g. ``dates.date1``)."""
    obj, cls = instance, "Instance"
    for seg in path[:-1]:
        spec = SCHEMA[cls].get(seg)
        if spec is None or spec[0] != "obj":
            return
        obj = obj.setdefault(seg, {})
        cls = spec[1]
    if SCHEMA[cls].get(path[-1]) == _S:
        obj[path[-1]] = value


def _post_process(instance: dict) -> dict:
    """What ``MarcToInstanceMapper`` does after the Processor."""
    instance["source"] = "MARC"
    _split_uuid_runs(instance["identifiers"], "identifierTypeId", "value")
    _split_uuid_runs(instance["classifications"], "classificationTypeId", "classificationNumber")
    languages = instance["languages"]
    if len(languages) > 1:
        instance["languages"] = list(dict.fromkeys(languages))
    if instance["electronicAccess"]:
        instance["electronicAccess"] = [e for e in instance["electronicAccess"] if e.get("uri")]
    for key in ("precedingTitles", "succeedingTitles"):
        titles = [t for t in instance[key] if t.get("title")]
        for title in titles:
            for kind in ("isbn", "issn"):
                type_id = title.pop(f"{kind}Id", None)
                value = title.pop(f"{kind}Value", None)
                if type_id and value:
                    title["identifiers"].append({"identifierTypeId": type_id, "value": value})
        instance[key] = titles
    return instance


def _split_uuid_runs(items: list, type_key: str, value_key: str) -> None:
    """Split entries whose type id is several space-separated UUIDs (one per repeated subfield)."""
    extra = []
    for item in items:
        type_id = item.get(type_key)
        if not type_id or not _UUID_RUN.fullmatch(type_id + " "):
            continue
        uuids = type_id.split(" ")
        values = (item.get(value_key) or "").split(" ")
        if len(values) > 1:
            item[type_key], item[value_key] = uuids[0], values[0]
        for i in range(1, len(uuids)):
            if len(values) > i:
                value = " ".join(values[i:]) if i == len(uuids) - 1 else values[i]
                extra.append({type_key: uuids[i], value_key: value})
    items.extend(extra)
