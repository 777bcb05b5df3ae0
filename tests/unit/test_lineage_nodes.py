"""Lineage beside each dataset: ``@inputs``, ``@derived``, ``@runs`` and ``.lineage.json``
through the filesystem core, over a fake prov API answering ``node_link_data`` graphs."""

from __future__ import annotations

import collections
import errno
import json
import os
import stat

from provenafs.api.models import RegistryItem
from provenafs.api.prov_models import LineageGraph, LineageLink, LineageNode
from provenafs.core.filesystem import Filesystem
from provenafs.errors import FsError
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import CALLER, FakeDataStore, build_filesystem
from tests.unit.support import fails, names, read_all, walk

OLD, NEW, A, B, SECRET, OTHER = (
    "10378.1/10", "10378.1/11", "10378.1/20", "10378.1/21", "10378.1/22", "20.500/30"
)  # fmt: skip
RUN, VERSION = "10378.1/50", "10378.1/51"
PERSON = "10378.1/60"
SUBTYPES = {OLD: "DATASET", NEW: "DATASET", A: "DATASET", B: "DATASET", SECRET: "DATASET",
            OTHER: "DATASET", RUN: "MODEL_RUN", VERSION: "VERSION", PERSON: "PERSON"}  # fmt: skip
NAMES = {NEW: "Results", OLD: "Results", A: "Input A", B: "Input A", SECRET: "Secret",
         OTHER: "Elsewhere"}  # fmt: skip
# NEW was made by RUN (which used A, B, SECRET and OTHER) and by versioning OLD.
LINKS = [
    (NEW, RUN, "wasGeneratedBy"), (RUN, A, "used"), (RUN, B, "used"), (RUN, SECRET, "used"),
    (RUN, OTHER, "used"), (NEW, VERSION, "wasGeneratedBy"), (VERSION, OLD, "used"),
    (NEW, PERSON, "wasAttributedTo"),
]  # fmt: skip


class FakeLineageApi:
    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.hidden = {SECRET}  # lineage names it; the caller may not fetch it

    def _graph(self, links: list[tuple[str, str, str]]) -> LineageGraph:
        ids = dict.fromkeys(n for s, t, _ in links for n in (s, t))
        return LineageGraph(
            tuple(LineageNode(i, "ENTITY", SUBTYPES[i]) for i in ids),
            tuple(LineageLink(*link) for link in links),
        )

    async def explore(self, query: str, starting_id: str, depth: int) -> LineageGraph:
        """NEW's upstream is every link; an input's downstream is its use and NEW's making."""
        self.calls[query] += 1
        if query in ("upstream", "contributing_datasets"):
            return self._graph(LINKS if starting_id == NEW else [])
        if starting_id in (A, B, OTHER):
            return self._graph([(RUN, starting_id, "used"), (NEW, RUN, "wasGeneratedBy")])
        return self._graph([])

    async def fetch_item(self, item_id: str) -> RegistryItem | None:
        self.calls["fetch"] += 1
        if item_id in self.hidden:
            return None
        name = NAMES.get(item_id, f"Item {item_id}")
        return RegistryItem(item_id, SUBTYPES[item_id], name, {"id": item_id})

    async def fetch_model_run(self, item_id: str) -> RegistryItem | None:
        return RegistryItem(item_id, "MODEL_RUN", "A run", {"id": item_id, "record": {"x": 1}})


def setup() -> tuple[Filesystem, FakeLineageApi]:
    store = FakeDataStore()
    store.add_chain([OLD, NEW], name="Results")
    store.add(A, name="Input A")
    store.add(B, name="Input A")  # the same display name as A
    store.add(SECRET, name="Secret")
    store.add(OTHER, name="Elsewhere")
    fs, _ = build_filesystem(store, MemoryBlobStore())
    api = FakeLineageApi()
    fs.lineage.api = api
    return fs, api


async def test_inputs_are_the_runs_inputs_without_the_version_chain_or_the_hidden() -> None:
    fs, _ = setup()
    listed = await names(fs, f"{NEW}@inputs")
    assert listed == ["Elsewhere", "Input A", "Input A (10378.1\u221521)"]
    link = await walk(fs, f"{NEW}@inputs/Input A")
    assert stat.S_ISLNK(link.mode)
    assert await fs.readlink(link.inode, CALLER) == "../20"
    other = await walk(fs, f"{NEW}@inputs/Elsewhere")
    assert await fs.readlink(other.inode, CALLER) == "../../20.500/30"


async def test_derived_and_runs_of_an_input() -> None:
    fs, _ = setup()
    assert await names(fs, f"{A}@derived") == ["Results"]
    assert await names(fs, f"{A}@runs") == ["50.json"]
    assert await names(fs, f"{OTHER}@runs") == ["10378.1\u221550.json"]
    body = json.loads(await read_all(fs, f"{A}@runs/50.json"))
    assert body == {"id": RUN, "record": {"x": 1}}


