"""Bytes through a real mount equal the bytes in S3: whole files, listings, random ranges.

The expected bytes come from two independent places: the seed manifest's sha256 and raw S3
read with the data store's admin S3 identity (boto3), never through the mount's own code.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import IN_CI, LocalStore
from tests.e2e.conftest import (
    Mount,
    SeededDataset,
    StoreView,
    list_s3,
    s3_bytes,
    start_mount,
    stop_mount,
)

pytestmark = pytest.mark.fuse


def test_every_seeded_file_reads_back_its_bytes(
    alice_mount: Mount, store_view: StoreView, readable: list[SeededDataset]
) -> None:
    checked = 0
    for dataset in readable:
        for relpath, expected in dataset.files.items():
            path = alice_mount.path / dataset.handle / relpath
            data = path.read_bytes()
            assert len(data) == expected["size"], path
            digest = hashlib.sha256(data).hexdigest()
            assert digest == expected["sha256"], path
            raw = s3_bytes(store_view, dataset.prefix + relpath)
            assert digest == hashlib.sha256(raw).hexdigest(), path
            assert os.stat(path).st_size == len(raw)
            checked += 1
    assert checked >= 3


def _walk(root: Path) -> tuple[set[str], set[str]]:
    files: set[str] = set()
    dirs: set[str] = set()
    for directory, dirnames, filenames in os.walk(root):
        base = Path(directory).relative_to(root)
        dirs.update(str(base / name) for name in dirnames)
        files.update(str(base / name) for name in filenames)
    return files, dirs


def test_dataset_directories_list_exactly_the_s3_objects(
    alice_mount: Mount, store_view: StoreView, readable: list[SeededDataset]
) -> None:
    for dataset in readable:
        expected_files: set[str] = set()
        expected_dirs: set[str] = set()
        for obj in list_s3(store_view, dataset.prefix):
            relpath = obj["Key"][len(dataset.prefix) :]
            if not relpath:
                continue
            parts = relpath.rstrip("/").split("/")
            expected_dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            if relpath.endswith("/"):
                expected_dirs.add(relpath.rstrip("/"))
            else:
                expected_files.add(relpath)
        files, dirs = _walk(alice_mount.path / dataset.handle)
        assert files == expected_files, dataset.handle
        assert dirs == expected_dirs, dataset.handle


@pytest.fixture(scope="module")
def range_sources(
    alice_mount: Mount, store_view: StoreView, readable: list[SeededDataset]
) -> Iterator[list[tuple[int, bytes]]]:
    """Open descriptors on the largest and a small seeded file, with their S3 bytes."""
    candidates = [
        (info["size"], dataset, relpath)
        for dataset in readable
        for relpath, info in dataset.files.items()
        if info["size"] > 0
    ]
    candidates.sort(key=lambda c: c[0])
    chosen = [candidates[-1], candidates[len(candidates) // 2]]
    sources: list[tuple[int, bytes]] = []
    try:
        for _, dataset, relpath in chosen:
            fd = os.open(alice_mount.path / dataset.handle / relpath, os.O_RDONLY)
            sources.append((fd, s3_bytes(store_view, dataset.prefix + relpath)))
        yield sources
    finally:
        for fd, _ in sources:
            os.close(fd)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_random_ranges_equal_the_same_ranges_of_s3(
    range_sources: list[tuple[int, bytes]], data: st.DataObject
) -> None:
    fd, expected = data.draw(st.sampled_from(range_sources), label="file")
    size = len(expected)
    offset = data.draw(
        st.one_of(
            st.integers(0, size + 4096),
            st.sampled_from([0, size - 1, size, (1 << 20) - 1, 1 << 20, (1 << 20) + 1]),
        ).filter(lambda o: o >= 0),
        label="offset",
    )
    length = data.draw(
        st.one_of(st.integers(0, 4 << 20), st.sampled_from([1, 4096, 131072, 1 << 20])),
        label="length",
    )
    assert os.pread(fd, length, offset) == expected[offset : offset + length]


def _kernel_readahead_kb(mount: Mount, expected: int) -> int:
    """The mount's device readahead once it is ``expected`` (the daemon sets it just after the
    kernel's INIT), or what it is after 10 s."""
    device = os.stat(mount.path).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    deadline = time.monotonic() + 10
    while (value := int(knob.read_text())) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.skipif(
    os.geteuid() != 0 and not IN_CI, reason="only root may set a device's readahead (CI is root)"
)
def test_the_kernel_reads_ahead_1_mib_by_default_and_as_the_option_says(
    alice_mount: Mount, local_store: LocalStore, tmp_path: Path
) -> None:
    assert _kernel_readahead_kb(alice_mount, 1024) == 1024  # the kernel's default is 128
    mount = start_mount(local_store, tmp_path / "mnt", options="read_ahead=256K")
    try:
        assert _kernel_readahead_kb(mount, 256) == 256
    finally:
        stop_mount(mount)


def _status(mount: Mount) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((mount.path / ".provenafs" / "status.json").read_text())
    return loaded


def test_pages_dropped_after_a_random_readers_fill_come_from_the_spill_not_s3(
    local_store: LocalStore, store_view: StoreView, readable: list[SeededDataset], tmp_path: Path
) -> None:
    size, dataset, relpath = max(
        (info["size"], dataset, relpath)
        for dataset in readable
        for relpath, info in dataset.files.items()
    )
    expected = s3_bytes(store_view, dataset.prefix + relpath)
    rng = random.Random(11)
    mount = start_mount(local_store, tmp_path / "mnt")
    try:
        fd = os.open(mount.path / dataset.handle / relpath, os.O_RDONLY)
        try:
            for _ in range(80):  # random reads: the whole object is fetched in the background
                offset = rng.randrange(size - 4096)
                assert os.pread(fd, 4096, offset) == expected[offset : offset + 4096]
            deadline = time.monotonic() + 60
            while _status(mount)["spill"]["bytes_written"] < size:
                assert time.monotonic() < deadline, _status(mount)["spill"]
                time.sleep(0.05)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the kernel drops the pages
            before = _status(mount)
            for _ in range(200):
                offset = rng.randrange(size - 4096)
                assert os.pread(fd, 4096, offset) == expected[offset : offset + 4096]
            after = _status(mount)
        finally:
            os.close(fd)
        assert after["s3"]["requests"] == before["s3"]["requests"]
        assert after["spill"]["reads"] > before["spill"]["reads"]
    finally:
        stop_mount(mount)
    spill_dir = tmp_path / "mnt-home" / "cache" / "provenafs" / "spill"
    assert spill_dir.is_dir() and list(spill_dir.iterdir()) == []  # spill files have no name
