"""A logged-in session with a live FOLIO tenant, through folioclient (FOLIO-FSE's client).

folioclient logs in the way Okapi and Eureka tenants both take it (`/authn/login-with-expiry`,
token cookies, a fresh login after a 401). Retries are done here (``RetryPolicy``), hand-written
because folioclient's own are set by environment variables read when it is imported, are off by
default, and never cover timeouts.

Credentials come from the environment only (``FOLIO_URL``, ``FOLIO_TENANT``, ``FOLIO_USERNAME``,
``FOLIO_PASSWORD``). No message or log line written here holds one: errors name the request
(``GET /instance-types``) and the variable to check, and text the server sends back is redacted.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

import httpx
from folioclient import FolioClient, FolioConnectionError, FolioResourceNotFoundError

log = logging.getLogger(__name__)

ENV_VARS = ("FOLIO_URL", "FOLIO_TENANT", "FOLIO_USERNAME", "FOLIO_PASSWORD")
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})
INSTANCES_PATH = "/instance-storage/instances"
LOGIN = "log in (POST /authn/login-with-expiry)"


class FolioApiError(ValueError):
    """A tenant that cannot be reached or refuses a request; the message names the request.
    ``status`` is the HTTP status when the tenant answered one."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class FolioLoginError(FolioApiError):
    """The tenant refused the credentials."""