async def test_the_raw_graphs_leave_out_what_the_caller_may_not_fetch() -> None:
    fs, _ = setup()
    document = json.loads(await read_all(fs, f"{NEW}.lineage.json"))
    ids = {node["id"] for node in document["upstream"]["nodes"]}
    assert {NEW, RUN, A, B, OLD, VERSION} <= ids and SECRET not in ids
    assert [RUN, SECRET, "used"] not in [
        [e["source"], e["target"], e["type"]] for e in document["upstream"]["links"]
    ]
    assert document["depth"] == 2
    attributes = await walk(fs, f"{NEW}.lineage.json")
    assert attributes.attr_timeout == 0 and stat.S_IMODE(attributes.mode) == 0o444


async def test_lineage_names_are_looked_up_only_and_answers_are_kept_briefly() -> None:
    fs, api = setup()
    prefix = await names(fs, "10378.1")
    assert not [n for n in prefix if "@inputs" in n or "@runs" in n or "lineage" in n]
    await names(fs, f"{NEW}@inputs")
    await names(fs, f"{NEW}@inputs")
    assert api.calls["contributing_datasets"] == 1
    fs.lineage_changed()
    await names(fs, f"{NEW}@inputs")
    assert api.calls["contributing_datasets"] == 2
    await fails(errno.ENOENT, walk(fs, f"{NEW}@outputs"))
    await fails(errno.ENOENT, walk(fs, "10378.1/999@inputs"))
    await fails(errno.ENOENT, walk(fs, f"{NEW}@inputs/Nothing"))
    inode = (await walk(fs, f"{NEW}@inputs")).inode
    await fails(errno.EROFS, fs.mkdir(inode, "x", 0o755, CALLER))


async def test_without_a_prov_api_there_is_no_lineage() -> None:
    store = FakeDataStore()
    store.add(A)
    fs, _ = build_filesystem(store, MemoryBlobStore())
    await fails(errno.ENOENT, walk(fs, f"{A}@inputs"))
    await fails(errno.ENOENT, walk(fs, f"{A}.lineage.json"))
    assert os.path.basename(A) in await names(fs, "10378.1")


async def test_no_change_reaches_a_lineage_node_and_none_leaves_a_trace() -> None:
    fs, api = setup()
    prefix = (await walk(fs, "10378.1")).inode
    inputs = (await walk(fs, f"{NEW}@inputs")).inode
    derived = (await walk(fs, f"{A}@derived")).inode
    runs = (await walk(fs, f"{A}@runs")).inode
    graph = (await walk(fs, f"{NEW}.lineage.json")).inode
    run_file = (await walk(fs, f"{A}@runs/50.json")).inode
    before = (
        await names(fs, f"{NEW}@inputs"),
        await names(fs, f"{A}@derived"),
        await names(fs, f"{A}@runs"),
        await read_all(fs, f"{NEW}.lineage.json"),
    )
    calls = dict(api.calls)
    attempts = {
        "write the graph": fs.open(graph, os.O_WRONLY, CALLER),
        "write a run": fs.open(run_file, os.O_RDWR, CALLER),
        "truncate the graph": fs.setattr(graph, CALLER, size=0),
        "chmod a run": fs.setattr(run_file, CALLER, mode=0o666),
        "create in @runs": fs.create(runs, "x.json", 0o644, os.O_WRONLY, CALLER),
        "link in @derived": fs.symlink(derived, "x", "../../etc", CALLER),
        "unlink an input": fs.unlink(inputs, "Input A", CALLER),
        "remove @derived": fs.rmdir(prefix, f"{os.path.basename(A)}@derived", CALLER),
        "rename a run": fs.rename(runs, "50.json", runs, "51.json", 0, CALLER),
        "rename an input out": fs.rename(inputs, "Input A", prefix, "stolen", 0, CALLER),
        "xattr on the graph": fs.setxattr(graph, "user.x", b"1", CALLER),
    }
    for what, attempt in attempts.items():
        try:
            await attempt
        except FsError as refused:
            assert refused.errno in {errno.EROFS, errno.EACCES, errno.EPERM}, what
        else:
            raise AssertionError(f"{what} was allowed")
    after = (
        await names(fs, f"{NEW}@inputs"),
        await names(fs, f"{A}@derived"),
        await names(fs, f"{A}@runs"),
        await read_all(fs, f"{NEW}.lineage.json"),
    )
    assert after == before
    assert {k: v for k, v in api.calls.items() if k in calls} == calls  # answered from cache
    assert fs.draft_store.get(NEW) is None and fs.draft_store.get(A) is None
