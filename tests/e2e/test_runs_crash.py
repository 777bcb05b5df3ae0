"""Runs survive ``kill -9`` of the daemon and an unreachable prov API: registered exactly once,
or reported failed with their drafts kept (docs/SEMANTICS.md, "Runs").

Each test mounts with its own home (state and config dirs), so a remount after ``kill -9``
finds the same run journals and drafts. ``publish_delay=1`` lets the quiet-delay publisher act
within the test, to show that a run's drafts are held; ``prov_timeout=3`` makes a registration
whose answer was lost be sent again after seconds, not half a minute.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.runs_support import (
    RunsApi,
    run_command,
    run_of,
    start_command,
    status_of,
    wait_until,
)
from tests.e2e.writes_support import (
    Dataset,
    WritableMount,
    kill_daemon,
    private_store,
    start_writable_mount,
)

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

CRASH_OPTIONS = "rw,publish_delay=1,prov_timeout=3"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("runs-crash") / "data") as private:
        yield private


@pytest.fixture(scope="module")
def api(store: LocalStore) -> Iterator[RunsApi]:
    runs_api = RunsApi(store)
    yield runs_api
    runs_api.clear_faults()


class Remountable:
    """A writable mount that a test kills and mounts again with the same home."""

    def __init__(self, store: LocalStore, root: Path) -> None:
        self.store = store
        self.mountpoint = root / "mnt"
        self.home = root / "home"
        self.current: WritableMount | None = None

    def mount(self) -> WritableMount:
        self.current = start_writable_mount(
            self.store, self.mountpoint, home=self.home, options=CRASH_OPTIONS
        )
        return self.current

    def kill(self) -> None:
        assert self.current is not None
        kill_daemon(self.current)
        self.current = None

    def stop(self) -> None:
        if self.current is not None:
            stop_mount(self.current.mount)
            self.current = None


@pytest.fixture
def remountable(store: LocalStore, tmp_path: Path) -> Iterator[Remountable]:
    mounts = Remountable(store, tmp_path)
    try:
        yield mounts
    finally:
        mounts.stop()


def mint(api: RunsApi, label: str, files: dict[str, bytes]) -> Dataset:
    return api.mint("alice", files=files, name=f"crash {label} {uuid.uuid4().hex[:8]}")


def open_run(mount: WritableMount, marker: str) -> dict[str, Any] | None:
    for run in status_of(mount).get("runs") or []:
        if marker in " ".join(run["command"]):
            return dict(run)
    return None


def stop_group(process: Any) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def start_writing_run(
    mount: WritableMount, handle: str, text: str, tmp_path: Path
) -> tuple[Any, str, Path]:
    """``provenafs run`` of a command that writes *text* into the dataset's ``new.txt``, touches
    ``started`` and sleeps; the process, a marker in its command line, and ``started``."""
    marker, started = uuid.uuid4().hex, tmp_path / "started"
    script = (
        f"echo {text} > {mount.path / handle / 'new.txt'} && touch {started} && "
        f"exec sleep 120 # {marker}"
    )
    process = start_command(
        mount, "run", "--init-template", "--", "sh", "-c", script,
        log=tmp_path / "run.out", cwd=tmp_path,
    )  # fmt: skip
    return process, marker, started


def test_kill_9_during_a_run_fails_it_and_keeps_its_drafts(
    api: RunsApi, remountable: Remountable, tmp_path: Path
) -> None:
    mount = remountable.mount()
    target = mint(api, "target", {"keep.txt": b"k\n"})
    process, marker, started = start_writing_run(mount, target.handle, "kept", tmp_path)
    try:
        wait_until(started.exists, "the command to write")
        run = open_run(mount, marker)
        assert run is not None and run["phase"] == "open"
        assert run["changed"] == [target.handle]
        remountable.kill()
    finally:
        stop_group(process)
    mount = remountable.mount()
    after = run_of(mount, run["run_id"])
    assert after is not None, status_of(mount)
    assert after["phase"] == "failed" and "ended while the run was open" in after["failure"]
    assert after["drafts_kept"] == [target.handle]
    time.sleep(3)  # three publish delays: a draft nobody held would be published by now
    assert api.versions_after(target.handle) == []
    assert (mount.path / target.handle / "new.txt").read_bytes() == b"kept\n"
    assert api.model_runs(run["run_id"]) == []
    text = run_command(mount, "status", str(mount.path)).stdout
    assert f"{run['run_id']} failed" in text and f"drafts kept: {target.handle}" in text


def test_kill_9_while_registering_registers_exactly_once(
    api: RunsApi, remountable: Remountable, tmp_path: Path
) -> None:
    """The registration is held by the prov API when the daemon dies; the request arrives
    afterwards (or not at all). After a remount the run is registered exactly once."""
    mount = remountable.mount()
    source = mint(api, "source", {"in.csv": b"input\n"})
    target = mint(api, "target", {"keep.txt": b"k\n"})
    marker = uuid.uuid4().hex
    script = (
        f"cat {mount.path / source.handle / 'in.csv'} > /dev/null && "
        f"echo result > {mount.path / target.handle / 'out.txt'} # {marker}"
    )
    api.set_fault(path_prefix="/model_run/register", latency_ms=6000)
    process = start_command(
        mount, "run", "--init-template", "--", "sh", "-c", script,
        log=tmp_path / "run.out", cwd=tmp_path,
    )  # fmt: skip
    try:
        run = wait_until(
            lambda: (found := open_run(mount, marker)) and found["phase"] == "sent" and found,
            "the registration to be sent",
        )
        remountable.kill()
    finally:
        stop_group(process)
        api.clear_faults()
    assert run["outputs"]  # published before the registration was sent
    mount = remountable.mount()
    done = wait_until(
        lambda: (
            (found := run_of(mount, run["run_id"])) and found["phase"] == "registered" and found
        ),
        "the run to be registered after the remount",
        timeout=120,
    )
    [registered] = api.model_runs(run["run_id"])
    assert registered["id"] == done["model_run"]
    assert len(api.lodge_jobs(run["run_id"])) == 1
    [new] = api.versions_after(target.handle)
    record = registered["record"]
    assert [d["dataset_id"] for d in record["inputs"]] == [source.handle]
    assert [d["dataset_id"] for d in record["outputs"]] == [new]


def test_an_unreachable_prov_api_leaves_the_run_pending_and_it_is_retried(
    api: RunsApi, remountable: Remountable, tmp_path: Path
) -> None:
    mount = remountable.mount()
    target = mint(api, "pending", {"keep.txt": b"k\n"})
    marker = uuid.uuid4().hex
    script = f"echo result > {mount.path / target.handle / 'out.txt'} # {marker}"
    api.set_fault(path_prefix="/model_run/register", error_rate=1.0, status=503)
    try:
        result = run_command(mount, "run", "--init-template", "--", "sh", "-c", script)
        assert result.returncode == 75, result.stderr
        assert "the registration is pending" in result.stderr
        assert result.stdout == ""
        run = open_run(mount, marker)
        assert run is not None and run["phase"] == "sent" and run["pending"]
        assert "pending" in run_command(mount, "status", str(mount.path)).stdout
        assert api.lodge_jobs(run["run_id"]) == []
    finally:
        api.clear_faults()
    done = wait_until(
        lambda: (
            (found := run_of(mount, run["run_id"])) and found["phase"] == "registered" and found
        ),
        "the pending run to be registered",
        timeout=120,
    )
    [registered] = api.model_runs(run["run_id"])
    assert registered["id"] == done["model_run"]
    assert len(api.lodge_jobs(run["run_id"])) == 1
    [new] = api.versions_after(target.handle)
    assert [d["dataset_id"] for d in registered["record"]["outputs"]] == [new]


def test_kill_9_of_provenafs_run_fails_the_run_and_keeps_its_drafts(
    api: RunsApi, remountable: Remountable, tmp_path: Path
) -> None:
    """The command goes on without the process that would finish its run: the daemon sees
    the run's root gone, fails the run, and holds its drafts from the quiet delay."""
    mount = remountable.mount()
    target = mint(api, "orphan", {"keep.txt": b"k\n"})
    process, marker, started = start_writing_run(mount, target.handle, "orphaned", tmp_path)
    try:
        wait_until(started.exists, "the command to write")
        os.kill(process.pid, signal.SIGKILL)  # the provenafs run process only
        process.wait(timeout=60)
        run = wait_until(
            lambda: (found := open_run(mount, marker)) and found["phase"] == "failed" and found,
            "the orphaned run to fail",
        )
    finally:
        stop_group(process)  # the sleeping command
    assert "ended without finishing the run" in run["failure"]
    assert run["drafts_kept"] == [target.handle]
    time.sleep(3)  # three publish delays
    assert api.versions_after(target.handle) == []
    assert api.model_runs(run["run_id"]) == []
    assert (mount.path / target.handle / "new.txt").read_bytes() == b"orphaned\n"
