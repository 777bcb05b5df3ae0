"""Inode numbers for the nodes of the tree, and the kernel's lookup counts on them.

A node's identity is a ``NodeId`` (its kind, the dataset handle it belongs to, and its path
inside that dataset or its name). While the kernel holds a reference (lookup count above zero)
the same ``NodeId`` keeps the same number; once the kernel forgets it the number is retired, so
a number is never reused for another node (an entry of a listing block may get its own number
back). Inode 1 is the root and is never forgotten.

Renames keep numbers: ``rename`` moves a node (and, for a directory, every node below it) to its
new path with its number and lookup count, and ``detach`` moves a node that is unlinked, or
replaced by a rename, to a private name (``ORPHAN_MARK`` + number) where open files still find
it, so a new node at the old path gets a new number.

The entries of a listed dataset directory are numbered as one *block* (``listing_block``): a
run of consecutive numbers over the directory's sorted names, with one lookup count per entry
in an array, so that ``readdir`` of 200,000 objects counts lookups without a ``NodeId`` or a
dictionary entry per object (about 13 bytes and the name per entry instead of about 300).
A block entry is the same node as the ``NodeId`` its parent and name make: ``remember`` and
``find`` of that ``NodeId`` answer the block's number, and ``node`` of the number builds the
``NodeId`` back. Each directory has at most one block; an entry that moves (a rename, a
``detach``) or a block replaced by a listing with other names hands its referenced entries over
to the per-node tables first, keeping their numbers; a block whose entries the kernel has all
forgotten is dropped.

This module does no I/O and knows nothing about datasets beyond the strings in ``NodeId``.
It is touched only from the trio thread.
"""

from __future__ import annotations

import array
import bisect
import dataclasses
import enum
import errno
from collections.abc import Iterator, Sequence

from provenafs.errors import FsError

__all__ = ["ORPHAN_MARK", "ROOT_INODE", "InodeTable", "ListingBlock", "NodeId", "NodeKind"]

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
    LINEAGE_DIR = "lineage-dir"  # 10378.1/1932274@inputs/ (path: inputs, derived, runs)
    LINEAGE_LINK = "lineage-link"  # 10378.1/1932274@inputs/<name> (path: inputs/<name>)
    LINEAGE_FILE = "lineage-file"  # 10378.1/1932274.lineage.json (path ""), @runs/<run>.json
    FACET_DIR = "facet-dir"  # mine/, by-keyword/, by-keyword/reef/, search/<q>/, reviews/
    FACET_LINK = "facet-link"  # mine/<name> -> ../10378.1/1932274 (handle: the target)
    DATASET_VIEW = "dataset-view"  # 10378.1/1932274.locks.json, .access.json, .cff

    @property
    def is_directory(self) -> bool:
        return self in _DIRECTORY_KINDS

    @property
    def is_symlink(self) -> bool:
        return self in (
            NodeKind.LATEST_LINK,
            NodeKind.BY_NAME_LINK,
            NodeKind.LINEAGE_LINK,
            NodeKind.FACET_LINK,
            NodeKind.DATASET_LINK,
        )


