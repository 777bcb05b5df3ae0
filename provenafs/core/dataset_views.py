"""Generated files beside a dataset: ``<n>.locks.json``, ``<n>.access.json`` and ``<n>.cff``.

- ``<n>.locks.json``: ``{"handle", "locked", "history": [...]}``, the lock history (oldest
  first: action, username, email, reason, timestamp and ISO ``time``). Read-only.
- ``<n>.access.json``: the access settings and their inverse view (``write.access_edit``);
  only an item ``admin`` may read them (others see mode ``---`` and get ``EACCES``), and an
  admin writes the file to change them, committed at ``close()`` like a sidecar edit.
- ``<n>.cff``: a CITATION.cff made from the record (``core.citation``). Read-only.

They are found by lookup only: a prefix directory does not list them, so ``ls -l`` of a prefix
costs no call per dataset for them. Their bytes are made on the first ``stat`` or ``open`` and
kept ``ttl`` seconds (the record's TTL), or until the dataset changes through this mount;
reads are ``direct_io`` (never cut at an older size). JSON is written like a sidecar (sorted
keys, two-space indent, a final newline). Trio thread only.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable

import cachetools

from provenafs.api import errors as api_errors
from provenafs.api.models import DatasetRecord, RegistryItem
from provenafs.cache.single_flight import SingleFlight
from provenafs.core.catalog import Catalog
from provenafs.core.citation import citation_cff, referenced_ids
from provenafs.core.handles import HandleTable, SidecarEditHandle, SnapshotHandle
from provenafs.core.inodes import NodeId
from provenafs.core.services import RegistryServices
from provenafs.core.sidecar_render import json_document
from provenafs.core.types import FILE_MODE, FILE_MODE_WRITABLE, Caller, OpenFile, is_writing
from provenafs.errors import FsError
from provenafs.write.access_edit import AccessEditor, access_document
from provenafs.write.metadata_edit import SidecarBuffer

__all__ = ["VIEW_SUFFIXES", "DatasetViews", "dataset_view_of"]

log = logging.getLogger(__name__)

LOCKS, ACCESS, CITATION = "locks", "access", "citation"
VIEW_SUFFIXES = {".locks.json": LOCKS, ".access.json": ACCESS, ".cff": CITATION}
_NAMES_TTL = 600.0  # People's and organisations' names, for citations


def dataset_view_of(name: str) -> tuple[str, str] | None:
    """``("1932274", "locks")`` for ``1932274.locks.json``; None for any other name."""
    for ending, view in VIEW_SUFFIXES.items():
        if name.endswith(ending) and len(name) > len(ending):
            return name.removesuffix(ending), view
    return None


def _iso(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat().replace("+00:00", "Z")


class DatasetViews:
    """Makes, caches and opens the generated files of datasets (module docstring)."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        services: RegistryServices,
        handles: HandleTable,
        read_only: bool,
        on_changed: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
        ttl: float = 30.0,
    ) -> None:
        self._catalog = catalog
        self._services = services
        self._handles = handles
        self._read_only = read_only
        self._on_changed = on_changed
        self._bytes: cachetools.TTLCache[tuple[str, str], bytes] = cachetools.TTLCache(
            256, ttl, timer=clock
        )
        self._names: cachetools.TTLCache[str, RegistryItem | None] = cachetools.TTLCache(
            1024, _NAMES_TTL, timer=clock
        )
        self._flights: SingleFlight[tuple[str, str], bytes] = SingleFlight()
        self.access_editor = AccessEditor(services, on_changed=self._access_changed)

    # --- attributes ----------------------------------------------------------------------

    def mode(self, node: NodeId, record: DatasetRecord) -> int:
        """Permission bits: the access file is ``rw-``/``r--`` for an admin, ``---`` else."""
        if node.path != ACCESS:
            return FILE_MODE
        if "admin" not in (record.roles or ()):
            return 0
        return FILE_MODE if self._read_only else FILE_MODE_WRITABLE

    def editable(self, node: NodeId, record: DatasetRecord) -> bool:
        return bool(self.mode(node, record) & stat.S_IWUSR)

    async def size(self, node: NodeId, record: DatasetRecord) -> int:
        """The file's length: an unsaved edit's, else the made bytes' (0 where unreadable)."""
        for edit in reversed(self._handles.document_edits(node)):
            if edit.buffer.unsaved:
                return len(edit.buffer)
        if not self.mode(node, record):
            return 0
        return len(await self.render(node))

    # --- contents ------------------------------------------------------------------------

    async def render(self, node: NodeId) -> bytes:
        key = (node.handle, node.path)
        cached = self._bytes.get(key)
        if cached is not None:
            return cached
        return await self._flights.run(key, lambda: self._render(node))

    async def _render(self, node: NodeId) -> bytes:
        record = await self._catalog.record(node.handle)
        if node.path == LOCKS:
            events = await self._services.lock_history(node.handle)
            history = [
                {**dataclasses.asdict(event), "time": _iso(event.timestamp)} for event in events
            ]
            data = json_document(
                {"handle": node.handle, "locked": bool(record.locked), "history": history}
            )
        elif node.path == ACCESS:
            settings = await self._services.access_settings(node.handle)
            data = json_document(access_document(settings))
        else:
            items = {}
            for item_id in referenced_ids(record):
                found = await self._name(item_id)
                if found is not None:
                    items[item_id] = found
            data = citation_cff(record, items)
        self._bytes[(node.handle, node.path)] = data
        return data

    async def _name(self, item_id: str) -> RegistryItem | None:
        if item_id in self._names:
            return self._names[item_id]
        try:
            found: RegistryItem | None = await self._services.fetch_item(item_id)
        except (api_errors.NotFoundError, api_errors.PermissionDeniedError) as exc:
            log.debug("citation: %s cannot be named: %s", item_id, exc)
            found = None
        self._names[item_id] = found
        return found

    # --- open ----------------------------------------------------------------------------

    async def open(self, node: NodeId, flags: int, ctx: Caller) -> OpenFile:
        record = await self._catalog.record(node.handle)
        if is_writing(flags):
            if self._read_only:
                raise FsError(errno.EROFS, "the mount is read-only (-o ro)")
            if not self.editable(node, record):
                what = "needs item role admin" if node.path == ACCESS else "is generated"
                raise FsError(errno.EACCES, f"{node.handle} {node.path}: {what}")
            truncate = bool(flags & os.O_TRUNC)
            initial = b"" if truncate else await self.render(node)
            buffer = SidecarBuffer(node.handle, initial, replaced=truncate)
            handle = SidecarEditHandle(node, buffer, self.access_editor, opened_by=ctx)
            return OpenFile(self._handles.add(handle), keep_cache=False, direct_io=True)
        if not self.mode(node, record):
            raise FsError(errno.EACCES, f"the access settings of {node.handle} need item admin")
        data = await self.render(node)
        fh = self._handles.add(SnapshotHandle(node, data, opened_by=ctx))
        return OpenFile(fh, keep_cache=False, direct_io=True)

    async def truncate(self, node: NodeId, size: int, fh: int | None) -> None:
        """``ftruncate`` of an access file open for writing resizes its buffer."""
        through = self._handles.find(fh) if fh is not None else None
        if not isinstance(through, SidecarEditHandle) or through.node != node:
            record = await self._catalog.record(node.handle)
            if self._read_only:
                raise FsError(errno.EROFS, "the mount is read-only (-o ro)")
            raise FsError(
                errno.EACCES if not self.editable(node, record) else errno.EINVAL,
                "open the file for writing (O_TRUNC) to replace it",
            )
        through.buffer.truncate(size)

    # --- changes -------------------------------------------------------------------------

    def forget(self, handle: str) -> None:
        """Forget what was made of *handle* (it changed through this mount)."""
        for key in [key for key in self._bytes if key[0] == handle]:
            self._bytes.pop(key, None)

    async def _access_changed(self, handle: str) -> None:
        self.forget(handle)
        await self._on_changed(handle)
