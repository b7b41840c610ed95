"""The folio-api source: folioclient for real against a FOLIO tenant on loopback
(tests/folio_server.py) serving the real sample instances, reference data and mapping rules."""
import json
import logging
import random
import time
import uuid

import pytest
import yaml
from click.testing import CliRunner

from conftest import RAW, REFERENCE, RULES
from folio_llm.cli import main
from folio_llm.folio.api import Credentials, FolioApi, FolioApiError, RetryPolicy, post_instance
from folio_llm.folio.reference import KINDS, ReferenceData
from folio_llm.folio.snapshot import InstancePages, SnapshotError, draw_sample, fetch_snapshot, snapshot_notes
from folio_llm.marc.rules import RuleEngine
from folio_llm.params import ParamsError, parse_params
from folio_llm.sources import iter_json_instances
from folio_server import REFERENCE_KEYS as SERVED_KEYS
from folio_server import FolioServer, Tenant

TENANT, USERNAME, PASSWORD = "fs00001337", "cataloger_zq", "pa55-Zq!x7"
FAST = RetryPolicy(attempts=3, backoff=0.01, timeout=2.0)
FAST_CLI = ["--attempts", "3", "--backoff", "0.01", "--timeout", "2"]
INSTANCE_TYPE = "6312d172-f0cf-40f6-b27d-9fa8feaf332f"  # "text" in the reference data


@pytest.fixture(scope="module")
def tenant_data():
    instances = [item.instance for item in iter_json_instances([RAW / "folio" / "instances"])]
    return instances, ReferenceData.load(REFERENCE).entries, json.loads(RULES.read_text())


@pytest.fixture
def tenant(tenant_data):
    instances, reference, rules = tenant_data
    return Tenant([dict(r) for r in instances], reference, rules, TENANT, USERNAME, PASSWORD)


@pytest.fixture
def server(tenant):
    with FolioServer(tenant) as url:
        yield tenant, url


@pytest.fixture
def env(server, monkeypatch):
    tenant, url = server
    for name, value in (("FOLIO_URL", url), ("FOLIO_TENANT", TENANT), ("FOLIO_USERNAME", USERNAME),
                        ("FOLIO_PASSWORD", PASSWORD)):
        monkeypatch.setenv(name, value)
    return tenant, url


@pytest.fixture
def api(server):
    tenant, url = server
    with FolioApi.connect(Credentials(url, TENANT, USERNAME, PASSWORD), FAST) as session:
        yield session


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def ids(path):
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def all_text(folder):
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for p in folder.rglob("*") if p.is_file())


# --- the snapshot and the stages that read it ----------------------------------------------

