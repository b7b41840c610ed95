"""`folio-llm serve` for real: the OpenAI-compatible API through the official SDK, the page in a
real browser (the system's chromium through Playwright), the FOLIO loopback tenant, and
`evaluate --backend openai` against the served model, all over HTTP on 127.0.0.1.

The model is the untuned SmolLM2 as a GGUF file; a description "Repeat this text exactly: {json}"
makes it answer a known record (conftest.repeat_request)."""
import csv
import json
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from conftest import RAW, REFERENCE, repeat_request, repeatable_records
from folio_llm.cli import main
from folio_llm.jsonl import load_jsonl
from folio_llm.params import parse_params

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]
SCHEMAS = RAW / "folio" / "schemas"
PARAMS = parse_params({})
SYSTEM = PARAMS.dataset.system_prompts[0]
CREDENTIALS = {"FOLIO_TENANT": "fs01", "FOLIO_USERNAME": "cataloger", "FOLIO_PASSWORD": "s3cret-Pw"}


def known_records(real_dataset, n=4) -> list[dict]:
    """Test answers that FOLIO takes (every label matches the reference data) and that the
    untuned SmolLM2 repeats exactly."""
    return repeatable_records(real_dataset, n)


@pytest.fixture(scope="module")
def tenant():
    from folio_server import FolioServer, Tenant

    tenant = Tenant([], {}, {}, CREDENTIALS["FOLIO_TENANT"], CREDENTIALS["FOLIO_USERNAME"], CREDENTIALS["FOLIO_PASSWORD"])
    with FolioServer(tenant) as url:
        saved = {k: os.environ.get(k) for k in [*CREDENTIALS, "FOLIO_URL"]}
        os.environ.update({**CREDENTIALS, "FOLIO_URL": url})
        yield tenant
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def server(smollm2_gguf, real_dataset, tenant, tmp_path_factory):
    """`folio-llm serve`'s app on a free loopback port, in a thread of this process."""
    from folio_llm.serve import create_app, example_descriptions, serve_in_thread

    app = create_app(smollm2_gguf, PARAMS, reference_dir=REFERENCE, schemas_dir=SCHEMAS,
                     examples=example_descriptions(real_dataset / "openai" / "test.jsonl", 4),
                     jobs_dir=tmp_path_factory.mktemp("jobs"))
    url, stop = serve_in_thread(app)
    yield url
    stop()


def test_the_openai_sdk_talks_to_the_served_model_unchanged(server, real_dataset):
    import openai

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    assert "folio-llm" in [m.id for m in client.models.list().data]
    record = known_records(real_dataset, 1)[0]
    from folio_llm.answers import target_schema

    reply = client.chat.completions.create(
        model="folio-llm", temperature=0, messages=[{"role": "user", "content": repeat_request(record)}],
        response_format={"type": "json_schema", "json_schema": {"name": "instance", "schema": target_schema()}})
    assert json.loads(reply.choices[0].message.content) == record
    assert reply.usage.completion_tokens > 0


def test_evaluate_through_the_api_gives_the_local_answers_and_scores(server, smollm2_gguf, real_dataset, tmp_path):
    """Same GGUF, same rows, greedy: `--backend openai` against the server and `--backend
    llama.cpp` in process write the same answers and the same metrics (copy constraint off: the
    API has none; rows the model does not loop on: the in-process path also stops a repetition
    loop, the API runs it to the token limit)."""
    data = tmp_path / "openai" / "test.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": repeat_request(record)},
        {"role": "assistant", "content": json.dumps(record, ensure_ascii=False)}]}) + "\n"
        for record in known_records(real_dataset, 2)))
    common = ["--data", str(data), "--schemas", str(SCHEMAS), "--params", str(tmp_path / "none.yaml")]
    served = CliRunner().invoke(main, ["evaluate", "--backend", "openai", "--base-url", f"{server}/v1", "--model",
                                       "folio-llm", "--out", str(tmp_path / "api.json"), "--predictions",
                                       str(tmp_path / "api.jsonl"), *common])
    assert served.exit_code == 0, served.output
    local = CliRunner().invoke(main, ["evaluate", "--model", str(smollm2_gguf), "--no-copy", "--out",
                                      str(tmp_path / "local.json"), "--predictions", str(tmp_path / "local.jsonl"),
                                      *common])
    assert local.exit_code == 0, local.output
    api, here = load_jsonl(tmp_path / "api.jsonl"), load_jsonl(tmp_path / "local.jsonl")
    assert [r["output"] for r in api] == [r["output"] for r in here]
    metrics = [json.loads((tmp_path / name).read_text()) for name in ("api.json", "local.json")]
    assert metrics[0]["macro"] == metrics[1]["macro"] and metrics[0]["fields"] == metrics[1]["fields"]
    assert metrics[0]["generation"]["backend"] == "openai" and metrics[0]["n"] == 2


