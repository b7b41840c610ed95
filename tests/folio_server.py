"""A FOLIO tenant on loopback, for running folioclient for real in tests and benchmarks.

It serves what folio-llm uses: login (`/authn/login-with-expiry`, token cookies as Okapi and
Eureka send them), logout, `/instance-storage/instances` with the CQL subset below plus
`limit`/`offset`/`totalRecords`, instance create and fetch by id, the reference-data
endpoints and `/mapping-rules/marc-bib`. Faults are injected per path prefix: an HTTP status,
a stall longer than the client's timeout, a connection reset, or a slow answer after the work
is done (the ambiguous case for a create).

CQL subset: `index rel value` with rel in == = <> > >= < <=, values quoted or bare, `*` as
wildcard in ==, `cql.allRecords=1`, and/or/not, parentheses, `sortBy index[/sort.descending]`.

Each instance-storage request also counts the rows a PostgreSQL index scan on `id` would visit
(``rows_scanned``): from the `id` lower bound (or the first row) to the last row returned, so
`offset` costs what it costs in the database; an exact count (`totalRecords=exact`) visits
every matching row, an estimated one none. The benchmark reports it; the data here is in memory.
"""

from __future__ import annotations

import bisect
import fnmatch
import itertools
import json
import re
import socket
import struct
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

EXACT_UP_TO = 10_000

# FOLIO's list key per reference endpoint. Written out here on purpose rather than imported from
# folio_llm.folio.reference: this server plays the tenant, so a wrong key there must fail the tests.
REFERENCE_KEYS = {
    "alternative-title-types": "alternativeTitleTypes",
    "classification-types": "classificationTypes",
    "contributor-name-types": "contributorNameTypes",
    "contributor-types": "contributorTypes",
    "electronic-access-relationships": "electronicAccessRelationships",
    "identifier-types": "identifierTypes",
    "instance-date-types": "instanceDateTypes",
    "instance-formats": "instanceFormats",
    "instance-note-types": "instanceNoteTypes",
    "instance-relationship-types": "instanceRelationshipTypes",
    "instance-statuses": "instanceStatuses",
    "instance-types": "instanceTypes",
    "modes-of-issuance": "issuanceModes",
    "nature-of-content-terms": "natureOfContentTerms",
    "statistical-code-types": "statisticalCodeTypes",
    "statistical-codes": "statisticalCodes",
    "subject-sources": "subjectSources",
    "subject-types": "subjectTypes",
}


# --- CQL ---------------------------------------------------------------------------------

class CqlError(ValueError):
    pass


