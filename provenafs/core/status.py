"""``.provenafs/status.json``: the mount's own state, as a JSON document read through the mount.

The document names the mount (source, mountpoint, modes), its drafts and publishes, open files,
and the counters of every layer (``statistics()`` of the catalog, the data store client, the
credential broker, the caches, the prefetchers, S3). Credentials appear only as their expiry
times, never themselves. A snapshot is taken at each open (reads are ``direct_io``), and its
size is what ``stat`` shows until something changes the state (``forget``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import provenafs

__all__ = ["StatusFile"]


class StatusFile:
    """Renders and remembers the status document; it holds no state of its own but a snapshot."""

    def __init__(self, sections: Callable[[], Mapping[str, Any]]) -> None:
        self._sections = sections
        self._snapshot: bytes | None = None

    def snapshot(self) -> bytes:
        """A fresh document, remembered as the one ``stat`` describes."""
        self._snapshot = self._render()
        return self._snapshot

    def size(self) -> int:
        """The size of the last snapshot (taking one if there is none)."""
        return len(self._snapshot if self._snapshot is not None else self.snapshot())

    def forget(self) -> None:
        """The state changed: the next ``stat`` or open takes a new snapshot."""
        self._snapshot = None

    def _render(self) -> bytes:
        status = {"version": provenafs.__version__, **self._sections()}
        text = json.dumps(status, sort_keys=True, indent=2, default=str)
        return (text + "\n").encode()


def statistics_of(component: object) -> dict[str, Any]:
    """``component.statistics()`` as a plain dict; ``{}`` for a component without any."""
    method = getattr(component, "statistics", None)
    return dict(method()) if callable(method) else {}
