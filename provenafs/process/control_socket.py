"""The daemon's control socket: ``commit``, ``status``, ``drafts`` and ``revert`` for the CLI.

One Unix stream socket per mount, in a private runtime directory (``$XDG_RUNTIME_DIR/provenafs``
when that exists, else ``~/.cache/provenafs/run``; made 0700 and owned by the mounting user),
named by a hash of the mountpoint (``socket_path_for``). Only the mount's owner may talk to it
(``allowed_uid``: the daemon names ``-o uid=``, else its own uid): every connection's peer is
checked with ``SO_PEERCRED`` before a byte is read.

Protocol: one request per connection, a JSON object on one line; the answer is JSON lines, each
with an ``event``, the last one ``done``, ``nothing`` or ``error``:

- ``{"op": "commit", "handle" | "path": str, "reason": str?}`` → ``progress`` lines (the fields
  of ``PublishProgress``, at most ten a second), then ``{"event": "done", "handle": NEW}``,
  ``{"event": "nothing", "handle": CURRENT, "message"}`` (CURRENT: the dataset's own handle,
  or the version its draft became moments ago) or ``{"event": "error", "error"}``;
  ``path`` is relative to the mountpoint (``10378.1/1932274/raw/a.csv``);
- ``{"op": "status"}`` → ``{"event": "done", "status": {...}}`` (drafts, publishes in flight,
  recent failures, and whatever the daemon adds: cache use, credential expiries; never a secret);
- ``{"op": "drafts"}`` → ``{"event": "done", "drafts": [...]}``;
- ``{"op": "revert", "handle" | "path", "history_id": int, "reason": str}`` → ``done`` or
  ``error``, through the handler the metadata side registers (``SidecarEditor.revert``).

A client that goes away does not stop a commit it asked for. The module also holds the small
blocking client ``request`` used by ``provenafs commit/umount/status`` (a separate process).
It never logs request bodies beyond the op and handle, and runs server-side on the trio thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from provenafs.api.errors import ApiError
from provenafs.errors import FsError
from provenafs.write.publish import NothingToPublishError, PublishError, PublishProgress

__all__ = [
    "ControlError",
    "ControlServer",
    "ControlUnavailable",
    "PublishBackend",
    "handle_from_path",
    "request",
    "runtime_dirs",
    "socket_path_for",
]

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 << 10
_PROGRESS_INTERVAL = 0.1
_PEERCRED = struct.Struct("3i")  # pid, uid, gid
_RESERVED_TOP = frozenset({"by-name", ".provenafs"})

Reverter = Callable[[str, int, str], Awaitable[object]]


class PublishBackend(Protocol):
    """What the control server needs from publishing (``PublishScheduler`` provides it)."""

    async def commit(
        self,
        handle: str,
        reason: str | None = None,
        progress: Callable[[PublishProgress], None] | None = None,
    ) -> str: ...

    def status(self) -> dict[str, Any]: ...


class ControlError(Exception):
    """The daemon answered a request with an error; the message is its cause."""


class ControlUnavailable(ControlError):
    """No daemon answers on the mount's control socket."""


# --- where the socket lives ----------------------------------------------------------------


def runtime_dirs() -> list[Path]:
    """Where control sockets may live, most preferred first."""
    found = []
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        found.append(Path(runtime) / "provenafs")
    found.append(Path.home() / ".cache" / "provenafs" / "run")
    return found


def _socket_name(mountpoint: Path) -> str:
    digest = hashlib.sha256(os.fsencode(os.path.abspath(mountpoint))).hexdigest()[:16]
    return f"{digest}.sock"


def socket_path_for(mountpoint: Path, directory: Path | None = None) -> Path:
    """The control socket of the mount at ``mountpoint``."""
    return (directory or runtime_dirs()[0]) / _socket_name(mountpoint)


def _private_dir(directory: Path) -> None:
    """Create ``directory`` 0700; refuse one another user owns or others may enter."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    info = directory.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to uid {info.st_uid}, not to this user")
    if stat.S_IMODE(info.st_mode) != 0o700:
        directory.chmod(0o700)


def handle_from_path(relative: str) -> str:
    """``10378.1/1932274`` from a mount-relative path inside that dataset version's directory."""
    parts = [p for p in relative.strip("/").split("/") if p not in {"", "."}]
    if ".." in parts:
        raise ValueError("the path must not contain '..'")
    if len(parts) < 2 or parts[0] in _RESERVED_TOP:
        raise ValueError("not inside a dataset version's directory (PREFIX/SUFFIX/...)")
    suffix = parts[1]
    if len(parts) == 2 and suffix.endswith(".json"):
        suffix = suffix.removesuffix(".json")  # the sidecar names its dataset
    suffix = suffix.split("@", 1)[0]
    if not suffix:
        raise ValueError("not inside a dataset version's directory")
    return f"{parts[0]}/{suffix}"


