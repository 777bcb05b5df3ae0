"""The job table and runner on their own: outcomes, rollback of failed jobs, requeue, paging.

A real registry file in a temporary directory; handlers are small test functions (the prov
handlers are covered over HTTP in ``test_prov_services.py``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provenafs.server.datastore import DataStoreError
from provenafs.server.jobs import Job, JobOutcome, JobRunner, JobStore
from provenafs.server.registry import Registry
from provenafs.server.registry_models import JobStatus


@pytest.fixture
def store(tmp_path: Path) -> Iterator[JobStore]:
    registry = Registry.in_data_dir(tmp_path)
    with registry.transaction() as db:
        db.execute("CREATE TABLE scratch (session_id TEXT)")
    yield JobStore(registry)
    registry.close()


def succeed(db: sqlite3.Connection, job: Job) -> JobOutcome:
    db.execute("INSERT INTO scratch VALUES (?)", (job.session_id,))
    return JobOutcome(JobStatus.SUCCEEDED, result={"n": job.payload["n"]})


def explode(db: sqlite3.Connection, job: Job) -> JobOutcome:
    db.execute("INSERT INTO scratch VALUES (?)", (job.session_id,))
    raise RuntimeError("boom")


def submit(store: JobStore, sub_type: str, n: int, user: str = "alice") -> str:
    with store.registry.transaction() as db:
        return store.submit(db, username=user, job_type="TEST", job_sub_type=sub_type,
                            payload={"n": n})  # fmt: skip


def scratch(store: JobStore) -> list[str]:
    with store.registry.reading() as db:
        return [row[0] for row in db.execute("SELECT session_id FROM scratch")]


def test_outcomes_and_rollback(store: JobStore) -> None:
    ok, bad, unknown = submit(store, "OK", 1), submit(store, "BOOM", 2), submit(store, "?", 3)
    assert store.fetch(ok) is not None and store.fetch(ok).status == JobStatus.PENDING  # type: ignore[union-attr]
    runner = JobRunner(store, {"OK": succeed, "BOOM": explode})
    assert runner.run_pending() == 3
    done, failed, orphan = store.fetch(ok), store.fetch(bad), store.fetch(unknown)
    assert done is not None and failed is not None and orphan is not None
    assert (done.status, done.result, done.info) == (JobStatus.SUCCEEDED, {"n": 1}, None)
    assert (failed.status, failed.result) == (JobStatus.FAILED, None)
    assert failed.info == "Job failed, err: RuntimeError: boom."
    assert orphan.info == "Job failed, err: No handler for job sub type ?."
    assert scratch(store) == [ok]  # the failed job's write was rolled back
    assert runner.run_pending() == 0


def test_interrupted_jobs_are_requeued_when_a_runner_starts(store: JobStore) -> None:
    session = submit(store, "OK", 7)
    claimed = store.claim()
    assert claimed is not None and claimed.session_id == session
    assert store.fetch(session).status == JobStatus.IN_PROGRESS  # type: ignore[union-attr]
    runner = JobRunner(store, {"OK": succeed})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while store.fetch(session).status != JobStatus.SUCCEEDED:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the requeued job did not run"
            time.sleep(0.01)
    finally:
        runner.stop()
    assert scratch(store) == [session]


def test_pages_are_newest_first_with_a_key_per_full_page(store: JobStore) -> None:
    sessions = [submit(store, "OK", n) for n in range(5)]
    submit(store, "OK", 9, user="bob")
    seen: list[str] = []
    key = None
    while True:
        jobs, key = store.page("username", "alice", key, 2)
        seen += [job.session_id for job in jobs]
        if key is None:
            break
    assert seen == sessions[::-1]
    with pytest.raises(DataStoreError) as refused:
        store.page("username", "alice", None, 0)
    assert refused.value.status == 500