def test_concurrent_api_clients_are_answered_together(server, real_dataset):
    from concurrent.futures import ThreadPoolExecutor

    import openai

    from folio_llm.answers import target_schema

    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused")
    records = known_records(real_dataset, 4)
    structured = {"type": "json_schema", "json_schema": {"name": "instance", "schema": target_schema()}}

    def ask(record):
        raw = client.chat.completions.with_raw_response.create(
            model="folio-llm", temperature=0, messages=[{"role": "user", "content": repeat_request(record)}],
            response_format=structured)
        return int(raw.headers["x-folio-llm-batched"]), raw.parse()

    one_by_one = [ask(record) for record in records]
    with ThreadPoolExecutor(len(records)) as pool:
        replies = list(pool.map(ask, records))
    assert [reply.choices[0].message.content for _, reply in replies] == \
        [reply.choices[0].message.content for _, reply in one_by_one]
    assert json.loads(replies[0][1].choices[0].message.content) == records[0]
    assert {together for together, _ in one_by_one} == {1} and max(together for together, _ in replies) >= 2
    assert all(r.usage.completion_tokens > 0 and r.choices[0].finish_reason in ("stop", "length") for _, r in replies)
    # what the batched path does not do (sampling, here) is llama-cpp-python's server's, as before
    sampled = client.chat.completions.with_raw_response.create(
        model="folio-llm", temperature=0.7, max_tokens=8, messages=[{"role": "user", "content": "Hello"}])
    assert "x-folio-llm-batched" not in sampled.headers and sampled.parse().choices[0].message.content


def test_the_page_proposes_edits_creates_once_and_runs_a_batch(server, tenant, real_dataset, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the test extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("no chromium on this machine: apt-get install chromium (make test does where it can)")
    first, *others = known_records(real_dataset, 4)
    created_before = len(tenant.created)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(server)
        page.wait_for_selector("button.example")  # examples from the test split, one click away
        page.fill("#description", repeat_request(first))
        page.evaluate("""() => { window.rowsShown = []; new MutationObserver(() => window.rowsShown.push(
            document.querySelectorAll('#record-table tr').length)).observe($('record-table'), {childList: true}); }""")
        started = time.perf_counter()
        with page.expect_response("**/api/propose/stream", timeout=120_000) as proposed:
            page.click("#propose")
        page.wait_for_selector("#propose-status:has-text('proposed in')", timeout=120_000)
        propose_seconds = time.perf_counter() - started
        assert page.inner_text("#record-table tr[data-field=title] td > div") == first["title"]
        rows_shown = page.evaluate("window.rowsShown")  # the table grew as the record was written
        assert rows_shown[0] == 1 and len(set(rows_shown)) > 2 and rows_shown == sorted(rows_shown), rows_shown
        # the fields the model was unsure of are highlighted, with why, and only those
        done = json.loads(proposed.value.text().splitlines()[-1])["done"]
        review = [w for w in done["warnings"] if w.get("kind") == "review"]
        assert review, "the untuned model repeating a record is unsure of some field at the default threshold"
        highlighted = page.eval_on_selector_all("#record-table tr.review", "rows => rows.map(r => r.dataset.field)")
        shown = page.eval_on_selector_all("#record-table tr", "rows => rows.map(r => r.dataset.field)")
        assert set(highlighted) == {w["field"] for w in review} & set(shown)
        assert page.locator("#record-table .warning.review").first.inner_text().startswith(
            tuple(f"{w['path']}: check" for w in review) + ("check",))
        # the description's words no field holds are listed beside the record, as a review item
        assert "exactly, with nothing else" in done["unused"]  # ("text": the record's resource type)
        listed = page.inner_text("#record-warnings .warning.review")
        assert listed.startswith("check what the record leaves out") and "“exactly, with nothing else”" in listed
        edited = {**json.loads(page.input_value("#json")), "title": first["title"] + " (edited)"}
        page.fill("#json", json.dumps(edited, ensure_ascii=False, indent=2))
        page.click("#check")
        page.wait_for_selector("#request:not(.hidden)")
        assert page.inner_text("#request").startswith("POST /instance-storage/instances")
        assert len(tenant.created) == created_before  # a dry run sends nothing
        page.click("#create")
        page.wait_for_selector("#created:not(.hidden)")
        [created] = tenant.created[created_before:]
        assert created["title"] == edited["title"] and created["id"] in page.inner_text("#created")
        screenshot = Path(os.environ.get("FOLIO_LLM_SCREENSHOT", tmp_path / "page.png"))
        page.screenshot(path=str(screenshot), full_page=True)

        page.click("#tab-batch")
        upload = tmp_path / "five.csv"  # the third row has no description
        with open(upload, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["description"], *[[repeat_request(r)] for r in others[:2]], [""],
                                          *[[repeat_request(r)] for r in (others[2], first)]])
        page.set_input_files("#batch-file", str(upload))
        page.click("#batch-start")
        page.wait_for_selector("#batch-links:not(.hidden)", timeout=300_000)
        status = page.inner_text("#batch-status")
        rejects = httpx.get(server + page.get_attribute("#batch-rejects", "href")).text.splitlines()
        assert "4 records, 1 rejected" in status, rejects
        records = httpx.get(server + page.get_attribute("#batch-records", "href")).text.splitlines()
        job = page.get_attribute("#batch-records", "href").split("/")[3]
        listed = page.wait_for_selector(f"#jobs tr[data-job='{job}'][data-state=finished]")  # the kept jobs
        assert "five.csv" in listed.inner_text() and "4 records, 1 rejected" in listed.inner_text()
        browser.close()
    assert [json.loads(r)["title"] for r in records] == [r["title"] for r in (*others[:3], first)]
    assert [json.loads(r)["where"] for r in rejects] == ["five.csv: line 6"]  # each description spans 2 lines
    print(f"propose: {propose_seconds:.1f} s")


