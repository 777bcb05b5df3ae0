"""Publishing drafts as new versions on a real mount: ``provenafs commit``, ``umount``, crashes.

Black-box, against a private seeded data store (so other tests' seed data never changes):
syscalls on a ``-o rw`` mount, the ``provenafs`` CLI, the data store's HTTP API, and raw S3
through the admin keys. Expected bytes come from the seed manifest and the test's own writes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provenafs.process import control_socket
from tests.conftest import LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.writes_support import (
    PROVENAFS,
    StoreApi,
    WritableMount,
    kill_daemon,
    s3_tree,
    start_writable_mount,
    writable_mount,
    writes_fixtures,
)

pytestmark = pytest.mark.fuse

SEED = "reef-temperatures"  # alice owns it (item role admin): she may version it


store, api, mount = writes_fixtures("publish")


@pytest.fixture
def mounted(store: LocalStore, tmp_path: Path) -> Iterator[WritableMount]:
    with writable_mount(store, tmp_path / "mnt") as mount:
        yield mount


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fresh_latest(api: StoreApi, store: LocalStore, name: str = SEED) -> str:
    """The latest version of a seeded dataset (earlier tests of this module may have versioned
    it)."""
    handle = str(store.manifest()["datasets"][name]["handle"])
    after = api.versions_after(handle)
    return after[-1] if after else handle


def tree_sums(root: Path) -> dict[str, str]:
    sums = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            sums[path.relative_to(root).as_posix()] = sha256(path.read_bytes())
    return sums


def status_json(mount: WritableMount) -> dict[str, Any]:
    result = mount.run("status", str(mount.path), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def test_commit_publishes_exactly_the_changes_as_one_new_version(
    store: LocalStore, api: StoreApi, mounted: WritableMount
) -> None:
    seed = store.manifest()["datasets"][SEED]
    old = str(seed["handle"])
    assert api.versions_after(old) == [], "this test needs the seed's first version to be latest"
    old_prefix = api.record(old)["item"]["s3"]["path"]
    old_objects = s3_tree(api, old_prefix)
    files = {path: meta["sha256"] for path, meta in seed["files"].items()}
    changed, removed = sorted(p for p in files if p != "metadata.json")[:2]
    directory = mounted.dataset_dir(old)

    (directory / "added" / "deep").mkdir(parents=True)
    (directory / "added" / "deep" / "new.txt").write_bytes(b"new in the next version\n")
    with (directory / changed).open("ab") as file:
        file.write(b"appended\n")
    (directory / removed).unlink()
    (directory / "empty-new").mkdir()

    result = mounted.commit(directory / "added", "e2e: publish the changes")
    assert result.returncode == 0, result.stderr + mounted.mount.log_text()[-3000:]
    new = result.stdout.strip().splitlines()[-1]
    assert new != old
    assert f"publishing {old} as {new}" in result.stderr
    assert "files" in result.stderr
    assert "MiB" in result.stderr

    # the registry has exactly one new version, and it is this one
    assert api.versions_after(old) == [new]
    record = api.record(new)["item"]
    assert record["versioning_info"]["previous_version"] == old
    assert record["versioning_info"]["reason"] == "e2e: publish the changes"
    assert [item["id"] for item in api.list_all()].count(new) == 1

    # the old version is byte for byte what it was, in S3 and through the mount
    assert s3_tree(api, old_prefix) == old_objects
    assert tree_sums(directory) == {**files, "metadata.json": sha256(old_objects["metadata.json"])}

    # the new version holds exactly the old files plus the changes, and the server's metadata.json
    new_prefix = record["s3"]["path"]
    landed = s3_tree(api, new_prefix)
    made = {"added/", "added/deep/", "added/deep/new.txt", "empty-new/"}
    expected_keys = (set(old_objects) - {removed}) | made
    # every folder the draft made or changed carries its mode and mtime on a "dir/" marker (an
    # unlink changes its folder; and unlinking a folder's last file leaves it, as POSIX says)
    folder = removed.rpartition("/")[0]
    if folder:
        expected_keys.add(folder + "/")
    assert set(landed) == expected_keys
    assert landed["added/deep/new.txt"] == b"new in the next version\n"
    assert landed[changed] == old_objects[changed] + b"appended\n"
    for key in expected_keys - {"added/deep/new.txt", changed, "metadata.json"}:
        assert landed[key] == old_objects.get(key, b""), key
    assert json.loads(landed["metadata.json"])["dataset_info"]["name"] == seed["display_name"]

    # @latest and by-name/ follow the new version; the new handle reads the new tree
    prefix, suffix = old.split("/")
    new_suffix = new.split("/")[1]
    assert os.readlink(mounted.path / prefix / f"{suffix}@latest") == new_suffix
    by_name = os.readlink(mounted.path / "by-name" / seed["display_name"])
    assert by_name == f"../{prefix}/{new_suffix}"
    assert (mounted.dataset_dir(new) / changed).read_bytes() == landed[changed]
    assert not (mounted.dataset_dir(new) / removed).exists()

    # nothing is left to publish: a second commit says so, prints the handle and exits 0
    again = mounted.commit(directory, "again")
    assert again.returncode == 0, again.stderr
    assert "nothing to publish" in again.stderr
    assert again.stdout.strip().splitlines()[-1] == new  # what the draft became
    assert api.versions_after(old) == [new]
    assert status_json(mounted)["drafts"] == []


def test_commit_outside_a_dataset_fails_with_a_reason(mounted: WritableMount) -> None:
    result = mounted.commit(mounted.path / "by-name", "r")
    assert result.returncode == 1
    assert "not inside a dataset" in result.stderr
    outside = mounted.run("commit", "/tmp", "-m", "r")
    assert outside.returncode == 1
    assert "not inside a provenafs mount" in outside.stderr


def wait_for_bytes_in_flight(mount: WritableMount, handle: str, timeout: float = 120) -> str:
    """Poll the daemon until a publish of ``handle`` has sent some but not all bytes.

    Through the control socket's client (what ``provenafs status`` uses) in this process: a
    CLI process per poll would start too slowly to catch a fast publish in the middle.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answers = list(control_socket.request(mount.path, {"op": "status"}))
        for progress in answers[-1]["status"].get("publishing", []):
            if (
                progress["handle"] == handle
                and 0 < progress["bytes_done"] < progress["bytes_total"]
            ):
                return str(progress["new_handle"])
        time.sleep(0.005)
    raise AssertionError("the publish never showed bytes in flight")


