"""Batch jobs that survive the server: the SQLite job store, and `folio-llm serve` killed with
SIGKILL in the middle of a batch and started again (a real process, the tiny model as a GGUF)."""
import csv
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import RAW, REFERENCE
from folio_llm.jobs import STORE_NAME, JobStore
from folio_llm.jsonl import load_jsonl

SCHEMAS = RAW / "folio" / "schemas"
CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "For A title"}]


def test_rows_are_answered_once_and_kept_across_a_reopening(tmp_path):
    store = JobStore(tmp_path)
    job = store.add_job("books.csv", [("books.csv: line 2", CHAT), ("books.csv: line 4", CHAT)],
                        [(1, {"where": "books.csv: line 3", "reason": "empty 'description'"})])
    assert store.status(job) | {"created": 0} == {
        "job": job, "file": "books.csv", "created": 0, "total": 3, "done": 1, "written": 0, "rejected": 1,
        "with_warnings": 0, "finished": False, "error": None}
    first = store.next_pending()
    assert (first.position, first.place, first.messages) == (0, "books.csv: line 2", CHAT)
    assert store.answer(first, {"title": "A title"}, is_record=True, warned=True)
    assert not store.answer(first, {"title": "Another"}, is_record=True)  # answered already: nothing changes
    store.close()

    store = JobStore(tmp_path)  # as after a restart
    assert store.notice is None
    second = store.next_pending()
    assert second.position == 2  # the first row without an answer
    store.answer(second, {"where": second.place, "reason": "the model's answer is not a JSON object"}, is_record=False)
    assert store.next_pending() is None
    status = store.status(job)
    assert (status["done"], status["written"], status["rejected"], status["with_warnings"], status["finished"]) == \
        (3, 1, 2, 1, True)
    assert store.results(job, "record") == [{"title": "A title"}]
    assert [r["where"] for r in store.results(job, "reject")] == ["books.csv: line 3", "books.csv: line 4"]
    assert [j["job"] for j in store.jobs()] == [job]


def test_a_job_of_bad_rows_only_is_finished_at_once_and_creations_are_remembered(tmp_path):
    store = JobStore(tmp_path)
    job = store.add_job("empty.csv", [], [(0, {"where": "empty.csv: line 2", "reason": "empty 'description'"})])
    assert store.status(job)["finished"] and store.next_pending() is None
    store.remember_created("key-1", "id-1", "in00000001")
    store.close()
    assert JobStore(tmp_path).created("key-1") == {"id": "id-1", "hrid": "in00000001"}


@pytest.mark.parametrize("content", [b"this is not a database" * 100, "another layout"])
def test_an_unreadable_store_is_set_aside_with_one_line(tmp_path, content):
    path = tmp_path / STORE_NAME
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:  # a real SQLite file, not of this layout
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE something (x)")
    store = JobStore(tmp_path)
    assert store.notice.startswith(f"{path}: ") and "set aside as jobs.sqlite3.unreadable-" in store.notice
    assert "\n" not in store.notice
    [aside] = tmp_path.glob(f"{STORE_NAME}.unreadable-*")
    assert (aside.read_bytes() == content) if isinstance(content, bytes) else aside.stat().st_size > 0
    assert store.jobs() == [] and store.add_job("a.csv", [("a.csv: line 2", CHAT)], [])


def test_a_place_that_cannot_hold_a_store_is_named_in_one_line(tmp_path):
    (tmp_path / STORE_NAME).mkdir()  # a folder where the file would go
    with pytest.raises(ValueError, match=rf"^{tmp_path / STORE_NAME}: cannot keep batch jobs there \(") as caught:
        JobStore(tmp_path)
    assert "\n" not in str(caught.value)


# ---------------------------------------------------------------------------------------
# a real server process, killed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_gguf(tiny_base, tmp_path_factory):
    from folio_llm.export import convert

    return convert(tiny_base, tmp_path_factory.mktemp("tiny-gguf") / "tiny-f16.gguf", "f16", "tiny")


