"""A tiny memory budget is respected on a real mount, and the bytes read through it stay right.

One mount with ``-o memory_cache_size=2M,prefetch_budget=2M`` (1 MiB blocks) reads the largest
seeded file (64 MiB, well above both) sequentially, with two concurrent readers, and at random
offsets. The bytes are checked against the seed manifest's sha256 and raw S3 (boto3, not the
mount). The mount's own ``.provenafs/status.json`` must show that the block cache never held more
than its maximum and the prefetch budget's peak never passed its maximum; the daemon's peak RSS
(``VmHWM``) must stay far below what holding the file would cost. Before each pass the kernel's
page cache of the file is dropped, and SeaweedFS's byte counter shows the daemon really fetched
the file again, so the budget was exercised rather than bypassed.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import Mount, SeededDataset, StoreView, s3_bytes, start_mount, stop_mount

pytestmark = pytest.mark.fuse

MIB = 1 << 20
BUDGET = 2 * MIB
MOUNT_OPTIONS = f"memory_cache_size={BUDGET},prefetch_budget={BUDGET}"
# Generous: an idle daemon (Python, trio, boto3, pyfuse3) takes well under 100 MiB; holding a
# 64 MiB file in memory besides that, or once per reader, goes beyond.
PEAK_RSS_LIMIT = 200 * MIB
# What the daemon's RSS may grow by while reading: far less than the file it reads.
RSS_GROWTH_LIMIT = 48 * MIB
CHUNK = MIB
RANDOM_READS = 300


@pytest.fixture(scope="module")
def largest_file(readable: list[SeededDataset]) -> tuple[SeededDataset, str]:
    size, dataset, relpath = max(
        (
            (info["size"], dataset, relpath)
            for dataset in readable
            for relpath, info in dataset.files.items()
        ),
        key=lambda candidate: candidate[0],
    )
    assert size >= 32 * BUDGET, "the seed has no file much larger than the budget"
    return dataset, relpath


@pytest.fixture(scope="module")
def tight_mount(
    local_store: LocalStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mount]:
    mount = start_mount(
        local_store, tmp_path_factory.mktemp("budget") / "mnt", options=MOUNT_OPTIONS
    )
    try:
        yield mount
    finally:
        stop_mount(mount)


def status(mount: Mount) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((mount.path / ".provenafs" / "status.json").read_text())
    return loaded


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` or ``VmHWM`` of a process, in KiB, from ``/proc/PID/status``."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            return int(value.split()[0])
    raise AssertionError(f"/proc/{pid}/status has no {field}")


def s3_sent_bytes(store: LocalStore, bucket: str) -> float:
    """SeaweedFS's count of bytes its S3 API sent for ``bucket`` (its metrics port, 127.0.0.1)."""
    ports = json.loads((store.data_dir / "s3" / "ports.json").read_text())
    text = httpx.get(f"http://127.0.0.1:{ports['metrics']}/metrics", timeout=10).text
    sample = f'SeaweedFS_s3_bucket_traffic_sent_bytes_total{{bucket="{bucket}"}}'
    for line in text.splitlines():
        if line.startswith(sample):
            return float(line.split()[-1])
    return 0.0


def forget_page_cache(path: Path) -> None:
    """Drop the kernel's cached pages of ``path``: the next read goes to the daemon again."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def assert_within_budget(mount: Mount, baseline_rss_kib: int) -> None:
    """The cache, the prefetch budget and the daemon's RSS all stayed within their bounds."""
    stats = status(mount)
    cache, budget = stats["block_cache"], stats["prefetch_budget"]
    assert (cache["max_bytes"], budget["max_bytes"]) == (BUDGET, BUDGET)
    assert cache["peak_bytes"] <= cache["max_bytes"], cache
    assert cache["bytes"] <= cache["max_bytes"], cache
    assert budget["peak"] <= budget["max_bytes"], budget
    assert budget["in_use"] <= budget["max_bytes"], budget
    peak_kib = memory_kib(mount.process.pid, "VmHWM")
    print(f"\ndaemon RSS: idle {baseline_rss_kib / 1024:.1f} MiB, peak {peak_kib / 1024:.1f} MiB")
    assert peak_kib * 1024 <= PEAK_RSS_LIMIT
    assert (peak_kib - baseline_rss_kib) * 1024 <= RSS_GROWTH_LIMIT


def test_tiny_budget_reads_right_bytes_and_stays_within_it(
    tight_mount: Mount,
    local_store: LocalStore,
    store_view: StoreView,
    largest_file: tuple[SeededDataset, str],
) -> None:
    dataset, relpath = largest_file
    path = tight_mount.path / dataset.handle / relpath
    expected = dataset.files[relpath]
    bucket = store_view.bucket()
    baseline_rss_kib = memory_kib(tight_mount.process.pid, "VmRSS")

    # 1. one sequential reader
    sent_before = s3_sent_bytes(local_store, bucket)
    assert sha256_of(path) == expected["sha256"]
    assert s3_sent_bytes(local_store, bucket) - sent_before >= expected["size"]
    assert_within_budget(tight_mount, baseline_rss_kib)

    # 2. two concurrent readers of the same file
    forget_page_cache(path)
    sent_before = s3_sent_bytes(local_store, bucket)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        digests = list(pool.map(sha256_of, [path, path]))
    assert digests == [expected["sha256"]] * 2
    # the cache holds 2 MiB of 64: most of the file was fetched again (at least once)
    assert s3_sent_bytes(local_store, bucket) - sent_before >= expected["size"] - 2 * BUDGET
    assert_within_budget(tight_mount, baseline_rss_kib)

    # 3. random offsets, compared with the same ranges of raw S3
    forget_page_cache(path)
    raw = s3_bytes(store_view, dataset.prefix + relpath)
    assert hashlib.sha256(raw).hexdigest() == expected["sha256"]
    size = len(raw)
    chooser = random.Random(5)
    block_edges = [n * MIB + delta for n in range(1, size // MIB) for delta in (-1, 0, 1)]
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(RANDOM_READS):
            offset = chooser.choice([chooser.randrange(size), chooser.choice(block_edges)])
            length = chooser.choice([1, 4096, 65536, 200_000, MIB + 3, 3 * MIB])
            assert os.pread(fd, length, offset) == raw[offset : offset + length], (offset, length)
        assert os.pread(fd, 4096, size - 10) == raw[-10:]
        assert os.pread(fd, 4096, size) == b""
    finally:
        os.close(fd)
    del raw
    assert_within_budget(tight_mount, baseline_rss_kib)
