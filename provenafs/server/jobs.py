"""Provena's async jobs in the local store: the job table, a runner thread and the job API routes.

Real Provena queues work (registering a model run, recording a dataset's Create or Version
activity) as jobs in a DynamoDB status table that worker containers pick up; clients poll
``GET /jobs/user/fetch?session_id=``. Here the table lives in the registry's SQLite file and one
daemon thread (:class:`JobRunner`) runs jobs in submission order: ``PENDING`` → ``IN_PROGRESS``
→ ``SUCCEEDED`` (with ``result``) or ``FAILED`` (with ``info``). A handler's writes and the job's
outcome commit in one transaction, so a job is never half done: after a crash the job is simply
run again. A submitter wakes the runner at once; jobs written by another process (the ``serve``
admin commands) are found by a one-second poll.

The job API needs a valid token and no realm role, as Provena's ``user_general_dependency``.
This module must not know what a job does (handlers are registered by their modules), must not
import from the mount side, and never logs a payload (it may hold user context).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter

from provenafs.server.app import AnyUser
from provenafs.server.datastore import DataStoreError
from provenafs.server.registry import Registry
from provenafs.server.registry_models import (
    GetJobResponse,
    JobStatus,
    JobStatusTable,
    ListBatchRequest,
    ListJobsRequest,
    ListJobsResponse,
)

__all__ = ["Job", "JobHandler", "JobOutcome", "JobRunner", "JobStore", "jobs_router"]

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL UNIQUE,
    created_timestamp INTEGER NOT NULL,
    username TEXT NOT NULL,
    batch_id TEXT,
    payload TEXT NOT NULL,
    job_type TEXT NOT NULL,
    job_sub_type TEXT NOT NULL,
    status TEXT NOT NULL,
    info TEXT,
    result TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (username, created_timestamp, seq);
CREATE INDEX IF NOT EXISTS jobs_by_batch ON jobs (batch_id, created_timestamp, seq);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""
POLL_SECONDS = 1.0
MAX_PAGE = 1000


@dataclasses.dataclass(frozen=True)
class Job:
    """What a handler sees of a job."""

    session_id: str
    username: str
    batch_id: str | None
    payload: Mapping[str, Any]
    job_type: str
    job_sub_type: str


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    status: JobStatus
    info: str | None = None
    result: dict[str, Any] | None = None


JobHandler = Callable[[sqlite3.Connection, Job], JobOutcome]
"""Runs a job inside the runner's transaction; raising rolls its writes back (job FAILED)."""


def failed(error: str) -> JobOutcome:
    """Provena's ``generate_failed_job``: ``info = "Job failed, err: <error>."``."""
    return JobOutcome(JobStatus.FAILED, info=f"Job failed, err: {error}.")


