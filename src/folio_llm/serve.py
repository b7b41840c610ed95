"""`folio-llm serve`: one process with a web page for catalogers and an OpenAI-compatible API.

The API (``/v1/chat/completions``, ``/v1/models``) is llama-cpp-python's own server app over the
GGUF file; greedy requests with a JSON-schema response format are answered several at a time
(``chat_batching``). A small ASGI layer in front of it makes it answer as the model was trained and
evaluated: OpenAI's ``json_schema`` response format becomes llama.cpp's JSON-schema grammar,
greedy decoding has no repeat penalty unless one is asked for, and a conversation without a
system message gets the training system prompt.

The page (``/``) and its endpoints (``/api/...``) use ``predict.Generator`` on the same file, so a
proposal is what `folio-llm predict --backend llama.cpp --folio-ready` writes: JSON schema and
copy constraint, labels mapped to the tenant's reference UUIDs, FOLIO's Instance schema checked.
FOLIO credentials come from the environment only and never reach the page. A create request
carries the proposal's key: the instance id is derived from it and a key is created once, so a
double click or two people on one proposal never create two records.
"""

from __future__ import annotations

import json
import queue
import sys
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Iterator

# module level, not in create_app: FastAPI resolves the endpoints' annotations in this module
from fastapi import Body, FastAPI, File, Request, UploadFile
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse

from folio_llm.checking import check_record

PAGE = Path(__file__).with_name("web") / "index.html"
MAX_BODY = 2 * 2**20  # bytes in one request (a batch upload included)
MAX_DESCRIPTION = 8000  # characters in one description
MAX_BATCH_ROWS = 500
BATCH_CHUNK = 8  # batch-job rows a generation: most of batched decoding's gain, a short wait for a proposal
ID_NAMESPACE = uuid.UUID("5b1f5d3c-53a1-4c55-9a11-0f0c7f1a2b3c")  # instance id = uuid5(namespace, key)


def instance_id(key: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, key))


