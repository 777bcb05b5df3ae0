"""A reference model for drafts on a real mount (issue 4, "How it is shown").

A hypothesis ``RuleBasedStateMachine`` applies random create / write / append / truncate /
rename / unlink / mkdir / rmdir / publish steps to a fresh dataset directory on a ``-o rw`` mount
and to a plain dict model, and after every step compares every file's bytes and the directory
tree. A publish (``provenafs commit``) also compares the new version in S3 (admin boto3) and the
registry's chain with the model, checks that the old version's directory shows what it showed
before, and the run goes on writing into the new version.

Expected errnos of failing steps are POSIX's (EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL); the
model decides them before the syscall is made.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.conftest import LocalStore
from tests.e2e.writes_support import (
    Dataset,
    StoreApi,
    Tree,
    WritableMount,
    expect_errno,
    read_tree,
    s3_as_tree,
    s3_tree,
    writes_fixtures,
)

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

NAMES = ("a", "b.txt", "ünï", "d d", "x.bin")  # never "metadata.json": that one is the server's
BASE_FILES = {"a": b"base file a\n", "d d/x.bin": bytes(range(256)) * 20}
MAX_DEPTH = 3
MAX_PUBLISHES = 2
RUNS = 25
STEPS = 20


class DraftModel(RuleBasedStateMachine):
    """One fresh dataset per run; ``files`` and ``dirs`` are what its directory must show."""

    mount: ClassVar[WritableMount]
    api: ClassVar[StoreApi]
    total_publishes: ClassVar[int] = 0

    def __init__(self) -> None:
        super().__init__()
        # Files of the base version (put straight into S3) take part from the first step, so
        # changes to files carried from S3 are modelled as well as new ones.
        self.dataset: Dataset = self.api.mint("alice", BASE_FILES)
        self.handle = self.dataset.handle
        self.files: dict[str, bytes] = dict(BASE_FILES)
        self.dirs: set[str] = {"d d"}
        self.published: Tree = self.model_tree()  # what the current base version holds
        self.publishes = 0

    # -- helpers --------------------------------------------------------------------------

    @property
    def root(self) -> Path:
        return self.mount.dataset_dir(self.handle)

    def model_tree(self) -> Tree:
        return Tree(dict(self.files), frozenset(self.dirs))

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs

    def children(self, directory: str) -> list[str]:
        start = directory + "/"
        return [p for p in [*self.files, *self.dirs] if p.startswith(start)]

    def parents(self) -> list[str]:
        return ["", *sorted(d for d in self.dirs if d.count("/") + 1 < MAX_DEPTH)]

    @staticmethod
    def join(parent: str, name: str) -> str:
        return f"{parent}/{name}" if parent else name

    def draw_parent_and_name(self, data: st.DataObject) -> str:
        parent = data.draw(st.sampled_from(self.parents()), label="parent")
        return self.join(parent, data.draw(st.sampled_from(NAMES), label="name"))

    # -- rules ----------------------------------------------------------------------------

    @rule(data=st.data(), content=st.binary(max_size=3000))
    def create(self, data: st.DataObject, content: bytes) -> None:
        path = self.draw_parent_and_name(data)
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
        if self.exists(path):
            expect_errno(errno.EEXIST, lambda: os.open(self.root / path, flags, 0o644), path)
            return
        fd = os.open(self.root / path, flags, 0o644)
        try:
            written = os.write(fd, content)
        finally:
            os.close(fd)
        assert written == len(content)
        self.files[path] = content

    @precondition(lambda self: bool(self.files))
    @rule(
        data=st.data(),
        offset=st.integers(0, 6000),
        content=st.binary(min_size=1, max_size=2000),
    )
    def write_at(self, data: st.DataObject, offset: int, content: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)), label="file")
        fd = os.open(self.root / path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, content, offset) == len(content)
        finally:
            os.close(fd)
        old = self.files[path]
        padded = old + bytes(max(0, offset - len(old)))
        self.files[path] = padded[:offset] + content + padded[offset + len(content) :]

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), content=st.binary(min_size=1, max_size=2000))
    def append(self, data: st.DataObject, content: bytes) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)), label="file")
        with (self.root / path).open("ab") as stream:
            stream.write(content)
        self.files[path] += content

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), size=st.integers(0, 8000))
    def truncate(self, data: st.DataObject, size: int) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)), label="file")
        os.truncate(self.root / path, size)
        old = self.files[path]
        self.files[path] = old[:size] + bytes(max(0, size - len(old)))

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def unlink(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.files)), label="file")
        os.unlink(self.root / path)
        del self.files[path]

    @rule(data=st.data())
    def mkdir(self, data: st.DataObject) -> None:
        path = self.draw_parent_and_name(data)
        if self.exists(path):
            expect_errno(errno.EEXIST, lambda: os.mkdir(self.root / path), path)
            return
        os.mkdir(self.root / path)
        self.dirs.add(path)

    @precondition(lambda self: bool(self.dirs))
    @rule(data=st.data())
    def rmdir(self, data: st.DataObject) -> None:
        path = data.draw(st.sampled_from(sorted(self.dirs)), label="dir")
        if self.children(path):
            expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(self.root / path), path)
            return
        os.rmdir(self.root / path)
        self.dirs.discard(path)

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def rename_file(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(sorted(self.files)), label="file")
        target = self.draw_parent_and_name(data)
        if target == source:
            return
        if source.startswith(target + "/"):  # Linux's rename: a target that is an ancestor
            expect_errno(
                errno.ENOTEMPTY, lambda: os.rename(self.root / source, self.root / target), target
            )
            return
        if target in self.dirs:
            expect_errno(
                errno.EISDIR, lambda: os.rename(self.root / source, self.root / target), target
            )
            return
        os.rename(self.root / source, self.root / target)
        self.files[target] = self.files.pop(source)

    @precondition(lambda self: bool(self.dirs))
    @rule(data=st.data())
    def rename_dir(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(sorted(self.dirs)), label="dir")
        target = self.draw_parent_and_name(data)
        if target == source:
            return

        def attempt() -> None:
            os.rename(self.root / source, self.root / target)

        if target.startswith(source + "/"):
            expect_errno(errno.EINVAL, attempt, f"{source} into itself")
            return
        if target in self.files:
            expect_errno(errno.ENOTDIR, attempt, f"{source} over file {target}")
            return
        if target in self.dirs and self.children(target):
            expect_errno(errno.ENOTEMPTY, attempt, f"{source} over non-empty {target}")
            return
        deepest = max([source.count("/"), *[p.count("/") for p in self.children(source)]])
        if target.count("/") + deepest - source.count("/") >= MAX_DEPTH + 1:
            return  # keep the tree shallow
        attempt()
        self.dirs.discard(target)
        moved_files = {p: self.files.pop(p) for p in list(self.files) if p.startswith(source + "/")}
        moved_dirs = {p for p in self.dirs if p.startswith(source + "/")}
        self.dirs -= moved_dirs | {source}
        self.dirs |= {target} | {target + p[len(source) :] for p in moved_dirs}
        self.files.update({target + p[len(source) :]: b for p, b in moved_files.items()})

    @precondition(
        lambda self: self.publishes < MAX_PUBLISHES and self.model_tree() != self.published
    )
    @rule()
    def publish(self) -> None:
        old_handle, expected = self.handle, self.model_tree()
        new_handle = self.mount.commit_ok(self.root, f"model step {self.publishes}")
        assert self.api.versions_after(old_handle) == [new_handle]
        record = self.api.record(new_handle)["item"]
        objects = s3_tree(self.api, record["s3"]["path"])
        in_s3 = s3_as_tree(objects)
        assert in_s3.without("metadata.json").files == expected.files
        assert in_s3.dirs == expected.dirs
        server_copy = json.loads(objects["metadata.json"])
        assert server_copy["dataset_info"]["name"] == self.dataset.name
        # The old version's directory shows the old version again.
        old_tree = read_tree(self.root)
        assert old_tree.without("metadata.json") == self.published
        self.handle = new_handle
        self.published = expected
        self.publishes += 1
        DraftModel.total_publishes += 1

    # -- the invariant --------------------------------------------------------------------

    @invariant()
    def the_mount_shows_the_model(self) -> None:
        shown = read_tree(self.root)
        assert "metadata.json" in shown.files
        assert shown.without("metadata.json") == self.model_tree()


store, api, mount = writes_fixtures("writes-model")


@pytest.mark.timeout(600)
def test_random_changes_match_a_plain_model(store: LocalStore, mount: WritableMount) -> None:
    DraftModel.mount = mount
    DraftModel.api = StoreApi(store)
    DraftModel.total_publishes = 0
    run_state_machine_as_test(
        DraftModel,
        settings=settings(
            max_examples=RUNS,
            stateful_step_count=STEPS,
            deadline=None,
            database=None,
            phases=(Phase.explicit, Phase.generate),  # no shrinking: each run mints a dataset
            suppress_health_check=list(HealthCheck),
        ),
    )
    print(f"{DraftModel.total_publishes} publishes compared with S3")
    assert DraftModel.total_publishes >= 1, "no run published: S3 was never compared"