class JobStore:
    """The job status table (in the registry's SQLite file)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._wake = threading.Event()
        with registry.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

    def submit(
        self,
        db: sqlite3.Connection,
        *,
        username: str,
        job_type: str,
        job_sub_type: str,
        payload: Mapping[str, Any],
        batch_id: str | None = None,
        session_id: str | None = None,
    ) -> str:
        """Queue a job inside the caller's transaction and return its session id (a new UUID
        unless the caller already handed one out, as the data store does for its activities)."""
        session_id = session_id or str(uuid.uuid4())
        db.execute(
            "INSERT INTO jobs (session_id, created_timestamp, username, batch_id, payload,"
            " job_type, job_sub_type, status) VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING')",
            (
                session_id,
                int(time.time()),
                username,
                batch_id,
                json.dumps(payload),
                job_type,
                job_sub_type,
            ),
        )
        self._wake.set()
        return session_id

    @staticmethod
    def _table(row: sqlite3.Row) -> JobStatusTable:
        return JobStatusTable(
            session_id=row["session_id"],
            created_timestamp=row["created_timestamp"],
            username=row["username"],
            batch_id=row["batch_id"],
            payload=json.loads(row["payload"]),
            job_type=row["job_type"],
            job_sub_type=row["job_sub_type"],
            status=JobStatus(row["status"]),
            info=row["info"],
            result=None if row["result"] is None else json.loads(row["result"]),
        )

    def fetch(self, session_id: str) -> JobStatusTable | None:
        with self.registry.reading() as db:
            row = db.execute("SELECT * FROM jobs WHERE session_id = ?", (session_id,)).fetchone()
        return None if row is None else self._table(row)

    def page(
        self, column: str, value: str, pagination_key: Mapping[str, Any] | None, limit: int
    ) -> tuple[list[JobStatusTable], dict[str, Any] | None]:
        """Jobs with ``column = value``, newest first (the index's ``ScanIndexForward=False``);
        the key is DynamoDB-like: present whenever the page is full."""
        if limit < 1:
            raise DataStoreError(
                500,
                "Unexpected internal error occurred: 1 validation error detected: Value at"
                " 'limit' failed to satisfy constraint: Member must have value greater than or"
                " equal to 1",
            )
        where, params = f"{column} = ?", [value]
        with self.registry.reading() as db:
            if pagination_key is not None:
                start = db.execute(
                    "SELECT created_timestamp, seq FROM jobs WHERE session_id = ?",
                    (str(pagination_key.get("session_id")),),
                ).fetchone()
                if start is None:
                    raise DataStoreError(
                        500,
                        "Unexpected internal error occurred: The provided starting key is invalid.",
                    )
                where += " AND (created_timestamp, seq) < (?, ?)"
                params += [start["created_timestamp"], start["seq"]]
            rows = db.execute(
                f"SELECT * FROM jobs WHERE {where}"  # noqa: S608 (fixed column names)
                " ORDER BY created_timestamp DESC, seq DESC LIMIT ?",
                [*params, min(limit, MAX_PAGE)],
            ).fetchall()
        jobs = [self._table(row) for row in rows]
        next_key = None
        if len(rows) == min(limit, MAX_PAGE):
            last = jobs[-1]
            next_key = {
                "session_id": last.session_id,
                "created_timestamp": last.created_timestamp,
                column: value,
            }
        return jobs, next_key

    # ----------------------------------------------------------------- the runner's side

    def wait_for_work(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def requeue_interrupted(self) -> None:
        """Jobs a stopped server left running were rolled back: queue them again."""
        with self.registry.transaction() as db:
            db.execute("UPDATE jobs SET status = 'PENDING' WHERE status = 'IN_PROGRESS'")

    def claim(self) -> Job | None:
        """Move the oldest PENDING job to IN_PROGRESS and return it."""
        with self.registry.transaction() as db:
            row = db.execute(
                "SELECT * FROM jobs WHERE status = 'PENDING' ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'IN_PROGRESS' WHERE seq = ?", (row["seq"],))
        return Job(
            row["session_id"],
            row["username"],
            row["batch_id"],
            json.loads(row["payload"]),
            row["job_type"],
            row["job_sub_type"],
        )

    @staticmethod
    def finish(db: sqlite3.Connection, session_id: str, outcome: JobOutcome) -> None:
        db.execute(
            "UPDATE jobs SET status = ?, info = ?, result = ? WHERE session_id = ?",
            (
                outcome.status.value,
                outcome.info,
                None if outcome.result is None else json.dumps(outcome.result),
                session_id,
            ),
        )


class JobRunner:
    """One daemon thread running queued jobs with the handlers registered per job sub type."""

    def __init__(self, store: JobStore, handlers: Mapping[str, JobHandler]) -> None:
        self.store = store
        self.handlers = dict(handlers)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.store.requeue_interrupted()
        self._thread = threading.Thread(target=self._loop, name="provenafs-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.store.wake()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_pending(self) -> int:
        """Run every queued job now (in the calling thread); returns how many ran."""
        count = 0
        while not self._stop.is_set() and (job := self.store.claim()) is not None:
            self._run(job)
            count += 1
        return count

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_pending()
            except Exception as exc:  # noqa: BLE001 (a broken database must not kill the loop)
                log.error("job runner: %s", type(exc).__name__)
            self.store.wait_for_work(POLL_SECONDS)

    def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.job_sub_type)
        try:
            with self.store.registry.transaction() as db:
                if handler is None:
                    outcome = failed(f"No handler for job sub type {job.job_sub_type}")
                else:
                    outcome = handler(db, job)
                self.store.finish(db, job.session_id, outcome)
        except Exception as exc:  # noqa: BLE001 (the handler's writes were rolled back)
            log.error("job %s (%s) failed: %s", job.session_id, job.job_sub_type, exc)
            with self.store.registry.transaction() as db:
                self.store.finish(db, job.session_id, failed(f"{type(exc).__name__}: {exc}"))


def jobs_router(store: JobStore) -> APIRouter:
    """``/jobs/user/*`` of Provena's job API (``job-api/routes/jobs/user.py``)."""
    router = APIRouter()

    @router.get("/jobs/user/fetch", response_model=GetJobResponse)
    def get_job(session_id: str, caller: AnyUser) -> GetJobResponse:
        job = store.fetch(session_id)
        if job is None:
            raise DataStoreError(400, "Item was not found.")
        if job.username != caller.username:
            raise DataStoreError(401, "Not authorised to view this record.")
        return GetJobResponse(job=job)

    @router.post("/jobs/user/list", response_model=ListJobsResponse)
    def list_jobs(request: ListJobsRequest, caller: AnyUser) -> ListJobsResponse:
        jobs, key = store.page("username", caller.username, request.pagination_key, request.limit)
        return ListJobsResponse(jobs=jobs, pagination_key=key)

    @router.post("/jobs/user/list_batch", response_model=ListJobsResponse)
    def list_batch(request: ListBatchRequest, caller: AnyUser) -> ListJobsResponse:
        jobs, key = store.page("batch_id", request.batch_id, request.pagination_key, request.limit)
        if any(job.username != caller.username for job in jobs):
            raise DataStoreError(401, "Batch contains items which you do not own. Not authorised.")
        return ListJobsResponse(jobs=jobs, pagination_key=key)

    @router.post("/jobs/user/retry", include_in_schema=False)
    def retry_job(session_id: str, caller: AnyUser) -> None:
        raise DataStoreError(400, "Not yet implemented")

    return router
