"""POSIX writes on a real mount: every operation, refusals, a commit (docs/SEMANTICS.md, Writes).

Black-box: syscalls on a ``-o rw`` mount of this module's private data store, ``provenafs commit``,
the data store's HTTP API and raw S3. Each test writes into a dataset of its own, minted through
the API by alice (owner, so item role ``admin``) with a few files put straight into S3.
Expected values come from the test's own bytes and the data store, never from the mount's code.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import IN_CI, LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.writes_support import (
    WRITE_OPTIONS,
    Dataset,
    StoreApi,
    WritableMount,
    expect_errno,
    read_tree,
    s3_as_tree,
    s3_tree,
    start_writable_mount,
    writes_fixtures,
)

pytestmark = pytest.mark.fuse

BASE_FILES: dict[str, bytes] = {
    "README.md": b"# A dataset for write tests\n",
    "data/one.csv": b"a,b\n1,2\n3,4\n",
    "data/two.bin": random.Random(7).randbytes(300_000),
    "keep/untouched.txt": "unchanged ünïcödé\n".encode(),
}
BASE_DIRS = ("emptyd",)


store, api, mount = writes_fixtures("writes-posix")


@pytest.fixture
def dataset(api: StoreApi) -> Dataset:
    """A fresh dataset alice owns, holding ``BASE_FILES`` and the empty folder ``emptyd/``."""
    return api.mint("alice", BASE_FILES, BASE_DIRS)


@pytest.fixture
def root(mount: WritableMount, dataset: Dataset) -> Path:
    return mount.dataset_dir(dataset.handle)


def write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as stream:
        stream.write(data)


def assert_base_unchanged(root: Path, *except_paths: str) -> None:
    for relpath, data in BASE_FILES.items():
        if relpath not in except_paths:
            assert (root / relpath).read_bytes() == data, relpath


# -- every operation --------------------------------------------------------------------------


def test_a_new_file_is_readable_at_once_and_unchanged_files_still_read_right(root: Path) -> None:
    data = b"fresh bytes\n" * 1000
    write_file(root / "new.txt", data)
    assert (root / "new.txt").read_bytes() == data
    assert os.stat(root / "new.txt").st_size == len(data)
    assert "new.txt" in os.listdir(root)
    write_file(root / "data" / "three.txt", b"3\n")
    assert sorted(os.listdir(root / "data")) == ["one.csv", "three.txt", "two.bin"]
    assert_base_unchanged(root)


def test_write_at_offsets_and_append(root: Path) -> None:
    path = root / "sparse.bin"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
    try:
        assert os.pwrite(fd, b"head", 0) == 4
        assert os.pwrite(fd, b"tail", 10_000) == 4  # leaves a hole
        assert os.pwrite(fd, b"mid", 100) == 3
    finally:
        os.close(fd)
    expected = bytearray(10_004)
    expected[0:4] = b"head"
    expected[100:103] = b"mid"
    expected[10_000:10_004] = b"tail"
    assert path.read_bytes() == bytes(expected)

    with path.open("ab") as stream:
        stream.write(b"appended")
    expected += b"appended"
    assert path.read_bytes() == bytes(expected)

    # A write into the middle of a file of the base version changes only those bytes.
    base = root / "data" / "two.bin"
    fd = os.open(base, os.O_WRONLY)
    try:
        assert os.pwrite(fd, b"X" * 5000, 123_456) == 5000
    finally:
        os.close(fd)
    changed = bytearray(BASE_FILES["data/two.bin"])
    changed[123_456:128_456] = b"X" * 5000
    assert base.read_bytes() == bytes(changed)
    with base.open("ab") as stream:
        stream.write(b"!")
    assert base.read_bytes() == bytes(changed) + b"!"
    assert_base_unchanged(root, "data/two.bin")


def test_truncate_grows_with_zeros_and_shrinks(root: Path) -> None:
    path = root / "data" / "one.csv"
    original = BASE_FILES["data/one.csv"]
    os.truncate(path, len(original) + 5000)
    assert path.read_bytes() == original + bytes(5000)
    os.truncate(path, 4)
    assert path.read_bytes() == original[:4]
    assert os.stat(path).st_size == 4

    fd = os.open(root / "data" / "two.bin", os.O_RDWR)
    try:
        os.ftruncate(fd, 10)
        assert os.pread(fd, 100, 0) == BASE_FILES["data/two.bin"][:10]
        os.ftruncate(fd, 20)
        assert os.pread(fd, 100, 0) == BASE_FILES["data/two.bin"][:10] + bytes(10)
    finally:
        os.close(fd)

    fd = os.open(root / "README.md", os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert (root / "README.md").read_bytes() == b""
    assert os.stat(root / "README.md").st_size == 0
    assert (root / "keep" / "untouched.txt").read_bytes() == BASE_FILES["keep/untouched.txt"]


def test_unlink(root: Path) -> None:
    os.unlink(root / "data" / "one.csv")
    expect_errno(errno.ENOENT, lambda: os.stat(root / "data" / "one.csv"), "stat after unlink")
    assert sorted(os.listdir(root / "data")) == ["two.bin"]
    write_file(root / "temp.txt", b"temporary")
    os.unlink(root / "temp.txt")
    assert "temp.txt" not in os.listdir(root)
    expect_errno(errno.ENOENT, lambda: os.unlink(root / "temp.txt"), "unlink twice")
    assert_base_unchanged(root, "data/one.csv")


def test_mkdir_and_rmdir(root: Path) -> None:
    os.mkdir(root / "made")
    os.mkdir(root / "made" / "deeper")
    write_file(root / "made" / "deeper" / "file.txt", b"in a new dir")
    assert (root / "made" / "deeper" / "file.txt").read_bytes() == b"in a new dir"
    expect_errno(errno.EEXIST, lambda: os.mkdir(root / "made"), "mkdir existing")
    expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(root / "made"), "rmdir non-empty new dir")
    expect_errno(errno.ENOTEMPTY, lambda: os.rmdir(root / "data"), "rmdir non-empty base dir")
    os.unlink(root / "made" / "deeper" / "file.txt")
    os.rmdir(root / "made" / "deeper")
    os.rmdir(root / "made")
    assert not (root / "made").exists()
    os.rmdir(root / "emptyd")  # the base version's empty folder (a zero-byte ``emptyd/`` key)
    assert "emptyd" not in os.listdir(root)
    expect_errno(errno.ENOTDIR, lambda: os.rmdir(root / "README.md"), "rmdir a file")
    assert_base_unchanged(root)


def test_rename_and_rename_over_for_files_and_directories(root: Path) -> None:
    os.rename(root / "README.md", root / "README.txt")
    assert (root / "README.txt").read_bytes() == BASE_FILES["README.md"]
    assert not (root / "README.md").exists()

    write_file(root / "replacement.csv", b"replaced\n")
    os.rename(root / "replacement.csv", root / "data" / "one.csv")  # over an existing file
    assert (root / "data" / "one.csv").read_bytes() == b"replaced\n"
    assert not (root / "replacement.csv").exists()

    os.rename(root / "data", root / "moved")  # a base directory with its files
    assert not (root / "data").exists()
    assert (root / "moved" / "one.csv").read_bytes() == b"replaced\n"
    assert (root / "moved" / "two.bin").read_bytes() == BASE_FILES["data/two.bin"]

    os.rename(root / "moved", root / "emptyd")  # a directory over an empty directory
    assert sorted(os.listdir(root / "emptyd")) == ["one.csv", "two.bin"]
    assert not (root / "moved").exists()

    os.mkdir(root / "other")
    expect_errno(
        errno.ENOTEMPTY, lambda: os.rename(root / "other", root / "emptyd"), "dir over non-empty"
    )
    expect_errno(errno.EISDIR, lambda: os.rename(root / "README.txt", root / "other"), "file→dir")
    expect_errno(errno.ENOTDIR, lambda: os.rename(root / "other", root / "README.txt"), "dir→file")
    assert (root / "keep" / "untouched.txt").read_bytes() == BASE_FILES["keep/untouched.txt"]
    tree = read_tree(root).without("metadata.json")
    assert tree.files == {
        "README.txt": BASE_FILES["README.md"],
        "emptyd/one.csv": b"replaced\n",
        "emptyd/two.bin": BASE_FILES["data/two.bin"],
        "keep/untouched.txt": BASE_FILES["keep/untouched.txt"],
    }
    assert tree.dirs == {"emptyd", "keep", "other"}


def test_o_excl_on_an_existing_name_is_eexist(root: Path) -> None:
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    expect_errno(errno.EEXIST, lambda: os.open(root / "README.md", flags), "O_EXCL base file")
    fd = os.open(root / "lock", flags, 0o644)
    os.close(fd)
    expect_errno(errno.EEXIST, lambda: os.open(root / "lock", flags), "O_EXCL new file")
    expect_errno(errno.EEXIST, lambda: os.open(root / "data", flags), "O_EXCL directory")
    assert (root / "README.md").read_bytes() == BASE_FILES["README.md"]


def test_writing_to_an_unlinked_but_open_file(root: Path) -> None:
    path = root / "scratch.bin"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.write(fd, b"before unlink;")
        os.unlink(path)
        assert "scratch.bin" not in os.listdir(root)
        os.write(fd, b"after unlink")
        assert os.pread(fd, 100, 0) == b"before unlink;after unlink"
        assert os.fstat(fd).st_size == len(b"before unlink;after unlink")
    finally:
        os.close(fd)
    assert not path.exists()

    # The same for a file of the base version.
    base = root / "keep" / "untouched.txt"
    fd = os.open(base, os.O_RDWR)
    try:
        os.unlink(base)
        os.pwrite(fd, b"UN", 0)
        expected = b"UN" + BASE_FILES["keep/untouched.txt"][2:]
        assert os.pread(fd, 1000, 0) == expected
    finally:
        os.close(fd)
    assert os.listdir(root / "keep") == []


def test_editors_write_a_temporary_file_then_rename_it_over(root: Path) -> None:
    target = root / "README.md"
    temporary = root / ".README.md.swp"
    fd = os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        os.write(fd, b"# Edited in an editor\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, target)
    assert target.read_bytes() == b"# Edited in an editor\n"
    assert ".README.md.swp" not in os.listdir(root)
    # Backup-then-write (vim's "backupcopy=no"): rename the old away, write a new one, drop the old.
    os.rename(target, root / "README.md~")
    write_file(target, b"# Edited twice\n")
    os.unlink(root / "README.md~")
    assert target.read_bytes() == b"# Edited twice\n"
    assert sorted(os.listdir(root)) == sorted(
        ["README.md", "data", "keep", "emptyd", "metadata.json"]
    )


def local_tree(base: Path) -> dict[str, bytes]:
    files = {
        "top.txt": b"top\n",
        "empty.dat": b"",
        "nested/a/b/deep.bin": random.Random(3).randbytes(1 << 20),
        "nested/ünï cödé.txt": "ünïcödé\n".encode(),
    }
    for relpath, data in files.items():
        (base / relpath).parent.mkdir(parents=True, exist_ok=True)
        (base / relpath).write_bytes(data)
    (base / "nested" / "emptydir").mkdir()
    return files


def test_cp_r_copies_a_local_tree_in(root: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    files = local_tree(source)
    result = subprocess.run(
        ["cp", "-r", str(source), str(root / "copied")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    tree = read_tree(root / "copied")
    assert tree.files == files
    assert tree.dirs == {"nested", "nested/a", "nested/a/b", "nested/emptydir"}
    assert_base_unchanged(root)


def test_rsync_a_copies_a_local_tree_in(root: Path, tmp_path: Path) -> None:
    if shutil.which("rsync") is None:
        if IN_CI:
            pytest.fail("rsync is missing under CI=true: install it (apt install rsync)")
        pytest.skip("rsync is not installed (apt install rsync)")
    source = tmp_path / "src"
    files = local_tree(source)
    result = subprocess.run(
        ["rsync", "-a", f"{source}/", f"{root / 'synced'}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    tree = read_tree(root / "synced")
    assert tree.files == files
    assert tree.dirs == {"nested", "nested/a", "nested/a/b", "nested/emptydir"}
    # rsync writes each file as a temporary ``.name.XXXXXX`` and renames it: none may be left.
    assert all(not name.startswith(".") for name in os.listdir(root / "synced" / "nested"))
    # A second run finds nothing to do and changes nothing.
    again = subprocess.run(
        ["rsync", "-a", "--checksum", f"{source}/", f"{root / 'synced'}/"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert read_tree(root / "synced").files == files


# -- publishing -------------------------------------------------------------------------------


def test_commit_publishes_a_new_version_and_leaves_the_old_one_unchanged(
    mount: WritableMount, api: StoreApi, dataset: Dataset, root: Path
) -> None:
    old_tree = read_tree(root)
    write_file(root / "added.txt", b"added\n")
    fd = os.open(root / "data" / "two.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, b"CHANGED", 1000)
    finally:
        os.close(fd)
    os.unlink(root / "data" / "one.csv")
    os.rename(root / "keep", root / "kept")
    os.mkdir(root / "fresh-empty")
    expected = read_tree(root).without("metadata.json")

    new_handle = mount.commit_ok(root, "posix e2e: add, change, remove, rename")

    # The registry: exactly one new version, the one the command printed.
    assert api.versions_after(dataset.handle) == [new_handle]
    new_record = api.record(new_handle)["item"]
    assert new_record["versioning_info"]["previous_version"] == dataset.handle
    assert new_record["versioning_info"]["reason"] == "posix e2e: add, change, remove, rename"

    # The old handle's directory shows the old version, byte for byte.
    assert read_tree(root) == old_tree
    # The new version through the mount: the draft's tree plus the server's metadata.json.
    new_root = mount.dataset_dir(new_handle)
    new_tree = read_tree(new_root)
    assert new_tree.without("metadata.json") == expected
    assert "metadata.json" in new_tree.files
    # ... and in S3, under the new version's own prefix.
    objects = s3_tree(api, new_record["s3"]["path"])
    s3_view = s3_as_tree(objects)
    assert s3_view.without("metadata.json").files == expected.files
    assert s3_view.dirs == expected.dirs
    assert objects["metadata.json"] == new_tree.files["metadata.json"]
    # The old version's objects in S3 are untouched.
    assert s3_as_tree(s3_tree(api, dataset.s3_prefix)).without("metadata.json").files == (
        BASE_FILES
    )

    # The old version is no longer the latest: it refuses writes now (docs/SEMANTICS.md, Writes),
    # and says where its next version is.
    expect_errno(errno.EROFS, lambda: write_file(root / "late.txt", b"late"), "old version")
    assert os.getxattr(root, "user.provena.next_version") == new_handle.encode()

    # @latest and by-name follow the new version.
    prefix, new_suffix = new_handle.split("/", 1)
    assert prefix == dataset.prefix
    assert os.readlink(mount.path / prefix / f"{dataset.suffix}@latest") == new_suffix
    assert os.readlink(mount.path / "by-name" / dataset.name) == f"../{prefix}/{new_suffix}"
    assert read_tree(mount.path / "by-name" / dataset.name).without("metadata.json") == expected


# -- refusals ---------------------------------------------------------------------------------


def assert_every_change_fails(directory: Path, existing_file: str, expected: int) -> None:
    """Create, mkdir, open for writing, truncate, unlink, rename in ``directory``: ``expected``."""
    target = directory / existing_file
    flags = os.O_CREAT | os.O_WRONLY
    expect_errno(expected, lambda: os.open(directory / "new.txt", flags, 0o644), "create")
    expect_errno(expected, lambda: os.mkdir(directory / "newdir"), "mkdir")
    expect_errno(expected, lambda: os.open(target, os.O_WRONLY), "open for writing")
    expect_errno(expected, lambda: os.open(target, os.O_RDWR | os.O_APPEND), "open to append")
    expect_errno(expected, lambda: os.truncate(target, 0), "truncate")
    expect_errno(expected, lambda: os.unlink(target), "unlink")
    expect_errno(expected, lambda: os.rename(target, directory / "renamed"), "rename")
    assert not (directory / "new.txt").exists()
    assert not (directory / "newdir").exists()


def test_a_version_that_is_not_the_latest_is_read_only(mount: WritableMount, api: StoreApi) -> None:
    old = api.seed_handle("versioned-v1")  # alice's, followed by versioned-v2
    assert api.next_version(old) is not None
    directory = mount.dataset_dir(old)
    before = read_tree(directory)
    assert_every_change_fails(directory, "readings.csv", errno.EROFS)
    assert read_tree(directory) == before
    assert api.versions_after(old) == [
        api.seed_handle("versioned-v2"),
        api.seed_handle("versioned-v3"),
    ]


def test_a_dataset_without_item_admin_refuses_writes(mount: WritableMount, api: StoreApi) -> None:
    handle = api.seed_handle("many-files")  # bob's; alice may read it (general roles), not admin
    roles = set(api.record(handle)["roles"])
    assert "dataset-data-read" in roles
    assert "admin" not in roles
    directory = mount.dataset_dir(handle)
    assert_every_change_fails(directory / "files", "0000.txt", errno.EACCES)
    assert (directory / "files" / "0000.txt").read_bytes() == b"file 0\n"
    assert api.next_version(handle) is None


def test_rename_across_datasets_is_exdev(mount: WritableMount, api: StoreApi) -> None:
    first = api.mint("alice", {"a.txt": b"first"})
    second = api.mint("alice", {"b.txt": b"second"}, ("sub",))
    one, two = mount.dataset_dir(first.handle), mount.dataset_dir(second.handle)
    expect_errno(errno.EXDEV, lambda: os.rename(one / "a.txt", two / "a.txt"), "file")
    expect_errno(errno.EXDEV, lambda: os.rename(two / "sub", one / "sub"), "directory")
    write_file(one / "new.txt", b"new in a draft")
    expect_errno(errno.EXDEV, lambda: os.rename(one / "new.txt", two / "new.txt"), "draft file")
    assert read_tree(one).without("metadata.json").files == {
        "a.txt": b"first",
        "new.txt": b"new in a draft",
    }
    assert read_tree(two).without("metadata.json").files == {"b.txt": b"second"}


def test_the_server_metadata_json_is_read_only(root: Path) -> None:
    path = root / "metadata.json"
    before = path.read_bytes()
    expect_errno(errno.EACCES, lambda: os.open(path, os.O_WRONLY), "open for writing")
    expect_errno(errno.EACCES, lambda: os.open(path, os.O_RDWR), "open read-write")
    expect_errno(errno.EACCES, lambda: os.open(path, os.O_WRONLY | os.O_TRUNC), "open O_TRUNC")
    expect_errno(errno.EACCES, lambda: os.truncate(path, 0), "truncate")
    assert path.read_bytes() == before
    # Only the top-level one is the server's: a metadata.json in a folder is an ordinary file.
    write_file(root / "data" / "metadata.json", b"{}")
    assert (root / "data" / "metadata.json").read_bytes() == b"{}"


def test_the_sidecar_of_a_locked_dataset_refuses_edits(mount: WritableMount, api: StoreApi) -> None:
    handle = api.seed_handle("locked")  # alice's, locked
    record = api.record(handle)
    assert record["locked"] is True
    edited = dict(record["item"]["collection_format"])
    edited["dataset_info"] = dict(edited["dataset_info"], description="Edited while locked")
    sidecar = mount.sidecar(handle)
    before = sidecar.read_bytes()

    def edit() -> None:
        with sidecar.open("w") as stream:
            stream.write(json.dumps({"collection_format": edited}))

    expect_errno(errno.EACCES, edit, "edit the sidecar of a locked dataset")
    after = api.record(handle)
    assert after["item"]["history"] == record["item"]["history"]
    assert after["item"]["collection_format"] == record["item"]["collection_format"]
    assert sidecar.read_bytes() == before


# -- what the mount tells about writes: mode bits, status, failures, umount, quiet delay -------


def test_write_bits_appear_only_where_a_write_can_succeed(
    mount: WritableMount, api: StoreApi, root: Path, dataset: Dataset
) -> None:
    # docs/SEMANTICS.md, The tree: "write bits appear only where a write can succeed".
    def writable(path: Path) -> bool:
        return bool(os.stat(path).st_mode & stat.S_IWUSR)

    assert writable(root)
    assert writable(root / "data")
    assert writable(root / "data" / "one.csv")
    assert not writable(root / "metadata.json")
    assert writable(mount.sidecar(dataset.handle))
    assert not writable(mount.dataset_dir(api.seed_handle("versioned-v1")))  # not the latest
    assert not writable(mount.dataset_dir(api.seed_handle("many-files")))  # bob's: no admin
    assert not writable(mount.sidecar(api.seed_handle("many-files")))  # no metadata-write
    assert not writable(mount.sidecar(api.seed_handle("locked")))  # locked: no metadata edit


def draft_of(mount: WritableMount, handle: str) -> dict[str, Any] | None:
    result = mount.run("status", str(mount.path), "--json")
    assert result.returncode == 0, result.stderr
    for draft in json.loads(result.stdout)["drafts"]:
        if draft["handle"] == handle:
            found: dict[str, Any] = draft
            return found
    return None


def test_status_lists_a_draft_with_what_changed(
    mount: WritableMount, dataset: Dataset, root: Path
) -> None:
    # Issue 4 item 7: status "lists drafts (files added, changed, removed, bytes)".
    assert draft_of(mount, dataset.handle) is None
    write_file(root / "added.bin", bytes(5000))
    write_file(root / "README.md", b"changed\n")
    os.unlink(root / "data" / "one.csv")
    draft = draft_of(mount, dataset.handle)
    assert draft is not None
    assert (draft["added"], draft["changed"], draft["removed"]) == (1, 1, 1)
    assert draft["staged_bytes"] == 5000 + len(b"changed\n")
    text = mount.run("status", str(mount.path))
    assert text.returncode == 0, text.stderr
    assert dataset.handle in text.stdout


def test_a_failed_publish_exits_non_zero_with_the_reason_and_mints_nothing(
    mount: WritableMount, api: StoreApi, dataset: Dataset, root: Path
) -> None:
    write_file(root / "added.txt", b"added\n")
    # Someone versions the dataset behind the mount's back: the draft's base is no longer the
    # latest, so POST /register/version is refused (docs/API.md §3.8: 400 "not the latest").
    response = httpx.post(
        f"{api.store.base_url}/register/version",
        json={"id": dataset.handle, "reason": "versioned elsewhere"},
        headers=api.headers("alice"),
        timeout=60,
    )
    assert response.status_code == 200, response.text
    elsewhere = response.json()["new_version_id"]
    result = mount.commit(root, "should fail")
    assert result.returncode != 0, result.stdout
    assert "latest" in result.stderr.lower(), result.stderr
    assert api.versions_after(dataset.handle) == [elsewhere]
    assert api.next_version(elsewhere) is None
    # The acknowledged change is not thrown away.
    assert (root / "added.txt").read_bytes() == b"added\n"


def test_umount_refuses_with_pending_drafts_then_publishes_them(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a"})
    own = start_writable_mount(
        store, tmp_path / "mnt", options=f"{WRITE_OPTIONS},on_unmount=refuse"
    )
    try:
        write_file(own.dataset_dir(dataset.handle) / "b.txt", b"b")
        refused = own.run("umount", str(own.path))
        assert refused.returncode != 0
        assert refused.stderr.strip(), "a refusal must say why"
        assert own.mount.is_mounted()
        assert api.next_version(dataset.handle) is None
        assert (own.dataset_dir(dataset.handle) / "b.txt").read_bytes() == b"b"

        published = own.run("umount", "--publish", str(own.path))
        assert published.returncode == 0, published.stderr
        assert not own.mount.is_mounted()
        [new_handle] = api.versions_after(dataset.handle)
        objects = s3_tree(api, api.record(new_handle)["item"]["s3"]["path"])
        assert {k: v for k, v in objects.items() if k != "metadata.json"} == {
            "a.txt": b"a",
            "b.txt": b"b",
        }
    finally:
        stop_mount(own.mount)


def test_a_quiet_draft_publishes_itself_only_after_its_last_writer_closes(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    # docs/SEMANTICS.md, Writes: published "after the dataset has been quiet (no open writers, no
    # change) for a configurable delay".
    dataset = api.mint("alice", {"a.txt": b"a"})
    own = start_writable_mount(store, tmp_path / "mnt", options="rw,publish_delay=1")
    try:
        path = own.dataset_dir(dataset.handle) / "slow.txt"
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.write(fd, b"first half, ")
            time.sleep(4)  # four delays with a writer open
            assert api.next_version(dataset.handle) is None, "published under an open writer"
            os.write(fd, b"second half")
        finally:
            os.close(fd)
        deadline = time.monotonic() + 120
        while api.next_version(dataset.handle) is None and time.monotonic() < deadline:
            time.sleep(0.25)
        [new_handle] = api.versions_after(dataset.handle)
        new_prefix = api.record(new_handle)["item"]["s3"]["path"]
        while "slow.txt" not in s3_tree(api, new_prefix) and time.monotonic() < deadline:
            time.sleep(0.25)  # the version exists; its files are still being written
        assert s3_tree(api, new_prefix).get("slow.txt") == b"first half, second half"
        assert api.versions_after(dataset.handle) == [new_handle]
    finally:
        stop_mount(own.mount)


# -- harder cases -------------------------------------------------------------------------------


def test_names_over_255_bytes_are_refused(root: Path) -> None:
    # docs/SEMANTICS.md, Errors: "names over 255 bytes ... get a clear error and change nothing".
    long_name = "é" * 128  # 256 bytes in UTF-8
    expect_errno(
        errno.ENAMETOOLONG,
        lambda: os.open(root / long_name, os.O_CREAT | os.O_WRONLY, 0o644),
        "create",
    )
    expect_errno(errno.ENAMETOOLONG, lambda: os.mkdir(root / long_name), "mkdir")
    expect_errno(
        errno.ENAMETOOLONG, lambda: os.rename(root / "README.md", root / long_name), "rename"
    )
    write_file(root / ("é" * 127 + "x"), b"255 bytes is fine")  # 255 bytes
    assert (root / ("é" * 127 + "x")).read_bytes() == b"255 bytes is fine"
    assert (root / "README.md").read_bytes() == BASE_FILES["README.md"]


def test_a_reader_opened_before_a_write_sees_the_write(root: Path) -> None:
    path = root / "data" / "one.csv"
    reader = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(reader, 100, 0) == BASE_FILES["data/one.csv"]
        writer = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(writer, b"Z,Z", 0)
        finally:
            os.close(writer)
        assert os.pread(reader, 100, 0) == b"Z,Z" + BASE_FILES["data/one.csv"][3:]
    finally:
        os.close(reader)


def test_a_file_renamed_over_stays_readable_through_an_open_descriptor(root: Path) -> None:
    target = root / "keep" / "untouched.txt"
    reader = os.open(target, os.O_RDONLY)
    try:
        write_file(root / "replacement", b"the new content")
        os.rename(root / "replacement", target)
        assert target.read_bytes() == b"the new content"
        assert os.pread(reader, 1000, 0) == BASE_FILES["keep/untouched.txt"]
    finally:
        os.close(reader)


def test_two_descriptors_write_different_parts_of_one_file(root: Path) -> None:
    path = root / "shared.bin"
    first = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    second = os.open(path, os.O_RDWR)
    try:
        for index in range(64):
            os.pwrite(first if index % 2 else second, bytes([index]) * 4096, index * 4096)
        os.fsync(first)
        expected = b"".join(bytes([index]) * 4096 for index in range(64))
        assert os.pread(second, len(expected) + 10, 0) == expected
    finally:
        os.close(first)
        os.close(second)
    assert path.read_bytes() == expected


def test_a_large_file_and_a_huge_sparse_truncate(root: Path) -> None:
    path = root / "large.bin"
    data = random.Random(9).randbytes(24 << 20)
    with path.open("wb") as stream:
        for start in range(0, len(data), 1 << 20):
            stream.write(data[start : start + (1 << 20)])
    assert os.stat(path).st_size == len(data)
    assert path.read_bytes() == data
    huge = 4 << 30  # grows to 4 GiB of zeros without writing them
    os.truncate(path, huge)
    assert os.stat(path).st_size == huge
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 16, huge - 16) == bytes(16)
        assert os.pread(fd, 16, len(data) - 8) == data[-8:] + bytes(8)
    finally:
        os.close(fd)
    os.truncate(path, 1000)
    assert path.read_bytes() == data[:1000]


def test_a_folder_emptied_by_unlinks_is_published_as_an_empty_folder(
    mount: WritableMount, api: StoreApi, dataset: Dataset, root: Path
) -> None:
    # POSIX: unlinking a folder's last file leaves the folder; docs/SEMANTICS.md, The tree: an empty
    # folder is a zero-byte ``dir/`` key. So the new version still has ``keep/``, now empty.
    os.unlink(root / "keep" / "untouched.txt")
    assert os.listdir(root / "keep") == []
    new_handle = mount.commit_ok(root, "empty a folder")
    new_root = mount.dataset_dir(new_handle)
    assert os.listdir(new_root / "keep") == []
    in_s3 = s3_as_tree(s3_tree(api, api.record(new_handle)["item"]["s3"]["path"]))
    assert "keep" in in_s3.dirs
    assert "keep/untouched.txt" not in in_s3.files


def test_many_writers_at_once_then_publish(
    mount: WritableMount, api: StoreApi, dataset: Dataset, root: Path
) -> None:
    # Eight threads create, rewrite and rename files in their own folders at the same time.
    def worker(index: int) -> dict[str, bytes]:
        rng = random.Random(index)
        folder = root / f"worker-{index}"
        os.mkdir(folder)
        made: dict[str, bytes] = {}
        for n in range(20):
            data = rng.randbytes(rng.randint(0, 40_000))
            write_file(folder / f"tmp-{n}", data)
            os.rename(folder / f"tmp-{n}", folder / f"file-{n}")
            made[f"worker-{index}/file-{n}"] = data
            if n % 5 == 4:
                os.unlink(folder / f"file-{n - 1}")
                del made[f"worker-{index}/file-{n - 1}"]
        return made

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(worker, range(8)))
    expected = {**BASE_FILES, **{k: v for made in results for k, v in made.items()}}
    assert read_tree(root).without("metadata.json").files == expected
    new_handle = mount.commit_ok(root, "eight writers")
    published = s3_as_tree(s3_tree(api, api.record(new_handle)["item"]["s3"]["path"]))
    assert published.without("metadata.json").files == expected


def test_a_read_only_mount_refuses_every_change(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", {"a.txt": b"a"})
    own = start_writable_mount(store, tmp_path / "mnt", options="ro")
    try:
        directory = own.dataset_dir(dataset.handle)
        assert_every_change_fails(directory, "a.txt", errno.EROFS)
        assert not os.stat(directory).st_mode & stat.S_IWUSR
    finally:
        stop_mount(own.mount)


def test_umount_publishes_pending_drafts_by_default(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    # Issue 4 item 3: published "at unmount (`provenafs umount` publishes pending drafts or
    # refuses ..., per an option)"; the default option publishes.
    dataset = api.mint("alice", {"a.txt": b"a"})
    own = start_writable_mount(store, tmp_path / "mnt", options="rw,publish_delay=0")
    try:
        write_file(own.dataset_dir(dataset.handle) / "c.txt", b"c")
        result = own.run("umount", str(own.path))
        assert result.returncode == 0, result.stderr
        assert not own.mount.is_mounted()
        [new_handle] = api.versions_after(dataset.handle)
        objects = s3_tree(api, api.record(new_handle)["item"]["s3"]["path"])
        assert objects.get("c.txt") == b"c"
        assert objects.get("a.txt") == b"a"
    finally:
        stop_mount(own.mount)
