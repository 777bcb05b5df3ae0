"""``provenafs new --from DIR`` at size: 1,000 small files and one 512 MiB file, killed half-way.

The first run is ``kill -9``ed while both the small files and the big file's parts are going
up; the same command run again resumes into the same dataset and sends the rest, once. "Once"
is counted twice, independently: by the journal the first run left (what it had finished) and
by SeaweedFS's own counter of PUT requests (every object PUT and multipart part), which must
grow in the second run by exactly what the first had not finished. Then ``diff -r`` compares
DIR with the dataset read back through a mount.
"""

from __future__ import annotations

import json
import os
import pty
import random
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from provenafs.process.new_dataset import journal_path
from tests.conftest import LocalStore
from tests.e2e.writes_support import (
    PROVENAFS,
    StoreApi,
    WritableMount,
    private_store,
    writable_mount,
)

pytestmark = pytest.mark.timeout(1800)

SMALL_FILES = 1000
BIG_BYTES = 512 << 20
PART = 16 << 20  # the uploader's part size
PARALLEL = 2


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("new-upload") / "data") as private:
        yield private


@pytest.fixture(scope="module")
def alice(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WritableMount]:
    mountpoint = tmp_path_factory.mktemp("new-upload-mount") / "mnt"
    with writable_mount(store, mountpoint) as mount:
        result = mount.run("new", "--init", "--source", store.base_url)
        assert result.returncode == 0, result.stderr
        yield mount


def metrics_url(store: LocalStore) -> str:
    """SeaweedFS's Prometheus endpoint (the store starts weed with ``-metricsPort``)."""
    for pid in store.descendant_pids():
        try:
            words = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        except OSError:
            continue
        for word in words:
            if word.startswith("-metricsPort="):
                return f"http://127.0.0.1:{word.split('=', 1)[1]}/metrics"
    raise AssertionError("weed runs without -metricsPort")


def s3_puts(url: str) -> int:
    """PUT requests SeaweedFS's S3 server answered (object PUTs and multipart parts)."""
    text = httpx.get(url, timeout=30).text
    pattern = re.compile(r'^SeaweedFS_s3_request_total\{[^}]*type="PUT"[^}]*\} (\d+)', re.M)
    return sum(int(count) for count in pattern.findall(text))


def settled_puts(url: str) -> int:
    """``s3_puts`` once it stops moving: a request the killed run had in flight is counted
    when SeaweedFS finishes it, maybe after the client died."""
    last = s3_puts(url)
    for _ in range(60):
        time.sleep(0.5)
        now = s3_puts(url)
        if now == last:
            return now
        last = now
    raise AssertionError("SeaweedFS's PUT counter never settled")


def make_source(root: Path) -> None:
    rng = random.Random(14)
    for number in range(SMALL_FILES):
        path = root / f"d{number % 10}" / f"{number:04d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(rng.randrange(1, 4096)))
    with (root / "big.bin").open("wb") as big:
        for _ in range(BIG_BYTES // (8 << 20)):
            big.write(os.urandom(8 << 20))


def journal_counts(path: Path) -> tuple[int, int, str | None]:
    """(small files, big-file parts, minted handle) the journal records as done."""
    files = parts = 0
    handle = None
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        kind = entry.get("kind")
        if kind == "file" and entry["key"] != "big.bin":
            files += 1
        elif kind == "part":
            parts += 1
        elif kind == "minted":
            handle = entry["handle"]
    return files, parts, handle


def test_a_killed_upload_resumes_and_sends_the_rest_once(
    store: LocalStore, alice: WritableMount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "results"
    source.mkdir()
    make_source(source)
    name = f"Big results {uuid.uuid4().hex[:6]}"
    command = [*PROVENAFS, "new", name, "--from", str(source), "--source", store.base_url]
    command += ["--parallel", str(PARALLEL)]
    monkeypatch.setenv("XDG_STATE_HOME", alice.env["XDG_STATE_HOME"])
    journal = journal_path(store.base_url, name, source)
    url = metrics_url(store)
    puts_before = s3_puts(url)

    first = subprocess.Popen(
        command, env=alice.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and first.poll() is None:
            if journal.exists():
                files, parts, _ = journal_counts(journal)
                if files >= 200 and 3 <= parts < BIG_BYTES // PART - 4:
                    break
            time.sleep(0.01)
        assert first.poll() is None, f"the first run ended before it was killed: {first.stderr}"
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    done_files, done_parts, handle = journal_counts(journal)
    assert handle is not None
    assert 0 < done_files < SMALL_FILES
    puts_first = settled_puts(url) - puts_before
    # the mint's metadata.json, what the journal holds, and at most the requests in flight
    assert 1 + done_files + done_parts <= puts_first <= 1 + done_files + done_parts + PARALLEL

    second = subprocess.run(
        command, env=alice.env, capture_output=True, text=True, timeout=1200, check=False
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip().splitlines()[-1] == handle  # the same dataset
    assert "resuming into" in second.stderr
    assert "\r" not in second.stderr  # no progress line when stderr is not a terminal
    puts_second = s3_puts(url) - puts_before - puts_first
    rest = (SMALL_FILES - done_files) + (BIG_BYTES // PART - done_parts)
    assert puts_second == rest  # the rest, once
    assert f"uploaded {SMALL_FILES - done_files} files and {BIG_BYTES // PART - done_parts}" in (
        second.stderr
    )
    assert not journal.exists()  # removed once every key was verified

    api = StoreApi(store)
    prefix = api.record(handle)["item"]["s3"]["path"]
    keys = [
        obj["Key"]
        for page in api.s3.get_paginator("list_objects_v2").paginate(
            Bucket=api.bucket, Prefix=prefix
        )
        for obj in page.get("Contents", [])
    ]
    assert len(keys) == SMALL_FILES + 2  # the files, big.bin and the data store's metadata.json
    compared = subprocess.run(
        ["diff", "-r", "--exclude=metadata.json", str(source), str(alice.dataset_dir(handle))],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert compared.returncode == 0, compared.stdout[-2000:] + compared.stderr[-2000:]
    assert api.next_version(handle) is None


def test_the_progress_line_shows_on_a_terminal(
    store: LocalStore, alice: WritableMount, tmp_path: Path
) -> None:
    source = tmp_path / "small"
    source.mkdir()
    (source / "a.txt").write_bytes(b"a\n")
    command = [*PROVENAFS, "new", f"Tty {uuid.uuid4().hex[:6]}", "--from", str(source)]
    command += ["--source", store.base_url]
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            command,
            env=alice.env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=300,
            check=False,
        )
        os.close(follower)
        follower = -1
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert result.returncode == 0
    assert b"\r\x1b[Kuploading into" in shown
    assert b"1/1 files" in shown
