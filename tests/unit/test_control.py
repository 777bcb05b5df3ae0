"""The control socket: peer uid check, commit streaming, status, revert dispatch, errors.

A real ``ControlServer`` on a real Unix socket (in a short private temp dir named by
``XDG_RUNTIME_DIR``), a fake publishing backend, and the blocking client ``request`` run in a
worker thread, as the CLI runs it in its own process.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from provenafs.core import namespace
from provenafs.core.dataset_views import VIEW_SUFFIXES
from provenafs.errors import FsError
from provenafs.process import control_socket
from provenafs.process.control_socket import (
    ControlServer,
    ControlUnavailable,
    handle_from_path,
    request,
    socket_path_for,
)
from provenafs.write.publish import NothingToPublishError, PublishError, PublishProgress

MOUNTPOINT = Path("/mnt/provena-test")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pfc"))  # short: socket paths max 108 bytes
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Backend:
    def __init__(self) -> None:
        self.commits: list[tuple[str, str | None]] = []
        self.outcome: str | Exception = "10378.1/2"
        self.steps = 5
        self.finished = trio.Event()

    async def commit(
        self,
        handle: str,
        reason: str | None = None,
        progress: Callable[[PublishProgress], None] | None = None,
    ) -> str:
        self.commits.append((handle, reason))
        try:
            for step in range(1, self.steps + 1):
                if progress is not None:
                    progress(
                        PublishProgress(handle, "10378.1/2", step, 5, step * 100, 500, "copying")
                    )
                await trio.sleep(0.15)
            if isinstance(self.outcome, Exception):
                raise self.outcome
            return self.outcome
        finally:
            self.finished.set()

    def status(self) -> dict[str, Any]:
        return {"drafts": [{"handle": "10378.1/1", "added": 2}], "publishing": [], "failures": []}


async def serve_and(
    body: Callable[[ControlServer], Any],
    *,
    backend: Backend | None = None,
    allowed_uid: int | None = None,
    reverter: Any = None,
) -> Any:
    async def main() -> Any:
        server = ControlServer(
            socket_path_for(MOUNTPOINT),
            publishing=backend or Backend(),
            status=lambda: {"block_cache": {"bytes": 1}},
            reverter=reverter,
            allowed_uid=allowed_uid,
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            result = await body(server)
            nursery.cancel_scope.cancel()
        return result

    return await main()


async def ask(message: dict[str, Any]) -> list[dict[str, Any]]:
    return await trio.to_thread.run_sync(lambda: list(request(MOUNTPOINT, message)))


async def test_commit_streams_progress_then_the_new_handle(runtime: Path) -> None:
    backend = Backend()

    async def body(server: ControlServer) -> list[dict[str, Any]]:
        return await ask({"op": "commit", "path": "10378.1/1/raw/a.csv", "reason": "why"})

    lines = await serve_and(body, backend=backend)
    assert backend.commits == [("10378.1/1", "why")]
    assert lines[-1] == {"event": "done", "handle": "10378.1/2", "old_handle": "10378.1/1"}
    progress = [line for line in lines if line["event"] == "progress"]
    assert len(progress) >= 2
    done = [line["bytes_done"] for line in progress]
    assert done == sorted(done)
    assert progress[-1]["bytes_done"] == 500
    assert progress[-1]["files_done"] == 5


@pytest.mark.parametrize(
    ("outcome", "event", "text"),
    [
        (PublishError("the data store refused write access: locked"), "error", "locked"),
        (NothingToPublishError("10378.1/1 has no draft"), "nothing", "has no draft"),
    ],
)
async def test_commit_failures_end_with_their_cause(
    runtime: Path, outcome: Exception, event: str, text: str
) -> None:
    backend = Backend()
    backend.outcome = outcome
    backend.steps = 1

    async def body(server: ControlServer) -> list[dict[str, Any]]:
        return await ask({"op": "commit", "handle": "10378.1/1"})

    last = (await serve_and(body, backend=backend))[-1]
    assert last["event"] == event
    assert text in (last.get("error") or last.get("message"))


async def test_another_uid_is_refused_before_reading(runtime: Path) -> None:
    backend = Backend()

    async def body(server: ControlServer) -> tuple[list[dict[str, Any]], int]:
        lines = await ask({"op": "commit", "handle": "10378.1/1"})
        return lines, server.refused

    lines, refused = await serve_and(body, backend=backend, allowed_uid=os.getuid() + 1)
    assert lines == [{"event": "error", "error": "permission denied"}]
    assert refused == 1
    assert backend.commits == []


async def test_socket_and_directory_are_private(runtime: Path) -> None:
    async def body(server: ControlServer) -> tuple[int, int]:
        await trio.lowlevel.checkpoint()
        path = server.socket_path
        return stat.S_IMODE(path.parent.stat().st_mode), stat.S_IMODE(path.stat().st_mode)

    assert await serve_and(body) == (0o700, 0o600)
    assert not socket_path_for(MOUNTPOINT).exists()  # removed when the server stops


async def test_status_and_drafts(runtime: Path) -> None:
    async def body(server: ControlServer) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await ask({"op": "status"}), await ask({"op": "drafts"})

    status, drafts = await serve_and(body)
    assert status == [
        {
            "event": "done",
            "status": {
                "block_cache": {"bytes": 1},
                "drafts": [{"handle": "10378.1/1", "added": 2}],
                "publishing": [],
                "failures": [],
            },
        }
    ]
    assert drafts == [{"event": "done", "drafts": [{"handle": "10378.1/1", "added": 2}]}]


async def test_bad_requests_get_errors(runtime: Path) -> None:
    async def raw(payload: bytes) -> list[dict[str, Any]]:
        def go() -> list[dict[str, Any]]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(socket_path_for(MOUNTPOINT)))
                try:
                    sock.sendall(payload)
                    sock.shutdown(socket.SHUT_WR)
                except BrokenPipeError:  # the server stopped reading: its answer is there
                    pass
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
            return [json.loads(line) for line in data.splitlines()]

        return await trio.to_thread.run_sync(go)

    async def body(server: ControlServer) -> list[list[dict[str, Any]]]:
        return [
            await raw(b"not json\n"),
            await raw(b'["op"]\n'),
            await raw(b'{"op": "explode"}\n'),
            await ask({"op": "commit", "path": "by-name/Reef"}),
            await ask({"op": "commit", "path": "10378.1/../etc"}),
            await ask({"op": "revert", "handle": "10378.1/1", "history_id": 1, "reason": "r"}),
            await raw(b"x" * (5 << 20)),  # no newline within the limit
        ]

    backend = Backend()
    answers = await serve_and(body, backend=backend)
    assert all(len(a) == 1 and a[0]["event"] == "error" for a in answers)
    assert backend.commits == []
    assert "not JSON" in answers[0][0]["error"]
    assert "unknown op" in answers[2][0]["error"]
    assert "not inside a dataset" in answers[3][0]["error"]
    assert "'..'" in answers[4][0]["error"]
    assert "not available" in answers[5][0]["error"]
    assert "too large" in answers[6][0]["error"]


async def test_revert_dispatches_to_the_registered_handler(runtime: Path) -> None:
    calls: list[tuple[str, int, str]] = []

    async def reverter(handle: str, history_id: int, reason: str) -> int | None:
        await trio.lowlevel.checkpoint()
        calls.append((handle, history_id, reason))
        if history_id == 99:
            raise FsError(errno.EINVAL, "history id 99 is not in the record")
        return 7

    async def body(server: ControlServer) -> list[list[dict[str, Any]]]:
        return [
            await ask({"op": "revert", "path": "10378.1/1.json", "history_id": 2, "reason": "r"}),
            await ask({"op": "revert", "handle": "10378.1/1", "history_id": 99, "reason": "r"}),
            await ask({"op": "revert", "handle": "10378.1/1", "history_id": "2", "reason": "r"}),
            await ask({"op": "revert", "handle": "10378.1/1", "history_id": 2, "reason": " "}),
        ]

    ok, missing, bad_id, no_reason = await serve_and(body, reverter=reverter)
    assert ok == [{"event": "done", "handle": "10378.1/1", "history_id": 7}]
    assert missing[0]["event"] == "error"
    assert missing[0]["errno"] == errno.EINVAL
    assert "EINVAL" in missing[0]["error"]
    assert bad_id[0]["error"] == "history_id must be an integer"
    assert no_reason[0]["error"] == "a revert needs a reason"
    assert calls == [("10378.1/1", 2, "r"), ("10378.1/1", 99, "r")]


async def test_a_client_that_leaves_does_not_stop_its_commit(runtime: Path) -> None:
    backend = Backend()

    async def body(server: ControlServer) -> bool:
        def send_and_leave() -> None:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(socket_path_for(MOUNTPOINT)))
                sock.sendall(b'{"op": "commit", "handle": "10378.1/1"}\n')

        await trio.to_thread.run_sync(send_and_leave)
        with trio.fail_after(30):
            await backend.finished.wait()
        return True

    assert await serve_and(body, backend=backend)
    assert backend.commits == [("10378.1/1", None)]


def test_no_daemon_means_unavailable(runtime: Path) -> None:
    with pytest.raises(ControlUnavailable):
        list(request(MOUNTPOINT, {"op": "status"}))


@pytest.mark.parametrize(
    ("path", "handle"),
    [
        ("10378.1/1932274", "10378.1/1932274"),
        ("10378.1/1932274/raw/a.csv", "10378.1/1932274"),
        ("/10378.1/1932274/", "10378.1/1932274"),
        ("10378.1/1932274.json", "10378.1/1932274"),
        ("10378.1/1932274@latest/x", "10378.1/1932274"),
        ("10378.1/1932274.access.json", "10378.1/1932274"),
        ("10378.1/1932274.cff", "10378.1/1932274"),
    ],
)
def test_handle_from_path(path: str, handle: str) -> None:
    assert handle_from_path(path) == handle


@pytest.mark.parametrize(
    "path",
    ["", "10378.1", ".provenafs/status.json", "by-name/x/y", "by-keyword/reef", "search/q/x"],
)
def test_handle_from_path_refuses(path: str) -> None:
    with pytest.raises(ValueError, match="not inside"):
        handle_from_path(path)


def test_the_commands_path_grammar_is_the_trees() -> None:
    """``handle_from_path`` (light: the commands load no core) knows the names the core serves
    beside a dataset and the core's handle prefixes; a new view must be added to both."""
    beside = set(control_socket._FILES_BESIDE_A_DATASET)
    assert beside == {*VIEW_SUFFIXES, namespace.SIDECAR_SUFFIX}
    assert control_socket._HANDLE_PREFIX.pattern == namespace._PREFIX_RE.pattern
