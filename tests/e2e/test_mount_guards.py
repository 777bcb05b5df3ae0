"""Guards of the write path against crafted input and a second writer (issue 10 items 6, 8, 9).

- Item 6: names that cannot become the same S3 key (not UTF-8, a backslash, a control
  character) are ``EINVAL`` through a real mount; a draft that holds one anyway (its journal
  rewritten on disk after ``kill -9``, as an older daemon would have left it) mints nothing
  on ``provenafs commit``, and ``provenafs status`` says why; renamed, it publishes.
- Item 8: a lost version call (its request journaled, its answer not) is not adopted when the
  next version was made by someone else with the same reason.
- Item 9: a second mount of the same source with the same state directory is refused,
  naming the first; once that is gone, it mounts.

The journal is the draft's own record file (``<crc32 hex> <json>``, one record a line), found
under the mount's private state directory.
"""

from __future__ import annotations

import errno
import json
import os
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from provenafs.testing import MountNotReady
from tests.conftest import LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.writes_support import (
    StoreApi,
    WritableMount,
    expect_errno,
    kill_daemon,
    private_store,
    s3_tree,
    start_writable_mount,
    writable_mount,
)

pytestmark = [pytest.mark.fuse, pytest.mark.s3]

BACKSLASH = "back\\slash.txt"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    with private_store(tmp_path_factory.mktemp("mount-guards") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def api(store: LocalStore) -> StoreApi:
    return StoreApi(store)


def journal_of(mount: WritableMount) -> Path:
    [journal] = (mount.home / "state").glob("provenafs/drafts/*/*/journal")
    return journal


def rewrite_journal(journal: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    records = [json.loads(line.partition(b" ")[2]) for line in journal.read_bytes().splitlines()]
    change(records)
    lines = []
    for record in records:
        body = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode()
        lines.append(b"%08x %s\n" % (zlib.crc32(body), body))
    journal.write_bytes(b"".join(lines))


def status_of(mount: WritableMount) -> dict[str, Any]:
    result = mount.run("status", "--json", str(mount.path))
    assert result.returncode == 0, result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


# -- item 6 ----------------------------------------------------------------------------------


def test_names_that_cannot_be_published_are_einval(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"keep.txt": b"keep\n"})
    with writable_mount(store, tmp_path / "mnt") as mount:
        directory = mount.dataset_dir(dataset.handle)
        raw = os.fsencode(directory)
        expect_errno(errno.EINVAL, lambda: os.open(raw + b"/\xff\xfe.txt", os.O_CREAT), "UTF-8")
        expect_errno(errno.EINVAL, lambda: (directory / BACKSLASH).write_bytes(b"x"), "\\")
        expect_errno(errno.EINVAL, (directory / "tab\tname").mkdir, "control")
        expect_errno(
            errno.EINVAL, lambda: (directory / "keep.txt").rename(directory / "a\\b"), "rename"
        )
        expect_errno(
            errno.EINVAL, lambda: (directory / "bell\x07").symlink_to("keep.txt"), "symlink"
        )
        assert sorted(os.listdir(directory)) == ["keep.txt", "metadata.json"]
        assert status_of(mount)["drafts"] == []


def test_a_journaled_unpublishable_name_mints_nothing_and_status_says_why(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"keep.txt": b"keep\n"})
    home = tmp_path / "home"
    first = start_writable_mount(store, tmp_path / "mnt", home=home)
    (first.dataset_dir(dataset.handle) / "ok.txt").write_bytes(b"from an older daemon\n")
    kill_daemon(first)

    def rename_entry(records: list[dict[str, Any]]) -> None:
        text = json.dumps(records).replace('"ok.txt"', json.dumps(BACKSLASH))
        records[:] = json.loads(text)

    rewrite_journal(journal_of(first), rename_entry)
    before = s3_tree(api, dataset.s3_prefix)
    with writable_mount(store, tmp_path / "mnt", home=home) as mount:
        directory = mount.dataset_dir(dataset.handle)
        assert (directory / BACKSLASH).read_bytes() == b"from an older daemon\n"
        commit = mount.commit(directory)
        assert commit.returncode != 0
        assert "cannot be published" in commit.stderr and "backslash" in commit.stderr, commit
        assert api.versions_after(dataset.handle) == []  # nothing minted
        assert s3_tree(api, dataset.s3_prefix) == before
        shown = mount.run("status", str(mount.path))
        assert f"failed to publish {dataset.handle}" in shown.stdout, shown.stdout
        assert "cannot be published" in shown.stdout and "backslash" in shown.stdout
        assert len(status_of(mount)["drafts"]) == 1  # kept, to be fixed
        # Fixed through the mount (the old name may be renamed away), it publishes.
        (directory / BACKSLASH).rename(directory / "fixed.txt")
        new_handle = mount.commit_ok(directory)
        published = s3_tree(api, api.record(new_handle)["item"]["s3"]["path"])
        assert published["fixed.txt"] == b"from an older daemon\n"
        assert not [key for key in published if "\\" in key or key.startswith("slash")]