_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|(==|<>|>=|<=|=|>|<)|([^\s()"=<>]+))')


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CqlError(f"cannot parse CQL at {text[pos:]!r}")
        pos = m.end()
        if m.group(1):
            out.append(("(", "("))
        elif m.group(2):
            out.append((")", ")"))
        elif m.group(3) is not None:
            out.append(("str", re.sub(r"\\(.)", r"\1", m.group(3))))
        elif m.group(4):
            out.append(("rel", m.group(4)))
        else:
            out.append(("word", m.group(5)))
    return out


def _values(record, path: str) -> list:
    values = [record]
    for part in path.split("."):
        nxt = []
        for v in values:
            if isinstance(v, list):
                v = [x.get(part) for x in v if isinstance(x, dict)]
                nxt.extend(v)
            elif isinstance(v, dict) and part in v:
                nxt.append(v[part])
        values = nxt
    flat = []
    for v in values:
        flat.extend(v if isinstance(v, list) else [v])
    return [v for v in flat if v is not None]


def _text(v) -> str:
    return json.dumps(v) if isinstance(v, bool) else str(v)


def _term(index: str, rel: str, value: str):
    if index == "cql.allRecords":
        return lambda r: True
    words = value.casefold().split()

    def test(record) -> bool:
        for v in _values(record, index):
            t = _text(v)
            if rel == "==":
                if fnmatch.fnmatchcase(t.casefold(), value.casefold()) if "*" in value else t.casefold() == value.casefold():
                    return True
            elif rel == "=":
                have = t.casefold()
                if all(w.strip("*") in have for w in words):
                    return True
            elif rel == "<>":
                if t.casefold() != value.casefold():
                    return True
            elif (rel == ">" and t > value) or (rel == ">=" and t >= value) or (rel == "<" and t < value) or (
                    rel == "<=" and t <= value):
                return True
        return rel == "<>" and not _values(record, index)

    return test


@dataclass
class Cql:
    """A parsed query: a predicate, the sort keys, and the lowest `id` it allows (index start)."""

    predicate: object
    sort: list[tuple[str, bool]]
    id_from: str | None = None


def parse_cql(text: str) -> Cql:
    tokens = _tokens(text or "cql.allRecords=1")
    pos = 0
    bounds: list[str] = []

    def peek():
        return tokens[pos] if pos < len(tokens) else (None, None)

    def take():
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def is_word(word):
        kind, value = peek()
        return kind == "word" and value.lower() == word

    def disjunction(top):
        left = conjunction(top)
        if top and is_word("or"):
            bounds.clear()  # an `or` at the top: the id bound no longer limits the scan
        while is_word("or"):
            take()
            right = conjunction(False)
            left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
        return left

    def conjunction(top):
        left = primary(top)
        while is_word("and") or is_word("not"):
            op = take()[1].lower()
            right = primary(top and op == "and")
            if op == "and":
                left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
            else:
                left = (lambda a, b: lambda r: a(r) and not b(r))(left, right)
        return left

    def primary(top):
        kind, value = peek()
        if kind == "(":
            take()
            inner = disjunction(False)
            if take()[0] != ")":
                raise CqlError("missing )")
            return inner
        if kind != "word":
            raise CqlError(f"expected an index, got {value!r}")
        index = take()[1]
        rel_kind, rel = take() if pos < len(tokens) else (None, None)
        if rel_kind != "rel":
            raise CqlError(f"expected a relation after {index}")
        value_kind, term_value = take() if pos < len(tokens) else (None, None)
        if value_kind not in ("word", "str"):
            raise CqlError(f"expected a value after {index}{rel}")
        if top and index == "id" and rel in (">", ">="):
            bounds.append(term_value)
        return _term(index, rel, term_value)

    predicate = disjunction(True) if not is_word("sortby") else (lambda r: True)
    sort: list[tuple[str, bool]] = []
    if is_word("sortby"):
        take()
        while pos < len(tokens):
            key = take()[1]
            name, _, modifier = key.partition("/")
            sort.append((name, "descending" in modifier))
    if pos != len(tokens):
        raise CqlError(f"unexpected {tokens[pos][1]!r}")
    return Cql(predicate, sort, max(bounds) if bounds else None)


# --- the tenant --------------------------------------------------------------------------

@dataclass
class Fault:
    prefix: str
    kind: str  # "status", "stall", "reset", "slow"
    times: int | None  # None = every request
    status: int = 503
    seconds: float = 0.0


@dataclass
class Tenant:
    instances: list[dict]
    reference: dict[str, list[dict]]
    rules: dict | None
    tenant: str = "diku"
    username: str = "diku_admin"
    password: str = "admin"
    login_failure_status: int = 422  # Okapi's mod-login; Eureka's mod-login-keycloak answers 401
    faults: list[Fault] = field(default_factory=list)
    log: list[tuple[str, str, dict]] = field(default_factory=list)
    rows_scanned: int = 0
    created: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.instances = sorted(self.instances, key=lambda r: r["id"])
        self._ids = [r["id"] for r in self.instances]
        self._tokens: set[str] = set()
        self._lock = threading.Lock()

    def fail(self, prefix: str, status: int = 503, times: int | None = 1) -> None:
        self.faults.append(Fault(prefix, "status", times, status=status))

    def stall(self, prefix: str, seconds: float, times: int | None = None) -> None:
        self.faults.append(Fault(prefix, "stall", times, seconds=seconds))

    def reset(self, prefix: str, times: int | None = 1) -> None:
        self.faults.append(Fault(prefix, "reset", times))

    def slow(self, prefix: str, seconds: float, times: int | None = 1) -> None:
        """Do the work, then answer after ``seconds``."""
        self.faults.append(Fault(prefix, "slow", times, seconds=seconds))

    def requests(self, prefix: str = "/") -> list[tuple[str, str, dict]]:
        return [entry for entry in self.log if entry[1].startswith(prefix)]

    def fault_for(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.prefix) and (fault.times is None or fault.times > 0):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def add_instance(self, record: dict) -> None:
        at = bisect.bisect_left(self._ids, record["id"])
        self._ids.insert(at, record["id"])
        self.instances.insert(at, record)

    def search(self, records: list[dict], ids: list[str] | None, query: str, limit: int, offset: int,
               exact: bool = False):
        """(page, totalRecords). In id order the page is read lazily from the id bound on, as an
        index scan does; totalRecords is exact up to EXACT_UP_TO records (and for a count with
        totalRecords=exact), else the table's size, as PostgreSQL's estimate would be."""
        cql = parse_cql(query)
        start = bisect.bisect_left(ids, cql.id_from) if ids is not None and cql.id_from else 0
        in_id_order = all(key == "id" and not descending for key, descending in cql.sort)
        matching = (r for r in itertools.islice(records, start, None) if cql.predicate(r))
        if in_id_order and limit > 0:
            page = list(itertools.islice(matching, offset, offset + limit))
            small = len(records) <= EXACT_UP_TO
            total = sum(1 for r in records[start:] if cql.predicate(r)) if small else len(records)
        else:
            matches = list(matching)
            for key, descending in reversed(cql.sort):
                if key != "id" or descending:
                    matches.sort(key=lambda r: [_text(v) for v in _values(r, key)], reverse=descending)
            page = matches[offset:offset + limit]
            total = len(matches) if exact or len(records) <= EXACT_UP_TO or limit > 0 else len(records)
        if ids is not None:
            if limit == 0 and not exact:
                scanned = 0  # PostgreSQL's estimate from its statistics, as RMB gives for large sets
            elif page and in_id_order:
                scanned = bisect.bisect_left(ids, page[-1]["id"]) - start + 1
            else:
                scanned = len(records) - start
            with self._lock:
                self.rows_scanned += scanned
        return page, total


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall
    server: "_Server"

    def log_message(self, *args):
        pass

    # -- plumbing

    def _send(self, status: int, body=None, headers: list[tuple[str, str]] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        for k, v in headers or []:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return None

    def _authorized(self) -> bool:
        tenant = self.server.tenant
        cookies = dict(part.strip().split("=", 1) for part in self.headers.get("Cookie", "").split(";") if "=" in part)
        return self.headers.get("x-okapi-tenant") == tenant.tenant and cookies.get("folioAccessToken") in tenant._tokens

    def _handle(self, method: str) -> None:
        tenant = self.server.tenant
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        body = self._body() if method in ("POST", "PUT") else None
        tenant.log.append((method, url.path, params))
        fault = tenant.fault_for(url.path)
        if fault and fault.kind == "reset":
            self._reset()
            return
        if fault and fault.kind == "stall":
            self.server.stop_event.wait(fault.seconds)
            self.close_connection = True
            return
        if fault and fault.kind == "status":
            self._send(fault.status, {"errors": [{"message": f"injected {fault.status}"}]})
            return
        status, payload, headers = self._route(method, url.path, params, body)
        if fault and fault.kind == "slow":
            self.server.stop_event.wait(fault.seconds)
            self.close_connection = True
            return
        self._send(status, payload, headers)

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    # -- endpoints

    def _route(self, method, path, params, body):
        tenant = self.server.tenant
        if method == "POST" and path == "/authn/login-with-expiry":
            return self._login(body)
        if method == "POST" and path == "/authn/logout":
            return 204, None, [("Set-Cookie", "folioAccessToken=; Max-Age=0")]
        if not self._authorized():
            return 401, {"errors": [{"message": "Invalid token"}]}, None
        try:
            limit = int(params.get("limit", 10))
            offset = int(params.get("offset", 0))
        except ValueError:
            return 400, {"errors": [{"message": "limit and offset must be integers"}]}, None
        if path == "/instance-storage/instances":
            if method == "POST":
                return self._create(body)
            try:
                page, total = tenant.search(tenant.instances, tenant._ids, params.get("query", ""), limit, offset,
                                            exact=params.get("totalRecords") == "exact")
            except CqlError as exc:
                return 400, {"errors": [{"message": str(exc)}]}, None
            return 200, {"instances": page, "totalRecords": total}, None
        if path.startswith("/instance-storage/instances/") and method == "GET":
            wanted = path.rsplit("/", 1)[1]
            found = [r for r in tenant.instances if r["id"] == wanted]
            return (200, found[0], None) if found else (404, {"errors": [{"message": "Not found"}]}, None)
        kind = path.strip("/")
        if kind in tenant.reference and method == "GET":
            entries = sorted(tenant.reference[kind], key=lambda e: e.get("id", ""))
            try:
                page, total = tenant.search(entries, None, params.get("query", ""), limit, offset)
            except CqlError as exc:
                return 400, {"errors": [{"message": str(exc)}]}, None
            return 200, {REFERENCE_KEYS[kind]: page, "totalRecords": total}, None
        if path == "/mapping-rules/marc-bib" and method == "GET" and tenant.rules is not None:
            return 200, tenant.rules, None
        return 404, {"errors": [{"message": f"No suitable module found for path {path}"}]}, None

    def _login(self, body):
        tenant = self.server.tenant
        if self.headers.get("x-okapi-tenant") != tenant.tenant:
            return 400, {"errors": [{"message": "No such Tenant"}]}, None
        if not isinstance(body, dict) or (body.get("username"), body.get("password")) != (tenant.username, tenant.password):
            return tenant.login_failure_status, {"errors": [{"message": "Password does not match", "code": "password.incorrect"}]}, None
        token = uuid.uuid4().hex
        tenant._tokens.add(token)
        now = datetime.now(timezone.utc)
        expires = (now + timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
        refresh = (now + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = [("Set-Cookie", f"folioAccessToken={token}; Path=/; HttpOnly; SameSite=Lax"),
                   ("Set-Cookie", f"folioRefreshToken=r{token}; Path=/authn; HttpOnly; SameSite=Lax")]
        return 201, {"accessTokenExpiration": expires, "refreshTokenExpiration": refresh}, headers

    def _create(self, body):
        tenant = self.server.tenant
        if not isinstance(body, dict):
            return 400, {"errors": [{"message": "body is not a JSON object"}]}, None
        missing = [key for key in ("title", "instanceTypeId", "source") if not body.get(key)]
        if missing:
            return 422, {"errors": [{"message": "must not be null", "parameters": [{"key": missing[0]}]}]}, None
        record = dict(body)
        record.setdefault("id", str(uuid.uuid4()))
        if record["id"] in tenant._ids:
            return 422, {"errors": [{"message": "id value already exists in table instance: " + record["id"]}]}, None
        record.setdefault("hrid", f"in{len(tenant.instances) + 1:011d}")
        tenant.add_instance(record)
        tenant.created.append(record)
        return 201, record, [("Location", f"/instance-storage/instances/{record['id']}")]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # injected resets close sockets under the handler


class FolioServer:
    """``with FolioServer(tenant) as url:`` serves ``tenant`` on 127.0.0.1 in a thread."""

    def __init__(self, tenant: Tenant):
        self.tenant = tenant
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.tenant = tenant
        self._server.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(self, *exc) -> None:
        self._server.stop_event.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
