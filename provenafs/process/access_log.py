"""``-o access_log=PATH``: one JSON line per open of a dataset file, for jobs no run wraps.

Each line: ``{"time", "pid", "uid", "comm", "handle", "path", "etag", "mode", "run"}`` where
``handle`` is the exact version the name resolved to (through ``@latest``, ``by-name`` or any
other alias), ``etag`` the object's (null for a draft's own bytes), ``mode`` ``read`` or
``write``, and ``run`` the run the open was attributed to (or null). ``provenafs record`` turns a
slice of it into a model run. ``read_access_log`` parses it back.

The file is created 0600 (an existing one is made 0600; a symlink there is refused) and
appended with one ``write`` per line (no fsync: a log, not a journal). Trio thread; a failing
write is logged once, never raised into the open that caused it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["AccessLog", "LoggedOpen", "read_access_log"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoggedOpen:
    """One line of an access log."""

    time: float
    pid: int
    uid: int
    comm: str
    handle: str
    path: str
    etag: str | None
    mode: str  # "read" or "write"
    run: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class AccessLog:
    """The append-only access log of one mount."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link: whatever it points at would be appended to and made 0600
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        self._fd = os.open(path, flags, 0o600)
        os.fchmod(self._fd, 0o600)
        self._failed = False

    def write(self, entry: LoggedOpen) -> None:
        line = (json.dumps(entry.to_json(), separators=(",", ":")) + "\n").encode()
        try:
            os.write(self._fd, line)
        except OSError as exc:
            if not self._failed:
                log.error("access log %s: %s (further failures are not logged)", self.path, exc)
                self._failed = True

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._fd)


def read_access_log(path: Path) -> Iterator[LoggedOpen]:
    """The lines of an access log, skipping lines that are not entries (a torn last one)."""
    with path.open("rb") as file:
        for raw in file:
            try:
                data = json.loads(raw)
                yield LoggedOpen(
                    time=float(data["time"]),
                    pid=int(data["pid"]),
                    uid=int(data["uid"]),
                    comm=str(data["comm"]),
                    handle=str(data["handle"]),
                    path=str(data["path"]),
                    etag=None if data.get("etag") is None else str(data["etag"]),
                    mode=str(data["mode"]),
                    run=None if data.get("run") is None else str(data["run"]),
                )
            except (ValueError, KeyError, TypeError):
                continue
