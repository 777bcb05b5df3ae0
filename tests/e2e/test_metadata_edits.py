"""Metadata edits through ``<handle>.json`` on a real mount, against a private local data store.

Programs edit the sidecar as a file: read the JSON, change it, write it back; ``close()`` is where
the edit succeeds or fails. Every check compares the mount with the data store's own fetch
(``StoreView``), before and after. The store is this module's own, so the shared seed data is
never changed.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LocalStore, require_fuse, start_local_store
from tests.e2e.conftest import Mount, StoreView, start_mount, stop_mount

pytestmark = [pytest.mark.fuse]

REASON_XATTR = "user.provena.reason"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStore]:
    require_fuse()
    local = start_local_store(tmp_path_factory.mktemp("metadata-edits") / "data")
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def view(store: LocalStore) -> StoreView:
    return StoreView(store, store.token("alice"))


@pytest.fixture(scope="module")
def alice(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = start_mount(store, tmp_path_factory.mktemp("alice-edits") / "mnt")
    try:
        yield mount
    finally:
        stop_mount(mount)


@pytest.fixture(scope="module")
def bob(store: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mount]:
    mount = start_mount(store, tmp_path_factory.mktemp("bob-edits") / "mnt", user="bob")
    try:
        yield mount
    finally:
        stop_mount(mount)


def handle_of(store: LocalStore, seed: str) -> str:
    return str(store.manifest()["datasets"][seed]["handle"])


def sidecar(mount: Mount, handle: str) -> Path:
    prefix, suffix = handle.split("/")
    return mount.path / prefix / f"{suffix}.json"


def fetched_item(view: StoreView, handle: str) -> dict[str, Any]:
    response = view.fetch(handle)
    assert response.status_code == 200, response.text
    item: dict[str, Any] = response.json()["item"]
    return item


def read_document(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_bytes())
    return document


def write_bytes_and_close(path: Path, data: bytes) -> None:
    """open(O_WRONLY|O_TRUNC), write, close: the close reports the outcome of the edit."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        assert os.write(fd, data) == len(data)
    finally:
        os.close(fd)


def close_errno(path: Path, data: bytes) -> int:
    """The errno ``close()`` (or the open) fails with; 0 if the edit went through."""
    try:
        write_bytes_and_close(path, data)
    except OSError as exc:
        return exc.errno or -1
    return 0


