"""Pins ``docs/SEMANTICS.md``: its errno table equals ``to_errno``, its examples run as stated."""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
from pathlib import Path

import pytest

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.errors import ERRNO_BY_EXCEPTION, log_level_for, to_errno
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import (
    BUCKET,
    CALLER,
    METADATA_ONLY,
    FakeDataStore,
    build_filesystem,
    s3_path,
)
from tests.unit.support import raises_errno

DOC = Path(__file__).resolve().parent.parent / "docs" / "SEMANTICS.md"


def section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def table_rows(text: str) -> list[list[str]]:
    """Cells of every markdown table row in *text*, header and rule rows left out."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows.append(cells)
    return [row for row in rows if not row[0].startswith(("exception", "errno", "operation"))]


def unquote(cell: str) -> str:
    return cell.strip().strip("`")


def exception_rows() -> list[tuple[str, str]]:
    return [
        (unquote(row[0]), unquote(row[1]))
        for row in table_rows(section("Errors"))
        if row[0].startswith("`provenafs.")
    ]


def resolve(dotted: str) -> type[BaseException]:
    module, _, name = dotted.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, BaseException)
    return cls


@pytest.mark.parametrize(("dotted", "errno_name"), exception_rows())
def test_errno_table_row_matches_to_errno(dotted: str, errno_name: str) -> None:
    assert to_errno(resolve(dotted)("example")) == getattr(errno, errno_name)


def test_errno_table_covers_the_whole_mapping() -> None:
    documented = {resolve(dotted) for dotted, _ in exception_rows()}
    assert documented == set(ERRNO_BY_EXCEPTION)


def test_local_disk_failures_keep_their_errno() -> None:
    """The sentence under the table: ``OSError`` of the local disk keeps its errno."""
    assert "`OSError`" in section("Errors")
    assert to_errno(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC


def test_efbig_is_in_the_table_and_logged_as_an_expected_outcome() -> None:
    """``truncate`` past the draft disk's limit answers EFBIG: a row of its own, and no
    WARNING per call (the level of every other expected errno)."""
    core_rows = {unquote(row[0]) for row in table_rows(section("Errors"))}
    assert "EFBIG" in core_rows
    assert to_errno(OSError(errno.EFBIG, "File too large")) == errno.EFBIG
    assert log_level_for(errno.EFBIG) == log_level_for(errno.ENOENT) == logging.DEBUG


def example_rows() -> list[tuple[str, str, str]]:
    return [(row[0], unquote(row[1]), unquote(row[2])) for row in table_rows(section("Examples"))]


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A draft an example might open goes to a temporary state dir."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def documented_world() -> tuple[FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add_chain(["10378.1/1932273", "10378.1/1932274"])
    store.add("10378.1/1932275", roles=METADATA_ONLY)
    blobs = MemoryBlobStore()
    blobs.put_blocking(BUCKET, s3_path("10378.1/1932274") + "metadata.json", b"{}\n")
    blobs.put_blocking(BUCKET, s3_path("10378.1/1932274") + "raw/a.csv", b"a\n")
    blobs.put_blocking(BUCKET, s3_path("10378.1/1932273") + "data.csv", b"1\n")
    blobs.put_blocking(BUCKET, s3_path("10378.1/1932275") + "data.csv", b"1\n")
    return store, blobs


async def perform(fs: Filesystem, operation: str, path: str) -> None:
    names = path.split("/")
    inode = ROOT_INODE
    last = len(names) - 1 if operation in ("mkdir", "unlink") else len(names)
    for name in names[:last]:
        inode = (await fs.lookup(inode, name, CALLER)).inode
    if operation == "stat":
        await fs.getattr(inode, CALLER)
    elif operation == "ls":
        await fs.opendir(inode, CALLER)
    elif operation == "open":
        await fs.open(inode, os.O_RDONLY, CALLER)
    elif operation == "open for writing":
        await fs.open(inode, os.O_WRONLY, CALLER)
    elif (match := re.fullmatch(r"getxattr (\S+)", operation)) is not None:
        await fs.getxattr(inode, match.group(1), CALLER)
    elif operation == "mkdir":
        await fs.mkdir(inode, names[-1], 0o755, CALLER)
    elif operation == "unlink":
        await fs.unlink(inode, names[-1], CALLER)
    else:
        raise AssertionError(f"SEMANTICS.md names an operation the test cannot run: {operation}")


@pytest.mark.parametrize(("operation", "path", "errno_name"), example_rows())
async def test_example(operation: str, path: str, errno_name: str) -> None:
    fs, _ = build_filesystem(*documented_world())
    with raises_errno(getattr(errno, errno_name)):
        await perform(fs, operation, path)


def test_the_tables_are_found() -> None:
    assert len(exception_rows()) >= 13
    assert len(example_rows()) >= 10
