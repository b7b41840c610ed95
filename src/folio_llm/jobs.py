"""The page's batch jobs and FOLIO creations kept in SQLite as they happen.

A restart or a crash of `folio-llm serve` loses nothing written: an unfinished job resumes at
its first row without an answer, a row's answer is written once (an update of a row that is no
longer pending changes nothing), and a proposal key that created a record answers that record
after a restart too. A file that is not a job store of this version is set aside with a
one-line notice and an empty store takes its place.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

STORE_NAME = "jobs.sqlite3"
VERSION = 1  # PRAGMA user_version of the layout below

LAYOUT = """
CREATE TABLE jobs (id TEXT PRIMARY KEY, filename TEXT NOT NULL, created REAL NOT NULL,
                   total INTEGER NOT NULL, finished INTEGER NOT NULL DEFAULT 0, error TEXT);
CREATE TABLE rows (job TEXT NOT NULL REFERENCES jobs(id), position INTEGER NOT NULL, place TEXT NOT NULL,
                   messages TEXT, state TEXT NOT NULL CHECK (state IN ('pending', 'record', 'reject')),
                   result TEXT, warned INTEGER NOT NULL DEFAULT 0, answered REAL,
                   PRIMARY KEY (job, position));
CREATE TABLE created (key TEXT PRIMARY KEY, id TEXT NOT NULL, hrid TEXT);
"""


class StoreError(Exception):
    """The file is not a readable job store of this version."""


@dataclass(frozen=True)
class PendingRow:
    job: str
    position: int
    place: str  # "books.csv: line 4"
    messages: list[dict]


class JobStore:
    """One SQLite file in ``folder``; safe to share between the server's threads."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / STORE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.notice: str | None = None
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except StoreError as exc:
            if not self.path.is_file():  # nothing to set aside: the folder itself refuses
                raise ValueError(f"{self.path}: cannot keep batch jobs there ({exc})") from None
            aside = self.path.with_name(f"{self.path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
            self.path.replace(aside)
            Path(f"{self.path}-journal").unlink(missing_ok=True)  # it belongs to the file set aside
            self.notice = f"{self.path}: {exc}; set aside as {aside.name}, starting with no jobs"
            self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"not a readable job store ({exc})") from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not tables:
                db.executescript(f"BEGIN; {LAYOUT} PRAGMA user_version = {VERSION}; COMMIT;")
            elif version != VERSION or not {"jobs", "rows", "created"} <= tables:
                raise StoreError(f"a job store of another version ({version}, expected {VERSION})")
            elif db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise StoreError("the job store is damaged")
        except (sqlite3.DatabaseError, StoreError) as exc:
            db.close()
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"not a readable job store ({exc})") from None
        return db

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, statements) -> list[int]:
        """``statements``: (sql, values) pairs run as one transaction; the rows each changed."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                changed = [self._db.execute(sql, values).rowcount for sql, values in statements]
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        return changed

    def _read(self, sql: str, values=()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, values).fetchall()

    # -- jobs

    def add_job(self, filename: str, requests: list[tuple[str, list[dict]]], rejects: list[tuple[int, dict]]) -> str:
        """A new job: ``requests`` (place, messages) to answer and the rows already refused
        (their position in the file, the reject), all in one transaction."""
        job = uuid.uuid4().hex
        refused = dict(rejects)
        total = len(requests) + len(refused)
        pending = iter(requests)
        statements = [("INSERT INTO jobs (id, filename, created, total) VALUES (?, ?, ?, ?)",
                       (job, filename, time.time(), total))]
        for position in range(total):
            if position in refused:
                statements.append(("INSERT INTO rows (job, position, place, state, result) VALUES (?, ?, ?, 'reject', ?)",
                                   (job, position, refused[position]["where"], json.dumps(refused[position]))))
            else:
                place, messages = next(pending)
                statements.append(("INSERT INTO rows (job, position, place, messages, state) VALUES (?, ?, ?, ?, 'pending')",
                                   (job, position, place, json.dumps(messages, ensure_ascii=False))))
        if not requests:
            statements.append(("UPDATE jobs SET finished = 1 WHERE id = ?", (job,)))
        self._write(statements)
        return job

    def pending(self, limit: int = 1) -> list[PendingRow]:
        """The first rows without an answer (at most ``limit``) of the oldest unfinished job."""
        oldest = self._read("SELECT j.id FROM jobs j WHERE j.finished = 0 AND EXISTS (SELECT 1 FROM rows r "
                            "WHERE r.job = j.id AND r.state = 'pending') ORDER BY j.created, j.id LIMIT 1")
        if not oldest:
            return []
        found = self._read("SELECT job, position, place, messages FROM rows WHERE job = ? AND state = 'pending' "
                           "ORDER BY position LIMIT ?", (oldest[0][0], limit))
        return [PendingRow(job, position, place, json.loads(messages)) for job, position, place, messages in found]

    def next_pending(self) -> PendingRow | None:
        """The first row without an answer of the oldest unfinished job."""
        found = self.pending(1)
        return found[0] if found else None

    def answer(self, row: PendingRow, result: dict, is_record: bool, warned: bool = False) -> bool:
        """Write a row's outcome; False (nothing changed) when the row was answered already.
        The job is finished with its last row."""
        changed, _ = self._write([
            ("UPDATE rows SET state = ?, result = ?, warned = ?, answered = ? "
             "WHERE job = ? AND position = ? AND state = 'pending'",
             ("record" if is_record else "reject", json.dumps(result, ensure_ascii=False), int(warned), time.time(),
              row.job, row.position)),
            ("UPDATE jobs SET finished = 1 WHERE id = ? AND NOT EXISTS "
             "(SELECT 1 FROM rows WHERE job = ? AND state = 'pending')", (row.job, row.job))])
        return changed == 1

    def fail(self, job: str, error: str) -> None:
        self._write([("UPDATE jobs SET finished = 1, error = ? WHERE id = ?", (error, job))])

    def status(self, job: str) -> dict | None:
        found = self._read(
            "SELECT j.id, j.filename, j.created, j.total, j.finished, j.error, "
            "SUM(r.state != 'pending'), SUM(r.state = 'record'), SUM(r.state = 'reject'), SUM(r.warned) "
            "FROM jobs j LEFT JOIN rows r ON r.job = j.id WHERE j.id = ? GROUP BY j.id", (job,))
        if not found:
            return None
        job, filename, created, total, finished, error, done, written, rejected, warned = found[0]
        return {"job": job, "file": filename, "created": created, "total": total, "done": done or 0,
                "written": written or 0, "rejected": rejected or 0, "with_warnings": warned or 0,
                "finished": bool(finished), "error": error}

    def jobs(self) -> list[dict]:
        """Every job, newest first."""
        return [self.status(job) for (job,) in self._read("SELECT id FROM jobs ORDER BY created DESC, id")]

    def results(self, job: str, state: str) -> list[dict]:
        """The records ('record') or rejects ('reject') of a job, in the file's order."""
        return [json.loads(result) for (result,) in self._read(
            "SELECT result FROM rows WHERE job = ? AND state = ? ORDER BY position", (job, state))]

    # -- creations in FOLIO

    def created(self, key: str) -> dict | None:
        found = self._read("SELECT id, hrid FROM created WHERE key = ?", (key,))
        return {"id": found[0][0], "hrid": found[0][1]} if found else None

    def remember_created(self, key: str, instance_id: str, hrid: str | None) -> None:
        self._write([("INSERT OR IGNORE INTO created (key, id, hrid) VALUES (?, ?, ?)", (key, instance_id, hrid))])