def test_a_streamed_proposal_grows_field_by_field_into_the_proposal(server, real_dataset):
    record = known_records(real_dataset, 1)[0]
    with httpx.stream("POST", f"{server}/api/propose/stream", json={"description": repeat_request(record)},
                      timeout=120) as reply:
        assert reply.headers["content-type"] == "application/x-ndjson"
        events = [json.loads(line) for line in reply.iter_lines() if line]
    partials, done = [e["partial"] for e in events[:-1]], events[-1]["done"]
    assert list(partials[0]) == ["title"] and partials[0]["title"] == record["title"]
    assert all(list(a) == list(b)[:len(a)] for a, b in zip(partials, partials[1:]))  # each holds the one before
    assert done["record"] == httpx.post(f"{server}/api/propose", json={"description": repeat_request(record)},
                                        timeout=120).json()["record"]
    for bad, status in (({}, 400), ({"description": "x" * 9000}, 413)):
        assert httpx.post(f"{server}/api/propose/stream", json=bad).status_code == status


def test_a_proposal_is_created_once_however_often_it_is_sent(server, tenant, real_dataset):
    record = known_records(real_dataset, 1)[0]
    proposal = httpx.post(f"{server}/api/propose", json={"description": repeat_request(record)}, timeout=120).json()
    before = len(tenant.created)
    results = [None] * 4

    def send(i):
        results[i] = httpx.post(f"{server}/api/create", json={"record": proposal["record"], "key": proposal["key"]},
                                timeout=60).json()

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(tenant.created) == before + 1, results
    assert len({r["id"] for r in results}) == 1 and sum(bool(r.get("already_created")) for r in results) == 3


def test_a_creation_is_remembered_across_a_restart(tenant, real_dataset, tmp_path):
    """Two Catalogers on one job store, one after the other, as a server before and after a
    restart: the second answers the first's record for the key and sends nothing."""
    from folio_llm.folio.api import FolioApi
    from folio_llm.jobs import JobStore
    from folio_llm.predict import FolioMapper
    from folio_llm.serve import Cataloger

    record = known_records(real_dataset, 1)[0]
    before = len(tenant.created)
    first = Cataloger(None, FolioMapper(REFERENCE, SCHEMAS), SYSTEM, [], JobStore(tmp_path))
    made = first.create(record, "restart-key-0001", FolioApi.connect)
    first.stop()
    first.store.close()
    second = Cataloger(None, FolioMapper(REFERENCE, SCHEMAS), SYSTEM, [], JobStore(tmp_path))
    assert second.create(record, "restart-key-0001", FolioApi.connect) == {**made, "already_created": True}
    second.stop()
    assert len(tenant.created) == before + 1


def test_bad_requests_get_a_one_line_reason_and_credentials_never_reach_the_page(server):
    def error(response, status):
        assert response.status_code == status, response.text
        message = response.json()["error"]
        assert "\n" not in message and "Traceback" not in message
        return message

    assert "description" in error(httpx.post(f"{server}/api/propose", json={}), 400)
    assert "JSON" in error(httpx.post(f"{server}/api/propose", content=b"not json",
                                      headers={"content-type": "application/json"}), 400)
    assert "at most" in error(httpx.post(f"{server}/api/propose", json={"description": "x" * 9000}), 413)
    assert "MiB" in error(httpx.post(f"{server}/api/propose", content=b"x" * (3 * 2**20)), 413)
    assert "own page" in error(httpx.post(f"{server}/api/create", json={"record": {}, "key": "k" * 12},
                                          headers={"origin": "http://evil.example"}), 403)
    assert "key" in error(httpx.post(f"{server}/api/create", json={"record": {"title": "t"}}), 400)
    assert ".csv or .jsonl" in error(httpx.post(f"{server}/api/batch", files={"file": ("a.txt", b"x")}), 400)
    assert "no batch job" in error(httpx.get(f"{server}/api/batch/nope"), 404)
    seen = httpx.get(server).text + httpx.get(f"{server}/api/examples").text
    assert CREDENTIALS["FOLIO_PASSWORD"] not in seen and CREDENTIALS["FOLIO_USERNAME"] not in seen


