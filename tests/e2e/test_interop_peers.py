"""Interoperability both ways with s3fs-fuse and rclone (docs/SEMANTICS.md, "Links, modes and
times"): a version this mount published reads the same through s3fs (links, modes, mtimes)
and through rclone (mtimes); a prefix s3fs wrote (links, modes, mtimes) reads the same here.

Directories are left out of the comparisons with the peers: SeaweedFS keeps no user metadata
on ``dir/`` keys, so no tool sees a directory's mode or time there (this mount reads them from
the version's attributes manifest, which the first test checks).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import LocalStore
from tests.e2e.peer_mounts import rclone_mount, s3fs_mount
from tests.e2e.posix_trees import differences, snapshot
from tests.e2e.writes_support import StoreApi, WritableMount, writes_fixtures

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

store, api, mount = writes_fixtures("interop-peers")

OLD = 1_111_111_111_987_654_321


def make_tree(root: Path, *, directory_times: bool = True) -> None:
    """Files with modes, a link inside and one out, times set (s3fs on SeaweedFS cannot set a
    directory's: ``directory_times=False`` there)."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run.sh").write_bytes(b"#!/bin/sh\necho run\n")
    (root / "bin" / "run.sh").chmod(0o750)
    (root / "private.txt").write_bytes(b"private\n")
    (root / "private.txt").chmod(0o600)
    (root / "plain.csv").write_bytes(b"a,b\n1,2\n")
    os.symlink("bin/run.sh", root / "run")
    os.symlink("/etc/hostname", root / "absolute")
    for offset, path in enumerate(sorted(root.rglob("*"))):
        if directory_times or not path.is_dir() or path.is_symlink():
            os.utime(path, ns=(OLD, OLD + offset * 1_000_000_007), follow_symlinks=False)


def not_manifest(path: str) -> bool:
    return path.split("/", 1)[0] == ".provenafs"


def test_a_published_version_reads_the_same_with_s3fs_and_rclone(
    store: LocalStore, api: StoreApi, mount: WritableMount, tmp_path: Path
) -> None:
    dataset = api.mint(files={"base.txt": b"from the data store\n"})
    root = mount.dataset_dir(dataset.handle)
    make_tree(root / "tree")
    draft = snapshot(root / "tree")
    new = mount.commit_ok(root, "for s3fs and rclone")
    published = snapshot(mount.dataset_dir(new) / "tree")
    assert not differences(draft, published)  # directories included (the manifest)
    prefix = api.record(new)["item"]["s3"]["path"]
    secrets = tmp_path / "secrets"

    with s3fs_mount(store, prefix, tmp_path / "s3fs", secrets) as seen:
        through_s3fs = snapshot(seen / "tree")
        assert not differences(draft, through_s3fs, kinds=("file", "link"))
        assert os.readlink(seen / "tree" / "run") == "bin/run.sh"
        assert (seen / "tree" / "run").read_bytes() == b"#!/bin/sh\necho run\n"

    with rclone_mount(store, prefix, tmp_path / "rclone", secrets) as seen:
        through_rclone = snapshot(seen / "tree")
        # rclone keeps mtimes (as a float: compared to the microsecond) and bytes; it shows
        # its own modes, and s3fs's links as small files holding their target
        files = {p: e for p, e in draft.items() if e.kind == "file"}
        assert not differences(
            files,
            {p: through_rclone[p] for p in files},
            fields=("content", "mtime_ns"),
            mtime_unit=1000,
        )
        assert (
            through_rclone["run"].kind == "file" and through_rclone["run"].content == b"bin/run.sh"
        )
        assert through_rclone["run"].mtime_ns // 1000 == draft["run"].mtime_ns // 1000


def test_a_prefix_written_by_s3fs_reads_the_same_here(
    store: LocalStore, api: StoreApi, mount: WritableMount, tmp_path: Path
) -> None:
    dataset = api.mint(files={})
    prefix = api.record(dataset.handle)["item"]["s3"]["path"]
    with s3fs_mount(store, prefix, tmp_path / "s3fs", tmp_path / "secrets") as seen:
        make_tree(seen / "tree", directory_times=False)
        written = snapshot(seen / "tree")
    assert written["run"].kind == "link" and written["private.txt"].mode == 0o600
    here = snapshot(mount.dataset_dir(dataset.handle) / "tree", skip=not_manifest)
    assert not differences(written, here, kinds=("file", "link"))
    assert os.readlink(mount.dataset_dir(dataset.handle) / "tree" / "run") == "bin/run.sh"