class Cataloger:
    """The page's side: proposals, FOLIO requests, creations once per key, batch jobs."""

    def __init__(self, generator, mapper, system_prompt: str, examples: list[str], store, checks=None):
        from folio_llm.checking import AnswerChecks

        self.generator, self.mapper, self.system_prompt, self.examples = generator, mapper, system_prompt, examples
        self.checks = checks or AnswerChecks()  # review flags and roles, as predict does them
        self.store = store  # jobs.JobStore: batch jobs and creations, kept across restarts
        self.model_lock = threading.Lock()  # one generation at a time: llama.cpp contexts are not shared
        self.creating: dict[str, threading.Lock] = {}
        self.keys_lock = threading.Lock()
        self.work = threading.Event()
        self.stopping = False
        self.worker = threading.Thread(target=self._run_batches, daemon=True, name="batch-jobs")
        self.worker.start()  # unfinished jobs of an earlier run go on at once

    def stop(self) -> None:
        self.stopping = True
        self.work.set()
        self.worker.join(timeout=60)

    def propose(self, description: str, on_tokens=None) -> dict:
        from folio_llm.predict import Request, answered, conversation

        request = Request("the description", conversation(self.system_prompt, description))
        [(_, _, checked)] = answered(self.generator, [request], self.mapper, lock=self.model_lock, progress=False,
                                     checks=self.checks, on_tokens=on_tokens)
        return {**checked.as_json(), "key": uuid.uuid4().hex}

    def propose_streamed(self, description: str) -> Iterator[dict]:
        """:meth:`propose` as it is written: ``{"partial": record}`` whenever another field of
        the answer is complete (the record as far as written, closed), then ``{"done": the
        proposal}``, or ``{"error": why}``."""
        from folio_llm.answers import close_cut_json

        events: queue.Queue = queue.Queue()
        shown = [None]

        def written(_, tokens):
            so_far = close_cut_json(self.generator.tokenizer.decode(tokens, skip_special_tokens=True))
            if so_far is not None and so_far != shown[0]:
                shown[0] = so_far
                events.put({"partial": json.loads(so_far)})

        def run():
            try:
                events.put({"done": self.propose(description, written)})
            except Exception as exc:  # the page shows it; the server goes on
                events.put({"error": " ".join(str(exc).split())[:300] or type(exc).__name__})
            finally:
                events.put(None)

        threading.Thread(target=run, daemon=True, name="propose").start()
        while (event := events.get()) is not None:
            yield event

    def folio_request(self, record: dict, key: str) -> dict:
        """The exact create request (dry run): nothing is sent."""
        from folio_llm.folio.api import post_instance

        checked = check_record(record, self.mapper)
        request = post_instance({**checked.instance, "id": instance_id(key)}, send=False)
        return {**checked.as_json(), "request": request.request_text(), "method": request.method,
                "path": request.path, "body": request.body}

    def create(self, record: dict, key: str, connect) -> dict:
        """Create the record once per key; a second call with the key answers the first result."""
        from folio_llm.folio.api import post_instance

        with self.keys_lock:
            lock = self.creating.setdefault(key, threading.Lock())
        with lock:
            earlier = self.store.created(key)
            if earlier:
                return {**earlier, "already_created": True}
            checked = check_record(record, self.mapper)
            if not checked.valid:
                raise ValueError(checked.error)
            with connect() as tenant:
                result = post_instance({**checked.instance, "id": instance_id(key)}, send=True, client=tenant)
            self.store.remember_created(key, result.id, result.hrid)
            return {"id": result.id, "hrid": result.hrid}

    def start_batch(self, data: bytes, filename: str) -> dict:
        """A job for an uploaded .csv or .jsonl file, stored before this returns; the worker
        answers its rows in the background."""
        from folio_llm.predict import BadInput, read_requests

        suffix = Path(filename or "").suffix.lower()
        if suffix not in (".csv", ".jsonl", ".ndjson", ".json"):
            raise ValueError(f"{filename or 'the upload'}: expected a .csv or .jsonl file")
        name = Path(filename).name
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            items = list(read_requests([], path, self.system_prompt))
            if len(items) > MAX_BATCH_ROWS:
                raise OverflowError(f"{len(items)} rows: a batch holds at most {MAX_BATCH_ROWS}")
            requests, rejects = [], []
            for position, item in enumerate(items):
                where = item.where.replace(str(path), name)
                if isinstance(item, BadInput):
                    rejects.append((position, {"where": where, "reason": item.reason}))
                else:
                    requests.append((where, item.messages))
        job = self.store.add_job(name, requests, rejects)
        self.work.set()
        return self.store.status(job)

    def _run_batches(self) -> None:
        """Answer every stored row without an answer, oldest job first, ``BATCH_CHUNK`` rows a
        generation (batched decoding; a proposal waits for one chunk at most: the page shares the
        model), each outcome stored as soon as its chunk is done."""
        from folio_llm.predict import answered

        while not self.stopping:
            rows = self.store.pending(limit=16)
            if not rows:
                self.work.wait(timeout=5)
                self.work.clear()
                continue
            try:
                for row, answer, checked in answered(self.generator, rows, self.mapper, chunk=BATCH_CHUNK,
                                                     lock=self.model_lock, progress=False, checks=self.checks):
                    if checked.record is None:
                        self.store.answer(row, {"where": row.place, "reason": checked.error,
                                                "description": row.messages[-1]["content"], "output": answer},
                                          is_record=False)
                    else:
                        self.store.answer(row, checked.record, is_record=True, warned=bool(checked.warnings))
                    if self.stopping:
                        break
            except Exception as exc:  # the job reports it; the server and the other jobs go on
                self.store.fail(rows[0].job, " ".join(str(exc).split())[:300] or type(exc).__name__)


def openai_defaults(body: dict, system_prompt: str) -> dict:
    """A chat-completions request as the model expects it: OpenAI's json_schema response format
    as llama-cpp-python's json_object + schema, no repeat penalty unless asked for, and the
    training system prompt where the conversation has none."""
    body = dict(body)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    body.setdefault("repeat_penalty", 1.0)
    messages = body.get("messages")
    if isinstance(messages, list) and messages and not any(
            isinstance(m, dict) and m.get("role") == "system" for m in messages):
        body["messages"] = [{"role": "system", "content": system_prompt}, *messages]
    return body


class RequestShaper:
    """ASGI middleware: refuse bodies over MAX_BODY (413, one line), rewrite chat-completions
    requests with :func:`openai_defaults`, and answer the greedy structured ones of an
    authorized client through ``batcher`` (``chat_batching``: concurrent clients batched)."""

    def __init__(self, app, system_prompt: str, batcher=None, api_key: str | None = None,
                 max_tokens: int = 768):
        self.app, self.system_prompt = app, system_prompt
        self.batcher, self.api_key, self.max_tokens = batcher, api_key, max_tokens

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            return await _refuse(send, 413, f"request body over {MAX_BODY // 2**20} MiB")
        if scope["path"].rstrip("/") != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
            if sum(map(len, chunks)) > MAX_BODY:
                return await _refuse(send, 413, f"request body over {MAX_BODY // 2**20} MiB")
        body = b"".join(chunks)
        try:
            request = openai_defaults(json.loads(body), self.system_prompt)
            shaped = json.dumps(request).encode()
        except (ValueError, TypeError, AttributeError):
            request, shaped = None, body  # not JSON: llama-cpp-python's validation answers it
        batched = self._batchable(request, headers)
        if batched is not None:
            return await self._answer_batched(batched, send)
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": shaped, "more_body": False}

        scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"content-length"]
                 + [(b"content-length", str(len(shaped)).encode())]}
        return await self.app(scope, replay, send)

    def _batchable(self, request, headers: dict) -> dict | None:
        from folio_llm.chat_batching import batchable

        if self.batcher is None or request is None:
            return None
        if self.api_key and headers.get(b"authorization", b"").decode(errors="replace") != f"Bearer {self.api_key}":
            return None  # llama-cpp-python's server refuses it
        return batchable(request, self.max_tokens)

    async def _answer_batched(self, request: dict, send) -> None:
        import anyio

        try:
            reply, together = await anyio.to_thread.run_sync(self.batcher.answer, request)
        except Exception as exc:  # one line to the client, as llama-cpp-python's server answers
            client_error = isinstance(exc, ValueError)
            return await _send_json(send, 400 if client_error else 500, {"error": {
                "message": " ".join(str(exc).split())[:400] or type(exc).__name__,
                "type": "invalid_request_error" if client_error else "server_error"}})
        await _send_json(send, 200, reply, [(b"x-folio-llm-batched", str(together).encode())])