_DIRECTORY_KINDS = frozenset(
    {
        NodeKind.ROOT,
        NodeKind.PREFIX_DIR,
        NodeKind.DATASET_DIR,
        NodeKind.DATASET_SUBDIR,
        NodeKind.BY_NAME_DIR,
        NodeKind.CONTROL_DIR,
        NodeKind.LINEAGE_DIR,
        NodeKind.FACET_DIR,
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


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _at_or_below(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


def parent_of(node: NodeId) -> NodeId | None:
    """The directory node holding a dataset file or subdirectory (None for other kinds)."""
    if node.kind not in _DATASET_CONTENT_KINDS or node.path.startswith(ORPHAN_MARK):
        return None
    parent, _, _ = node.path.rpartition("/")
    kind = NodeKind.DATASET_SUBDIR if parent else NodeKind.DATASET_DIR
    return NodeId(kind, node.handle, parent)


class ListingBlock:
    """Consecutive inode numbers for the entries of one listing of a dataset directory.

    Made by ``InodeTable.listing_block``; ``InodeTable.remember_entry(block, index)`` counts a
    kernel lookup of entry *index*.
    """

    __slots__ = ("aliases", "counts", "dirs", "dropped", "first", "live", "names", "parent")

    def __init__(self, parent: NodeId, first: int, names: Sequence[str], dirs: bytes) -> None:
        self.parent = parent
        self.first = first
        self.names = names  # sorted
        self.dirs = dirs  # 1 where the entry is a directory
        self.counts = array.array("L", bytes(8 * len(names)))  # kernel lookups per entry
        self.live = 0  # entries with a count above zero
        # Entries numbered in the per-node tables instead (they had a number before the block
        # was made, or moved out of it since): index -> that number, or 0 once moved out.
        self.aliases: dict[int, int] = {}
        self.dropped = False

    def node(self, index: int) -> NodeId:
        kind = NodeKind.DATASET_SUBDIR if self.dirs[index] else NodeKind.DATASET_FILE
        return NodeId(kind, self.parent.handle, _join(self.parent.path, self.names[index]))

    def index_of(self, name: str) -> int | None:
        index = bisect.bisect_left(self.names, name)
        if index < len(self.names) and self.names[index] == name:
            return index
        return None


class InodeTable:
    """Maps ``NodeId`` to inode numbers and back, counting the kernel's references."""

    def __init__(self) -> None:
        self._next_inode = ROOT_INODE + 1
        self._inode_by_node: dict[NodeId, int] = {ROOT_NODE: ROOT_INODE}
        self._node_by_inode: dict[int, NodeId] = {ROOT_INODE: ROOT_NODE}
        self._lookups: dict[int, int] = {}
        self._retired = 0
        # Listing blocks, by their first number (ascending) and by their directory.
        self._blocks: list[ListingBlock] = []
        self._firsts: list[int] = []
        self._block_of: dict[NodeId, ListingBlock] = {}
        # Names of dataset entries numbered in the per-node tables, by their directory (so a
        # new block knows which of its names already have a number).
        self._named_children: dict[NodeId, set[str]] = {}

    # --- per-node numbers ------------------------------------------------------------------

    def inode_for(self, node: NodeId) -> int:
        """The inode number of *node*, assigning a new one if it has none (no count change)."""
        inode = self.find(node)
        if inode is None:
            inode = self._next_inode
            self._next_inode += 1
            self._add(node, inode)
        return inode

    def remember(self, node: NodeId) -> int:
        """The inode number of *node*, with its lookup count raised by one (a kernel reference)."""
        inode = self._inode_by_node.get(node)
        if inode is None:
            located = self._in_block(node)
            if located is not None:
                return self._count_entry(*located)
            inode = self.inode_for(node)
        if inode != ROOT_INODE:
            self._lookups[inode] = self._lookups.get(inode, 0) + 1
        return inode

    def node(self, inode: int) -> NodeId:
        """The node behind *inode*; ``ENOENT`` for a number this table does not know (any more)."""
        node = self._node_by_inode.get(inode)
        if node is not None:
            return node
        located = self._block_entry(inode)
        if located is None:
            raise FsError(errno.ENOENT, f"unknown inode {inode}")
        block, index = located
        return block.node(index)

    def forget(self, inode: int, nlookup: int) -> None:
        """Drop *nlookup* kernel references; at zero the number is retired (never reused).

        Counts never go below zero: forgetting more than was remembered (or an unknown number)
        is ignored, because dropping a node the kernel still uses would be the worse error.
        """
        if inode == ROOT_INODE:
            return
        if inode not in self._node_by_inode:
            located = self._block_entry(inode)
            if located is not None:
                self._forget_entry(*located, nlookup)
            return
        remaining = self._lookups.get(inode, 0) - nlookup
        if remaining > 0:
            self._lookups[inode] = remaining
            return
        self._lookups.pop(inode, None)
        self._remove(self._node_by_inode[inode])
        self._retired += 1

    def find(self, node: NodeId) -> int | None:
        """The inode number of *node* if it has one (nothing is assigned)."""
        inode = self._inode_by_node.get(node)
        if inode is not None:
            return inode
        located = self._in_block(node)
        if located is None or not located[0].counts[located[1]]:
            return None
        return located[0].first + located[1]

    def detach(self, node: NodeId) -> NodeId | None:
        """Move *node* to a private orphan name, keeping its number; the new name, if known."""
        self._move_out(node)
        inode = self._inode_by_node.get(node)
        if inode is None:
            return None
        self._remove(node)
        orphan = dataclasses.replace(node, path=f"{ORPHAN_MARK}{inode}")
        self._add(orphan, inode)
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

        # Block entries at or below either path leave their blocks first: their paths change.
        for block in list(self._blocks):
            if block.parent.handle == handle and (
                moved(block.parent.path) is not None or _at_or_below(block.parent.path, new_path)
            ):
                self._hand_over(block)
        for path in (old_path, new_path):
            for kind in _DATASET_CONTENT_KINDS:
                self._move_out(NodeId(kind, handle, path))
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
            self._remove(node)
        for node, inode, target in sources:
            self._add(dataclasses.replace(node, path=target), inode)
        return orphans

    def nodes_of(self, handle: str) -> list[tuple[NodeId, int]]:
        """Every numbered node of the dataset *handle* (for cache invalidation)."""
        return [(node, inode) for node, inode in self._all_nodes() if node.handle == handle]

    def nodes_of_kinds(self, kinds: tuple[NodeKind, ...]) -> list[tuple[NodeId, int]]:
        """Every numbered node of one of *kinds*."""
        return [(node, inode) for node, inode in self._all_nodes() if node.kind in kinds]

    def __len__(self) -> int:
        return len(self._node_by_inode) + sum(block.live for block in self._blocks)

    def statistics(self) -> dict[str, int]:
        block_inodes = sum(block.live for block in self._blocks)
        return {
            "live_inodes": len(self._node_by_inode) + block_inodes,
            "referenced_inodes": len(self._lookups) + block_inodes,
            "block_inodes": block_inodes,
            "listing_blocks": len(self._blocks),
            "retired_inodes": self._retired,
            "next_inode": self._next_inode,
        }

    # --- listing blocks --------------------------------------------------------------------

    def listing_block(self, parent: NodeId, names: Sequence[str], dirs: bytes) -> ListingBlock:
        """The block numbering the entries *names* (sorted; ``dirs[i]`` 1 for a directory) of
        the dataset directory *parent*: its current block if that lists the same entries, else
        a new one (the old one's referenced entries keep their numbers in the per-node tables).
        """
        current = self._block_of.get(parent)
        if current is not None:
            if current.names == names and current.dirs == dirs:
                return current
            self._hand_over(current)
        block = ListingBlock(parent, self._next_inode, names, dirs)
        self._next_inode += len(names)
        for name in self._named_children.get(parent, ()):
            index = block.index_of(name)
            if index is not None:
                inode = self._inode_by_node.get(block.node(index))
                block.aliases[index] = 0 if inode is None else inode
        self._blocks.append(block)
        self._firsts.append(block.first)
        self._block_of[parent] = block
        return block

    def remember_entry(self, block: ListingBlock, index: int) -> int:
        """Count one kernel lookup of entry *index* of *block*; its inode number."""
        if block.dropped or index in block.aliases:
            return self.remember(block.node(index))
        return self._count_entry(block, index)

    def _count_entry(self, block: ListingBlock, index: int) -> int:
        if not block.counts[index]:
            block.live += 1
        block.counts[index] += 1
        return block.first + index

    def _forget_entry(self, block: ListingBlock, index: int, nlookup: int) -> None:
        count = block.counts[index]
        if not count:
            return
        if count > nlookup:
            block.counts[index] = count - nlookup
            return
        block.counts[index] = 0
        block.live -= 1
        self._retired += 1
        if not block.live:
            self._drop(block)

    def _in_block(self, node: NodeId) -> tuple[ListingBlock, int] | None:
        """Where *node* is numbered in its directory's block, if it is."""
        parent = parent_of(node)
        if parent is None:
            return None
        block = self._block_of.get(parent)
        if block is None:
            return None
        index = block.index_of(node.path.rpartition("/")[2])
        if index is None or index in block.aliases:
            return None
        if bool(block.dirs[index]) != (node.kind is NodeKind.DATASET_SUBDIR):
            return None
        return block, index

    def _block_entry(self, inode: int) -> tuple[ListingBlock, int] | None:
        """The referenced block entry numbered *inode*, if any."""
        position = bisect.bisect_right(self._firsts, inode) - 1
        if position < 0:
            return None
        block = self._blocks[position]
        index = inode - block.first
        if index >= len(block.names) or not block.counts[index] or index in block.aliases:
            return None
        return block, index

    def _move_out(self, node: NodeId) -> None:
        """Number *node* in the per-node tables if a block numbers it (same number, same count)."""
        located = self._in_block(node)
        if located is None:
            return
        block, index = located
        count = block.counts[index]
        block.aliases[index] = 0
        if count:
            inode = block.first + index
            block.counts[index] = 0
            block.live -= 1
            self._add(node, inode)
            self._lookups[inode] = count
            if not block.live:
                self._drop(block)

    def _hand_over(self, block: ListingBlock) -> None:
        """Move every referenced entry of *block* to the per-node tables, then drop it."""
        for index in range(len(block.names)):
            if block.counts[index] and index not in block.aliases:
                inode = block.first + index
                self._add(block.node(index), inode)
                self._lookups[inode] = block.counts[index]
                block.counts[index] = 0
        block.live = 0
        self._drop(block)

    def _drop(self, block: ListingBlock) -> None:
        if block.dropped:
            return
        block.dropped = True
        position = bisect.bisect_left(self._firsts, block.first)
        del self._firsts[position]
        del self._blocks[position]
        if self._block_of.get(block.parent) is block:
            del self._block_of[block.parent]

    # --- the per-node tables ----------------------------------------------------------------

    def _add(self, node: NodeId, inode: int) -> None:
        self._inode_by_node[node] = inode
        self._node_by_inode[inode] = node
        parent = parent_of(node)
        if parent is not None:
            name = node.path.rpartition("/")[2]
            self._named_children.setdefault(parent, set()).add(name)
            block = self._block_of.get(parent)
            index = None if block is None else block.index_of(name)
            if block is not None and index is not None and index not in block.aliases:
                block.aliases[index] = inode  # the name is numbered here from now on

    def _remove(self, node: NodeId) -> None:
        inode = self._inode_by_node.pop(node)
        del self._node_by_inode[inode]
        parent = parent_of(node)
        if parent is not None:
            names = self._named_children.get(parent)
            if names is not None:
                names.discard(node.path.rpartition("/")[2])
                if not names:
                    del self._named_children[parent]

    def _all_nodes(self) -> Iterator[tuple[NodeId, int]]:
        yield from list(self._inode_by_node.items())
        for block in list(self._blocks):
            for index in range(len(block.names)):
                if block.counts[index] and index not in block.aliases:
                    yield block.node(index), block.first + index
