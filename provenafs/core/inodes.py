"""Inode numbers for the nodes of the tree, and the kernel's lookup counts on them.

A node's identity is a ``NodeId`` (its kind, the dataset handle it belongs to, and its path
inside that dataset or its name). While the kernel holds a reference (lookup count above zero)
the same ``NodeId`` keeps the same number; once the kernel forgets it the number is retired for
good, so a number is never reused for another node. Inode 1 is the root and is never forgotten.

Renames keep numbers: ``rename`` moves a node (and, for a directory, every node below it) to its
new path with its number and lookup count, and ``detach`` moves a node that is unlinked, or
replaced by a rename, to a private name (``ORPHAN_MARK`` + number) where open files still find
it, so a new node at the old path gets a new number.

This module does no I/O and knows nothing about datasets beyond the strings in ``NodeId``.
It is touched only from the trio thread.
"""

from __future__ import annotations

import dataclasses
import enum
import errno

from provenafs.errors import FsError

__all__ = ["ORPHAN_MARK", "ROOT_INODE", "InodeTable", "NodeId", "NodeKind"]

ROOT_INODE = 1
ORPHAN_MARK = "\x00orphan/"  # path prefix of detached nodes: no real path contains NUL


class NodeKind(enum.Enum):
    ROOT = "root"
    PREFIX_DIR = "prefix-dir"  # 10378.1/
    DATASET_DIR = "dataset-dir"  # 10378.1/1932274/
    DATASET_SUBDIR = "dataset-subdir"  # 10378.1/1932274/raw/
    DATASET_FILE = "dataset-file"  # 10378.1/1932274/raw/a.csv
    DATASET_LINK = "dataset-link"  # 10378.1/1932274/raw/latest.csv -> a.csv (a symlink)
    SIDECAR = "sidecar"  # 10378.1/1932274.json
    LATEST_LINK = "latest-link"  # 10378.1/1932274@latest
    BY_NAME_DIR = "by-name-dir"  # by-name/
    BY_NAME_LINK = "by-name-link"  # by-name/<display name>
    CONTROL_DIR = "control-dir"  # .provenafs/
    CONTROL_FILE = "control-file"  # .provenafs/status.json

    @property
    def is_directory(self) -> bool:
        return self in _DIRECTORY_KINDS

    @property
    def is_symlink(self) -> bool:
        return self in (NodeKind.LATEST_LINK, NodeKind.BY_NAME_LINK, NodeKind.DATASET_LINK)


_DIRECTORY_KINDS = frozenset(
    {
        NodeKind.ROOT,
        NodeKind.PREFIX_DIR,
        NodeKind.DATASET_DIR,
        NodeKind.DATASET_SUBDIR,
        NodeKind.BY_NAME_DIR,
        NodeKind.CONTROL_DIR,
    }
)


_DATASET_CONTENT_KINDS = (NodeKind.DATASET_FILE, NodeKind.DATASET_SUBDIR, NodeKind.DATASET_LINK)


@dataclasses.dataclass(frozen=True)
class NodeId:
    """What a node is, independent of its inode number.

    ``handle`` is the dataset handle (``10378.1/1932274``) for dataset nodes, the handle prefix
    for a prefix dir, and empty otherwise. ``path`` is the path relative to the dataset's root
    without leading or trailing ``/`` for subdirs and files, the entry name for by-name links
    and control files, and empty otherwise.
    """

    kind: NodeKind
    handle: str = ""
    path: str = ""


ROOT_NODE = NodeId(NodeKind.ROOT)


