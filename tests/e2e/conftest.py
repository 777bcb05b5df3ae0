"""Real mounts for end-to-end tests: ``python -m provenafs mount URL MNT -f`` in a subprocess.

The daemon always runs in its own process (a process must not make syscalls against a mount its
own trio loop serves). Each mount is waited for until ``/proc/self/mountinfo`` lists it as
``fuse.provenafs`` and the root answers ``stat``; teardown unmounts with ``fusermount3 -u`` and
stops the daemon by PID. Everything here that touches FUSE calls ``require_fuse()`` first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from provenafs.process.mounts import FSTYPE, find_mount
from tests.conftest import LocalStore, require_fuse, start_local_store

MOUNT_READY_TIMEOUT = 60.0


@dataclasses.dataclass
class Mount:
    """A running mount daemon and where it is mounted."""

    path: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    store: LocalStore

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def is_mounted(self) -> bool:
        entry = find_mount(self.path)
        return entry is not None and entry.fstype == FSTYPE


def isolated_environment(home: Path, token_env: Mapping[str, str]) -> dict[str, str]:
    """The environment of a mount process: private config/cache dirs, and exactly one token."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PROVENAFS_TOKEN", "PROVENAFS_OFFLINE_TOKEN"}
    }
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_CACHE_HOME"] = str(home / "cache")
    env.update(token_env)
    return env


def wait_until_mounted(path: Path, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Block until ``path`` is a provenafs mount whose root answers, or fail with the log."""
    deadline = time.monotonic() + MOUNT_READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"mount daemon exited with {process.returncode}:\n"
                f"{log_path.read_text(errors='replace')[-4000:]}"
            )
        entry = find_mount(path)
        if entry is not None and entry.fstype == FSTYPE:
            os.stat(path)  # the first request: answered once the daemon's loop runs
            return
        time.sleep(0.1)
    raise RuntimeError(f"mount not ready:\n{log_path.read_text(errors='replace')[-4000:]}")


def start_mount(
    store: LocalStore,
    mountpoint: Path,
    *,
    user: str = "alice",
    options: str | None = None,
    token_env: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> Mount:
    """Mount ``store`` at ``mountpoint`` as ``user`` (offline token) in a foreground daemon.

    ``home`` holds the daemon's config and cache directories (default: one beside the mount).
    """
    require_fuse()
    mountpoint.mkdir(parents=True, exist_ok=True)
    if home is None:
        home = mountpoint.parent / f"{mountpoint.name}-home"
    home.mkdir(exist_ok=True)
    if token_env is None:
        token_env = {"PROVENAFS_OFFLINE_TOKEN": store.token(user, offline=True)}
    log_path = mountpoint.parent / f"{mountpoint.name}-daemon.log"
    command = [sys.executable, "-m", "provenafs", "mount", store.base_url, str(mountpoint), "-f"]
    if options:
        command += ["-o", options]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=isolated_environment(home, token_env),
        )
    mount = Mount(mountpoint, process, log_path, store)
    try:
        wait_until_mounted(mountpoint, process, log_path)
    except BaseException:
        stop_mount(mount)
        raise
    return mount


def stop_mount(mount: Mount) -> None:
    """Unmount with ``fusermount3 -u`` and stop the daemon by PID."""
    if mount.is_mounted():
        subprocess.run(["fusermount3", "-u", str(mount.path)], check=False, timeout=60)
    if mount.process.poll() is None:
        try:
            mount.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            mount.process.send_signal(signal.SIGTERM)
            try:
                mount.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                mount.process.kill()
                mount.process.wait(timeout=15)
    if mount.is_mounted():  # a daemon that died without auto_unmount doing its job
        subprocess.run(["fusermount3", "-u", "-z", str(mount.path)], check=False, timeout=60)


# -- the data store's view, for comparison ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StoreView:
    """What the data store and raw S3 say, fetched without the mount."""

    store: LocalStore
    alice_token: str

    def fetch(self, handle: str, token: str | None = None) -> httpx.Response:
        return httpx.get(
            f"{self.store.base_url}/registry/items/fetch-dataset",
            params={"handle_id": handle},
            headers={"Authorization": f"Bearer {token or self.alice_token}"},
            timeout=60,
        )

    def s3_client(self) -> Any:
        admin = json.loads((self.store.data_dir / "s3-admin.json").read_text())
        return boto3.client(
            "s3",
            endpoint_url=admin["endpoint_url"],
            aws_access_key_id=admin["access_key_id"],
            aws_secret_access_key=admin["secret_access_key"],
            region_name=admin["region"],
        )

    def bucket(self) -> str:
        admin: dict[str, Any] = json.loads((self.store.data_dir / "s3-admin.json").read_text())
        return str(admin["bucket"])


@pytest.fixture(scope="session")
def store_view(local_store: LocalStore) -> StoreView:
    return StoreView(local_store, local_store.token("alice"))


@pytest.fixture(scope="session")
def alice_mount(
    local_store: LocalStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """The shared seeded store mounted once for alice (read-only use only)."""
    require_fuse()
    mount = start_mount(local_store, tmp_path_factory.mktemp("alice") / "mnt")
    try:
        yield mount
    finally:
        stop_mount(mount)


@pytest.fixture(scope="module")
def private_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    """A store of this module's own: short credential lifetimes, faults, kills."""
    require_fuse()
    store = start_local_store(tmp_path_factory.mktemp("private") / "data", "--credential-ttl", "3")
    try:
        yield store
    finally:
        store.stop()


@dataclasses.dataclass(frozen=True)
class SeededDataset:
    handle: str
    prefix: str  # S3 key prefix, with trailing slash
    files: dict[str, dict[str, Any]]  # relpath -> {"size", "sha256"}
    roles: frozenset[str]

    @property
    def readable(self) -> bool:
        return bool(self.roles & {"dataset-data-read", "dataset-data-write", "admin"})


def seeded_datasets(store: LocalStore, view: StoreView) -> list[SeededDataset]:
    """Every seeded dataset alice may fetch, with her item roles."""
    result = []
    for seed in store.manifest()["datasets"].values():
        response = view.fetch(seed["handle"])
        if response.status_code != 200:
            continue
        body = response.json()
        result.append(
            SeededDataset(
                handle=seed["handle"],
                prefix=body["item"]["s3"]["path"],
                files=seed["files"],
                roles=frozenset(body["roles"] or ()),
            )
        )
    return result


def list_s3(view: StoreView, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` (all pages)."""
    client = view.s3_client()
    objects: list[dict[str, Any]] = []
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=view.bucket(), Prefix=prefix
    ):
        objects += page.get("Contents", [])
    return objects


def s3_bytes(view: StoreView, key: str) -> bytes:
    data: bytes = view.s3_client().get_object(Bucket=view.bucket(), Key=key)["Body"].read()
    return data


@pytest.fixture(scope="session")
def readable(local_store: LocalStore, store_view: StoreView) -> list[SeededDataset]:
    datasets = [d for d in seeded_datasets(local_store, store_view) if d.readable]
    assert datasets, "the seed gives alice no readable dataset"
    return datasets
