"""A reference model of drafts: random POSIX changes on the core and on a plain dict, compared.

A hypothesis ``RuleBasedStateMachine`` applies create/write (at any offset, with or without
truncation), truncate, unlink, mkdir, rmdir, rename (files and directories, over files and
empty directories) and "crash then reopen" to the filesystem core over fakes, and the same
changes to a dict of path -> bytes plus a set of directories. After every step the whole tree
(names and every file's bytes) must be equal. Every change is acknowledged (closed or synced)
before the next, so a crash loses nothing.

The core lives in one trio run for the whole machine, in a thread; rules call into it through
``trio.from_thread.run``.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.lowlevel
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.errors import FsError
from provenafs.storage.blobstore import MemoryBlobStore
from tests.unit.fakes import BUCKET, CALLER, FakeDataStore, build_filesystem, options, s3_path

DATASET = "10378.1/1001"
BASE = {"a.txt": b"alpha\n", "d/b.txt": b"beta" * 300, "d/e/c.bin": bytes(range(200))}
BASE_DIRS = {"d", "d/e"}
NAMES = ("a.txt", "d", "e", "f.bin")
T = TypeVar("T")


class TrioPortal:
    """One trio run in a thread, for the lifetime of a test; calls go in and answers come out."""

    def __init__(self) -> None:
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        self._ready.wait()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        self._ready.set()
        await self._stop.wait()

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()


def world() -> tuple[FakeDataStore, MemoryBlobStore]:
    store = FakeDataStore()
    store.add(DATASET)
    blobs = MemoryBlobStore()
    for path, data in BASE.items():
        blobs.put_blocking(BUCKET, s3_path(DATASET) + path, data)
    return store, blobs


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


class DraftModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.portal = TrioPortal()
        self.state = Path(tempfile.mkdtemp(prefix="drafts-model-"))
        self.world = world()
        self.fs = self._mount()
        self.files: dict[str, bytes] = dict(BASE)
        self.dirs: set[str] = set(BASE_DIRS)

    def _mount(self) -> Filesystem:
        fs, _ = build_filesystem(
            *self.world, mount_options=options("-o", f"state_dir={self.state}")
        )
        return fs

    def teardown(self) -> None:
        self.fs.draft_store.close()
        self.portal.close()
        shutil.rmtree(self.state, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------------

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(fn, *args)

    async def _inode(self, path: str) -> int:
        inode = ROOT_INODE
        for name in ["10378.1", "1001", *[n for n in path.split("/") if n]]:
            inode = (await self.fs.lookup(inode, name, CALLER)).inode
        return inode

    def errno_of(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> int | None:
        try:
            self.run(fn, *args)
        except FsError as exc:
            return exc.errno
        return None

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dirs

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def existing(self, choice: int) -> str:
        """One existing file or directory, picked by *choice*."""
        paths = sorted([*self.files, *self.dirs])
        return paths[choice % len(paths)] if paths else "a.txt"

    def new_place(self, choice: int, name: str) -> str:
        """*name* inside an existing directory (or the dataset's top), picked by *choice*."""
        parents = ["", *sorted(self.dirs)]
        parent = parents[choice % len(parents)]
        return f"{parent}/{name}" if parent else name

    def below(self, path: str) -> list[str]:
        return [p for p in [*self.files, *self.dirs] if p.startswith(path + "/")]

    # --- rules ---------------------------------------------------------------------------

    @rule(
        where=st.integers(0, 1000),
        name=st.sampled_from(NAMES),
        data=st.binary(max_size=300),
        offset=st.integers(0, 1200),
        truncate=st.booleans(),
    )
    def write(self, where: int, name: str, data: bytes, offset: int, truncate: bool) -> None:
        path = self.new_place(where, name)
        if not self.is_dir(parent_of(path)) or self.is_dir(path):
            return

        async def apply() -> None:
            parent = await self._inode(parent_of(path))
            flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if truncate else 0)
            opened, _ = await self.fs.create(parent, path.rpartition("/")[2], 0o644, flags, CALLER)
            await self.fs.write(opened.fh, offset, data)
            await self.fs.flush(opened.fh)
            await self.fs.release(opened.fh)

        self.run(apply)
        old = b"" if truncate else self.files.get(path, b"")
        grown = old + bytes(max(0, offset - len(old)))
        self.files[path] = grown[:offset] + data + grown[offset + len(data) :]

    @precondition(lambda self: bool(self.files))
    @rule(choice=st.integers(0, 1000), size=st.integers(0, 1500))
    def truncate(self, choice: int, size: int) -> None:
        path = sorted(self.files)[choice % len(self.files)]

        async def apply() -> None:
            await self.fs.setattr(await self._inode(path), CALLER, size=size)

        self.run(apply)
        old = self.files[path]
        self.files[path] = old[:size] + bytes(max(0, size - len(old)))

    @rule(choice=st.integers(0, 1000))
    def unlink(self, choice: int) -> None:
        path = self.existing(choice)

        async def apply() -> None:
            await self.fs.unlink(
                await self._inode(parent_of(path)), path.rpartition("/")[2], CALLER
            )

        if not self.is_dir(parent_of(path)):
            return
        expected = (
            None if path in self.files else (errno.EISDIR if path in self.dirs else errno.ENOENT)
        )
        assert self.errno_of(apply) == expected
        self.files.pop(path, None)

    @rule(where=st.integers(0, 1000), name=st.sampled_from(NAMES))
    def mkdir(self, where: int, name: str) -> None:
        path = self.new_place(where, name)

        async def apply() -> None:
            await self.fs.mkdir(
                await self._inode(parent_of(path)), path.rpartition("/")[2], 0o755, CALLER
            )

        if not self.is_dir(parent_of(path)):
            return
        existed = self.exists(path)
        assert self.errno_of(apply) == (errno.EEXIST if existed else None)
        if not existed:
            self.dirs.add(path)

    @rule(choice=st.integers(0, 1000))
    def rmdir(self, choice: int) -> None:
        path = self.existing(choice)

        async def apply() -> None:
            await self.fs.rmdir(await self._inode(parent_of(path)), path.rpartition("/")[2], CALLER)

        if not self.is_dir(parent_of(path)) or path not in self.dirs:
            return
        assert self.errno_of(apply) == (errno.ENOTEMPTY if self.below(path) else None)
        if not self.below(path):
            self.dirs.discard(path)

    @rule(choice=st.integers(0, 1000), where=st.integers(0, 1000), name=st.sampled_from(NAMES))
    def rename(self, choice: int, where: int, name: str) -> None:
        source = self.existing(choice)
        target = self.new_place(where, name)
        if not self.exists(source) or not self.is_dir(parent_of(target)):
            return
        source_is_dir = source in self.dirs
        if source == target:
            return
        if source_is_dir and target.startswith(source + "/"):
            expected: int | None = errno.EINVAL
        elif target in self.dirs and not source_is_dir:
            expected = errno.EISDIR
        elif target in self.files and source_is_dir:
            expected = errno.ENOTDIR
        elif target in self.dirs and self.below(target):
            expected = errno.ENOTEMPTY
        else:
            expected = None

        async def apply() -> None:
            await self.fs.rename(
                await self._inode(parent_of(source)),
                source.rpartition("/")[2],
                await self._inode(parent_of(target)),
                target.rpartition("/")[2],
                0,
                CALLER,
            )

        assert self.errno_of(apply) == expected
        if expected is not None:
            return
        moved = {source: target} | {p: target + p[len(source) :] for p in self.below(source)}
        self.dirs.discard(target)
        self.files.pop(target, None)
        files = {moved.get(p, p): data for p, data in self.files.items()}
        dirs = {moved.get(p, p) for p in self.dirs}
        self.files, self.dirs = files, dirs

    @rule()
    def crash_and_reopen(self) -> None:
        self.fs.draft_store.close()  # no flush, no release: the process died
        self.fs = self._mount()

    # --- the comparison ------------------------------------------------------------------

    @invariant()
    def tree_and_bytes_match(self) -> None:
        async def tree() -> tuple[dict[str, bytes], set[str]]:
            files: dict[str, bytes] = {}
            dirs: set[str] = set()

            async def visit(path: str, inode: int) -> None:
                fh = await self.fs.opendir(inode, CALLER)
                entries = await self.fs.readdir(fh, 0)
                while batch := await self.fs.readdir(fh, entries[-1].next_offset):
                    entries += batch
                await self.fs.releasedir(fh)
                for entry in entries:
                    if entry.name in (".", ".."):
                        continue
                    child = f"{path}/{entry.name}" if path else entry.name
                    if stat.S_ISDIR(entry.attributes.mode):
                        dirs.add(child)
                        await visit(child, entry.attributes.inode)
                        continue
                    opened = await self.fs.open(entry.attributes.inode, os.O_RDONLY, CALLER)
                    files[child] = await self.fs.read(opened.fh, 0, 1 << 20)
                    await self.fs.release(opened.fh)
                    assert entry.attributes.size == len(files[child]), child

            await visit("", await self._inode(""))
            return files, dirs

        files, dirs = self.run(tree)
        assert dirs == self.dirs
        assert files == self.files


TestDraftModel = DraftModel.TestCase
TestDraftModel.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(autouse=True)
def _no_user_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
