"""Real mounts for end-to-end tests: ``python -m provenafs mount URL MNT -f`` in a subprocess.

The daemon always runs in its own process (a process must not make syscalls against a mount its
own trio loop serves), started and stopped by the harness ``provenafs.testing``: each mount is
waited for until ``/proc/self/mountinfo`` lists it as ``fuse.provenafs`` and the root answers
``stat``; teardown unmounts with ``fusermount3 -u`` and stops the daemon by PID. Everything here
that touches FUSE calls ``require_fuse()`` first.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from provenafs import testing
from provenafs.testing import MountProcess, isolated_environment, stop_mount
from tests.conftest import LocalStore, require_fuse, start_local_store

__all__ = ["Mount", "isolated_environment", "start_mount", "stop_mount"]

# The harness's running mount, under the name the tests use.
Mount = MountProcess


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
    if token_env is None:
        token_env = {"PROVENAFS_OFFLINE_TOKEN": store.token(user, offline=True)}
    return testing.start_mount(
        store.base_url, mountpoint, token_env=token_env, options=options, home=home
    )


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