async def _refuse(send, status: int, message: str) -> None:
    await _send_json(send, status, {"error": message})


async def _send_json(send, status: int, value, headers: list | None = None) -> None:
    body = json.dumps(value, ensure_ascii=False).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def create_app(gguf: str | Path, params, *, reference_dir: str | Path, schemas_dir: str | Path,
               examples: list[str], jobs_dir: str | Path, copy: bool | None = None, connect=None,
               api_key: str | None = None):
    """The ASGI app: llama-cpp-python's OpenAI-compatible API and the cataloger's page; batch
    jobs and creations kept in ``jobs_dir`` (jobs.JobStore)."""
    from llama_cpp.server.app import create_app as create_openai_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from folio_llm.chat_batching import ChatBatcher
    from folio_llm.checking import AnswerChecks, FolioMapper
    from folio_llm.decoding.constraints import decoding_settings
    from folio_llm.folio.api import FolioApi
    from folio_llm.jobs import JobStore
    from folio_llm.decoding.llamacpp import threads
    from folio_llm.predict import Generator

    gguf = Path(gguf)
    system_prompt = params.dataset.system_prompts[0]
    mapper = FolioMapper(reference_dir, schemas_dir)
    decoding = decoding_settings(params, copy=copy, reference_data=reference_dir)
    generator = Generator.load(gguf, None, "llama.cpp", max_new_tokens=params.eval.max_new_tokens,
                               decoding=decoding, draft_tokens=params.eval.draft_tokens)
    store = JobStore(jobs_dir)
    if store.notice:
        print(f"warning: {store.notice}", file=sys.stderr, flush=True)
    cataloger = Cataloger(generator, mapper, system_prompt, examples, store, AnswerChecks.of(params))

    app: FastAPI = create_openai_app(
        server_settings=ServerSettings(api_key=api_key),
        model_settings=[ModelSettings(model=str(gguf), model_alias=params.export.name, n_ctx=4096,
                                      n_threads=threads(), n_threads_batch=threads(), logits_all=False,
                                      verbose=False)])
    app.title = "folio-llm"
    app.state.cataloger = cataloger
    app.state.generator = generator
    add_page_routes(app, cataloger, gguf.name, connect or FolioApi.connect)
    add_error_handlers(app)

    @app.on_event("shutdown")
    def release_model():
        cataloger.stop()
        store.close()
        generator.close()

    batcher = ChatBatcher(generator, cataloger.model_lock, params.export.name)
    return RequestShaper(app, system_prompt, batcher, api_key, params.eval.max_new_tokens)


def error(status: int, message: str) -> JSONResponse:
    """A one-line JSON error."""
    return JSONResponse({"error": " ".join(str(message).split())[:400] or "error"}, status_code=status)


def same_origin(request: Request) -> bool:
    """Creating in FOLIO only from the page itself: a browser on another site sends its Origin."""
    origin = request.headers.get("origin")
    return origin is None or origin.split("://", 1)[-1] == request.headers.get("host")


def description_of(payload) -> str:
    text = payload.get("description") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip():
        raise ValueError("'description': give the text to catalog")
    if len(text) > MAX_DESCRIPTION:
        raise OverflowError(f"'description': {len(text)} characters, at most {MAX_DESCRIPTION}")
    return text.strip()


def record_and_key(payload) -> tuple[dict, str]:
    record = payload.get("record") if isinstance(payload, dict) else None
    key = payload.get("key") if isinstance(payload, dict) else None
    if not isinstance(record, dict):
        raise ValueError("'record': the record (JSON object) to send")
    if not isinstance(key, str) or not 8 <= len(key) <= 64:
        raise ValueError("'key': the proposal's key")
    return record, key


