"""Sidecars opened for writing: the core's glue to ``provenafs.write.metadata_edit``.

A ``<handle>.json`` sidecar opened for writing gets a ``SidecarEditHandle`` (a buffer committed
as one metadata edit at flush); a truncate without an open writer is a whole new document,
committed at once; the ``user.provena.reason`` attribute names the reason of the next edit.
While an edit is unsaved, the sidecar's size is the buffer's. After an edit or a revert the
kernel drops what it cached of the sidecar, the dataset dir and ``by-name/``.

Refusals are ``RefusalPolicy.require_sidecar_writable``'s. Trio thread only.
"""

from __future__ import annotations

import errno
import os

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.handles import HandleTable, SidecarEditHandle, commit_sidecar
from provenafs.core.inodes import NodeId
from provenafs.core.kernel_cache import KernelCache
from provenafs.core.refusals import RefusalPolicy
from provenafs.core.sidecar_render import SidecarRenderer
from provenafs.core.status import StatusFile
from provenafs.core.types import Caller, OpenFile
from provenafs.errors import FsError
from provenafs.write.metadata_edit import REASON_XATTR, SidecarBuffer, parse_reason

__all__ = ["SidecarEdits"]


class SidecarEdits:
    """Opens sidecars for writing, truncates them, and sets the reason of the next edit."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        policy: RefusalPolicy,
        handles: HandleTable,
        renderer: SidecarRenderer,
        kernel_cache: KernelCache,
        status: StatusFile,
    ) -> None:
        self._catalog = catalog
        self._policy = policy
        self._handles = handles
        self._renderer = renderer
        self._kernel_cache = kernel_cache
        self._status = status

    def size(self, record: DatasetRecord) -> int:
        """The record's sidecar size, or that of the newest unsaved edit of it."""
        for edit in reversed(self._handles.sidecar_edits(record.handle)):
            if edit.buffer.unsaved:
                return len(edit.buffer)
        return self._renderer.size(record)

    async def open(self, node: NodeId, flags: int, ctx: Caller) -> OpenFile:
        """Open *node*'s sidecar for writing: a buffer holding the document (or nothing)."""
        editor = await self._policy.require_sidecar_writable(node.handle)
        truncate = bool(flags & os.O_TRUNC)
        initial = (
            b"" if truncate else self._renderer.render(await self._catalog.record(node.handle))
        )
        buffer = SidecarBuffer(node.handle, initial, replaced=truncate)
        fh = self._handles.add(SidecarEditHandle(node, buffer, editor, opened_by=ctx))
        return OpenFile(fh, keep_cache=False, direct_io=True)

    async def truncate(self, node: NodeId, size: int, fh: int | None) -> None:
        """``ftruncate``/``truncate`` of a sidecar: resize its open write buffer(s)."""
        editor = await self._policy.require_sidecar_writable(node.handle)
        through = self._handles.find(fh) if fh is not None else None
        edits = (
            [through]
            if isinstance(through, SidecarEditHandle)
            else self._handles.sidecar_edits(node.handle)
        )
        if not edits:
            # A truncate with no writer open is a whole new (cut) document: commit it now.
            record = await self._catalog.record(node.handle)
            cut = SidecarBuffer(node.handle, self._renderer.render(record))
            cut.truncate(size)
            await commit_sidecar(editor, cut)
        for edit in edits:
            edit.buffer.truncate(size)

    async def set_reason(self, node: NodeId, name: str, value: bytes | None) -> None:
        """Set (or with ``None`` remove) the reason of the next edit of a sidecar."""
        if name != REASON_XATTR:
            raise FsError(errno.ENOTSUP, f"sidecars accept only the {REASON_XATTR} attribute")
        editor = await self._policy.require_sidecar_writable(node.handle)
        if value is None and editor.reason_for(node.handle) is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        editor.set_reason(node.handle, None if value is None else parse_reason(value))

    async def metadata_changed(self, handle: str) -> None:
        """After an edit or a revert (the editor has made the catalog forget *handle*)."""
        self._status.forget()
        self._kernel_cache.metadata_changed(handle)
