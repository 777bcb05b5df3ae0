"""Names of the tree: validation before any fetch, handle parsing, by-name naming."""

from __future__ import annotations

import errno

import pytest

from provenafs.api.models import DatasetRecord
from provenafs.core.inodes import InodeTable, NodeId, NodeKind
from provenafs.core.namespace import by_name_entries, check_name, split_handle
from provenafs.errors import FsError
from tests.unit.fakes import FakeDataStore

SLASH = "\u2215"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("", errno.ENOENT),
        (".", errno.ENOENT),
        ("..", errno.ENOENT),
        ("a/b", errno.ENOENT),
        ("a\x00b", errno.ENOENT),
        ("x" * 256, errno.ENAMETOOLONG),
        ("\u00e9" * 128, errno.ENAMETOOLONG),
        ("\udcff" * 256, errno.ENAMETOOLONG),  # undecodable bytes count as one byte each
    ],
)
def test_bad_names_are_refused(name: str, expected: int) -> None:
    with pytest.raises(FsError) as excinfo:
        check_name(name)
    assert excinfo.value.errno == expected


def test_good_names_pass() -> None:
    for name in ("x" * 255, "\u00e9" * 127, "a b.csv", "..hidden", "\udcff"):
        check_name(name)


@pytest.mark.parametrize(
    ("handle", "expected"),
    [
        ("10378.1/1932274", ("10378.1", "1932274")),
        ("102.100.100/abc-1_2", ("102.100.100", "abc-1_2")),
        ("10378.1", None),
        ("10378.1/", None),
        ("10378.1/a/b", None),
        ("10378.1/..", None),
        ("10378.1/x.json", None),
        ("abc/1", None),
        ("/1", None),
    ],
)
def test_split_handle(handle: str, expected: tuple[str, str] | None) -> None:
    assert split_handle(handle) == expected


async def _records(store: FakeDataStore) -> list[DatasetRecord]:
    async def body() -> list[DatasetRecord]:
        return await store.list_all()

    return await body()


async def test_by_name_keeps_the_oldest_plain_and_suffixes_the_rest() -> None:
    store = FakeDataStore()
    store.add("10378.1/2", name="Same", created=200)
    store.add("10378.1/1", name="Same", created=100)
    store.add("10378.1/3", name="Same", created=300)
    store.add("10378.1/4", name=" a/b\x00c ", created=1)
    store.add("10378.1/5", name="..", created=1)
    store.add("10378.1/6", name="x" * 300, created=1)
    store.add("10378.1/7", name="Old version", next_version="10378.1/8")
    store.add("10378.1/8", name="New version", previous="10378.1/7", version=2)
    entries = by_name_entries(await _records(store))
    assert entries["Same"] == "10378.1/1"
    assert entries[f"Same (10378.1{SLASH}2)"] == "10378.1/2"
    assert entries[f"Same (10378.1{SLASH}3)"] == "10378.1/3"
    assert entries[f"a{SLASH}b{SLASH}c"] == "10378.1/4"
    assert entries["unnamed.."] == "10378.1/5"
    assert "Old version" not in entries and entries["New version"] == "10378.1/8"
    for name in entries:
        check_name(name)


def test_inode_table_numbers() -> None:
    table = InodeTable()
    a = NodeId(NodeKind.SIDECAR, "10378.1/1")
    b = NodeId(NodeKind.SIDECAR, "10378.1/2")
    first = table.remember(a)
    assert first > 1 and table.remember(a) == first
    assert table.remember(b) != first
    assert table.node(first) == a
    table.forget(first, 1)
    assert table.node(first) == a  # one reference left
    table.forget(first, 5)  # over-forgetting is clamped
    with pytest.raises(FsError):
        table.node(first)
    assert table.remember(a) > table.remember(b)  # a fresh, never reused number
    table.forget(1, 100)
    assert table.node(1).kind is NodeKind.ROOT  # the root is never forgotten