# -- item 8 ----------------------------------------------------------------------------------


def test_a_version_another_admin_made_with_the_same_reason_is_not_adopted(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"base.txt": b"base\n"})
    api.serve_ok("access", dataset.handle, "--general", "metadata-read,admin")
    home = tmp_path / "home"
    first = start_writable_mount(store, tmp_path / "mnt", home=home)
    (first.dataset_dir(dataset.handle) / "draft.txt").write_bytes(b"alice's draft\n")
    kill_daemon(first)
    # The daemon died after journaling its version call: the request left, its answer never came.
    rewrite_journal(
        journal_of(first),
        lambda records: records.append({"op": "version_request", "reason": "nightly"}),
    )
    # Meanwhile bob, an admin of the dataset too, makes the next version with the same reason.
    made = httpx.post(
        f"{store.base_url}/register/version",
        json={"id": dataset.handle, "reason": "nightly"},
        headers=api.headers("bob"),
        timeout=60,
    )
    assert made.status_code == 200, made.text
    bobs = str(made.json()["new_version_id"])
    bobs_prefix = str(api.record(bobs)["item"]["s3"]["path"])
    bobs_before = s3_tree(api, bobs_prefix)

    with writable_mount(store, tmp_path / "mnt", home=home) as mount:
        # The restarted daemon resumes the interrupted publish at once: it must not adopt.
        until(lambda: bool(status_of(mount)["failures"]), "the resumed publish to fail")
        [failure] = status_of(mount)["failures"]
        assert "not the latest version" in failure["cause"], failure
        assert s3_tree(api, bobs_prefix) == bobs_before  # alice's draft went nowhere
        assert api.versions_after(dataset.handle) == [bobs]
        assert len(status_of(mount)["drafts"]) == 1


# -- item 9 ----------------------------------------------------------------------------------


def test_a_second_mount_of_the_same_source_is_refused(
    store: LocalStore, api: StoreApi, tmp_path: Path
) -> None:
    dataset = api.mint("alice", files={"a.txt": b"a\n"})
    home = tmp_path / "home"
    first = start_writable_mount(store, tmp_path / "first", home=home)
    try:
        try:
            second = start_writable_mount(store, tmp_path / "second", home=home)
        except MountNotReady as refused:
            message = str(refused)  # the daemon's last line, then its log
            assert "another provenafs mount of this source" in refused.summary, message
            assert f"mounted at {tmp_path / 'first'})" in message and "-o state_dir=" in message
        else:
            stop_mount(second.mount)
            pytest.fail("a second mount of the same source shared the first one's drafts")
        assert (first.dataset_dir(dataset.handle) / "a.txt").read_bytes() == b"a\n"
    finally:
        kill_daemon(first)  # even a killed daemon lets go of the lock
    with writable_mount(store, tmp_path / "second", home=home) as second:
        assert (second.dataset_dir(dataset.handle) / "a.txt").read_bytes() == b"a\n"