# --- the server ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Peer:
    pid: int
    uid: int
    gid: int


def _peer_of(sock: trio.socket.SocketType) -> _Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return _Peer(pid, uid, gid)


class _Lines:
    """JSON lines to one client; a client that went away is ignored."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._lock = trio.Lock()
        self.gone = False

    async def send(self, message: Mapping[str, Any]) -> None:
        if self.gone:
            return
        data = (json.dumps(message, default=str, separators=(",", ":")) + "\n").encode()
        async with self._lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.gone = True


async def _discard_request(stream: trio.SocketStream) -> None:
    """Read (and drop) what a refused peer sent, so closing does not reset the connection
    before it has read why it was refused."""
    with trio.move_on_after(1), contextlib.suppress(trio.BrokenResourceError, OSError):
        await stream.send_eof()
        await stream.receive_some(MAX_REQUEST_BYTES)


class ControlServer:
    """Serves the control protocol on one Unix socket until cancelled."""

    def __init__(
        self,
        socket_path: Path,
        *,
        publishing: PublishBackend | None,
        status: Callable[[], Mapping[str, Any]] | None = None,
        reverter: Reverter | None = None,
        allowed_uid: int | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._publishing = publishing
        self._status = status
        self.reverter = reverter
        self._allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self.refused = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report started, serve connections; remove the socket when done."""
        _private_dir(self.socket_path.parent)
        listener_socket = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()  # a killed daemon's socket: nobody listens on it
        try:
            await listener_socket.bind(os.fspath(self.socket_path))
            self.socket_path.chmod(0o600)
            listener_socket.listen(16)
            listener = trio.SocketListener(listener_socket)
            log.info("control socket %s", self.socket_path)
            async with trio.open_nursery() as nursery:
                task_status.started()
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._connection, stream)
        finally:
            listener_socket.close()
            with contextlib.suppress(OSError):
                self.socket_path.unlink()

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            lines = _Lines(stream)
            peer = _peer_of(stream.socket)
            if peer.uid != self._allowed_uid:
                self.refused += 1
                log.warning("control socket: refused uid %d (pid %d)", peer.uid, peer.pid)
                await lines.send({"event": "error", "error": "permission denied"})
                await _discard_request(stream)
                return
            try:
                message = await self._read_request(stream)
            except ValueError as exc:
                await lines.send({"event": "error", "error": f"bad request: {exc}"})
                return
            try:
                await self._dispatch(message, lines)
            except Exception as exc:
                log.exception("control request %s failed", message.get("op"))
                await lines.send({"event": "error", "error": f"{type(exc).__name__}: {exc}"})

    @staticmethod
    async def _read_request(stream: trio.SocketStream) -> dict[str, Any]:
        data = b""
        while b"\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            data += chunk
            if len(data) > MAX_REQUEST_BYTES:
                raise ValueError("request too large")
        try:
            message = json.loads(data.split(b"\n", 1)[0] or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise ValueError('a request is an object with an "op"')
        return message

    async def _dispatch(self, message: Mapping[str, Any], lines: _Lines) -> None:
        op = message["op"]
        if op == "ping":
            await lines.send({"event": "done", "pid": os.getpid()})
        elif op == "status":
            await lines.send({"event": "done", "status": self._status_document()})
        elif op == "drafts":
            drafts = self._status_document().get("drafts", [])
            await lines.send({"event": "done", "drafts": drafts})
        elif op == "commit":
            await self._commit(message, lines)
        elif op == "revert":
            await self._revert(message, lines)
        else:
            await lines.send({"event": "error", "error": f"unknown op {op!r}"})

    def _status_document(self) -> dict[str, Any]:
        document: dict[str, Any] = {}
        if self._status is not None:
            document.update(self._status())
        if self._publishing is not None:
            document.update(self._publishing.status())
        return document

    @staticmethod
    def _handle(message: Mapping[str, Any]) -> str:
        handle = message.get("handle")
        if isinstance(handle, str) and handle:
            return handle_from_path(handle)
        path = message.get("path")
        if isinstance(path, str):
            return handle_from_path(path)
        raise ValueError('the request names no "handle" or "path"')

    async def _commit(self, message: Mapping[str, Any], lines: _Lines) -> None:
        try:
            handle = self._handle(message)
        except ValueError as exc:
            await lines.send({"event": "error", "error": str(exc)})
            return
        if self._publishing is None:
            await lines.send({"event": "error", "error": "this mount does not publish (read-only)"})
            return
        reason = message.get("reason")
        reason = reason if isinstance(reason, str) and reason.strip() else None
        log.info("control: commit %s", handle)
        latest: list[PublishProgress] = []
        changed = trio.Event()

        def listen(progress: PublishProgress) -> None:
            latest[:] = [progress]
            changed.set()

        async def forward() -> None:
            nonlocal changed
            while True:
                await changed.wait()
                changed = trio.Event()
                await lines.send({"event": "progress", **dataclasses.asdict(latest[0])})
                await trio.sleep(_PROGRESS_INTERVAL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            try:
                new_handle = await self._publishing.commit(handle, reason, listen)
            except NothingToPublishError as exc:
                outcome: dict[str, Any] = {
                    "event": "nothing",
                    "handle": exc.current_handle or handle,
                    "message": str(exc),
                }
            except PublishError as exc:
                outcome = {"event": "error", "error": str(exc), "handle": handle}
            else:
                outcome = {"event": "done", "handle": new_handle, "old_handle": handle}
            nursery.cancel_scope.cancel()
        if latest:
            await lines.send({"event": "progress", **dataclasses.asdict(latest[0])})
        await lines.send(outcome)

    async def _revert(self, message: Mapping[str, Any], lines: _Lines) -> None:
        if self.reverter is None:
            await lines.send({"event": "error", "error": "revert is not available on this mount"})
            return
        try:
            handle = self._handle(message)
            history_id = message.get("history_id")
            if not isinstance(history_id, int) or isinstance(history_id, bool):
                raise ValueError("history_id must be an integer")
            reason = message.get("reason")
            if not isinstance(reason, str) or not reason.strip():
                raise ValueError("a revert needs a reason")
        except ValueError as exc:
            await lines.send({"event": "error", "error": str(exc)})
            return
        log.info("control: revert %s to history id %d", handle, history_id)
        try:
            result = await self.reverter(handle, history_id, reason)
        except FsError as exc:
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            detail = str(exc) or os.strerror(exc.errno)
            await lines.send({"event": "error", "error": f"{detail} ({name})", "errno": exc.errno})
            return
        except ApiError as exc:
            await lines.send({"event": "error", "error": f"the data store refused: {exc}"})
            return
        answer: dict[str, Any] = {"event": "done", "handle": handle}
        if isinstance(result, int) and not isinstance(result, bool):
            answer["history_id"] = result
        await lines.send(answer)


# --- the client (blocking; used by the CLI in its own process) ------------------------------


def _candidate_sockets(mountpoint: Path) -> list[Path]:
    return [directory / _socket_name(mountpoint) for directory in runtime_dirs()]


def request(
    mountpoint: Path, message: Mapping[str, Any], *, timeout: float | None = 30.0
) -> Iterator[dict[str, Any]]:
    """Send one request to the mount's daemon; yield its answer lines as they come.

    ``timeout`` bounds each wait for a line (None waits for ever: a long commit streams
    progress, but a large part may take a while). Raises ``ControlUnavailable`` when no daemon
    listens.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        for path in _candidate_sockets(mountpoint):
            try:
                sock.connect(os.fspath(path))
                break
            except (FileNotFoundError, ConnectionRefusedError):
                continue
            except OSError as exc:
                raise ControlUnavailable(f"cannot connect to {path}: {exc.strerror}") from None
        else:
            raise ControlUnavailable(f"no provenafs daemon answers for {mountpoint}")
        sock.settimeout(timeout)
        sock.sendall((json.dumps(dict(message)) + "\n").encode())
        with sock.makefile("rb") as reader:
            for raw in reader:
                try:
                    answer = json.loads(raw)
                except json.JSONDecodeError:
                    raise ControlError("the daemon answered something that is not JSON") from None
                if isinstance(answer, dict):
                    yield answer
    except TimeoutError:
        raise ControlError("the daemon did not answer in time") from None
    except ConnectionResetError:
        raise ControlError("the daemon closed the connection") from None
    finally:
        sock.close()
