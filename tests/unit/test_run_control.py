"""The control socket's run operations: dispatched with the peer's own pid and uid (never the
request's), refused for another uid before anything runs, and a long command line accepted."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from provenafs.process.control_socket import ControlServer, request, socket_path_for

MOUNTPOINT = Path("/mnt/provena-runs-test")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pfr"))  # short: socket paths max 108 bytes
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class RunBackend:
    ops = frozenset({"run-start", "run-finish"})

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int, int]] = []

    async def control(
        self,
        op: str,
        message: Mapping[str, Any],
        peer_pid: int,
        peer_uid: int,
        send: Callable[[Mapping[str, Any]], Awaitable[None]],
    ) -> None:
        self.calls.append((op, peer_pid, peer_uid, len(message.get("argv") or ())))
        await send({"event": "done", "run_id": "r1"})


async def exchange(
    backend: RunBackend, message: dict[str, Any], allowed_uid: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    server = ControlServer(
        socket_path_for(MOUNTPOINT), publishing=None, runs=backend, allowed_uid=allowed_uid
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        lines = await trio.to_thread.run_sync(lambda: list(request(MOUNTPOINT, message)))
        nursery.cancel_scope.cancel()
    return lines, server.refused


async def test_run_operations_carry_the_peers_own_credentials(runtime: Path) -> None:
    backend = RunBackend()
    forged = {"op": "run-start", "argv": ["true"], "uid": 0, "pid": 1, "peer_uid": 0}
    lines, _ = await exchange(backend, forged)
    assert lines == [{"event": "done", "run_id": "r1"}]
    assert backend.calls == [("run-start", os.getpid(), os.getuid(), 1)]


async def test_another_uid_never_reaches_the_runs(runtime: Path) -> None:
    backend = RunBackend()
    lines, refused = await exchange(
        backend, {"op": "run-start", "argv": ["true"]}, allowed_uid=os.getuid() + 1
    )
    assert lines == [{"event": "error", "error": "permission denied"}]
    assert (refused, backend.calls) == (1, [])


async def test_a_long_command_line_is_accepted(runtime: Path) -> None:
    backend = RunBackend()
    argv = ["cat", *(f"/mnt/provena/10378.1/1932274/data/file-{n:06d}.csv" for n in range(20000))]
    lines, _ = await exchange(backend, {"op": "run-start", "argv": argv})
    assert lines[-1]["event"] == "done"
    assert backend.calls[0][3] == len(argv)