def guarded(run):
    """``run()``'s answer as JSON, or its bad-input exception as a one-line error."""
    from folio_llm.folio.api import FolioApiError

    try:
        return JSONResponse(run())
    except OverflowError as exc:
        return error(413, str(exc))
    except FolioApiError as exc:  # the tenant refused or did not answer: not the page's fault
        return error(502, f"FOLIO: {exc}")
    except (ValueError, KeyError) as exc:
        return error(400, str(exc))


def add_page_routes(app, cataloger: Cataloger, model_name: str, connect) -> None:
    """The page (``/``) and its endpoints (``/api/...``)."""
    store = cataloger.store

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(PAGE.read_text(encoding="utf-8"))

    @app.get("/api/examples")
    def api_examples():
        return {"examples": cataloger.examples, "model": model_name, "folio": _folio_configured()}

    @app.post("/api/propose")
    def api_propose(payload=Body(None)):
        return guarded(lambda: cataloger.propose(description_of(payload)))

    @app.post("/api/propose/stream")
    def api_propose_streamed(payload=Body(None)):
        """The proposal as it is written, one JSON object a line (``Cataloger.propose_streamed``)."""
        try:
            description = description_of(payload)
        except OverflowError as exc:
            return error(413, str(exc))
        except ValueError as exc:
            return error(400, str(exc))
        lines = (json.dumps(event, ensure_ascii=False) + "\n" for event in cataloger.propose_streamed(description))
        return StreamingResponse(lines, media_type="application/x-ndjson")

    @app.post("/api/check")
    def api_check(payload=Body(None)):
        return guarded(lambda: cataloger.folio_request(*record_and_key(payload)))

    @app.post("/api/create")
    def api_create(request: Request, payload=Body(None)):
        if not same_origin(request):
            return error(403, "creating records is only possible from this server's own page")
        if not _folio_configured():
            return error(503, "no FOLIO tenant: set FOLIO_URL, FOLIO_TENANT, FOLIO_USERNAME and FOLIO_PASSWORD "
                              "where `folio-llm serve` runs")
        return guarded(lambda: cataloger.create(*record_and_key(payload), connect))

    @app.post("/api/batch")
    async def api_batch(file: UploadFile = File(None)):
        if file is None:
            return error(400, "'file': upload a .csv or .jsonl file of descriptions")
        data = await file.read()
        try:
            return cataloger.start_batch(data, file.filename or "")
        except OverflowError as exc:
            return error(413, str(exc))
        except (ValueError, UnicodeDecodeError) as exc:
            return error(400, str(exc))

    @app.get("/api/batch")
    def api_batch_list():
        return {"jobs": store.jobs()}

    @app.get("/api/batch/{job_id}")
    def api_batch_status(job_id: str):
        return store.status(job_id) or error(404, f"no batch job {job_id}")

    @app.get("/api/batch/{job_id}/{kind}.jsonl")
    def api_batch_file(job_id: str, kind: str):
        if store.status(job_id) is None or kind not in ("records", "rejects"):
            return error(404, f"no {kind} for batch job {job_id}")
        rows = store.results(job_id, "record" if kind == "records" else "reject")
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return PlainTextResponse(text, media_type="application/x-ndjson", headers={
            "content-disposition": f'attachment; filename="{kind}.jsonl"'})


def add_error_handlers(app) -> None:
    """One-line JSON errors for the page's endpoints; the OpenAI API answers as llama-cpp-python does."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        if not request.url.path.startswith("/api/"):  # the OpenAI API answers as llama-cpp-python does
            return await request_validation_exception_handler(request, exc)
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        return error(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}")

    @app.exception_handler(Exception)
    async def unexpected(request, exc):  # never a stack trace to the client
        return error(500, f"{type(exc).__name__}: {exc}")


def _folio_configured() -> bool:
    import os

    from folio_llm.folio.api import ENV_VARS

    return all(os.environ.get(name, "").strip() for name in ENV_VARS)


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, wait_s: float = 60.0):
    """Run ``app`` with uvicorn in a daemon thread (port 0: a free one); returns (base URL, stop)
    once the page's endpoints answer; ``stop()`` shuts the server down and waits for its thread.
    For tests and benchmarks: `folio-llm serve` runs uvicorn in the foreground."""
    import socket
    import time

    import httpx
    import uvicorn

    if port == 0:
        with socket.socket() as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://{host}:{port}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=30)

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/examples", timeout=1).status_code == 200:
                return url, stop
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the server at {url} did not come up within {wait_s:g} s")


def example_descriptions(path: str | Path, count: int = 12) -> list[str]:
    """Descriptions from the test split, for the page's example buttons."""
    path = Path(path)
    if not path.is_file():
        return []
    from folio_llm.jsonl import load_jsonl

    rows = load_jsonl(path)[:count]
    return [m["content"] for row in rows for m in row.get("messages", []) if m.get("role") == "user"][:count]
