"""The run journal: every state on disk before it is acted on, replayed whole after a crash."""

from __future__ import annotations

import stat
from pathlib import Path

from provenafs.process.run_journal import RunJournal, RunRequest, RunState, load_all, runs_root


def new_state(run_id: str = "abc123", started: float = 100.0) -> RunState:
    return RunState(
        run_id=run_id,
        uid=1000,
        root_pid=4242,
        root_start=77,
        argv=("python", "analysis.py"),
        cwd="/work",
        host="lab",
        started=started,
        request=RunRequest(
            name="n", template="10378.1/9", annotations={"k": "v"}, outputs=("x/1",)
        ),
    )


def test_every_state_survives_a_reload(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "source"
    state = new_state()
    journal = RunJournal.create(root, state)
    journal.record(state, {"op": "changed", "handle": "10378.1/3"})
    journal.record(state, {"op": "changed", "handle": "10378.1/3"})  # once per dataset
    log = {"read": [{"handle": "10378.1/1", "path": "a", "etag": "e"}], "written": []}
    journal.record(
        state,
        {"op": "finished", "exit_code": 0, "ended": 130.0, "model_version": "abc", "log": log},
    )
    journal.record(state, {"op": "published", "outputs": {"10378.1/3": "10378.1/4"}})
    journal.record(state, {"op": "sent", "at": 131.0})
    journal.close()
    [(reloaded_journal, reloaded)] = load_all(root)
    assert reloaded == state
    assert reloaded.phase == "sent" and reloaded.sent_at == 131.0 and reloaded.session_id is None
    assert reloaded.changed == ["10378.1/3"] and reloaded.outputs == {"10378.1/3": "10378.1/4"}
    assert reloaded.request.annotations == {"k": "v"} and reloaded.request.publish
    reloaded_journal.record(reloaded, {"op": "answered", "session_id": "s-1"})
    reloaded_journal.record(reloaded, {"op": "registered", "handle": "10378.1/5"})
    reloaded_journal.close()
    [(_, final)] = load_all(root)
    assert (final.phase, final.model_run, final.terminal) == ("registered", "10378.1/5", True)


def test_a_torn_tail_is_dropped_and_the_files_are_private(tmp_path: Path) -> None:
    root = tmp_path / "state" / "runs" / "source"
    state = new_state()
    journal = RunJournal.create(root, state)
    journal.record(state, {"op": "changed", "handle": "10378.1/3"})
    journal.close()
    with (root / state.run_id).open("ab") as file:
        file.write(b'0badc0de {"op": "finished", "exit_co')  # a crash mid-append
    [(_, reloaded)] = load_all(root)
    assert reloaded.phase == "open" and reloaded.changed == ["10378.1/3"]
    assert stat.S_IMODE((root / state.run_id).stat().st_mode) == 0o600
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(root.parent.stat().st_mode) == 0o700


def test_runs_load_oldest_first_and_other_files_are_ignored(tmp_path: Path) -> None:
    root = runs_root("http://store/", tmp_path)
    assert root == runs_root("http://store", tmp_path)  # one place per source
    for run_id, started in (("late", 300.0), ("early", 100.0)):
        RunJournal.create(root, new_state(run_id, started)).close()
    (root / "stray").write_bytes(b"not a journal\n")
    assert [state.run_id for _, state in load_all(root)] == ["early", "late"]


def test_a_failure_keeps_its_reason_and_drafts(tmp_path: Path) -> None:
    state = new_state()
    journal = RunJournal.create(tmp_path, state)
    journal.record(state, {"op": "failed", "reason": "exit 3", "drafts_kept": ["10378.1/3"]})
    journal.close()
    [(_, reloaded)] = load_all(tmp_path)
    assert (reloaded.phase, reloaded.failure, reloaded.drafts_kept) == (
        "failed",
        "exit 3",
        ["10378.1/3"],
    )
    assert reloaded.summary()["drafts_kept"] == ["10378.1/3"]
