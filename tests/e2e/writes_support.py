"""Helpers for the black-box write tests: writable mounts, fresh datasets, the data store's view.

Everything here speaks only public interfaces: the ``provenafs`` CLI (``mount``, ``commit``,
``status``, ``serve ...``), syscalls on a real mount, the data store's HTTP API and raw S3 through
the admin keys in ``DATA_DIR/s3-admin.json``. It must not import the mount's internals (drafts,
publish, sidecar editing): the tests hold those to docs/SEMANTICS.md from the outside (only
``process.mounts.find_mount``, a reader of /proc/self/mountinfo, is shared).

``writes_fixtures(tag)`` makes the fixtures every write test module starts from: a private
data store (``store``), its HTTP API (``api``) and one writable mount (``mount``), module-wide.

Each mount gets its own home directory (config, cache, state and data dirs), so a remount after
``kill -9`` with the same home finds the same drafts, and no test sees another test's drafts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from provenafs.process.mounts import find_mount
from tests.conftest import LocalStore, require_fuse, start_local_store
from tests.e2e.conftest import Mount, isolated_environment, start_mount, stop_mount

__all__ = [
    "PROVENAFS",
    "WRITE_OPTIONS",
    "Dataset",
    "StoreApi",
    "Tree",
    "WritableMount",
    "expect_errno",
    "kill_daemon",
    "private_store",
    "read_tree",
    "s3_tree",
    "start_writable_mount",
    "writable_mount",
    "writes_fixtures",
]

PROVENAFS = [sys.executable, "-m", "provenafs"]
# ``rw``: the mount is read-only unless asked (docs/SEMANTICS.md). The tests publish only by
# ``provenafs commit``; a quiet-delay publish in the middle of a test would move the latest
# version under it, so it is off (``publish_delay=0``: never).
WRITE_OPTIONS = "rw,publish_delay=0"
API_TIMEOUT = 60.0


def errno_name(number: int | None) -> str:
    return errno.errorcode.get(number or 0, str(number))


def expect_errno(expected: int, action: Callable[[], object], what: str = "") -> None:
    """Run ``action`` and assert it fails with ``OSError(expected)``."""
    try:
        action()
    except OSError as exc:
        assert exc.errno == expected, (
            f"{what}: expected {errno_name(expected)}, got {errno_name(exc.errno)} ({exc})"
        )
        return
    pytest.fail(f"{what}: expected {errno_name(expected)}, but it succeeded")


@contextlib.contextmanager
def private_store(data_dir: Path) -> Iterator[LocalStore]:
    """A seeded local data store of a test module's own (skips where FUSE is missing), stopped
    after the ``with`` block."""
    require_fuse()
    store = start_local_store(data_dir)
    try:
        yield store
    finally:
        store.stop()


# -- the data store's HTTP API ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset version made for one test."""

    handle: str
    name: str  # display name
    s3_prefix: str  # with trailing slash

    @property
    def prefix(self) -> str:
        return self.handle.split("/", 1)[0]

    @property
    def suffix(self) -> str:
        return self.handle.split("/", 1)[1]