class Server:
    """`folio-llm serve` as its own process on a free loopback port."""

    def __init__(self, gguf: Path, jobs: Path, params: Path, log: Path):
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [str(Path(sys.executable).parent / "folio-llm"), "serve", "--model", str(gguf), "--jobs", str(jobs),
                   "--port", self.url.rsplit(":", 1)[1], "--reference-data", str(REFERENCE), "--schemas", str(SCHEMAS),
                   "--params", str(params), "--examples", str(jobs / "none.jsonl")]
        self.log = log
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                                        env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/api/examples", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"the server did not come up: {log.read_text()}")

    def status(self, job: str) -> dict:
        return httpx.get(f"{self.url}/api/batch/{job}", timeout=10).json()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.mark.slow
def test_a_batch_survives_a_killed_server_and_answers_every_row_once(tiny_gguf, real_dataset, tmp_path):
    descriptions = [r["messages"][1]["content"] for r in load_jsonl(real_dataset / "openai" / "test.jsonl")]
    rows = [descriptions[i % len(descriptions)] for i in range(60)]
    rows[7] = ""  # an unusable row: a reject from the start
    upload = tmp_path / "receipts.csv"
    with open(upload, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["description"], *[[d] for d in rows]])
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"eval": {"max_new_tokens": 48}}))
    jobs = tmp_path / "jobs"

    server = Server(tiny_gguf, jobs, params, tmp_path / "first.log")
    job = httpx.post(f"{server.url}/api/batch", files={"file": ("receipts.csv", upload.read_bytes())},
                     timeout=60).json()
    assert job["total"] == 60 and job["rejected"] == 1
    deadline = time.monotonic() + 300
    while server.status(job["job"])["done"] < 15:
        assert time.monotonic() < deadline, "the batch did not start"
        time.sleep(0.2)
    before = {kind: httpx.get(f"{server.url}/api/batch/{job['job']}/{kind}.jsonl", timeout=10).text.splitlines()
              for kind in ("records", "rejects")}
    server.kill()
    killed_at = time.time()

    with sqlite3.connect(jobs / STORE_NAME) as db:
        answered_before = db.execute("SELECT COUNT(*) FROM rows WHERE state != 'pending'").fetchone()[0]
    assert 15 <= answered_before < 60, "the kill came after the batch had finished: make the batch longer"

    server = Server(tiny_gguf, jobs, params, tmp_path / "second.log")
    listed = httpx.get(f"{server.url}/api/batch", timeout=10).json()["jobs"]
    assert [(j["job"], j["file"], j["finished"]) for j in listed] == [(job["job"], "receipts.csv", False)]
    while not (status := server.status(job["job"]))["finished"]:
        assert time.monotonic() < deadline + 300, status
        time.sleep(0.5)
    records = httpx.get(f"{server.url}/api/batch/{job['job']}/records.jsonl", timeout=10).text.splitlines()
    rejects = httpx.get(f"{server.url}/api/batch/{job['job']}/rejects.jsonl", timeout=10).text.splitlines()
    server.stop()

    assert status["error"] is None and status["done"] == status["total"] == 60
    assert len(records) + len(rejects) == 60 == status["written"] + status["rejected"]
    assert [json.loads(r)["reason"] for r in rejects].count("empty 'description'") == 1  # row 8, refused at upload
    with sqlite3.connect(jobs / STORE_NAME) as db:
        assert db.execute("SELECT COUNT(*) FROM rows WHERE state = 'pending'").fetchone()[0] == 0
        # the second server answered exactly the rows the first had left: none twice
        after = db.execute("SELECT COUNT(*) FROM rows WHERE answered > ?", (killed_at,)).fetchone()[0]
    assert after == 60 - answered_before
    # what the first server had written is still there, unchanged, in the file's order
    assert len(before["records"]) + len(before["rejects"]) >= 15
    assert records[:len(before["records"])] == before["records"] and rejects[:len(before["rejects"])] == before["rejects"]
