"""The inode table against a plain model: listing blocks number exactly like per-node entries.

Whatever mix of listings (``listing_block`` + ``remember_entry``), lookups (``remember``),
forgets, detaches and renames happens, every node the kernel references has one number, that
number names that node only, ``find`` and ``node`` agree with it, and counts are the kernel's.
"""

from __future__ import annotations

import tracemalloc

import hypothesis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from provenafs.core.inodes import ORPHAN_MARK, InodeTable, NodeId, NodeKind

HANDLE = "10378.1/1"
# The tree the rules pick from: directory path -> its possible entries (name -> is a directory).
TREE: dict[str, dict[str, bool]] = {
    "": {"a": True, "b": True, "n.csv": False, "m.csv": False},
    "a": {"x": False, "y": False, "z": False, "c": True},
    "b": {"x": False, "y": False},
    "a/c": {"w": False},
}


def dir_node(path: str) -> NodeId:
    return NodeId(NodeKind.DATASET_SUBDIR if path else NodeKind.DATASET_DIR, HANDLE, path)


def child(directory: str, name: str) -> NodeId:
    path = f"{directory}/{name}" if directory else name
    kind = NodeKind.DATASET_SUBDIR if TREE[directory][name] else NodeKind.DATASET_FILE
    return NodeId(kind, HANDLE, path)


class InodeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.table = InodeTable()
        self.live: dict[NodeId, tuple[int, int]] = {}  # node -> (inode, count)
        self.named: dict[int, NodeId] = {}  # every number ever handed out -> its node

    def _counted(self, node: NodeId, inode: int) -> None:
        assert self.named.setdefault(inode, node) == node or node.path.startswith(ORPHAN_MARK), (
            f"{inode} named {self.named[inode]} before, now {node}"
        )
        known = self.live.get(node)
        if known is not None:
            assert known[0] == inode, f"{node} was {known[0]}, now {inode}"
        self.live[node] = (inode, (known[1] if known else 0) + 1)

    @rule(
        directory=st.sampled_from(sorted(TREE)),
        data=st.data(),
    )
    def list_directory(self, directory: str, data: st.DataObject) -> None:
        present = data.draw(st.sets(st.sampled_from(sorted(TREE[directory]))))
        names = sorted(present)
        dirs = bytes(TREE[directory][name] for name in names)
        block = self.table.listing_block(dir_node(directory), names, dirs)
        taken = data.draw(st.lists(st.sampled_from(range(len(names))), max_size=4)) if names else []
        for index in taken:
            inode = self.table.remember_entry(block, index)
            self._counted(child(directory, names[index]), inode)

    @rule(directory=st.sampled_from(sorted(TREE)), data=st.data())
    def look_up(self, directory: str, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(TREE[directory])))
        node = child(directory, name)
        self._counted(node, self.table.remember(node))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), times=st.integers(1, 3))
    def forget(self, data: st.DataObject, times: int) -> None:
        node = data.draw(st.sampled_from(sorted(self.live, key=repr)))
        inode, count = self.live[node]
        self.table.forget(inode, times)
        if count > times:
            self.live[node] = (inode, count - times)
        else:
            del self.live[node]

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def detach(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(sorted(self.live, key=repr)))
        if node.path.startswith(ORPHAN_MARK):
            return
        orphan = self.table.detach(node)
        assert orphan is not None
        inode, count = self.live.pop(node)
        self.live[orphan] = (inode, count)
        self.named[inode] = orphan

    @rule(
        move=st.sampled_from(
            [("a/x", "b/x"), ("b/y", "a/y"), ("n.csv", "m.csv"), ("a", "b"), ("b", "a")]
        )
    )
    def rename(self, move: tuple[str, str]) -> None:
        """Nodes at and below the old path move; a node at a path one of them moves to is
        replaced (it keeps its number under an orphan name); nothing else changes."""
        old, new = move
        self.table.rename(HANDLE, old, new)
        sources = {
            node: new + node.path[len(old) :]
            for node in self.live
            if node.path == old or node.path.startswith(old + "/")
        }
        for node, target in sources.items():
            for kind in (NodeKind.DATASET_FILE, NodeKind.DATASET_SUBDIR):
                occupant = NodeId(kind, HANDLE, target)
                if occupant != node and occupant not in sources and occupant in self.live:
                    inode, count = self.live.pop(occupant)
                    orphan = NodeId(kind, HANDLE, f"{ORPHAN_MARK}{inode}")
                    self.live[orphan] = (inode, count)
                    self.named[inode] = orphan
        moved = {}
        for node, target in sources.items():
            inode, count = self.live.pop(node)
            renamed = NodeId(node.kind, HANDLE, target)
            moved[renamed] = (inode, count)
            self.named[inode] = renamed
        self.live.update(moved)

    @invariant()
    def agrees_with_the_model(self) -> None:
        inodes = [inode for inode, _ in self.live.values()]
        assert len(inodes) == len(set(inodes)), "two live nodes share a number"
        for node, (inode, _) in self.live.items():
            assert self.table.node(inode) == node
            assert self.table.find(node) == inode
        assert self.table.statistics()["live_inodes"] == len(self.live) + 1  # and the root


InodeModel.TestCase.settings = hypothesis.settings(
    max_examples=300, stateful_step_count=40, deadline=None
)
test_inode_table_model = InodeModel.TestCase


def test_forgotten_counts_are_the_kernels_and_an_unused_block_is_dropped() -> None:
    table = InodeTable()
    names = [f"{n:07d}.bin" for n in range(1000)]
    block = table.listing_block(dir_node("d"), names, bytes(1000))
    first = [table.remember_entry(block, index) for index in range(1000)]
    assert first == list(range(first[0], first[0] + 1000))  # one run of numbers
    again = table.listing_block(dir_node("d"), list(names), bytes(1000))
    assert again is block  # the same entries: the same numbers
    assert table.remember(NodeId(NodeKind.DATASET_FILE, HANDLE, "d/0000007.bin")) == first[7]
    table.forget(first[7], 2)
    for inode in first:
        table.forget(inode, 1)
    stats = table.statistics()
    assert (stats["live_inodes"], stats["listing_blocks"]) == (1, 0)  # the root only


def test_a_listed_entry_costs_far_less_than_a_looked_up_one() -> None:
    """The memory an entry the kernel holds costs: a block slot, not a node in two dicts."""
    count = 50_000

    def held(listed: bool) -> int:
        names = [f"{n:07d}.bin" for n in range(count)]  # made before measuring: shared
        tracemalloc.start()
        table = InodeTable()
        if listed:
            block = table.listing_block(dir_node("d"), names, bytes(count))
            for index in range(count):
                table.remember_entry(block, index)
        else:
            for name in names:
                table.remember(NodeId(NodeKind.DATASET_FILE, HANDLE, f"d/{name}"))
        size = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        return size

    per_listed, per_looked_up = held(True) / count, held(False) / count
    assert per_listed < 32, per_listed
    assert per_looked_up > 5 * per_listed, (per_looked_up, per_listed)