# ---------------------------------------------------------------------------------------
# faults of a served model, against a scripted OpenAI-compatible server


class Scripted(BaseHTTPRequestHandler):
    """Answers chat completions by the script: a list of statuses (200 = a JSON record), the
    last repeated; 'sleep' waits past the client's timeout."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.seen.append(self.headers.get("authorization"))
        step = self.server.script[min(len(self.server.seen) - 1, len(self.server.script) - 1)]
        if step == "sleep":
            time.sleep(2)
            step = 200
        if step == 200:
            body = {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": '{"title":"T"}'}}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}}
        else:
            body = {"error": {"message": f"scripted {step}", "type": "error", "code": step}}
        data = json.dumps(body).encode()
        self.send_response(step)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if step == 429:
            self.send_header("retry-after", "0")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


class ScriptedServer(ThreadingHTTPServer):
    """Its handler threads end with the test: a client that gave up on the 'sleep' step left a
    handler writing to a closed socket, whose traceback, printed from that thread while the next
    test parsed Python, broke the parse (Python 3.11's traceback carets run `ast.parse`; CPython
    gh-106905: "AST constructor recursion depth mismatch")."""

    daemon_threads = False  # so server_close() joins every handler (block_on_close is on by default)

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a client that left
            super().handle_error(request, client_address)


@pytest.fixture()
def scripted():
    servers = []

    def start(script):
        httpd = ScriptedServer(("127.0.0.1", 0), Scripted)
        httpd.script, httpd.seen = script, []
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def ask(url, n=1, **options):
    from folio_llm.decoding.chat_api import ChatApi

    api = ChatApi(url, "m", **options)
    return api, api.answer([[{"role": "user", "content": f"q{i}"}] for i in range(n)], progress=False)


def test_a_429_is_retried_and_then_answered(scripted):
    httpd, url = scripted([429, 429, 200])
    api, answers = ask(url, attempts=3)
    assert answers == ['{"title":"T"}'] and len(httpd.seen) == 3 and api.usage["completion_tokens"] == 4


def test_a_500_forever_fails_in_one_line_naming_the_url_and_keeps_what_came(scripted, real_dataset, tmp_path,
                                                                             monkeypatch):
    from folio_llm.decoding.chat_api import ChatApiError

    httpd, url = scripted([500])
    with pytest.raises(ChatApiError) as failure:
        ask(url, attempts=2)
    assert url in str(failure.value) and "HTTP 500" in str(failure.value) and len(httpd.seen) == 2
    httpd, url = scripted([200, 200, 500])
    result = CliRunner().invoke(main, [
        "evaluate", "--backend", "openai", "--base-url", url, "--model", "m", "--concurrency", "1",
        "--data", str(real_dataset / "openai" / "test.jsonl"), "--limit", "4", "--out", str(tmp_path / "m.json"),
        "--predictions", str(tmp_path / "p.jsonl"), "--params", str(tmp_path / "none.yaml")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = result.output.strip().splitlines()[-1:]
    assert line.startswith(f"error: {url}: HTTP 500") and "2 answers so far kept" in line
    assert [r["output"] for r in load_jsonl(tmp_path / "p.jsonl")] == ['{"title":"T"}'] * 2


def test_a_timeout_is_retried_then_named(scripted):
    from folio_llm.decoding.chat_api import ChatApiError

    httpd, url = scripted(["sleep"])
    with pytest.raises(ChatApiError, match="no answer within 0.5 s after 2 tries"):
        ask(url, attempts=2, timeout=0.5)


def test_a_bad_key_fails_at_once_without_echoing_it(scripted, monkeypatch):
    from folio_llm.decoding.chat_api import ChatApiError

    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret-key")
    httpd, url = scripted([401])
    with pytest.raises(ChatApiError) as failure:
        ask(url, attempts=5)
    assert "401" in str(failure.value) and "sk-very-secret-key" not in str(failure.value)
    assert len(httpd.seen) == 1 and httpd.seen[0] == "Bearer sk-very-secret-key"
