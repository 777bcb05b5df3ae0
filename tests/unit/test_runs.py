"""``RunManager``'s registration over fakes: exactly once through lost answers, restarts and
outages; the drafts a run holds; a run whose ``provenafs run`` process vanished."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from provenafs.api.errors import InvalidRequestError, UnavailableError
from provenafs.api.prov_models import JobState, ModelRunRecord, WorkflowTemplate
from provenafs.process.attribution import ProcessAttribution
from provenafs.process.run_journal import RunJournal, RunRequest, RunState
from provenafs.process.runs import RunManager
from provenafs.write.drafts import DraftStore

TEMPLATE = WorkflowTemplate("10378.1/90", ("10378.1/91",), ("10378.1/92",), ())
READS = [{"handle": "10378.1/1", "path": "a.csv", "etag": "e1"}]


class FakeProv:
    """Registration with a chosen fault: ``lost`` (the job is made, the answer lost) or
    ``down`` (nothing is made) for the first *failures* calls."""

    timeout = 3.0

    def __init__(self, fault: str | None = None, failures: int = 1) -> None:
        self.fault = fault
        self.failures = failures
        self.sent: list[ModelRunRecord] = []
        self.jobs: dict[str, JobState] = {}

    async def linked_person(self) -> str | None:
        return "10378.1/7"

    async def workflow_template(self, template_id: str) -> WorkflowTemplate:
        if template_id != TEMPLATE.id:
            raise InvalidRequestError("workflow_fetch: no such template")
        return TEMPLATE

    async def register_model_run(self, record: ModelRunRecord) -> str:
        if self.fault == "down" and self.failures > 0:
            self.failures -= 1
            raise UnavailableError("register_model_run: HTTP 503")
        self.sent.append(record)
        session = f"session-{len(self.sent)}"
        run_id = record.annotations["provenafs.run_id"]
        handle = f"10378.1/{500 + len(self.sent)}"
        self.jobs[session] = JobState(
            session, "SUCCEEDED", "MODEL_RUN_PROV_LODGE", 0, None, handle, run_id
        )
        if self.fault == "lost" and self.failures > 0:
            self.failures -= 1
            raise UnavailableError("register_model_run: data store unreachable (ReadTimeout)")
        return session

    async def find_run_job(self, run_id: str, since: int) -> JobState | None:
        found = [job for job in self.jobs.values() if job.run_id == run_id]
        return found[-1] if found else None

    async def job(self, session_id: str) -> JobState:
        return self.jobs[session_id]


class FakeFiles:
    def __init__(self, root: Path) -> None:
        self.draft_store = DraftStore(root / "drafts")
        self.changed = 0

    async def write_run_file(self, handle: str, path: str, data: bytes) -> None:
        raise AssertionError("a recorded run writes no run log")

    def lineage_changed(self) -> None:
        self.changed += 1

    async def file_digest(self, handle: str, path: str) -> tuple[int, str] | None:
        raise AssertionError("a recorded run writes nothing")


class FakeScheduler:
    held: Any = None

    async def commit(self, handle: str, reason: str | None = None) -> str:
        raise AssertionError("a recorded run publishes nothing")


def manager(tmp_path: Path, prov: FakeProv) -> tuple[RunManager, FakeFiles]:
    files = FakeFiles(tmp_path)
    runs = RunManager(
        root=tmp_path / "runs",
        source="http://store",
        files=files,
        scheduler=FakeScheduler(),  # type: ignore[arg-type]
        prov=prov,  # type: ignore[arg-type]
        attribution=ProcessAttribution(tmp_path / "proc"),
        clock=trio.current_time,
    )
    return runs, files


RECORD: Mapping[str, Any] = {
    "reads": READS,
    "started": 0.0,
    "ended": 1.0,
    "argv": ["cat"],
    "template": TEMPLATE.id,
    "outputs": ["10378.1/3"],
}


async def record_and_finish(runs: RunManager) -> list[dict[str, Any]]:
    said: list[dict[str, Any]] = []

    async def say(message: dict[str, Any]) -> None:
        said.append(dict(message))

    await runs.record(1000, RECORD, say)
    return said


def the_run(runs: RunManager) -> dict[str, Any]:
    [run] = runs.status()["runs"]
    return dict(run)


async def settle(runs: RunManager) -> None:
    """Let the run be driven to its end (retries included; the clock jumps)."""
    for _ in range(200):
        if the_run(runs)["phase"] in {"registered", "failed"}:
            return
        await trio.sleep(1)
    raise AssertionError(the_run(runs))


@pytest.mark.parametrize("fault", [None, "lost", "down"])
async def test_a_run_is_registered_exactly_once(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, fault: str | None
) -> None:
    prov = FakeProv(fault)
    runs, files = manager(tmp_path, prov)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runs.serve)
        await trio.testing.wait_all_tasks_blocked()
        said = await record_and_finish(runs)
        assert said[-1]["event"] == ("done" if fault is None else "pending")
        await settle(runs)
        nursery.cancel_scope.cancel()
    run = the_run(runs)
    assert run["phase"] == "registered"
    assert len(prov.sent) == 1  # never sent twice: the lost answer was found by the run id
    assert run["model_run"] == "10378.1/501"
    assert [d.dataset_id for d in prov.sent[0].inputs] == ["10378.1/1"]
    assert [d.dataset_id for d in prov.sent[0].outputs] == ["10378.1/3"]
    assert files.changed == 1
    assert not (tmp_path / "runs" / run["run_id"]).exists()  # a registered run's journal goes


async def test_a_lost_answer_waits_out_the_request_before_sending_again(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    prov = FakeProv("down")
    runs, _ = manager(tmp_path, prov)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runs.serve)
        await trio.testing.wait_all_tasks_blocked()
        await record_and_finish(runs)
        sent_at = trio.current_time()
        await settle(runs)
        registered_at = trio.current_time()
        nursery.cancel_scope.cancel()
    assert registered_at - sent_at >= prov.timeout  # not before the request timed out


def interrupted(tmp_path: Path, phase_records: list[dict[str, Any]]) -> str:
    """A run journal as a killed daemon left it; its run id."""
    state = RunState(
        run_id="interrupted",
        uid=1000,
        root_pid=0,
        root_start=0,
        argv=("cat",),
        cwd="/",
        host="lab",
        started=0.0,
        request=RunRequest(template=TEMPLATE.id, outputs=("10378.1/3",), publish=False),
    )
    journal = RunJournal.create(tmp_path / "runs", state)
    finished = {"op": "finished", "exit_code": 0, "ended": 1.0, "log": {"read": READS}}
    for record in [finished, *phase_records]:
        journal.record(state, record)
    journal.close()
    return state.run_id


@pytest.mark.parametrize("job_exists", [True, False])
async def test_after_a_crash_between_send_and_answer_the_job_is_looked_for_first(
    tmp_path: Path, autojump_clock: trio.testing.MockClock, job_exists: bool
) -> None:
    interrupted(tmp_path, [{"op": "published", "outputs": {"10378.1/3": "10378.1/3"}},
                           {"op": "sent", "at": 0.0}])  # fmt: skip
    prov = FakeProv()
    if job_exists:  # the request landed before the daemon died
        prov.jobs["old-session"] = JobState(
            "old-session", "SUCCEEDED", "MODEL_RUN_PROV_LODGE", 0, None, "10378.1/499",
            "interrupted",
        )  # fmt: skip
    runs, _ = manager(tmp_path, prov)
    runs.recover()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runs.serve)
        await settle(runs)
        nursery.cancel_scope.cancel()
    run = the_run(runs)
    assert run["phase"] == "registered"
    assert run["model_run"] == ("10378.1/499" if job_exists else "10378.1/501")
    assert len(prov.sent) == (0 if job_exists else 1)


async def test_an_open_run_fails_on_recovery_and_holds_its_drafts(tmp_path: Path) -> None:
    state = RunState(
        run_id="open-one", uid=1000, root_pid=1, root_start=1, argv=("x",), cwd="/",
        host="lab", started=0.0, request=RunRequest(template=TEMPLATE.id),
    )  # fmt: skip
    journal = RunJournal.create(tmp_path / "runs", state)
    journal.record(state, {"op": "changed", "handle": "10378.1/3"})
    journal.close()
    prov = FakeProv()
    runs, files = manager(tmp_path, prov)
    await files.draft_store.open("10378.1/3", bucket="b", base_prefix="datasets/x/")
    runs.recover()
    run = the_run(runs)
    assert run["phase"] == "failed" and run["drafts_kept"] == ["10378.1/3"]
    assert runs.holds("10378.1/3") and not runs.holds("10378.1/4")
    assert runs.status()["held_drafts"] == ["10378.1/3"]
    assert prov.sent == []


async def test_an_unknown_template_fails_the_run_before_anything_is_sent(tmp_path: Path) -> None:
    runs, _ = manager(tmp_path, FakeProv())
    said: list[dict[str, Any]] = []

    async def say(message: dict[str, Any]) -> None:
        said.append(dict(message))

    await runs.record(1000, {**RECORD, "template": "10378.1/nope"}, say)
    assert said[-1]["event"] == "error" and "10378.1/nope" in said[-1]["error"]
    assert runs.status()["runs"] == []


@pytest.mark.parametrize(
    ("op", "message", "error"),
    [
        ("start", {"argv": "rm -rf /"}, "a run needs a command"),
        ("start", {"argv": []}, "a run needs a command"),
        ("start", {"argv": ["true", 7]}, "a run needs a command"),
        ("start", {"argv": ["true"], "on_failure": "sometimes"}, "on_failure is keep or register"),
        ("start", {"argv": ["true"], "annotations": ["a=b"]}, "annotations must be an object"),
        ("record", {**RECORD, "reads": "everything"}, "reads must be a list"),
        ("record", {**RECORD, "reads": [{"path": "x"}]}, "each read names a handle"),
        ("record", {**RECORD, "started": "yesterday"}, "could not convert"),
        ("finish", {"run_id": "no-such-run", "exit_code": 0}, "no such run"),
    ],
)
async def test_malformed_run_messages_are_refused_and_start_nothing(
    tmp_path: Path, op: str, message: Mapping[str, Any], error: str
) -> None:
    prov = FakeProv()
    runs, files = manager(tmp_path, prov)
    said: list[dict[str, Any]] = []

    async def say(answer: dict[str, Any]) -> None:
        said.append(dict(answer))

    if op == "start":
        with pytest.raises(ValueError, match=error):
            await runs.start(os.getpid(), 1000, message)
    elif op == "record":
        await runs.record(1000, message, say)
    else:
        await runs.finish(1000, message, say)
    if op != "start":
        assert said[-1]["event"] == "error" and error in said[-1]["error"]
    assert runs.status()["runs"] == []
    assert prov.sent == [] and files.changed == 0
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []
