"""Tells the kernel to drop what it cached of nodes that changed: a queue and one sender task.

After a publish (new version, new ``@latest`` targets, new names) or a metadata edit, entries and
attributes the kernel holds are wrong. They are queued here and sent by a background task,
never from inside a request: the kernel may hold the very locks a notification needs, and a
request that notifies could deadlock against itself. The queue is bounded (a flood beyond
``_QUEUE_LIMIT`` is left to the kernel's short timeouts); a failed notification is logged and
never ends the mount. Without a notifier (unit tests, before ``start``) nothing is queued.

Trio thread only.
"""

from __future__ import annotations

import logging

import trio

from provenafs.core.inodes import ORPHAN_MARK, ROOT_INODE, InodeTable, NodeId, NodeKind
from provenafs.core.namespace import BY_NAME, LATEST_SUFFIX, SIDECAR_SUFFIX
from provenafs.core.types import DATASET_KINDS, KernelCacheNotifier, parent_path

__all__ = ["KernelCache"]

log = logging.getLogger(__name__)

_QUEUE_LIMIT = 10_000
_LINKS_AND_NAMES = (NodeKind.LATEST_LINK, NodeKind.BY_NAME_LINK, NodeKind.BY_NAME_DIR)


class KernelCache:
    """Queues kernel cache invalidations of nodes; ``run`` sends them."""

    def __init__(self, inodes: InodeTable) -> None:
        self._inodes = inodes
        self._queue: list[tuple[int, str | None]] = []
        self._ready: trio.Event | None = None

    def start(self, nursery: trio.Nursery, notifier: KernelCacheNotifier) -> None:
        """Send queued invalidations through *notifier* from a task of *nursery*."""
        self._ready = trio.Event()
        nursery.start_soon(self._run, notifier)

    def datasets_changed(self, *handles: str) -> None:
        """Kernel entries and attributes of the datasets *handles*, their names and links."""
        for handle in handles:
            for node, inode in self._inodes.nodes_of(handle):
                self._node_and_entry(node, inode)
        for node, inode in self._inodes.nodes_of_kinds(_LINKS_AND_NAMES):
            self._node_and_entry(node, inode)

    def metadata_changed(self, handle: str) -> None:
        """The sidecar and dataset dir of *handle* (size, mtime) and ``by-name/`` entries (the
        display name may have changed); the dataset's files are untouched."""
        for kind in (NodeKind.SIDECAR, NodeKind.DATASET_DIR):
            inode = self._inodes.find(NodeId(kind, handle))
            if inode is not None:
                self._invalidate(inode, None)
        for node, _inode in self._inodes.nodes_of_kinds((NodeKind.BY_NAME_LINK,)):
            parent_inode, name = self._parent_inode_and_name(node)
            if parent_inode is not None:
                self._invalidate(parent_inode, name)

    def attributes_changed(self, inode: int) -> None:
        """What the kernel holds of *inode* (a sidecar's size estimated from the list, say)."""
        self._invalidate(inode, None)

    def _node_and_entry(self, node: NodeId, inode: int) -> None:
        self._invalidate(inode, None)
        parent_inode, name = self._parent_inode_and_name(node)
        if parent_inode is not None:
            self._invalidate(parent_inode, name)

    def _parent_inode_and_name(self, node: NodeId) -> tuple[int | None, str]:
        prefix, _, suffix = node.handle.partition("/")
        if node.kind in DATASET_KINDS and node.path and not node.path.startswith(ORPHAN_MARK):
            parent, name = parent_path(node.path)
            kind = NodeKind.DATASET_SUBDIR if parent else NodeKind.DATASET_DIR
            return self._inodes.find(NodeId(kind, node.handle, parent)), name
        prefix_inode = self._inodes.find(NodeId(NodeKind.PREFIX_DIR, prefix))
        if node.kind is NodeKind.DATASET_DIR:
            return prefix_inode, suffix
        if node.kind is NodeKind.SIDECAR:
            return prefix_inode, suffix + SIDECAR_SUFFIX
        if node.kind is NodeKind.LATEST_LINK:
            return prefix_inode, suffix + LATEST_SUFFIX
        if node.kind is NodeKind.BY_NAME_LINK:
            return self._inodes.find(NodeId(NodeKind.BY_NAME_DIR)), node.path
        if node.kind is NodeKind.BY_NAME_DIR:
            return ROOT_INODE, BY_NAME
        return None, ""

    def _invalidate(self, inode: int, name: str | None) -> None:
        if self._ready is None:
            return  # no notifier (tests, or before start): kernel timeouts are short anyway
        if len(self._queue) < _QUEUE_LIMIT:
            self._queue.append((inode, name))
        self._ready.set()

    async def _run(self, notifier: KernelCacheNotifier) -> None:
        """Send queued invalidations from outside any request (until cancelled)."""
        while True:
            assert self._ready is not None
            await self._ready.wait()
            self._ready = trio.Event()
            batch, self._queue = self._queue, []
            for inode, name in dict.fromkeys(batch):
                try:
                    if name is None:
                        await notifier.invalidate_inode(inode)
                    else:
                        await notifier.invalidate_entry(inode, name)
                except Exception:  # noqa: BLE001 - a failed notification must not end the mount
                    log.warning("kernel cache invalidation of %d %r failed", inode, name)
