"""The tree of docs/SEMANTICS.md on a real mount: every node kind, sidecars, errnos.

Expected values come from the data store's own answers (fetch-dataset with alice's token) and
raw S3, never from the mount's code.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import Mount, SeededDataset, StoreView, list_s3, seeded_datasets

pytestmark = pytest.mark.fuse


def fetch_document(view: StoreView, handle: str) -> dict[str, Any]:
    response = view.fetch(handle)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body.pop("status", None)
    return body


def render_sidecar(document: dict[str, Any]) -> bytes:
    """The fetch result as docs/SEMANTICS.md describes it: sorted keys, indent 2, a newline."""
    text = json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode()


def split_handle(handle: str) -> tuple[str, str]:
    prefix, suffix = handle.split("/", 1)
    return prefix, suffix


def latest_of(view: StoreView, handle: str) -> str:
    """Follow ``next_version`` to the end of the chain."""
    for _ in range(100):
        info = fetch_document(view, handle)["item"].get("versioning_info") or {}
        following = info.get("next_version")
        if not following:
            return handle
        handle = following
    raise AssertionError("versioning chain does not end")


def test_sidecars_equal_the_fetch_results(
    alice_mount: Mount, local_store: LocalStore, store_view: StoreView
) -> None:
    datasets = seeded_datasets(local_store, store_view)
    assert datasets
    for dataset in datasets:
        prefix, suffix = split_handle(dataset.handle)
        sidecar = alice_mount.path / prefix / f"{suffix}.json"
        expected = render_sidecar(fetch_document(store_view, dataset.handle))
        data = sidecar.read_bytes()
        assert data == expected, dataset.handle
        assert sidecar.stat().st_size == len(data)
        assert stat.S_ISREG(sidecar.stat().st_mode)


def test_root_prefix_and_dataset_directories(
    alice_mount: Mount, store_view: StoreView, readable: list[SeededDataset]
) -> None:
    root = alice_mount.path
    assert stat.S_ISDIR(os.stat(root).st_mode)
    names = os.listdir(root)
    assert "by-name" in names
    for dataset in readable:
        prefix, suffix = split_handle(dataset.handle)
        assert prefix in names
        assert stat.S_ISDIR(os.stat(root / prefix).st_mode)
        listing = os.listdir(root / prefix)
        assert suffix in listing
        assert f"{suffix}.json" in listing
        directory = root / dataset.handle
        assert stat.S_ISDIR(os.stat(directory).st_mode)
        item = fetch_document(store_view, dataset.handle)["item"]
        attrs = {name: os.getxattr(directory, name) for name in os.listxattr(directory)}
        for name in ("security.selinux", "system.posix_acl_access"):
            # ENOTSUP, not ENODATA: ``ls -l`` then stops asking every file of the mount.
            with pytest.raises(OSError) as unsupported:
                os.getxattr(directory, name)
            assert unsupported.value.errno == errno.EOPNOTSUPP, name
        assert attrs["user.provena.handle"] == dataset.handle.encode()
        assert attrs["user.provena.release_status"] == item["release_status"].encode()
        for name in (
            "user.provena.version",
            "user.provena.locked",
            "user.provena.roles",
            "user.provena.previous_version",
            "user.provena.next_version",
        ):
            assert name in attrs, name
        versioning = item.get("versioning_info") or {}
        if versioning.get("version") is not None:
            assert attrs["user.provena.version"] == str(versioning["version"]).encode()


def test_ls_la_on_every_directory_kind(alice_mount: Mount, readable: list[SeededDataset]) -> None:
    root = alice_mount.path
    dataset = readable[0]
    prefix, _ = split_handle(dataset.handle)
    for directory in (root, root / prefix, root / dataset.handle, root / "by-name"):
        result = subprocess.run(
            ["ls", "-la", str(directory)], check=False, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "?" not in result.stdout.split("\n", 1)[1], result.stdout  # every stat answered
        for name in os.listdir(directory):
            assert name in result.stdout, name


def test_files_subdirs_empty_folders_and_zero_byte_files(
    alice_mount: Mount, store_view: StoreView, readable: list[SeededDataset]
) -> None:
    kinds_seen = {"subdir": 0, "empty_folder": 0, "zero_byte": 0, "non_ascii": 0}
    for dataset in readable:
        writable = (
            "admin" in dataset.roles and latest_of(store_view, dataset.handle) == dataset.handle
        )
        for obj in list_s3(store_view, dataset.prefix):
            relpath = obj["Key"][len(dataset.prefix) :]
            if not relpath:
                continue
            path = alice_mount.path / dataset.handle / relpath.rstrip("/")
            st = os.stat(path)
            if relpath.endswith("/"):
                assert stat.S_ISDIR(st.st_mode), path
                assert os.listdir(path) == [] or obj["Size"] == 0
                kinds_seen["empty_folder"] += 1
                continue
            assert stat.S_ISREG(st.st_mode), path
            assert st.st_size == obj["Size"], path
            assert abs(st.st_mtime - obj["LastModified"].timestamp()) < 1.0, path
            # Write bits exactly where a write can succeed (docs/SEMANTICS.md, Writes), and
            # never on metadata.json.
            expected_write = writable and relpath != "metadata.json"
            assert bool(st.st_mode & 0o200) == expected_write, path
            assert os.getxattr(path, "user.provena.handle") == dataset.handle.encode()
            assert os.getxattr(path, "user.s3.key") == obj["Key"].encode()
            assert os.getxattr(path, "user.s3.etag") == obj["ETag"].strip('"').encode()
            if "/" in relpath:
                kinds_seen["subdir"] += 1
                assert stat.S_ISDIR(os.stat(path.parent).st_mode)
            if obj["Size"] == 0:
                kinds_seen["zero_byte"] += 1
                assert path.read_bytes() == b""
            if not relpath.isascii():
                kinds_seen["non_ascii"] += 1
                assert path.name in os.listdir(path.parent)
    assert all(kinds_seen.values()), kinds_seen


def test_presigned_url_xattr_on_request(alice_mount: Mount, readable: list[SeededDataset]) -> None:
    dataset = readable[0]
    relpath = next(iter(dataset.files))
    url = os.getxattr(alice_mount.path / dataset.handle / relpath, "user.provena.presigned_url")
    assert url.startswith(b"http")


def test_latest_links_and_by_name(
    alice_mount: Mount, store_view: StoreView, local_store: LocalStore
) -> None:
    root = alice_mount.path
    datasets = seeded_datasets(local_store, store_view)
    display_names: dict[str, list[str]] = {}
    for dataset in datasets:
        prefix, suffix = split_handle(dataset.handle)
        link = root / prefix / f"{suffix}@latest"
        assert stat.S_ISLNK(os.lstat(link).st_mode), link
        target = os.readlink(link)
        latest = latest_of(store_view, dataset.handle)
        assert (root / prefix / target).resolve() == (root / latest).resolve(), link
        item = fetch_document(store_view, latest)["item"]
        display_names.setdefault(item["display_name"], []).append(latest)
    by_name = root / "by-name"
    assert stat.S_ISDIR(os.stat(by_name).st_mode)
    entries = os.listdir(by_name)
    unique = {name: handles[0] for name, handles in display_names.items() if len(set(handles)) == 1}
    assert unique
    for name, latest in unique.items():
        assert name in entries
        link = by_name / name
        assert stat.S_ISLNK(os.lstat(link).st_mode)
        assert link.resolve() == (root / latest).resolve()


def test_control_directory(alice_mount: Mount) -> None:
    control = alice_mount.path / ".provenafs"
    assert stat.S_ISDIR(os.stat(control).st_mode)
    status_file = control / "status.json"
    data = status_file.read_bytes()
    assert isinstance(json.loads(data), dict)
    assert os.stat(status_file).st_size == len(data)


def test_another_users_private_dataset_is_eacces(
    alice_mount: Mount, local_store: LocalStore, store_view: StoreView
) -> None:
    private = []
    for seed in local_store.manifest()["datasets"].values():
        response = store_view.fetch(seed["handle"])
        roles = set(response.json().get("roles") or ()) if response.status_code == 200 else set()
        if not roles & {"dataset-data-read", "dataset-data-write", "admin"}:
            private.append(seed)
    assert private, "the seed has no dataset private from alice"
    for seed in private:
        directory = alice_mount.path / seed["handle"]
        with pytest.raises(PermissionError) as caught:
            os.listdir(directory)
        assert caught.value.errno == errno.EACCES
        for relpath in list(seed["files"])[:2]:
            with pytest.raises(PermissionError) as caught:
                (directory / relpath).read_bytes()
            assert caught.value.errno == errno.EACCES


def test_unknown_handles_are_enoent(alice_mount: Mount, readable: list[SeededDataset]) -> None:
    prefix, _ = split_handle(readable[0].handle)
    for name in (f"{prefix}/999999999", f"{prefix}/999999999.json", "99999.9/1", "no-such-thing"):
        for _ in range(2):  # the second answer may come from the kernel's negative cache
            with pytest.raises(FileNotFoundError) as caught:
                os.stat(alice_mount.path / name)
            assert caught.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError):
        os.stat(alice_mount.path / readable[0].handle / "no-such-file.csv")


def test_writes_to_an_older_version_are_erofs(
    alice_mount: Mount, readable: list[SeededDataset], store_view: StoreView
) -> None:
    # The mount is read-write; a version that is not the latest of its chain is not
    # (docs/SEMANTICS.md, Writes).
    older = [d for d in readable if latest_of(store_view, d.handle) != d.handle and d.files]
    assert older, "the seed has no readable older version"
    dataset = older[0]
    directory = alice_mount.path / dataset.handle
    existing = directory / next(iter(dataset.files))
    attempts: list[Callable[[], object]] = [
        lambda: open(existing, "r+b").close(),
        lambda: open(directory / "new-file.txt", "wb").close(),
        lambda: os.mkdir(directory / "new-dir"),
        lambda: os.unlink(existing),
        lambda: os.rename(existing, directory / "renamed"),
        lambda: os.truncate(existing, 0),
        lambda: os.symlink("x", directory / "link"),
        lambda: os.setxattr(existing, "user.note", b"x"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as caught:
            attempt()
        assert caught.value.errno == errno.EROFS, attempt
    assert existing.exists()
    assert not (directory / "new-file.txt").exists()