class InodeTable:
    """Maps ``NodeId`` to inode numbers and back, counting the kernel's references."""

    def __init__(self) -> None:
        self._next_inode = ROOT_INODE + 1
        self._inode_by_node: dict[NodeId, int] = {ROOT_NODE: ROOT_INODE}
        self._node_by_inode: dict[int, NodeId] = {ROOT_INODE: ROOT_NODE}
        self._lookups: dict[int, int] = {}
        self._retired = 0

    def inode_for(self, node: NodeId) -> int:
        """The inode number of *node*, assigning a new one if it has none (no count change)."""
        inode = self._inode_by_node.get(node)
        if inode is None:
            inode = self._next_inode
            self._next_inode += 1
            self._inode_by_node[node] = inode
            self._node_by_inode[inode] = node
        return inode

    def remember(self, node: NodeId) -> int:
        """The inode number of *node*, with its lookup count raised by one (a kernel reference)."""
        inode = self.inode_for(node)
        if inode != ROOT_INODE:
            self._lookups[inode] = self._lookups.get(inode, 0) + 1
        return inode

    def node(self, inode: int) -> NodeId:
        """The node behind *inode*; ``ENOENT`` for a number this table does not know (any more)."""
        try:
            return self._node_by_inode[inode]
        except KeyError:
            raise FsError(errno.ENOENT, f"unknown inode {inode}") from None

    def forget(self, inode: int, nlookup: int) -> None:
        """Drop *nlookup* kernel references; at zero the number is retired (never reused).

        Counts never go below zero: forgetting more than was remembered (or an unknown number)
        is ignored, because dropping a node the kernel still uses would be the worse error.
        """
        if inode == ROOT_INODE or inode not in self._node_by_inode:
            return
        remaining = self._lookups.get(inode, 0) - nlookup
        if remaining > 0:
            self._lookups[inode] = remaining
            return
        self._lookups.pop(inode, None)
        node = self._node_by_inode.pop(inode)
        del self._inode_by_node[node]
        self._retired += 1

    def find(self, node: NodeId) -> int | None:
        """The inode number of *node* if it has one (nothing is assigned)."""
        return self._inode_by_node.get(node)

    def detach(self, node: NodeId) -> NodeId | None:
        """Move *node* to a private orphan name, keeping its number; the new name, if known."""
        inode = self._inode_by_node.pop(node, None)
        if inode is None:
            return None
        orphan = dataclasses.replace(node, path=f"{ORPHAN_MARK}{inode}")
        self._inode_by_node[orphan] = inode
        self._node_by_inode[inode] = orphan
        return orphan

    def rename(self, handle: str, old_path: str, new_path: str) -> list[NodeId]:
        """Move the dataset nodes at and below *old_path* to *new_path*, keeping their numbers.

        Nodes already at the new paths are detached first (a rename over them). Returns the
        detached nodes' orphan names.
        """

        def moved(path: str) -> str | None:
            if path == old_path:
                return new_path
            if path.startswith(old_path + "/"):
                return new_path + path[len(old_path) :]
            return None

        sources = [
            (node, inode, target)
            for node, inode in self._inode_by_node.items()
            if node.handle == handle
            and node.kind in _DATASET_CONTENT_KINDS
            and (target := moved(node.path)) is not None
        ]
        orphans: list[NodeId] = []
        for node, _, target in sources:
            for kind in _DATASET_CONTENT_KINDS:
                occupant = NodeId(kind, handle, target)
                if occupant != node and occupant not in {s[0] for s in sources}:
                    orphan = self.detach(occupant)
                    if orphan is not None:
                        orphans.append(orphan)
        for node, _, _ in sources:
            del self._inode_by_node[node]
        for node, inode, target in sources:
            renamed = dataclasses.replace(node, path=target)
            self._inode_by_node[renamed] = inode
            self._node_by_inode[inode] = renamed
        return orphans

    def nodes_of(self, handle: str) -> list[tuple[NodeId, int]]:
        """Every numbered node of the dataset *handle* (for cache invalidation)."""
        return [
            (node, inode) for node, inode in self._inode_by_node.items() if node.handle == handle
        ]

    def nodes_of_kinds(self, kinds: tuple[NodeKind, ...]) -> list[tuple[NodeId, int]]:
        """Every numbered node of one of *kinds*."""
        return [(node, inode) for node, inode in self._inode_by_node.items() if node.kind in kinds]

    def __len__(self) -> int:
        return len(self._node_by_inode)

    def statistics(self) -> dict[str, int]:
        return {
            "live_inodes": len(self._node_by_inode),
            "referenced_inodes": len(self._lookups),
            "retired_inodes": self._retired,
            "next_inode": self._next_inode,
        }
