"""The control socket's run and lineage requests, answered by the daemon.

``run-start`` opens a run whose root is the requesting process (its pid and uid come from the
socket's peer credentials, never from the request); ``run-finish`` ends it and streams progress
lines until the outcome (``done`` with the model run's handle, ``pending``, ``failed``,
``dry-run``); ``run-record`` registers reads taken from an access log; ``runs`` lists runs and
the drafts they hold; ``runs-retry`` wakes pending runs; ``lineage`` answers a dataset's lineage
graph without the items the user may not fetch, with their names.

The control socket already refuses every uid but the mounting user's. This module holds no run
logic (``runs``) and no tree logic (``core.lineage_nodes``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from provenafs.api import errors as api_errors
from provenafs.core.lineage_nodes import MAX_DEPTH, Lineage
from provenafs.errors import FsError
from provenafs.process.runs import RunManager

__all__ = ["RunControl"]

Send = Callable[[Mapping[str, Any]], Awaitable[None]]


class RunControl:
    """Dispatches the run and lineage operations of the control protocol."""

    ops = frozenset({"run-start", "run-finish", "run-record", "runs", "runs-retry", "lineage"})

    def __init__(self, manager: RunManager, lineage: Lineage) -> None:
        self._manager = manager
        self._lineage = lineage

    async def control(
        self, op: str, message: Mapping[str, Any], peer_pid: int, peer_uid: int, send: Send
    ) -> None:
        if op == "run-start":
            try:
                answer = await self._manager.start(peer_pid, peer_uid, message)
            except ValueError as exc:
                await send({"event": "error", "error": str(exc)})
                return
            await send({"event": "done", **answer})
        elif op == "run-finish":
            await self._manager.finish(peer_uid, message, send)
        elif op == "run-record":
            await self._manager.record(peer_uid, message, send)
        elif op == "runs":
            await send({"event": "done", **self._manager.status()})
        elif op == "runs-retry":
            await send({"event": "done", "woken": self._manager.retry_now()})
        elif op == "lineage":
            await self._lineage_graph(message, send)

    async def _lineage_graph(self, message: Mapping[str, Any], send: Send) -> None:
        handle = message.get("handle")
        depth = message.get("depth")
        if not isinstance(handle, str) or not handle:
            await send({"event": "error", "error": "the request names no handle"})
            return
        if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= MAX_DEPTH:
            await send({"event": "error", "error": f"depth is a number from 1 to {MAX_DEPTH}"})
            return
        try:
            graph, items = await self._lineage.graph(
                handle, down=bool(message.get("down")), depth=depth
            )
        except (FsError, api_errors.ApiError) as exc:
            await send({"event": "error", "error": str(exc)})
            return
        nodes = [
            {
                "id": node.id,
                "subtype": node.subtype,
                "name": items[node.id].display_name if node.id in items else node.id,
            }
            for node in graph.nodes
        ]
        links = [{"source": e.source, "target": e.target, "type": e.type} for e in graph.links]
        await send({"event": "done", "start": handle, "nodes": nodes, "links": links})
