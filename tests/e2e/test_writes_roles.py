"""The role / lock / release matrix for file writes and metadata edits, on a real mount.

alice mounts this module's private data store. Each case mints a dataset (as alice, or as carol
with general item roles for everyone), sets it up with ``provenafs serve access|lock|release``,
then tries (1) a file write followed by ``provenafs commit`` and (2) a metadata edit through the
sidecar. Every expectation cites the section it comes from: "SEMANTICS Writes" is the Writes
sections of docs/SEMANTICS.md, "API §n" is docs/API.md §n.

File writes in the default (draft) mode publish a NEW version, so what they need is what
``POST /register/version`` needs: item role ``admin``, and neither a lock nor the release status
blocks them. Metadata edits are ``POST /register/update-metadata``: ``metadata-write`` or
``admin``, blocked by a lock, not by the release status.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import LocalStore
from tests.e2e.conftest import stop_mount
from tests.e2e.writes_support import (
    WRITE_OPTIONS,
    Dataset,
    StoreApi,
    WritableMount,
    expect_errno,
    s3_tree,
    start_writable_mount,
    writes_fixtures,
)

pytestmark = pytest.mark.fuse

METADATA_REASON = "roles matrix edit"


@dataclasses.dataclass(frozen=True)
class Case:
    label: str
    owner: str  # who mints the dataset
    general: tuple[str, ...] | None  # item roles everyone gets (None: leave the default)
    locked: bool
    release: str | None  # None, "pending" or "released"
    files_ok: bool
    metadata_ok: bool
    why: str  # the lines of the spec the expectations follow
    group_roles: tuple[str, ...] | None = None  # item roles of the group "reef-team" (alice's)


CASES = [
    Case(
        "owner (admin)",
        "alice",
        None,
        False,
        None,
        files_ok=True,
        metadata_ok=True,
        # SEMANTICS Writes: "A dataset version that is the latest of its chain, whose user holds
        # item role `admin` (needed to version), accepts writes". API §8.3: the owner gets all
        # roles.
        why="SEMANTICS Writes writes need admin; API §8.3 owner has every role",
    ),
    Case(
        "general dataset-data-write, no admin",
        "carol",
        ("metadata-read", "dataset-data-read", "dataset-data-write"),
        False,
        None,
        files_ok=False,
        metadata_ok=False,
        # SEMANTICS Writes: "Without item `admin`: `EACCES`" (API §3.8: version needs admin). API
        # §3.6: "REG then re-checks for `metadata-write` or `admin`, so `dataset-data-write` alone
        # fails there"; SEMANTICS Writes: "a missing role gives `EACCES`".
        why="SEMANTICS Writes no admin → EACCES; API §3.6 data-write alone fails update-metadata",
    ),
    Case(
        "general metadata-write",
        "carol",
        ("metadata-read", "metadata-write", "dataset-data-read"),
        False,
        None,
        files_ok=False,
        metadata_ok=True,
        # SEMANTICS Writes no admin → EACCES for files; API §6 table: update metadata needs item
        # `metadata-write`/`admin` (row "no item metadata-write/admin → 401"), which this has.
        why="SEMANTICS Writes no admin → EACCES; API §6 metadata-write may update metadata",
    ),
    Case(
        "read-only roles",
        "carol",
        ("metadata-read", "dataset-data-read"),
        False,
        None,
        files_ok=False,
        metadata_ok=False,
        # SEMANTICS Writes no admin → EACCES; metadata edit without metadata-write: "a missing role
        # gives `EACCES`" (API §3.6: 401 without metadata-write/dataset-data-write/admin).
        why="SEMANTICS Writes missing role → EACCES for both",
    ),
    Case(
        "locked, owner",
        "alice",
        None,
        True,
        None,
        files_ok=True,
        metadata_ok=False,
        # API §5.6: "Versioning is **not blocked by a lock or by release status**"; §6
        # table: locked → version "allowed", read creds "allowed" (the copy needs them), update
        # metadata **401**. SEMANTICS Writes: a locked dataset or a missing role gives `EACCES`.
        why="API §5.6/§6 a lock does not block versioning, only metadata (SEMANTICS Writes EACCES)",
    ),
    Case(
        "released, owner",
        "alice",
        None,
        False,
        "released",
        files_ok=True,
        metadata_ok=True,
        # API §5.6: versioning not blocked by release status ("the docs suggest
        # versioning as the way to change a released dataset"); §3.6: "Release status does
        # **not** block metadata updates".
        why="API §5.6 versioning allowed when released; API §3.6 metadata always editable",
    ),
    Case(
        "pending review, owner",
        "alice",
        None,
        False,
        "pending",
        files_ok=True,
        metadata_ok=True,
        # API §6 table: PENDING/RELEASED → version "allowed", update metadata "allowed".
        why="API §6 pending: version allowed, metadata allowed",
    ),
    Case(
        "group reef-team with every role but admin",
        "carol",
        (),
        False,
        None,
        files_ok=False,
        metadata_ok=True,
        # API §8.3: "Anyone else gets the union of `general` and the roles of any groups
        # they belong to"; without `admin` no version (SEMANTICS Writes → EACCES); `metadata-write`
        # allows update-metadata (§6).
        why="API §8.3 group roles count; SEMANTICS Writes no admin → EACCES; API §6 metadata-write",
        group_roles=("metadata-read", "metadata-write", "dataset-data-read", "dataset-data-write"),
    ),
]


store, api, mount = writes_fixtures(
    "writes-roles", options=f"{WRITE_OPTIONS},metadata_reason={METADATA_REASON}"
)


def set_up(api: StoreApi, case: Case) -> Dataset:
    dataset = api.mint(case.owner, {"data.csv": b"a,b\n1,2\n"})
    if case.general is not None or case.group_roles is not None:
        access = ["access", dataset.handle, "--general", ",".join(case.general or ())]
        if case.group_roles is not None:
            access += ["--group", "reef-team=" + ",".join(case.group_roles)]
        api.serve_ok(*access)
    if case.release is not None:
        api.serve_ok("release", "request", dataset.handle, "--approver", "admin")
        if case.release == "released":
            api.serve_ok("release", "approve", dataset.handle)
    if case.locked:
        api.serve_ok("lock", dataset.handle, "--reason", "roles matrix")
    record = api.record(dataset.handle, "alice")
    assert record["locked"] is case.locked
    expected_status = {None: "NOT_RELEASED", "pending": "PENDING", "released": "RELEASED"}
    assert record["item"]["release_status"] == expected_status[case.release]
    if case.owner == "alice":
        assert "admin" in record["roles"]
    else:
        expected_roles = {*(case.general or ()), *(case.group_roles or ())}
        assert sorted(record["roles"]) == sorted(expected_roles)
    return dataset


def edited_collection_format(record: dict[str, Any], label: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(record["item"]["collection_format"]))
    document["dataset_info"]["description"] = f"Edited through the sidecar ({label})"
    return document


def write_sidecar(path: Path, document: dict[str, Any]) -> None:
    with path.open("w") as stream:
        stream.write(json.dumps({"collection_format": document}, indent=2))


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_file_writes(mount: WritableMount, api: StoreApi, case: Case) -> None:
    dataset = set_up(api, case)
    root = mount.dataset_dir(dataset.handle)
    assert (root / "data.csv").read_bytes() == b"a,b\n1,2\n"
    if not case.files_ok:
        flags = os.O_CREAT | os.O_WRONLY
        expect_errno(errno.EACCES, lambda: os.open(root / "new.csv", flags, 0o644), case.why)
        expect_errno(errno.EACCES, lambda: os.open(root / "data.csv", os.O_WRONLY), case.why)
        expect_errno(errno.EACCES, lambda: os.mkdir(root / "newdir"), case.why)
        expect_errno(errno.EACCES, lambda: os.unlink(root / "data.csv"), case.why)
        assert sorted(os.listdir(root)) == ["data.csv", "metadata.json"]
        assert api.next_version(dataset.handle) is None
        return
    (root / "new.csv").write_bytes(b"new,file\n")
    new_handle = mount.commit_ok(root, f"roles matrix: {case.label}")
    assert api.versions_after(dataset.handle) == [new_handle], case.why
    new_record = api.record(new_handle)
    # API §5.6: "The new version starts `NOT_RELEASED` and unlocked."
    assert new_record["locked"] is False
    assert new_record["item"]["release_status"] == "NOT_RELEASED"
    objects = s3_tree(api, new_record["item"]["s3"]["path"])
    assert {k: v for k, v in objects.items() if k != "metadata.json"} == {
        "data.csv": b"a,b\n1,2\n",
        "new.csv": b"new,file\n",
    }
    # API §5.4: the old version keeps its files, lock and release status.
    old_record = api.record(dataset.handle)
    assert old_record["locked"] is case.locked
    assert sorted(os.listdir(root)) == ["data.csv", "metadata.json"]


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_metadata_edits(mount: WritableMount, api: StoreApi, case: Case) -> None:
    dataset = set_up(api, case)
    before = api.record(dataset.handle)
    document = edited_collection_format(before, case.label)
    sidecar = mount.sidecar(dataset.handle)
    if not case.metadata_ok:
        expect_errno(errno.EACCES, lambda: write_sidecar(sidecar, document), case.why)
        after = api.record(dataset.handle)
        assert after["item"]["history"] == before["item"]["history"], "a refused edit changed it"
        assert after["item"]["collection_format"] == before["item"]["collection_format"]
        return
    write_sidecar(sidecar, document)
    after = api.record(dataset.handle)
    assert (
        after["item"]["collection_format"]["dataset_info"]["description"]
        == (document["dataset_info"]["description"])
    ), case.why
    history = after["item"]["history"]
    assert len(history) == len(before["item"]["history"]) + 1
    assert history[0]["reason"] == METADATA_REASON
    # The sidecar shows the new record at once, including the new history entry (SEMANTICS Caching:
    # "a record edited through the mount is visible through the mount at once").
    shown = json.loads(sidecar.read_bytes())
    assert (
        shown["item"]["collection_format"]["dataset_info"]["description"]
        == (document["dataset_info"]["description"])
    )
    assert shown["item"]["history"][0]["id"] == history[0]["id"]
    # Metadata edits publish no version (API §3.6 is an update in place).
    assert api.next_version(dataset.handle) is None


# -- -o writes=in-place: straight into the dataset with write credentials, no new version ------


CASE = {case.label: case for case in CASES}


@dataclasses.dataclass(frozen=True)
class InPlaceCase:
    label: str
    base: Case  # how the dataset is set up
    ok: bool
    log_reason: str | None  # what the daemon's log must name when refused


IN_PLACE_CASES = [
    # Issue 4 item 5: "`-o writes=in-place` lets a user with `dataset-data-write` on a
    # NOT_RELEASED, unlocked dataset write straight into it at close with write credentials".
    InPlaceCase("owner (admin)", CASE["owner (admin)"], ok=True, log_reason=None),
    InPlaceCase(
        "general dataset-data-write",
        CASE["general dataset-data-write, no admin"],
        ok=True,
        log_reason=None,
    ),
    # API §3.4: write credentials need `dataset-data-write` or `admin` (401 otherwise).
    InPlaceCase(
        "general metadata-write", CASE["general metadata-write"], ok=False, log_reason=None
    ),
    # API §3.4: "401 if the dataset is **locked**".
    InPlaceCase("locked, owner", CASE["locked, owner"], ok=False, log_reason=None),
    # Issue 4 item 5: "released or pending datasets refuse in-place writes with the data
    # store's reason in the log" (API §3.4: 403 "... is pending review or is released").
    InPlaceCase("released, owner", CASE["released, owner"], ok=False, log_reason="released"),
    InPlaceCase(
        "pending review, owner", CASE["pending review, owner"], ok=False, log_reason="pending"
    ),
]


@pytest.fixture(scope="module")
def in_place_mount(
    store: LocalStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WritableMount]:
    writable = start_writable_mount(
        store,
        tmp_path_factory.mktemp("in-place-mount") / "mnt",
        options=f"{WRITE_OPTIONS},writes=in-place",
    )
    try:
        yield writable
    finally:
        stop_mount(writable.mount)


def write_and_close(path: Path, data: bytes) -> None:
    with path.open("wb") as stream:
        stream.write(data)


@pytest.mark.parametrize("case", IN_PLACE_CASES, ids=[c.label for c in IN_PLACE_CASES])
def test_in_place_writes(in_place_mount: WritableMount, api: StoreApi, case: InPlaceCase) -> None:
    dataset = set_up(api, case.base)
    root = in_place_mount.dataset_dir(dataset.handle)
    if not case.ok:
        expect_errno(errno.EACCES, lambda: write_and_close(root / "new.csv", b"new\n"), case.label)
        objects = s3_tree(api, dataset.s3_prefix)
        assert {k: v for k, v in objects.items() if k != "metadata.json"} == {
            "data.csv": b"a,b\n1,2\n"
        }
        if case.log_reason is not None:
            log = in_place_mount.mount.log_text()
            assert case.log_reason in log.lower(), f"no {case.log_reason!r} in: {log[-2000:]}"
        assert api.next_version(dataset.handle) is None
        return
    write_and_close(root / "new.csv", b"new\n")
    write_and_close(root / "data.csv", b"rewritten\n")
    assert (root / "new.csv").read_bytes() == b"new\n"
    # The bytes are in the dataset's own prefix once close() returned; no version was made.
    objects = s3_tree(api, dataset.s3_prefix)
    assert {k: v for k, v in objects.items() if k != "metadata.json"} == {
        "data.csv": b"rewritten\n",
        "new.csv": b"new\n",
    }
    assert api.next_version(dataset.handle) is None