def test_fetch_writes_a_snapshot_the_stages_read(env, tmp_path):
    tenant, _ = env
    snap = tmp_path / "snap"
    result = run(["fetch-folio", "--out", snap, "--sample-size", 20, "--seed", 3, "--params", tmp_path / "none.yaml",
                  *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("20 instances of 132 matching (uuid), 18 kinds of reference data, mapping rules")
    assert sorted(p.name for p in snap.iterdir()) == ["instances.jsonl", "manifest.json", "mapping-rules", "reference-data"]
    manifest = json.loads((snap / "manifest.json").read_text())
    assert manifest["instances"] == 20 and manifest["seed"] == 3 and manifest["strategy"] == "uuid"
    assert manifest["reference_data"]["modes-of-issuance"] == 5 and manifest["reference_data_missing"] == []

    # the reference data and rules read as the raw copies do
    fetched, raw = ReferenceData.load(snap / "reference-data"), ReferenceData.load(REFERENCE)
    assert {k: sorted(e["id"] for e in v) for k, v in fetched.entries.items()} == \
           {k: sorted(e["id"] for e in v) for k, v in raw.entries.items()}
    assert json.loads((snap / "mapping-rules" / "marc-bib.json").read_text()) == json.loads(RULES.read_text())
    RuleEngine.from_files(snap / "mapping-rules" / "marc-bib.json", snap / "reference-data")

    # stage `instances` (kind folio-api) and `denormalize` on the snapshot
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"source": {
        "kind": "folio-api", "path": str(snap), "reference_data": str(snap / "reference-data"),
        "rules": str(snap / "mapping-rules" / "marc-bib.json"), "sample_size": 20}}))
    result = run(["instances", "--params", params, "--out", tmp_path / "i.jsonl", "--rejects", tmp_path / "r.jsonl",
                  "--report", tmp_path / "rep.json"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "20 read, 20 written, 0 rejected"
    assert ids(tmp_path / "i.jsonl") == ids(snap / "instances.jsonl")
    result = run(["denormalize", tmp_path / "i.jsonl", "--reference-data", snap / "reference-data",
                  "--out", tmp_path / "d.jsonl", "--rejects", tmp_path / "dr.jsonl", "--params", params])
    assert result.exit_code == 0 and result.output.strip() == "20 read, 20 written, 0 rejected"
    assert all(json.loads(line).get("instanceTypeText") for line in (tmp_path / "d.jsonl").read_text().splitlines())


def test_no_credential_in_any_file_log_or_message(env, tmp_path, caplog):
    tenant, url = env
    caplog.set_level(logging.DEBUG)
    tenant.fail("/instance-storage/instances", 503, times=1)
    ok = run(["fetch-folio", "--out", tmp_path / "snap", "--sample-size", 30, "--params", tmp_path / "none.yaml",
              *FAST_CLI])
    assert ok.exit_code == 0, ok.output
    tenant.fail("/instance-types", 500, times=None)
    failed = run(["fetch-folio", "--out", tmp_path / "snap2", "--sample-size", 30, "--params", tmp_path / "none.yaml",
                  *FAST_CLI])
    assert failed.exit_code == 1 and "HTTP 500" in failed.output
    files = all_text(tmp_path)
    shown = ok.output + failed.output + "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    for secret in (PASSWORD, USERNAME, TENANT, url):
        assert secret not in files and secret not in shown
    # not even in the library's debug logging
    assert PASSWORD not in caplog.text


# --- faults -----------------------------------------------------------------------------

@pytest.mark.parametrize("status", [422, 401], ids=["okapi", "eureka"])
def test_wrong_credentials_are_one_line(env, tmp_path, monkeypatch, status):
    tenant, _ = env
    tenant.login_failure_status = status
    monkeypatch.setenv("FOLIO_PASSWORD", "wrong-pa55word")
    result = run(["fetch-folio", "--out", tmp_path / "snap", "--params", tmp_path / "none.yaml", *FAST_CLI])
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"error: log in (POST /authn/login-with-expiry): refused, HTTP {status}")
    assert "FOLIO_PASSWORD" in result.output and "wrong-pa55word" not in result.output
    assert not (tmp_path / "snap").exists() and len(tenant.requests("/authn/login")) == 1  # not retried


def test_missing_credentials_are_named(tmp_path, monkeypatch):
    for name in ("FOLIO_URL", "FOLIO_TENANT", "FOLIO_USERNAME", "FOLIO_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FOLIO_URL", "folio.example.org")
    result = run(["fetch-folio", "--out", tmp_path / "snap", "--params", tmp_path / "none.yaml"])
    assert result.exit_code == 1
    assert result.output == "error: set FOLIO_TENANT, FOLIO_USERNAME, FOLIO_PASSWORD in the environment " \
                            "(FOLIO credentials are read from there only)\n"


def test_503_and_resets_recover(env, tmp_path):
    tenant, _ = env
    tenant.fail("/authn/login-with-expiry", 503, times=1)
    tenant.fail("/instance-storage/instances", 503, times=2)
    tenant.reset("/contributor-types", times=2)
    result = run(["fetch-folio", "--out", tmp_path / "snap", "--sample-size", 20, "--params", tmp_path / "none.yaml",
                  *FAST_CLI])
    assert result.exit_code == 0, result.output
    assert len(ids(tmp_path / "snap" / "instances.jsonl")) == 20
    assert json.loads((tmp_path / "snap" / "manifest.json").read_text())["reference_data"]["contributor-types"] == 268
    assert len(tenant.requests("/authn/login")) == 2


def test_timeout_gives_up_and_leaves_the_earlier_snapshot(env, tmp_path):
    tenant, _ = env
    snap = tmp_path / "snap"
    assert run(["fetch-folio", "--out", snap, "--sample-size", 10, "--params", tmp_path / "none.yaml",
                *FAST_CLI]).exit_code == 0
    before = {p.relative_to(snap): p.read_bytes() for p in snap.rglob("*") if p.is_file()}
    tenant.stall("/instance-storage/instances", seconds=10)
    started = time.monotonic()
    result = run(["fetch-folio", "--out", snap, "--sample-size", 10, "--seed", 9, "--params", tmp_path / "none.yaml",
                  "--attempts", "2", "--backoff", "0.01", "--timeout", "0.3"])
    assert time.monotonic() - started < 5
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == \
           "error: GET /instance-storage/instances: no answer within 0.3 s; gave up after 2 attempts"
    assert {p.relative_to(snap): p.read_bytes() for p in snap.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no half-written folder


def test_an_unrelated_folder_is_never_replaced(env, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "keep.txt").write_text("mine")
    result = run(["fetch-folio", "--out", tmp_path / "data", "--params", tmp_path / "none.yaml", *FAST_CLI])
    assert result.exit_code == 1 and "holds no manifest.json" in result.output
    assert (tmp_path / "data" / "keep.txt").read_text() == "mine"


def test_missing_reference_kinds_and_rules_are_recorded(tenant_data, tmp_path):
    instances, reference, _ = tenant_data
    reference = {k: v for k, v in reference.items() if k != "instance-date-types"}
    tenant = Tenant(instances, reference, None, TENANT, USERNAME, PASSWORD)
    with FolioServer(tenant) as url, FolioApi.connect(Credentials(url, TENANT, USERNAME, PASSWORD), FAST) as api:
        manifest = fetch_snapshot(tmp_path / "snap", sample_size=5, seed=1, api=api)
    assert manifest["reference_data_missing"] == ["instance-date-types"] and manifest["mapping_rules"] is False
    assert "instance-date-types" in snapshot_notes(manifest)[0] and "/mapping-rules/marc-bib" in snapshot_notes(manifest)[1]
    assert not (tmp_path / "snap" / "mapping-rules").exists()
    ReferenceData.load(tmp_path / "snap" / "reference-data")


# --- sampling ---------------------------------------------------------------------------

def test_seeded_sample_is_the_same_twice_and_nested(api, tmp_path):
    for name in ("a", "b"):
        fetch_snapshot(tmp_path / name, sample_size=20, seed=5, api=api)
    first = ids(tmp_path / "a" / "instances.jsonl")
    assert len(set(first)) == 20 and ids(tmp_path / "b" / "instances.jsonl") == first

    def draw(size, seed, strategy="uuid"):
        return [r["id"] for r in draw_sample(InstancePages(api), size, seed, strategy=strategy).records]

    assert draw(20, 5) == first
    assert draw(20, 6) != first
    assert draw(10, 5) == first[:10]
    by_offset = draw(20, 5, "offset")
    assert len(set(by_offset)) == 20 and draw(20, 5, "offset") == by_offset and draw(10, 5, "offset") == by_offset[:10]


def test_a_query_that_matches_few_reads_them_all(api, tmp_path):
    manifest = fetch_snapshot(tmp_path / "snap", sample_size=10, seed=1, query="source==MARC", api=api)
    assert manifest["strategy"] == "scan" and manifest["matching"] == 3 and manifest["instances"] == 3
    records = [json.loads(line) for line in (tmp_path / "snap" / "instances.jsonl").read_text().splitlines()]
    assert {r["source"] for r in records} == {"MARC"}
    with pytest.raises(SnapshotError, match="sortBy"):
        fetch_snapshot(tmp_path / "x", sample_size=10, seed=1, query="source==MARC sortBy title", api=api)


def test_every_record_when_sample_size_is_0(api, tmp_path):
    manifest = fetch_snapshot(tmp_path / "snap", sample_size=0, seed=1, api=api)
    assert manifest["instances"] == manifest["matching"] == 132


def test_id_spread_tells_random_ids_from_sequential_ones(tenant_data, api):
    def notes(sample):
        return snapshot_notes({"strategy": sample.strategy, "id_spread": sample.spread, "id_gaps": sample.gaps,
                         "mapping_rules": True})

    # the real sample: 96 of the 132 ids are sequential (00000001-0000-4000-...)
    clustered = draw_sample(InstancePages(api), 30, 1)
    assert clustered.strategy == "uuid" and clustered.spread > 2
    assert "ids are not random" in notes(clustered)[0] and "'offset'" in notes(clustered)[0]

    instances, reference, _ = tenant_data
    rng = random.Random(0)
    records = [{**instances[i % len(instances)], "id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
               for i in range(3000)]
    tenant = Tenant(records, reference, None, TENANT, USERNAME, PASSWORD)
    with FolioServer(tenant) as url, FolioApi.connect(Credentials(url, TENANT, USERNAME, PASSWORD), FAST) as random_ids:
        sample = draw_sample(InstancePages(random_ids), 300, 1)
    assert sample.strategy == "uuid" and sample.gaps >= 200 and 0.8 < sample.spread < 1.25
    assert notes(sample) == []


def test_uuid_sampling_stops_with_advice_where_ids_cluster(api):
    # only 46 of the 132 are reachable: the 36 random ids and the first 10 of the sequential run
    with pytest.raises(SnapshotError, match="the ids are clustered: use strategy 'offset'"):
        draw_sample(InstancePages(api), 60, 1)
    assert len({r["id"] for r in draw_sample(InstancePages(api), 60, 1, strategy="offset").records}) == 60


# --- creating an instance ---------------------------------------------------------------

PREDICTED = {"title": "For vacancies in certain judgeships", "instanceTypeId": INSTANCE_TYPE,
             "contributors": [{"name": "United States. Congress", "primary": True}]}


def test_post_is_a_dry_run_by_default(server):
    tenant, _ = server
    result = post_instance(PREDICTED)
    assert result.sent is False and result.id is None
    assert result.request_text().startswith("POST /instance-storage/instances\n{")
    assert result.body["source"] == "FOLIO" and uuid.UUID(result.body["id"])
    assert json.loads(result.request_text().split("\n", 1)[1]) == result.body
    assert tenant.log == []


def test_post_creates_the_instance_and_reports_its_id(env):
    tenant, _ = env
    result = post_instance(PREDICTED, send=True)
    assert result.sent and result.id == tenant.created[0]["id"] and result.hrid == tenant.created[0]["hrid"]
    assert len(tenant.created) == 1 and tenant.created[0]["title"] == PREDICTED["title"]
    assert "id" not in PREDICTED  # the caller's record is left as it was


def test_post_retries_without_creating_twice(server, api):
    tenant, url = server
    tenant.fail("/instance-storage/instances", 503, times=1)
    first = post_instance(PREDICTED, send=True, client=api)
    # the tenant creates the record, then its answer times out: the retry finds it there
    tenant.slow("/instance-storage/instances", seconds=5, times=1)
    impatient = RetryPolicy(attempts=3, backoff=0.01, timeout=0.3)
    with FolioApi.connect(Credentials(url, TENANT, USERNAME, PASSWORD), impatient) as session:
        second = post_instance(PREDICTED, send=True, client=session)
    assert [r["id"] for r in tenant.created] == [first.id, second.id]
    assert [m for m, path, _ in tenant.requests("/instance-storage/instances")] == ["POST", "GET", "POST", "POST", "GET"]


def test_post_refusals_are_one_line(server, api):
    tenant, _ = server
    with pytest.raises(FolioApiError, match=r"^instance 'For vacancies in certain judgeships' has no "
                                            r"instanceTypeId \(it has instanceTypeText"):
        post_instance({"title": PREDICTED["title"], "instanceTypeText": "text"}, send=True, client=api)
    with pytest.raises(FolioApiError, match="has no title"):
        post_instance({"instanceTypeId": INSTANCE_TYPE}, client=api)
    with pytest.raises(FolioApiError, match=r"^POST /instance-storage/instances: HTTP 422 \(id value already exists"):
        post_instance({**PREDICTED, "id": tenant.instances[0]["id"]}, send=True, client=api)
    assert tenant.created == []


# --- settings ---------------------------------------------------------------------------

def test_params_take_kind_folio_api_and_a_query():
    params = parse_params({"source": {"kind": "folio-api", "path": "data/folio-snapshot", "query": "source==MARC"}})
    assert params.source.kind == "folio-api" and params.source.query == "source==MARC"
    with pytest.raises(ParamsError, match="source.query"):
        parse_params({"source": {"query": "source==MARC sortBy title"}})


def test_every_reference_kind_has_the_endpoint_key_the_server_answers_with():
    assert SERVED_KEYS == KINDS


def test_credentials_never_show_in_repr():
    credentials = Credentials("https://folio.example.org", TENANT, USERNAME, PASSWORD)
    assert all(secret not in repr(credentials) for secret in (PASSWORD, USERNAME, TENANT, "folio.example.org"))
    assert credentials.redact(f"user {USERNAME} / {PASSWORD} at https://folio.example.org") == "user *** / *** at ***"