def test_an_edited_description_becomes_a_new_history_entry_with_the_xattr_reason(
    store: LocalStore, view: StoreView, alice: Mount
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    document = read_document(path)
    assert document["item"] == fetched_item(view, handle)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    newest_before = document["item"]["history"][0]["id"]

    os.setxattr(path, REASON_XATTR, b"Clarify what the loggers measure")
    assert os.getxattr(path, REASON_XATTR) == b"Clarify what the loggers measure"
    document["item"]["collection_format"]["dataset_info"]["description"] = "Edited via FUSE"
    with path.open("w") as file:
        json.dump(document, file, indent=2)

    data = path.read_bytes()
    assert path.stat().st_size == len(data)
    after = json.loads(data)
    assert after["item"]["collection_format"]["dataset_info"]["description"] == "Edited via FUSE"
    entry = after["item"]["history"][0]
    assert entry["id"] == newest_before + 1
    assert entry["reason"] == "Clarify what the loggers measure"
    assert after["item"] == fetched_item(view, handle)
    with pytest.raises(OSError) as caught:
        os.getxattr(path, REASON_XATTR)
    assert caught.value.errno == errno.ENODATA


def test_only_a_collection_format_with_a_generated_reason(
    store: LocalStore, view: StoreView, alice: Mount
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    collection_format = read_document(path)["item"]["collection_format"]
    collection_format["dataset_info"]["keywords"] = ["reef", "temperature", "edited"]
    write_bytes_and_close(path, json.dumps(collection_format).encode())
    item = fetched_item(view, handle)
    assert item["collection_format"]["dataset_info"]["keywords"] == [
        "reef",
        "temperature",
        "edited",
    ]
    assert item["history"][0]["reason"] == "provenafs: edited dataset_info.keywords"
    assert read_document(path)["item"] == item


def test_writing_back_the_bytes_as_read_changes_nothing(
    store: LocalStore, view: StoreView, alice: Mount
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    before = fetched_item(view, handle)
    write_bytes_and_close(path, path.read_bytes())
    assert fetched_item(view, handle) == before


def test_invalid_or_rejected_documents_fail_close_with_einval_and_change_nothing(
    store: LocalStore, view: StoreView, alice: Mount
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    before = fetched_item(view, handle)
    document = read_document(path)

    empty_name = copy.deepcopy(document)
    empty_name["item"]["collection_format"]["dataset_info"]["name"] = ""
    approvals = copy.deepcopy(document)
    approvals["item"]["collection_format"]["approvals"]["ethics_access"] = {
        "relevant": True,
        "obtained": False,
    }
    history = copy.deepcopy(document)
    history["item"]["history"] = history["item"]["history"][1:]
    attempts = {
        "invalid JSON": b'{"item": {"collection_format": ',
        "not an object": b"[1, 2, 3]\n",
        "binary garbage": bytes(range(256)),
        "empty name": json.dumps(empty_name).encode(),
        "relevant but not obtained": json.dumps(approvals).encode(),
        "read-only history edited": json.dumps(history).encode(),
    }
    for what, data in attempts.items():
        assert close_errno(path, data) == errno.EINVAL, what
        assert fetched_item(view, handle) == before, what
        assert read_document(path)["item"] == before, what


def test_a_locked_dataset_and_a_reader_without_metadata_write_get_eacces(
    store: LocalStore, view: StoreView, alice: Mount, bob: Mount
) -> None:
    locked = handle_of(store, "locked")
    reef = handle_of(store, "reef-temperatures")
    for mount, handle in ((alice, locked), (bob, reef)):
        path = sidecar(mount, handle)
        before = fetched_item(view, handle)
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        if os.getuid() != 0:  # root passes the kernel's permission check: the core refuses
            assert not os.access(path, os.W_OK)
        document = read_document(path)
        document["item"]["collection_format"]["dataset_info"]["description"] = "Not allowed"
        assert close_errno(path, json.dumps(document).encode()) == errno.EACCES
        with pytest.raises(OSError) as caught:
            os.setxattr(path, REASON_XATTR, b"nope")
        assert caught.value.errno == errno.EACCES
        assert fetched_item(view, handle) == before


def run_revert(path: Path, history_id: int, reason: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "provenafs", "revert", str(path)]
    command += ["--to", str(history_id), "-m", reason]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_revert_restores_an_earlier_history_entry(
    store: LocalStore, view: StoreView, alice: Mount
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    original = fetched_item(view, handle)["history"][-1]  # id 0: the record as minted
    assert original["id"] == 0
    document = read_document(path)
    document["item"]["collection_format"]["dataset_info"]["description"] = "To be reverted"
    write_bytes_and_close(path, json.dumps(document).encode())

    dataset_dir = path.with_suffix("")
    result = run_revert(dataset_dir, 0, "back to the minted record")
    assert result.returncode == 0, result.stderr
    item = fetched_item(view, handle)
    entry = item["history"][0]
    assert result.stdout.strip().splitlines()[-1] == str(entry["id"])
    assert entry["reason"] == (
        "Reverting dataset to history id 0. Reason: back to the minted record."
    )
    assert item["collection_format"] == original["item"]["collection_format"]
    assert read_document(path)["item"] == item

    before = item
    unknown = run_revert(path, 999, "no such entry")
    assert unknown.returncode != 0
    assert "999" in unknown.stderr
    assert fetched_item(view, handle) == before


def test_shell_tools_redirection_edits_once_and_truncate_reports_einval(
    store: LocalStore, view: StoreView, alice: Mount, tmp_path: Path
) -> None:
    handle = handle_of(store, "reef-temperatures")
    path = sidecar(alice, handle)
    document = read_document(path)
    newest_before = document["item"]["history"][0]["id"]
    document["item"]["collection_format"]["dataset_info"]["description"] = "Written by a shell"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(document, indent=2))

    # The shell opens with O_TRUNC, closes a duplicate, then cat writes: exactly one edit.
    subprocess.run(["sh", "-c", f'cat "{edited}" > "{path}"'], check=True, timeout=60)
    item = fetched_item(view, handle)
    assert item["collection_format"]["dataset_info"]["description"] == "Written by a shell"
    assert [entry["id"] for entry in item["history"][:2]] == [newest_before + 1, newest_before]

    truncated = subprocess.run(
        ["truncate", "-s", "0", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert truncated.returncode != 0
    assert "Invalid argument" in truncated.stderr
    assert fetched_item(view, handle) == item
    assert read_document(path)["item"] == item
