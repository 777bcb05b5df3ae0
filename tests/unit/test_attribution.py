"""``ProcessAttribution`` over a fake ``/proc``: which run a caller belongs to, and who never does.

The fake ``/proc`` holds ``<pid>/stat`` (command name, parent, start time) and
``<pid>/environ`` files in the kernel's formats, so the parser and the rules run unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from provenafs.core.types import Caller
from provenafs.process.attribution import (
    Attribution,
    ProcessAttribution,
    RunIdentity,
    read_stat,
)

USER, OTHER = 1000, 2000


class FakeProc:
    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        pid: int,
        *,
        ppid: int,
        start: int,
        comm: str = "python3",
        env: dict[str, str] | None = None,
    ) -> None:
        # A new process has a new /proc/<pid> inode: make the new directory beside the old one
        # (so its inode number differs), then put it in place.
        directory = self.root / f".new-{pid}"
        directory.mkdir()
        fields = ["S", str(ppid), *(["0"] * 17), str(start), *(["0"] * 30)]
        (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
        environ = b"".join(f"{k}={v}".encode() + b"\0" for k, v in (env or {}).items())
        (directory / "environ").write_bytes(environ)
        old = self.root / str(pid)
        if old.exists():
            shutil.rmtree(old)
        directory.rename(old)


def setup(tmp_path: Path) -> tuple[FakeProc, ProcessAttribution]:
    proc = FakeProc(tmp_path)
    proc.add(1, ppid=0, start=1, comm="init")
    proc.add(100, ppid=1, start=500, comm="provenafs")  # the run's root (the CLI)
    attribution = ProcessAttribution(tmp_path, clock=Clock())
    attribution.add_run(RunIdentity("run-1", USER, 100, 500))
    return proc, attribution


class Clock:
    """Each reading 1 s after the last: every cached process is checked again."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def caller(pid: int, uid: int = USER) -> Caller:
    return Caller(uid=uid, gid=uid, pid=pid)


def test_stat_is_parsed_even_with_spaces_and_parentheses_in_the_name(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.add(7, ppid=3, start=99, comm="my (odd) prog")
    info = read_stat(7, tmp_path)
    assert info is not None
    assert (info.comm, info.ppid, info.start) == ("my (odd) prog", 3, 99)
    assert read_stat(8, tmp_path) is None


async def test_the_environment_names_the_run_even_after_reparenting(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    proc.add(300, ppid=1, start=700, env={"HOME": "/x", "PROVENAFS_RUN": "run-1"})  # a daemon
    found = await attribution.resolve(caller(300))
    assert (found.run_id, found.comm) == ("run-1", "python3")


async def test_a_descendant_without_the_variable_is_found_by_its_ancestry(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    proc.add(200, ppid=100, start=600, comm="sh")
    proc.add(201, ppid=200, start=601, comm="cat", env={"PATH": "/bin"})  # env -i'd, say
    assert (await attribution.resolve(caller(201))).run_id == "run-1"


async def test_another_users_process_never_joins_a_run(tmp_path: Path) -> None:
    """Even inside the run's tree and with the variable forged: the run's uid decides."""
    proc, attribution = setup(tmp_path)
    proc.add(200, ppid=100, start=600, env={"PROVENAFS_RUN": "run-1"})
    proc.add(400, ppid=1, start=800, env={"PROVENAFS_RUN": "run-1"})
    assert (await attribution.resolve(caller(200, uid=OTHER))).run_id is None
    assert (await attribution.resolve(caller(400, uid=OTHER))).run_id is None
    # the same processes of the run's user are the run's (the answer is cached per process,
    # the uid is checked on every call)
    assert (await attribution.resolve(caller(200))).run_id == "run-1"
    assert (await attribution.resolve(caller(400))).run_id == "run-1"


async def test_unrelated_gone_and_unnamed_processes_are_unattributed(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    proc.add(500, ppid=1, start=900, comm="cat")
    proc.add(501, ppid=1, start=901, env={"PROVENAFS_RUN": "no-such-run"})
    assert await attribution.resolve(caller(500)) == Attribution(None, "cat")
    assert (await attribution.resolve(caller(501))).run_id is None
    assert (await attribution.resolve(caller(9999))).run_id is None  # gone
    assert (await attribution.resolve(caller(0))).run_id is None  # another pid namespace


async def test_a_recycled_pid_is_a_new_process(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    proc.add(200, ppid=100, start=600)
    assert (await attribution.resolve(caller(200))).run_id == "run-1"
    proc.add(200, ppid=1, start=999)  # the pid was reused by an unrelated process
    assert (await attribution.resolve(caller(200))).run_id is None
    # nor is a recycled root pid a run's root
    proc.add(100, ppid=1, start=12345)
    proc.add(201, ppid=100, start=13000)
    assert (await attribution.resolve(caller(201))).run_id is None


async def test_each_process_is_resolved_once_and_runs_end(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    proc.add(200, ppid=100, start=600)
    for _ in range(5):
        assert (await attribution.resolve(caller(200))).run_id == "run-1"
    assert attribution.resolved == 1
    attribution.remove_run("run-1")
    assert (await attribution.resolve(caller(200))).run_id is None


async def test_a_process_seen_before_a_run_started_is_looked_at_again(tmp_path: Path) -> None:
    proc = FakeProc(tmp_path)
    proc.add(100, ppid=1, start=500)
    proc.add(200, ppid=100, start=600)
    attribution = ProcessAttribution(tmp_path)
    attribution.add_run(RunIdentity("other-run", USER, 50, 50))
    assert (await attribution.resolve(caller(200))).run_id is None  # cached: no run
    attribution.add_run(RunIdentity("run-1", USER, 100, 500))
    assert (await attribution.resolve(caller(200))).run_id == "run-1"


async def test_a_child_of_a_process_of_the_run_is_of_the_run_from_the_cache(
    tmp_path: Path,
) -> None:
    """A daemon of the run (by its variable, reparented to init) starts a child that cleared
    its environment: the child is of the run because its parent is, known without reading
    anything but one stat; a recycled parent pid lends nothing."""
    proc, attribution = setup(tmp_path)
    proc.add(300, ppid=1, start=700, env={"PROVENAFS_RUN": "run-1"})
    assert (await attribution.resolve(caller(300))).run_id == "run-1"
    proc.add(301, ppid=300, start=701, comm="cat")
    assert (await attribution.resolve(caller(301))).run_id == "run-1"
    proc.add(300, ppid=1, start=999)  # the parent's pid is reused by an unrelated process
    proc.add(302, ppid=300, start=1000, comm="cat")
    assert (await attribution.resolve(caller(302))).run_id is None


async def test_a_nested_run_s_children_name_their_own_run(tmp_path: Path) -> None:
    proc, attribution = setup(tmp_path)
    # the inner `provenafs run`, a process of run-1, is the root of run-2
    proc.add(200, ppid=100, start=600, comm="provenafs", env={"PROVENAFS_RUN": "run-1"})
    assert (await attribution.resolve(caller(200))).run_id == "run-1"
    attribution.add_run(RunIdentity("run-2", USER, 200, 600))
    proc.add(201, ppid=200, start=601, comm="cat", env={"PROVENAFS_RUN": "run-2"})
    assert (await attribution.resolve(caller(201))).run_id == "run-2"