@dataclass(frozen=True)
class Credentials:
    url: str = field(repr=False)
    tenant: str = field(repr=False)
    username: str = field(repr=False)
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: dict | None = None) -> "Credentials":
        env = os.environ if environ is None else environ
        missing = [name for name in ENV_VARS if not env.get(name, "").strip()]
        if missing:
            raise FolioApiError(f"set {', '.join(missing)} in the environment (FOLIO credentials are read from there only)")
        url = env["FOLIO_URL"].strip().rstrip("/")
        if not url.startswith(("https://", "http://")):
            raise FolioApiError("FOLIO_URL must start with https:// (or http://)")
        return cls(url, env["FOLIO_TENANT"].strip(), env["FOLIO_USERNAME"], env["FOLIO_PASSWORD"])

    def redact(self, text: str) -> str:
        for secret in sorted({self.password, self.url, self.username, self.tenant}, key=len, reverse=True):
            if secret:
                text = text.replace(secret, "***")
        return text


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries in all per request (5xx, resets, timeouts), waiting ``backoff`` seconds
    before the second and twice as long before each next one (60 s at most); ``timeout``
    seconds for each request to connect and answer."""

    attempts: int = 4
    backoff: float = 2.0
    timeout: float = 60.0

    def wait(self, failures: int) -> float:
        return min(self.backoff * 2 ** (failures - 1), 60.0)


def _status(exc: BaseException) -> int | None:
    return exc.response.status_code if isinstance(exc, httpx.HTTPStatusError) else None


def _transient(exc: BaseException) -> bool:
    status = _status(exc)
    if status is not None:
        return status in TRANSIENT_STATUSES
    # folioclient wraps transport errors in FolioConnectionError, which is no TransportError
    return isinstance(exc, (httpx.TransportError, FolioConnectionError))


def _detail(response: httpx.Response) -> str:
    """The server's own one-line reason: FOLIO's ``errors[0].message`` (with the key it names)
    or ``message``, else the start of the body."""
    try:
        payload = response.json()
    except Exception:  # not JSON, or not read
        payload = None
    text = ""
    if isinstance(payload, dict):
        errors = payload.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            text = str(errors[0].get("message") or "")
            keys = [p.get("key") for p in errors[0].get("parameters") or [] if isinstance(p, dict) and p.get("key")]
            if keys:
                text = f"{', '.join(map(str, keys))}: {text}"
        elif isinstance(payload.get("message"), str):
            text = payload["message"]
    if not text:
        try:
            text = response.text
        except Exception:
            text = ""
    return " ".join(text.split())[:200]


class FolioApi:
    """A logged-in session: ``with FolioApi.connect() as api: api.get_list(...)``.

    ``requests`` counts the HTTP requests tried (login and retries included)."""

    def __init__(self, client: FolioClient | None, credentials: Credentials, retry: RetryPolicy):
        self.client = client
        self.credentials = credentials
        self.retry = retry
        self.requests = 0

    @classmethod
    def connect(cls, credentials: Credentials | None = None, retry: RetryPolicy | None = None) -> "FolioApi":
        credentials = credentials or Credentials.from_env()
        api = cls(None, credentials, retry or RetryPolicy())
        api.client = api._call(LOGIN, lambda: FolioClient(
            credentials.url, credentials.tenant, credentials.username, credentials.password,
            timeout=api.retry.timeout))
        # one keep-alive connection for the session; folioclient opens one per call otherwise
        api.client.httpx_client = api.client.get_folio_http_client()
        return api

    def __enter__(self) -> "FolioApi":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(logout=exc_type is None)

    def close(self, logout: bool = True) -> None:
        """Log out (a failed session is only closed: against a tenant that stopped answering,
        a logout would wait out one more timeout; the token expires by itself)."""
        client, self.client = self.client, None
        if client is None:
            return
        if logout:
            try:
                client.close()
                return
            except Exception:  # a logout that fails loses nothing; never mask the result
                log.debug("FOLIO logout failed")
        http = getattr(client, "httpx_client", None)
        if http is not None and not http.is_closed:
            http.close()

    # -- requests

    def get(self, path: str, **params) -> Any:
        payload = self._call(f"GET {path}", lambda: self.client.folio_get(path, query_params=dict(params)))
        if payload is None:
            raise FolioApiError(f"GET {path}: the answer is not JSON")
        return payload

    def get_list(self, path: str, key: str, **params) -> tuple[list[dict], int | None]:
        """The ``key`` list of a collection answer, and its ``totalRecords``."""
        payload = self.get(path, **params)
        items = payload.get(key) if isinstance(payload, dict) else None
        if not isinstance(items, list):
            raise FolioApiError(f"GET {path}: the answer has no '{key}' list")
        total = payload.get("totalRecords")
        return items, total if isinstance(total, int) else None

    def create(self, path: str, record: dict) -> dict:
        """POST ``record``, which carries its own ``id``. A retry after a failed attempt first
        asks whether the record is there (the tenant may have created it and then failed to
        answer), so a record is never created twice."""
        posted = False

        def attempt():
            nonlocal posted
            if posted:
                try:
                    return self.client.folio_get(f"{path}/{record['id']}")
                except FolioResourceNotFoundError:
                    pass
            posted = True
            return self.client.folio_post(path, record)

        created = self._call(f"POST {path}", attempt)
        return created if isinstance(created, dict) else record  # mod-inventory answers 201 without a body

    # -- retries and errors

    def _call(self, what: str, action: Callable[[], Any]) -> Any:
        for attempt in range(1, self.retry.attempts + 1):
            self.requests += 1
            try:
                return action()
            except httpx.HTTPError as exc:
                if not _transient(exc):
                    raise self._refused(what, exc) from None
                reason = self._reason(exc)
                if attempt == self.retry.attempts:
                    raise FolioApiError(f"{what}: {reason}; gave up after {attempt} attempts", _status(exc)) from None
                wait = self.retry.wait(attempt)
                log.warning("%s: %s; trying again in %g s (attempt %d of %d)",
                            what, reason, wait, attempt + 1, self.retry.attempts)
                time.sleep(wait)
            except ValueError as exc:
                if what == LOGIN:  # folioclient's "Authentication failed: No token received."
                    raise FolioLoginError(f"{what}: {self.credentials.redact(str(exc))}") from None
                raise
        raise AssertionError("unreachable")

    def _reason(self, exc: httpx.HTTPError) -> str:
        status = _status(exc)
        if status is not None:
            detail = self.credentials.redact(_detail(exc.response))
            return f"HTTP {status}" + (f" ({detail})" if detail else "")
        if isinstance(exc, httpx.TimeoutException):
            return f"no answer within {self.retry.timeout:g} s"
        if isinstance(exc, httpx.ConnectError) or type(exc).__name__ == "FolioSystemUnavailableError":
            return "cannot connect to FOLIO_URL"
        text = self.credentials.redact(str(exc)).splitlines()
        return f"connection lost ({text[0] if text else type(exc).__name__})"

    def _refused(self, what: str, exc: httpx.HTTPError) -> FolioApiError:
        status = _status(exc)
        reason = self._reason(exc)
        if what == LOGIN:
            if status == 404:
                return FolioLoginError(f"{what}: {reason}: is FOLIO_URL the tenant's Okapi or gateway URL?", status)
            return FolioLoginError(f"{what}: refused, {reason}: check FOLIO_USERNAME, FOLIO_PASSWORD and FOLIO_TENANT", status)
        if status == 403:
            return FolioApiError(f"{what}: {reason}: FOLIO_USERNAME lacks the permission for it", status)
        return FolioApiError(f"{what}: {reason}", status)


@dataclass
class PostResult:
    """What :func:`post_instance` did: the request, whether it was sent, the new id and hrid."""

    method: str
    path: str
    body: dict
    sent: bool = False
    id: str | None = None
    hrid: str | None = None

    def request_text(self) -> str:
        return f"{self.method} {self.path}\n{json.dumps(self.body, indent=2, ensure_ascii=False)}"


def instance_body(record: dict) -> dict:
    """The create request's body: ``record`` with ``source`` ("FOLIO" unless set) and a new
    ``id`` unless it has one. Refuses a record without the keys FOLIO requires."""
    if not isinstance(record, dict):
        raise FolioApiError(f"the instance to post is not a JSON object (got {type(record).__name__})")
    body = dict(record)
    body.setdefault("source", "FOLIO")
    title = body.get("title")
    if not isinstance(title, str) or not title.strip():
        raise FolioApiError("the instance to post has no title")
    name = f"instance '{title[:60]}'"
    if not isinstance(body.get("instanceTypeId"), str) or not body["instanceTypeId"]:
        hint = " (it has instanceTypeText: map labels to UUIDs first)" if "instanceTypeText" in body else ""
        raise FolioApiError(f"{name} has no instanceTypeId{hint}")
    if not body.get("id"):
        body["id"] = str(uuid.uuid4())
    return body


def post_instance(record: dict, *, send: bool = False, client: FolioApi | None = None) -> PostResult:
    """Create ``record`` (a FOLIO Instance with reference UUIDs) in the tenant.

    Without ``send`` it is a dry run: nothing is sent, the result holds the request
    (:meth:`PostResult.request_text`). With ``send`` it is POSTed to
    ``/instance-storage/instances`` over ``client``, or over a session opened from the
    environment's credentials and closed again; ``id`` and ``hrid`` are the new instance's."""
    result = PostResult("POST", INSTANCES_PATH, instance_body(record))
    if not send:
        return result
    if client is not None:
        created = client.create(INSTANCES_PATH, result.body)
    else:
        with FolioApi.connect() as api:
            created = api.create(INSTANCES_PATH, result.body)
    result.sent = True
    result.id = created.get("id") or result.body["id"]
    result.hrid = created.get("hrid")
    return result
