"""A mount under stress: credentials that expire every few seconds, a data store that fails.

Both tests use this module's private store (``--credential-ttl 3``: the data store advertises an
expiry 3 s ahead, so the mount must renew its S3 credentials many times during one long read).
Credential calls are counted from the mount's own ``.provenafs/status.json`` statistics.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import Mount, start_mount, stop_mount

pytestmark = [pytest.mark.fuse, pytest.mark.slow]

STREAM_SECONDS = 60.0
CHUNK = 1 << 20


def largest_file(store: LocalStore) -> tuple[str, str, dict[str, Any]]:
    """(handle, relpath, {"size", "sha256"}) of the biggest seeded file."""
    best: tuple[str, str, dict[str, Any]] | None = None
    for seed in store.manifest()["datasets"].values():
        for relpath, info in seed["files"].items():
            if best is None or info["size"] > best[2]["size"]:
                best = (seed["handle"], relpath, info)
    assert best is not None
    return best


def credential_calls(mount: Mount) -> int:
    status = json.loads((mount.path / ".provenafs" / "status.json").read_bytes())
    return int(status["credentials"]["read_calls"])


@pytest.fixture(scope="module")
def stressed_mount(
    private_store: LocalStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    """The private store mounted as bob with small caches, so long reads keep reaching S3."""
    mount = start_mount(
        private_store,
        tmp_path_factory.mktemp("stressed") / "mnt",
        user="bob",
        options="memory_cache_size=8M,prefetch_budget=8M,metadata_ttl=2",
    )
    try:
        yield mount
    finally:
        stop_mount(mount)


def test_a_long_streaming_read_outlives_many_credential_expiries(
    stressed_mount: Mount, private_store: LocalStore
) -> None:
    handle, relpath, info = largest_file(private_store)
    assert info["size"] >= 32 * CHUNK
    path = stressed_mount.path / handle / relpath
    calls_before = credential_calls(stressed_mount)
    reads = 0
    passes = 0
    deadline = time.monotonic() + STREAM_SECONDS
    fd = os.open(path, os.O_RDONLY)
    try:
        while time.monotonic() < deadline:
            digest = hashlib.sha256()
            offset = 0
            while offset < info["size"]:
                chunk = os.pread(fd, CHUNK, offset)
                assert chunk, f"short read at {offset}"
                digest.update(chunk)
                offset += len(chunk)
                reads += 1
                # Drop the kernel's copy so the next pass reads through the mount again.
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                time.sleep(0.05)
            assert digest.hexdigest() == info["sha256"], f"pass {passes} read wrong bytes"
            passes += 1
    finally:
        os.close(fd)
    calls = credential_calls(stressed_mount) - calls_before
    assert passes >= 1
    assert calls >= 2, "the credentials were never renewed during the read"
    assert calls * 4 < reads, f"{calls} credential calls for {reads} reads: not cached"


def set_faults(store: LocalStore, rule: dict[str, Any] | None) -> None:
    headers = {"Authorization": f"Bearer {store.token('admin')}"}
    url = f"{store.base_url}/_provenafs/faults"
    response = (
        httpx.put(url, json=rule, headers=headers, timeout=30)
        if rule is not None
        else httpx.delete(url, headers=headers, timeout=30)
    )
    assert response.status_code == 200, response.text


def test_reads_stay_correct_while_the_data_store_fails_and_lags(
    private_store: LocalStore, tmp_path: Path
) -> None:
    manifest = private_store.manifest()["datasets"]
    # Cold mount while faults are on: every data store call of the mount meets them.
    set_faults(
        private_store,
        {"path_prefix": None, "latency_ms": 150, "error_rate": 0.0, "fail_next": 2, "status": 503},
    )
    mount: Mount | None = None
    try:
        mount = start_mount(private_store, tmp_path / "mnt", user="alice")
        set_faults(
            private_store,
            {
                "path_prefix": "/registry/",
                "latency_ms": 100,
                "error_rate": 0.0,
                "fail_next": 2,
                "status": 502,
            },
        )
        checked = 0
        for seed in manifest.values():
            if seed["owner"] != "alice":
                continue
            for relpath, info in list(seed["files"].items())[:4]:
                data = (mount.path / seed["handle"] / relpath).read_bytes()
                assert hashlib.sha256(data).hexdigest() == info["sha256"], relpath
                checked += 1
            set_faults(
                private_store,
                {
                    "path_prefix": "/registry/credentials/",
                    "latency_ms": 50,
                    "error_rate": 0.0,
                    "fail_next": 2,
                    "status": 500,
                },
            )
        assert checked >= 4
        status = json.loads((mount.path / ".provenafs" / "status.json").read_bytes())
        assert status["data_store_calls"].get("retries", 0) >= 2, "no injected fault was met"
    finally:
        set_faults(private_store, None)
        if mount is not None:
            stop_mount(mount)