class StoreApi:
    """The data store as any client sees it: HTTP with a user's token, plus admin S3."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self._tokens: dict[str, str] = {}
        admin = json.loads((store.data_dir / "s3-admin.json").read_text())
        self.bucket: str = admin["bucket"]
        self.s3: Any = boto3.client(
            "s3",
            endpoint_url=admin["endpoint_url"],
            aws_access_key_id=admin["access_key_id"],
            aws_secret_access_key=admin["secret_access_key"],
            region_name=admin.get("region", "ap-southeast-2"),
        )

    def __repr__(self) -> str:  # never the tokens
        return f"StoreApi({self.store.base_url})"

    def token(self, user: str) -> str:
        if user not in self._tokens:
            self._tokens[user] = self.store.token(user)
        return self._tokens[user]

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    def fetch(self, handle: str, user: str = "alice") -> httpx.Response:
        return httpx.get(
            f"{self.store.base_url}/registry/items/fetch-dataset",
            params={"handle_id": handle},
            headers=self.headers(user),
            timeout=API_TIMEOUT,
        )

    def record(self, handle: str, user: str = "alice") -> dict[str, Any]:
        """The fetch result (``item``, ``roles``, ``locked``) of ``handle``."""
        response = self.fetch(handle, user)
        assert response.status_code == 200, f"fetch {handle}: {response.status_code}"
        body: dict[str, Any] = response.json()
        return body

    def access_settings(self, handle: str, user: str = "alice") -> dict[str, Any]:
        """The dataset's access settings (owner, general and group roles) as the store has them."""
        response = httpx.get(
            f"{self.store.base_url}/registry/entity/dataset/auth/configuration",
            params={"id": handle},
            headers=self.headers(user),
            timeout=API_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def seed_handle(self, seed_name: str) -> str:
        return str(self.store.manifest()["datasets"][seed_name]["handle"])

    def collection_format(self, name: str) -> dict[str, Any]:
        """A valid CollectionFormat: a seeded dataset's, renamed."""
        item = self.record(self.seed_handle("reef-temperatures"))["item"]
        document: dict[str, Any] = json.loads(json.dumps(item["collection_format"]))
        document["dataset_info"]["name"] = name
        return document

    def mint(
        self,
        user: str = "alice",
        files: Mapping[str, bytes] | None = None,
        dirs: tuple[str, ...] = (),
        name: str | None = None,
    ) -> Dataset:
        """Mint a dataset as ``user`` and put ``files`` (and ``dir/`` markers) under its prefix."""
        name = name or f"writes test {uuid.uuid4().hex[:12]}"
        response = httpx.post(
            f"{self.store.base_url}/register/mint-dataset",
            json=self.collection_format(name),
            headers=self.headers(user),
            timeout=API_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"]["success"], body["status"]["details"]
        handle = str(body["handle"])
        s3_prefix = str(self.record(handle, user)["item"]["s3"]["path"])
        for relpath, data in (files or {}).items():
            self.s3.put_object(Bucket=self.bucket, Key=s3_prefix + relpath, Body=data)
        for directory in dirs:
            self.s3.put_object(Bucket=self.bucket, Key=s3_prefix + directory.rstrip("/") + "/")
        return Dataset(handle, name, s3_prefix)

    def next_version(self, handle: str) -> str | None:
        info = self.record(handle)["item"].get("versioning_info") or {}
        following = info.get("next_version")
        return str(following) if following else None

    def versions_after(self, handle: str) -> list[str]:
        """The handles that follow ``handle`` in its chain, oldest first."""
        found: list[str] = []
        current: str | None = self.next_version(handle)
        while current is not None:
            assert current not in found, f"versioning chain loops at {current}"
            found.append(current)
            current = self.next_version(current)
        return found

    def list_all(self, user: str = "alice") -> list[dict[str, Any]]:
        """Every dataset ``user`` may see (all pages of ``POST /registry/items/list``)."""
        items: list[dict[str, Any]] = []
        key: Any = None
        for _ in range(10_000):
            response = httpx.post(
                f"{self.store.base_url}/registry/items/list",
                json={"sort_by": None, "pagination_key": key, "page_size": 100},
                headers=self.headers(user),
                timeout=API_TIMEOUT,
            )
            assert response.status_code == 200, response.text
            body = response.json()
            items += body["items"]
            key = body.get("pagination_key")
            if key is None:
                return items
        raise AssertionError("the dataset list never ended")

    def serve_ok(self, *args: str) -> str:
        """Run ``provenafs serve ARGS --data-dir DIR`` and assert it succeeded."""
        result = self.store.serve_cli(*args)
        assert result.returncode == 0, f"serve {' '.join(args)}: {result.stderr}"
        return result.stdout


def s3_tree(api: StoreApi, s3_prefix: str, *, manifest: bool = False) -> dict[str, bytes]:
    """Every object under ``s3_prefix``, by key relative to it (``dir/`` markers included; a
    published version's attributes manifest, ``.provenafs/``, only with ``manifest``)."""
    found: dict[str, bytes] = {}
    paginator = api.s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=api.bucket, Prefix=s3_prefix):
        for entry in page.get("Contents", []):
            relative = entry["Key"][len(s3_prefix) :]
            if relative.startswith(".provenafs/") and not manifest:
                continue
            body = api.s3.get_object(Bucket=api.bucket, Key=entry["Key"])["Body"].read()
            found[relative] = body
    return found


# -- trees on disk --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Tree:
    """Files (relative path → bytes) and directories (relative paths) under a root."""

    files: dict[str, bytes]
    dirs: frozenset[str]

    def without(self, *paths: str) -> Tree:
        return Tree({k: v for k, v in self.files.items() if k not in paths}, self.dirs)


def read_tree(root: Path) -> Tree:
    """Walk ``root`` with plain syscalls (no symlink following) and read every file."""
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for directory, subdirs, names in os.walk(root):
        relative = os.path.relpath(directory, root)
        base = "" if relative == "." else relative + "/"
        dirs.update(base + name for name in subdirs)
        for name in names:
            files[base + name] = (Path(directory) / name).read_bytes()
    return Tree(files, frozenset(dirs))


def s3_as_tree(objects: Mapping[str, bytes]) -> Tree:
    """The tree S3 keys describe: ``a/b`` files, ``a/`` markers and every parent as dirs."""
    files = {key: body for key, body in objects.items() if not key.endswith("/")}
    dirs: set[str] = set()
    for key in objects:
        parts = key.rstrip("/").split("/")
        last = len(parts) if key.endswith("/") else len(parts) - 1
        dirs.update("/".join(parts[:n]) for n in range(1, last + 1))
    return Tree(files, frozenset(dirs))


# -- writable mounts ------------------------------------------------------------------------------


@dataclasses.dataclass
class WritableMount:
    """A ``-o rw`` mount, its daemon, and the environment its CLI commands need."""

    mount: Mount
    env: dict[str, str] = dataclasses.field(repr=False)  # holds the offline token: never shown
    home: Path
    options: str

    @property
    def path(self) -> Path:
        return self.mount.path

    def dataset_dir(self, handle: str) -> Path:
        return self.mount.path / handle

    def sidecar(self, handle: str) -> Path:
        return self.mount.path / f"{handle}.json"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PROVENAFS, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def commit(
        self, path: Path, reason: str = "writes test", timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        return self.run("commit", str(path), "-m", reason, timeout=timeout)

    def commit_ok(self, path: Path, reason: str = "writes test", timeout: float = 300) -> str:
        """``provenafs commit PATH -m REASON``; returns the new handle (its last stdout line)."""
        result = self.commit(path, reason, timeout)
        assert result.returncode == 0, (
            f"commit {path} exited {result.returncode}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}\nlog tail: {self.mount.log_text()[-3000:]}"
        )
        lines = result.stdout.strip().splitlines()
        assert lines, "commit printed nothing"
        return lines[-1].strip()


def mount_environment(store: LocalStore, home: Path, user: str) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    token_env = {
        "PROVENAFS_OFFLINE_TOKEN": store.token(user, offline=True),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_DATA_HOME": str(home / "data"),
    }
    return isolated_environment(home, token_env)


def start_writable_mount(
    store: LocalStore,
    mountpoint: Path,
    *,
    user: str = "alice",
    home: Path | None = None,
    options: str = WRITE_OPTIONS,
) -> WritableMount:
    """Mount ``store`` read-write as ``user``; a later call with the same ``home`` remounts."""
    if home is None:
        home = mountpoint.parent / f"{mountpoint.name}-home"
    env = mount_environment(store, home, user)
    token_env = {key: env[key] for key in ("PROVENAFS_OFFLINE_TOKEN", "XDG_STATE_HOME")}
    token_env["XDG_DATA_HOME"] = env["XDG_DATA_HOME"]
    mount = start_mount(
        store, mountpoint, user=user, options=options, token_env=token_env, home=home
    )
    return WritableMount(mount, env, home, options)


def wait_until_unmounted(path: Path, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if find_mount(path) is None:
            return True
        time.sleep(0.05)
    return False


def kill_daemon(mount: WritableMount) -> None:
    """``kill -9`` the daemon by PID and wait until the mount is gone (auto_unmount)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(mount.mount.process.pid, signal.SIGKILL)
    mount.mount.process.wait(timeout=30)
    if not wait_until_unmounted(mount.path):
        subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False, timeout=60)


@contextlib.contextmanager
def writable_mount(store: LocalStore, mountpoint: Path, **kwargs: Any) -> Iterator[WritableMount]:
    """A writable mount for the length of a ``with`` block, unmounted and stopped after."""
    mount = start_writable_mount(store, mountpoint, **kwargs)
    try:
        yield mount
    finally:
        stop_mount(mount.mount)


def writes_fixtures(tag: str, *, options: str = WRITE_OPTIONS) -> tuple[Any, Any, Any]:
    """The module-scoped fixtures ``store``, ``api`` and ``mount`` of one write test module:
    ``store, api, mount = writes_fixtures("writes-posix")`` at its top level."""

    @pytest.fixture(scope="module", name="store")
    def store_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
        with private_store(tmp_path_factory.mktemp(tag) / "data") as private:
            yield private

    @pytest.fixture(scope="module", name="api")
    def api_fixture(store: LocalStore) -> StoreApi:
        return StoreApi(store)

    @pytest.fixture(scope="module", name="mount")
    def mount_fixture(
        store: LocalStore, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[WritableMount]:
        mountpoint = tmp_path_factory.mktemp(f"{tag}-mount") / "mnt"
        with writable_mount(store, mountpoint, options=options) as writable:
            yield writable

    return store_fixture, api_fixture, mount_fixture
