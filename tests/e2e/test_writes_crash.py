"""Durability across ``kill -9`` of the daemon (docs/SEMANTICS.md, Writes).

(a) 100 files are written, each closed, while a background thread kills the daemon with SIGKILL
at a random moment; after a remount with the same state directory, every file whose ``close()``
returned success is there with its exact bytes, and the recovered draft publishes as normal.
(b) The daemon is killed in the middle of publishing a big change (a carried 64 MiB file and a new
200 MiB one); after a remount and ``provenafs commit``, the registry holds exactly ONE new
version after the base, and its objects in S3 are complete.
(c) A random mix of creates, overwrites, truncates, renames, unlinks and mkdirs is cut by
SIGKILL; after a remount, every change whose syscall returned success is there.

The random moment is drawn from a seed printed with the test's output, so a failure can be
replayed with ``WRITES_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.writes_support import (
    PROVENAFS,
    StoreApi,
    WritableMount,
    kill_daemon,
    read_tree,
    s3_as_tree,
    s3_tree,
    start_writable_mount,
    writes_fixtures,
)

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

FILE_COUNT = 100
MIB = 1 << 20
BIG_NEW_BYTES = 200 * MIB
CARRIED_BYTES = 64 * MIB


store, api, mount = writes_fixtures("writes-crash")


def crash_seed() -> int:
    text = os.environ.get("WRITES_CRASH_SEED")
    seed = int(text) if text else int.from_bytes(os.urandom(4), "big")
    print(f"WRITES_CRASH_SEED={seed}")
    return seed


@contextlib.contextmanager
def stopped_at_exit(mount: WritableMount) -> Iterator[WritableMount]:
    try:
        yield mount
    finally:
        stop_mount(mount.mount)


def test_every_acknowledged_file_survives_kill_9(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    rng = random.Random(crash_seed())
    dataset = api.mint("alice")
    home = tmp_path / "home"
    contents = {
        f"f{n:03d}.bin": rng.randbytes(rng.randint(0, 96 * 1024)) for n in range(FILE_COUNT)
    }
    kill_after = rng.randint(5, FILE_COUNT - 5)  # acknowledged files before the kill
    kill_delay = rng.uniform(0.0, 0.005)

    mount = start_writable_mount(store, tmp_path / "mnt", home=home)
    acknowledged: list[str] = []
    attempted: list[str] = []
    enough = threading.Event()

    def killer() -> None:
        enough.wait(timeout=120)
        time.sleep(kill_delay)
        kill_daemon(mount)

    thread = threading.Thread(target=killer, name="killer")
    with stopped_at_exit(mount):
        root = mount.dataset_dir(dataset.handle)
        os.listdir(root)  # the dataset is looked up before the clock starts
        thread.start()
        failure: OSError | None = None
        for name, data in contents.items():
            attempted.append(name)
            try:
                fd = os.open(root / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                finally:
                    os.close(fd)  # the acknowledgement: close() returned success
            except OSError as exc:
                failure = exc
                break
            acknowledged.append(name)
            if len(acknowledged) >= kill_after:
                enough.set()
        enough.set()
        thread.join(timeout=120)
        assert not thread.is_alive()
        assert not mount.mount.is_mounted()
        print(f"killed after {len(acknowledged)} acknowledged files ({failure})")

    remounted = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(remounted):
        root = remounted.dataset_dir(dataset.handle)
        shown = read_tree(root).without("metadata.json")
        for name in acknowledged:
            assert name in shown.files, f"{name} was acknowledged, then lost"
            assert shown.files[name] == contents[name], f"{name}: wrong bytes after the crash"
        unexpected = set(shown.files) - set(attempted)
        assert not unexpected, f"files that were never written: {sorted(unexpected)}"
        in_flight = set(shown.files) - set(acknowledged)
        assert len(in_flight) <= 1, f"more than one unacknowledged file: {sorted(in_flight)}"

        # The recovered draft publishes as normal: into the dataset itself, which is fresh
        # (version 1 holding only metadata.json, docs/SEMANTICS.md): no second version.
        new_handle = remounted.commit_ok(root, "after a crash")
        assert new_handle == dataset.handle
        assert api.versions_after(dataset.handle) == []
        record = api.record(new_handle)["item"]
        published = s3_as_tree(s3_tree(api, record["s3"]["path"])).without("metadata.json")
        assert published.files == shown.files


def chunk(index: int) -> bytes:
    return random.Random(index).randbytes(MIB)


def write_big_file(path: Path) -> str:
    """Write BIG_NEW_BYTES of deterministic data through the mount; return its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as stream:
        for index in range(BIG_NEW_BYTES // MIB):
            data = chunk(index)
            stream.write(data)
            digest.update(data)
    return digest.hexdigest()


def s3_sha256(api: StoreApi, key: str) -> tuple[int, str]:
    body = api.s3.get_object(Bucket=api.bucket, Key=key)["Body"]
    digest = hashlib.sha256()
    size = 0
    for part in iter(lambda: body.read(8 * MIB), b""):
        digest.update(part)
        size += len(part)
    return size, digest.hexdigest()


def s3_tree_sizes(api: StoreApi, prefix: str) -> dict[str, int]:
    """Sizes of the objects under ``prefix``, by relative key (a published version's
    attributes manifest, ``.provenafs/``, left out)."""
    return {
        entry["Key"][len(prefix) :]: int(entry["Size"])
        for page in api.s3.get_paginator("list_objects_v2").paginate(
            Bucket=api.bucket, Prefix=prefix
        )
        for entry in page.get("Contents", [])
        if not entry["Key"][len(prefix) :].startswith(".provenafs/")
    }


def wait_for_new_version(api: StoreApi, handle: str, commit: subprocess.Popen[str]) -> str | None:
    """Poll the registry until ``handle`` has a next version (step 1 of a publish is done)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        following = api.next_version(handle)
        if following is not None:
            return following
        if commit.poll() is not None:
            return api.next_version(handle)
        time.sleep(0.02)
    return None


@pytest.mark.timeout(600)
def test_kill_9_in_the_middle_of_a_publish_resumes_into_the_same_version(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    carried = random.Random(11).randbytes(CARRIED_BYTES)
    dataset = api.mint("alice", {"carried.bin": carried, "small.txt": b"small\n"})
    home = tmp_path / "home"
    mount = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(mount):
        root = mount.dataset_dir(dataset.handle)
        big_sha256 = write_big_file(root / "big.bin")
        commit = subprocess.Popen(
            [*PROVENAFS, "commit", str(root), "-m", "a big change"],
            env=mount.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            new_handle = wait_for_new_version(api, dataset.handle, commit)
            finished_before_kill = commit.poll() == 0
            kill_daemon(mount)
            out, err = commit.communicate(timeout=120)
        finally:
            if commit.poll() is None:
                commit.kill()
                commit.wait(timeout=30)
        assert new_handle is not None, f"no new version was registered: {out} {err}"
        new_prefix = api.record(new_handle)["item"]["s3"]["path"]
        landed = sorted(s3_tree_sizes(api, new_prefix).items())
        print(f"killed during the publish of {new_handle}; finished first: {finished_before_kill}")
        print(f"objects of the new version at the kill: {landed}")

    remounted = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(remounted):
        root = remounted.dataset_dir(dataset.handle)
        again = remounted.commit(root, "a big change")
        if again.returncode == 0:
            assert again.stdout.strip().splitlines()[-1].strip() == new_handle
        # If the remounted daemon resumed (and finished) by itself, the commit had nothing left
        # to do; either way the same new version must now be complete.
        sizes: dict[str, int] = {}
        deadline = time.monotonic() + (300 if again.returncode == 0 else 120)
        while time.monotonic() < deadline:
            sizes = s3_tree_sizes(api, new_prefix)
            complete = sizes.get("big.bin") == BIG_NEW_BYTES
            if complete and "big.bin" not in os.listdir(root):  # and the draft is cleared
                break
            time.sleep(0.5)
        assert again.returncode == 0 or sizes.get("big.bin") == BIG_NEW_BYTES, (
            f"the commit after the remount failed ({again.returncode}) and nothing finished "
            f"the publish into {new_handle}: {again.stderr.strip()}"
        )

        # Exactly one new version after the base, by the chain and by the list.
        assert api.versions_after(dataset.handle) == [new_handle]
        named = [item["id"] for item in api.list_all() if item["display_name"] == dataset.name]
        assert sorted(named) == sorted([dataset.handle, new_handle])

        # The new version's objects are complete.
        assert sorted(sizes) == ["big.bin", "carried.bin", "metadata.json", "small.txt"]
        assert s3_sha256(api, new_prefix + "big.bin") == (BIG_NEW_BYTES, big_sha256)
        assert s3_sha256(api, new_prefix + "carried.bin") == (
            CARRIED_BYTES,
            hashlib.sha256(carried).hexdigest(),
        )
        assert api.s3.get_object(Bucket=api.bucket, Key=new_prefix + "small.txt")[
            "Body"
        ].read() == (b"small\n")
        # The old handle's directory shows the old version again; the new one shows the change.
        assert sorted(os.listdir(root)) == ["carried.bin", "metadata.json", "small.txt"]
        assert os.stat(root / "carried.bin").st_size == CARRIED_BYTES
        new_root = remounted.dataset_dir(new_handle)
        assert os.stat(new_root / "big.bin").st_size == BIG_NEW_BYTES
        assert (new_root / "small.txt").read_bytes() == b"small\n"


@dataclasses.dataclass(frozen=True)
class Step:
    """One change made through the mount, and the paths it touches."""

    description: str
    touched: frozenset[str]
    run: Callable[[Path], None] = dataclasses.field(repr=False)  # syscalls in the dataset dir
    apply: Callable[[dict[str, bytes], set[str]], None] = dataclasses.field(repr=False)


def random_step(rng: random.Random, files: dict[str, bytes], dirs: set[str], n: int) -> Step:
    """A create, overwrite, truncate, rename, unlink or mkdir that succeeds on this model."""
    parents = ["", *sorted(dirs)]
    choice = rng.choice(
        ["create", "create", "mkdir"] + ["overwrite", "truncate", "rename", "unlink"] * bool(files)
    )
    new_path = rng.choice(parents).lstrip("/")
    new_path = f"{new_path}/{choice[:2]}{n}" if new_path else f"{choice[:2]}{n}"
    if choice == "create":
        data = rng.randbytes(rng.randint(0, 20_000))

        def create(root: Path) -> None:
            fd = os.open(root / new_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

        return Step(
            f"create {new_path}",
            frozenset({new_path}),
            create,
            lambda f, d: f.__setitem__(new_path, data),
        )
    if choice == "mkdir":
        return Step(
            f"mkdir {new_path}",
            frozenset({new_path}),
            lambda root: os.mkdir(root / new_path),
            lambda f, d: d.add(new_path),
        )
    path = rng.choice(sorted(files))
    if choice == "overwrite":
        offset, data = rng.randint(0, 25_000), rng.randbytes(rng.randint(1, 5000))

        def overwrite(root: Path) -> None:
            fd = os.open(root / path, os.O_WRONLY)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        def overwrite_model(f: dict[str, bytes], d: set[str]) -> None:
            old = f[path] + bytes(max(0, offset - len(f[path])))
            f[path] = old[:offset] + data + old[offset + len(data) :]

        return Step(f"overwrite {path}", frozenset({path}), overwrite, overwrite_model)
    if choice == "truncate":
        size = rng.randint(0, 30_000)

        def truncate_model(f: dict[str, bytes], d: set[str]) -> None:
            f[path] = f[path][:size] + bytes(max(0, size - len(f[path])))

        return Step(
            f"truncate {path}",
            frozenset({path}),
            lambda root: os.truncate(root / path, size),
            truncate_model,
        )
    if choice == "rename":
        return Step(
            f"rename {path} {new_path}",
            frozenset({path, new_path}),
            lambda root: os.rename(root / path, root / new_path),
            lambda f, d: f.__setitem__(new_path, f.pop(path)),
        )

    def unlink_model(f: dict[str, bytes], d: set[str]) -> None:
        del f[path]

    return Step(
        f"unlink {path}", frozenset({path}), lambda root: os.unlink(root / path), unlink_model
    )


def test_every_acknowledged_change_of_a_mixed_workload_survives_kill_9(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    # Issue 4 item 2: "`kill -9` of the daemon at any moment, then a new mount, shows every
    # acknowledged change": not only closed files, but renames, unlinks, truncates and mkdirs.
    rng = random.Random(crash_seed())
    dataset = api.mint("alice", {"base.txt": b"base file\n", "sub/carried.bin": bytes(3000)})
    files: dict[str, bytes] = {"base.txt": b"base file\n", "sub/carried.bin": bytes(3000)}
    dirs: set[str] = {"sub"}
    home = tmp_path / "home"
    kill_after = rng.randint(20, 280)
    mount = start_writable_mount(store, tmp_path / "mnt", home=home)
    acknowledged = 0
    in_flight: Step | None = None
    enough = threading.Event()

    def killer() -> None:
        enough.wait(timeout=120)
        kill_daemon(mount)

    thread = threading.Thread(target=killer, name="killer")
    with stopped_at_exit(mount):
        root = mount.dataset_dir(dataset.handle)
        os.listdir(root)
        thread.start()
        for n in range(300):
            step = random_step(rng, files, dirs, n)
            try:
                step.run(root)
            except OSError:
                in_flight = step
                break
            step.apply(files, dirs)
            acknowledged += 1
            if acknowledged >= kill_after:
                enough.set()
        enough.set()
        thread.join(timeout=120)
        assert not thread.is_alive()
        print(f"killed after {acknowledged} acknowledged steps; in flight: {in_flight}")

    remounted = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(remounted):
        root = remounted.dataset_dir(dataset.handle)
        shown = read_tree(root).without("metadata.json")
        skip = in_flight.touched if in_flight is not None else frozenset()
        for path in (set(shown.files) | set(files)) - skip:
            assert shown.files.get(path) == files.get(path), f"{path} after the crash"
        assert shown.dirs - skip == frozenset(dirs) - skip
        new_handle = remounted.commit_ok(root, "after a crash in a mixed workload")
        record = api.record(new_handle)["item"]
        published = s3_as_tree(s3_tree(api, record["s3"]["path"])).without("metadata.json")
        assert published.files == shown.files


def test_fsync_without_close_survives_kill_9(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    # Issue 4 item 2: "a successful `close()`/`fsync()` means the bytes are in the draft journal
    # on disk": here the descriptor is still open when the daemon dies.
    dataset = api.mint("alice", {"base.bin": bytes(range(256)) * 64})
    home = tmp_path / "home"
    mount = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(mount):
        root = mount.dataset_dir(dataset.handle)
        new_fd = os.open(root / "new.bin", os.O_CREAT | os.O_WRONLY, 0o644)
        base_fd = os.open(root / "base.bin", os.O_WRONLY)
        try:
            os.write(new_fd, b"synced before the crash")
            os.fsync(new_fd)
            os.pwrite(base_fd, b"CHANGED", 100)
            os.fdatasync(base_fd)
            kill_daemon(mount)
        finally:
            for fd in (new_fd, base_fd):
                with contextlib.suppress(OSError):
                    os.close(fd)
    remounted = start_writable_mount(store, tmp_path / "mnt", home=home)
    with stopped_at_exit(remounted):
        root = remounted.dataset_dir(dataset.handle)
        assert (root / "new.bin").read_bytes() == b"synced before the crash"
        expected = bytearray(bytes(range(256)) * 64)
        expected[100:107] = b"CHANGED"
        assert (root / "base.bin").read_bytes() == bytes(expected)