def test_kill_9_mid_publish_resumes_into_the_same_version(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    old = fresh_latest(api, store, "versioned-v3")
    big = os.urandom(8 << 20) * 48  # 384 MiB, in 16 MiB parts: the copy takes a while
    digest = sha256(big)
    home = tmp_path / "home"
    mount = start_writable_mount(store, tmp_path / "mnt", home=home)
    try:
        (mount.dataset_dir(old) / "big.bin").write_bytes(big)
        commit = subprocess.Popen(
            [*PROVENAFS, "commit", str(mount.dataset_dir(old)), "-m", "crash test"],
            env=mount.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            new = wait_for_bytes_in_flight(mount, old)
            kill_daemon(mount)
            _, err = commit.communicate(timeout=60)
            assert commit.returncode == 1, err
        finally:
            if commit.poll() is None:
                commit.send_signal(signal.SIGTERM)
                commit.wait(timeout=30)
    finally:
        stop_mount(mount.mount)
    assert api.versions_after(old) == [new]

    mount = start_writable_mount(store, tmp_path / "mnt", home=home)  # same home: same drafts
    try:
        # the daemon resumes on its own; a commit now waits for it and answers the same handle
        result = mount.commit(mount.dataset_dir(old), "crash test, again")
        assert result.returncode == 0, result.stderr + mount.mount.log_text()[-3000:]
        assert result.stdout.strip().splitlines()[-1] == new
        assert status_json(mount)["drafts"] == []
        assert sha256((mount.dataset_dir(new) / "big.bin").read_bytes()) == digest
    finally:
        stop_mount(mount.mount)
    assert api.versions_after(old) == [new]  # never a second version
    new_prefix = api.record(new)["item"]["s3"]["path"]
    body = api.s3.get_object(Bucket=api.bucket, Key=new_prefix + "big.bin")["Body"].read()
    assert sha256(body) == digest
    unfinished = api.s3.list_multipart_uploads(Bucket=api.bucket, Prefix=new_prefix)
    assert unfinished.get("Uploads", []) == []


def test_umount_refuses_with_pending_drafts_and_publish_publishes(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    old = fresh_latest(api, store, "versioned-v3")
    mount = start_writable_mount(store, tmp_path / "mnt")
    try:
        (mount.dataset_dir(old) / "at-unmount.txt").write_bytes(b"published by umount\n")
        refused = mount.run("umount", str(mount.path), "--refuse")
        assert refused.returncode == 1
        assert "unpublished draft" in refused.stderr
        assert old in refused.stderr
        assert mount.mount.is_mounted()
        assert api.versions_after(old) == []

        result = mount.run("umount", str(mount.path), "--publish")
        assert result.returncode == 0, result.stderr + mount.mount.log_text()[-3000:]
        assert not mount.mount.is_mounted()
    finally:
        stop_mount(mount.mount)
    [new] = api.versions_after(old)
    landed = s3_tree(api, api.record(new)["item"]["s3"]["path"])
    assert landed["at-unmount.txt"] == b"published by umount\n"


def test_status_lists_drafts_with_counts(
    store: LocalStore, api: StoreApi, mounted: WritableMount
) -> None:
    old = fresh_latest(api, store, "versioned-v3")
    directory = mounted.dataset_dir(old)
    (directory / "one.txt").write_bytes(b"1" * 1000)
    (directory / "two.txt").write_bytes(b"2" * 2000)
    (directory / "readings.csv").unlink()
    document = status_json(mounted)
    [draft] = [d for d in document["drafts"] if d["handle"] == old]
    assert (draft["added"], draft["changed"], draft["removed"]) == (2, 0, 1)
    assert draft["staged_bytes"] == 3000
    human = mounted.run("status", str(mounted.path))
    assert human.returncode == 0, human.stderr
    assert f"{old}: 2 added, 0 changed, 1 removed" in human.stdout
    text = json.dumps(document)
    assert "secret" not in text.lower()
    assert "session_token" not in text


def test_in_place_writes_go_into_the_same_dataset_and_pending_refuses(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    base = {"keep.txt": b"kept\n", "change.txt": b"old\n", "gone.txt": b"removed\n"}
    target = api.mint(files=base)
    pending = api.mint(files={"a.txt": b"a\n"})
    mount = start_writable_mount(
        store, tmp_path / "mnt", options="rw,publish_delay=0,writes=in-place"
    )

    def landed() -> dict[str, bytes]:
        tree = s3_tree(api, target.s3_prefix)
        return {k: v for k, v in tree.items() if k != "metadata.json"}

    try:
        directory = mount.dataset_dir(target.handle)
        # Each call has landed in the dataset itself when it returns; no commit, no version.
        (directory / "new.txt").write_bytes(b"written in place\n")
        (directory / "change.txt").write_bytes(b"new\n")
        (directory / "gone.txt").unlink()
        assert landed() == {
            "keep.txt": b"kept\n",
            "change.txt": b"new\n",
            "new.txt": b"written in place\n",
        }
        (directory / "sub").mkdir()
        assert landed()["sub/"] == b""
        (directory / "keep.txt").rename(directory / "sub" / "keep.txt")
        os.truncate(directory / "change.txt", 2)
        assert landed() == {
            "sub/": b"",
            "sub/keep.txt": b"kept\n",
            "change.txt": b"ne",
            "new.txt": b"written in place\n",
        }
        (directory / "sub" / "keep.txt").unlink()
        (directory / "sub").rmdir()
        assert landed() == {"change.txt": b"ne", "new.txt": b"written in place\n"}
        assert sorted(p.name for p in directory.iterdir()) == [
            "change.txt",
            "metadata.json",
            "new.txt",
        ]
        # Nothing is left to publish; the mount holds no draft of the dataset any more.
        result = mount.commit(directory, "in place")
        assert result.returncode == 0, result.stderr + mount.mount.log_text()[-3000:]
        assert result.stdout.strip().splitlines()[-1] == target.handle
        assert "nothing to publish" in result.stderr
        assert api.versions_after(target.handle) == []

        # A dataset pending review: the data store refuses write credentials (403), the
        # first write gets EACCES, and the data store's reason is in the log.
        api.serve_ok("release", "request", pending.handle)
        with pytest.raises(PermissionError):
            (mount.dataset_dir(pending.handle) / "b.txt").write_bytes(b"b\n")
        assert "pending review or is released" in mount.mount.log_text()
        assert set(s3_tree(api, pending.s3_prefix)) == {"a.txt", "metadata.json"}
    finally:
        stop_mount(mount.mount)


def test_in_place_tar_x_and_interleaved_writers_land_byte_for_byte(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    """Real tools and several handles on the real mount: each close lands at once."""
    target = api.mint(files={"old/stale.txt": b"replaced by the archive\n"})
    source = tmp_path / "source"
    files = {
        f"tree/d{n % 4}/f{n:02d}.bin": hashlib.sha256(str(n).encode()).digest() * (n + 1)
        for n in range(24)
    }
    files["tree/empty.txt"] = b""
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    archive = tmp_path / "tree.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(source), "tree"], check=True)
    mount = start_writable_mount(
        store, tmp_path / "mnt", options="rw,publish_delay=0,writes=in-place"
    )
    try:
        directory = mount.dataset_dir(target.handle)
        subprocess.run(["tar", "-xf", str(archive), "-C", str(directory)], check=True)
        subprocess.run(["rm", "-r", str(directory / "old")], check=True)
        with (directory / "a.log").open("wb") as first:
            first.write(b"first half, ")
            first.flush()
            with (directory / "b.log").open("wb") as second:
                second.write(b"written while a.log is open\n")
            assert s3_tree(api, target.s3_prefix)["b.log"] == b"written while a.log is open\n"
            first.write(b"second half\n")
        landed = s3_tree(api, target.s3_prefix)
        markers = {f"tree/{d}": b"" for d in ("", "d0/", "d1/", "d2/", "d3/")}  # mkdir's
        assert {k: v for k, v in landed.items() if k != "metadata.json"} == {
            **files,
            **markers,
            "a.log": b"first half, second half\n",
            "b.log": b"written while a.log is open\n",
        }
        assert api.versions_after(target.handle) == []
        status = json.loads((mount.path / ".provenafs" / "status.json").read_text())
        assert [d for d in status["drafts"] if d["handle"] == target.handle] == []
    finally:
        stop_mount(mount.mount)
