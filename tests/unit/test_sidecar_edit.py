"""Metadata edits through sidecars: ``SidecarEditor`` against a fake client, then the filesystem.

The fake data store applies update-metadata and revert-metadata the way docs/API.md §3.6 and
§3.7 say (history entry prepended, display name synced, empty strings refused with 400), and
counts every call, so each test can say exactly which calls a write caused.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from provenafs.api import errors as api_errors
from provenafs.api.client import parse_dataset_record
from provenafs.api.models import DatasetRecord, without_nulls
from provenafs.core.filesystem import Filesystem
from provenafs.core.inodes import ROOT_INODE
from provenafs.core.sidecar_render import sidecar_bytes
from provenafs.core.types import Attributes
from provenafs.errors import FsError
from provenafs.process import commands
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.write.metadata_edit import (
    REASON_XATTR,
    SIDECAR_MAX_BYTES,
    SidecarBuffer,
    SidecarEditor,
    parse_reason,
)
from tests.unit.fakes import (
    CALLER,
    FakeDataStore,
    MetadataStore,
    build_filesystem,
    collection_format,
    options,
)

HANDLE = "10378.1/1001"
LOCKED = "10378.1/1002"
READER = "10378.1/1003"
DATA_WRITER = "10378.1/1004"
READ_ROLES = ("metadata-read", "dataset-data-read")


class FakeCatalog:
    """What the editor needs from ``Catalog``: records from the store, and invalidations."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self.invalidated: list[str] = []

    async def record(self, handle: str) -> DatasetRecord:
        return await self.store.fetch_dataset(handle)

    def invalidate(self, handle: str) -> None:
        self.invalidated.append(handle)


def make_store() -> MetadataStore:
    store = MetadataStore()
    store.add_dataset(HANDLE)
    store.add_dataset(LOCKED, locked=True)
    store.add_dataset(READER, roles=READ_ROLES)
    store.add_dataset(DATA_WRITER, roles=(*READ_ROLES, "dataset-data-write"))
    return store


def make_editor(
    store: MetadataStore, default_reason: str | None = None
) -> tuple[SidecarEditor, FakeCatalog, list[str]]:
    catalog = FakeCatalog(store)
    changed: list[str] = []

    async def on_changed(handle: str) -> None:
        changed.append(handle)

    editor = SidecarEditor(store, catalog, default_reason=default_reason, on_changed=on_changed)
    return editor, catalog, changed


def current_document(store: MetadataStore, handle: str = HANDLE) -> dict[str, Any]:
    item = store.items[handle]
    document = {"item": item, "roles": list(store.roles[handle]), "locked": store.locked[handle]}
    result: dict[str, Any] = json.loads(
        sidecar_bytes(parse_dataset_record(item, document["roles"], False, document))
    )
    return result


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=2).encode()


def errno_of(exc_info: pytest.ExceptionInfo[FsError]) -> int:
    return exc_info.value.errno


# --- accepted shapes ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["document", "item", "collection_format"])
async def test_each_accepted_shape_sends_one_full_update(shape: str) -> None:
    store = make_store()
    editor, catalog, changed = make_editor(store)
    document = current_document(store)
    document["item"]["collection_format"]["dataset_info"]["description"] = "New words"
    written = {
        "document": document,
        "item": document["item"],
        "collection_format": document["item"]["collection_format"],
    }[shape]
    await editor.commit(HANDLE, encode(written), None)
    assert len(store.updates) == 1
    handle, reason, sent = store.updates[0]
    assert handle == HANDLE
    assert reason == "provenafs: edited dataset_info.description"
    # what the data store stores: the document's format without its null fields
    assert sent == without_nulls(document["item"]["collection_format"])
    assert sent["dataset_info"]["description"] == "New words"
    assert store.items[HANDLE]["history"][0]["reason"] == reason
    assert catalog.invalidated == [HANDLE]
    assert changed == [HANDLE]


async def test_the_bytes_as_read_written_back_make_no_call() -> None:
    store = make_store()
    editor, catalog, _ = make_editor(store)
    record = await store.fetch_dataset(HANDLE)
    await editor.commit(HANDLE, sidecar_bytes(record), None)
    assert store.calls["update_metadata"] == 0
    assert catalog.invalidated == []


async def test_a_collection_format_without_its_null_fields_is_the_same_one() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    cf = collection_format()
    del cf["associations"]["data_custodian_id"]
    cf["dataset_info"]["access_info"] = {"reposited": True}
    await editor.commit(HANDLE, encode(cf), None)
    assert store.calls["update_metadata"] == 0


async def test_generated_reason_names_every_changed_field() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    cf = collection_format()
    cf["dataset_info"]["description"] = "Other"
    cf["dataset_info"]["keywords"] = ["reef", "heat"]
    await editor.commit(HANDLE, encode(cf), None)
    assert store.updates[0][1] == (
        "provenafs: edited dataset_info.description, dataset_info.keywords"
    )


async def test_a_renamed_dataset_may_carry_the_display_name_its_new_name_implies() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    document = current_document(store)
    document["item"]["collection_format"]["dataset_info"]["name"] = "Renamed"
    document["item"]["display_name"] = "Renamed"
    await editor.commit(HANDLE, encode(document), None)
    assert store.items[HANDLE]["display_name"] == "Renamed"


# --- refusals: nothing is sent -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'{"item": ', errno.EINVAL),
        (b"[1, 2]", errno.EINVAL),
        (b'"text"', errno.EINVAL),
        (b"", errno.EINVAL),
        (b'{"foo": 1}', errno.EINVAL),
        (b"{}", errno.EINVAL),
        (b'{"item": [], "roles": []}', errno.EINVAL),
        (b'{"item": {"collection_format": {}}, "extra": 1}', errno.EINVAL),
        (b'{"item": {"collection_format": "x"}}', errno.EINVAL),
        (b'{"dataset_info": {"name": NaN}}', errno.EINVAL),
        (b'{"dataset_info": {}, "dataset_info": {}}', errno.EINVAL),
        (b'{"dataset_info": {"name": "\xff\xfe"}}', errno.EINVAL),
        (b"\x00\x01\x02binary garbage\x9c", errno.EINVAL),
        (b"[" * 100_000 + b"]" * 100_000, errno.EINVAL),
        (b" " * (SIDECAR_MAX_BYTES + 1), errno.EFBIG),
    ],
)
async def test_unusable_content_is_refused_without_a_call(data: bytes, expected: int) -> None:
    store = make_store()
    editor, catalog, _ = make_editor(store)
    before = copy.deepcopy(store.items[HANDLE])
    with pytest.raises(FsError) as caught:
        await editor.commit(HANDLE, data, None)
    assert errno_of(caught) == expected
    assert store.calls["update_metadata"] == 0
    assert store.items[HANDLE] == before
    assert catalog.invalidated == []


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["item"]["history"].clear(),
        lambda d: d["item"].update(s3={"bucket_name": "b", "path": "p/", "s3_uri": "s3://b/p/"}),
        lambda d: d.update(locked=True),
        lambda d: d.update(roles=["admin"]),
        lambda d: d["item"].update(display_name="Not the name"),
    ],
)
async def test_edits_of_read_only_fields_are_einval_even_with_a_real_change(edit: Any) -> None:
    store = make_store()
    editor, catalog, _ = make_editor(store)
    for change_description in (False, True):
        document = current_document(store)
        edit(document)
        if change_description:
            document["item"]["collection_format"]["dataset_info"]["description"] = "x"
        with pytest.raises(FsError) as caught:
            await editor.commit(HANDLE, encode(document), None)
        assert errno_of(caught) == errno.EINVAL
    assert store.calls["update_metadata"] == 0
    assert catalog.invalidated == [HANDLE, HANDLE]  # a stale read must not stick


async def test_an_edit_of_a_stale_copy_is_refused_instead_of_undoing_a_newer_change() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    stale = current_document(store)
    await editor.commit(HANDLE, changed_format("someone else's edit"), None)
    stale["item"]["collection_format"]["dataset_info"]["keywords"] = ["mine"]
    with pytest.raises(FsError) as caught:
        await editor.commit(HANDLE, encode(stale), None)
    assert errno_of(caught) == errno.EINVAL
    assert "history" in caught.value.message
    assert store.calls["update_metadata"] == 1
    description = store.items[HANDLE]["collection_format"]["dataset_info"]["description"]
    assert description == "someone else's edit"


@pytest.mark.parametrize("handle", [LOCKED, READER, DATA_WRITER])
async def test_locked_or_without_metadata_write_is_eacces_without_a_call(handle: str) -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    cf = collection_format()
    cf["dataset_info"]["description"] = "New words"
    with pytest.raises(FsError) as caught:
        await editor.commit(handle, encode(cf), None)
    assert errno_of(caught) == errno.EACCES
    assert store.calls["update_metadata"] == 0


async def test_a_locked_dataset_written_back_unchanged_is_not_an_error() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    await editor.commit(LOCKED, encode(collection_format()), None)
    assert store.calls["update_metadata"] == 0


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (
            api_errors.InvalidRequestError("update_metadata: Metadata validation failed"),
            errno.EINVAL,
        ),
        (api_errors.PermissionDeniedError("update_metadata: This dataset is locked"), errno.EACCES),
        (api_errors.AuthenticationError("Could not validate credentials"), errno.EACCES),
        (api_errors.UnavailableError("update_metadata: unreachable"), errno.EIO),
    ],
)
async def test_data_store_failures_map_to_errnos(failure: Exception, expected: int) -> None:
    store = make_store()
    store.update_failure = failure
    editor, _, changed = make_editor(store)
    before = copy.deepcopy(store.items[HANDLE])
    cf = collection_format()
    cf["dataset_info"]["description"] = "New words"
    with pytest.raises(FsError) as caught:
        await editor.commit(HANDLE, encode(cf), None)
    assert errno_of(caught) == expected
    assert store.calls["update_metadata"] == 1
    assert store.items[HANDLE] == before
    assert changed == []


async def test_a_record_the_data_store_rejects_is_einval_and_changes_nothing() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    before = copy.deepcopy(store.items[HANDLE])
    cf = collection_format(name="")
    with pytest.raises(FsError) as caught:
        await editor.commit(HANDLE, encode(cf), None)
    assert errno_of(caught) == errno.EINVAL
    assert store.items[HANDLE] == before


# --- reasons -------------------------------------------------------------------------------


def changed_format(description: str) -> bytes:
    cf = collection_format()
    cf["dataset_info"]["description"] = description
    return encode(cf)


async def test_reason_precedence_argument_then_xattr_then_mount_option_then_generated() -> None:
    store = make_store()
    editor, _, _ = make_editor(store, default_reason="from the mount option")
    editor.set_reason(HANDLE, "from the xattr")
    await editor.commit(HANDLE, changed_format("one"), "from the argument")
    await editor.commit(HANDLE, changed_format("two"), None)
    await editor.commit(HANDLE, changed_format("three"), None)  # xattr used up by "two"
    plain, _, _ = make_editor(store)
    await plain.commit(HANDLE, changed_format("four"), None)
    assert [reason for _, reason, _ in store.updates] == [
        "from the argument",
        "from the mount option",
        "from the mount option",
        "provenafs: edited dataset_info.description",
    ]


async def test_the_xattr_reason_survives_a_failed_commit_and_a_success_clears_it() -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    editor.set_reason(HANDLE, "why")
    store.update_failure = api_errors.UnavailableError("down")
    with pytest.raises(FsError):
        await editor.commit(HANDLE, changed_format("one"), None)
    assert editor.reason_for(HANDLE) == "why"
    store.update_failure = None
    await editor.commit(HANDLE, changed_format("one"), None)
    assert store.updates[-1][1] == "why"
    assert editor.reason_for(HANDLE) is None


def test_parse_reason() -> None:
    assert parse_reason(b"  Fix typo\n") == "Fix typo"
    assert parse_reason(b"") is None
    for bad in (b"\xff", b"a\x00b", b"x" * 5000):
        with pytest.raises(FsError) as caught:
            parse_reason(bad)
        assert errno_of(caught) == errno.EINVAL


# --- revert --------------------------------------------------------------------------------


async def test_revert_restores_an_entry_and_answers_the_new_entry_id() -> None:
    store = make_store()
    editor, catalog, changed = make_editor(store)
    await editor.commit(HANDLE, changed_format("edited"), None)
    new_id = await editor.revert(HANDLE, 0, "undo")
    assert store.reverts == [(HANDLE, 0, "undo")]
    assert new_id == 2
    item = store.items[HANDLE]
    assert item["history"][0]["reason"] == "Reverting dataset to history id 0. Reason: undo."
    assert item["collection_format"]["dataset_info"]["description"] == "Hourly temperatures"
    assert changed == [HANDLE, HANDLE]
    assert catalog.invalidated.count(HANDLE) == 2


@pytest.mark.parametrize(
    ("handle", "history_id", "reason", "expected"),
    [
        (HANDLE, 7, "undo", errno.EINVAL),
        (HANDLE, -1, "undo", errno.EINVAL),
        (HANDLE, 0, "  ", errno.EINVAL),
        (LOCKED, 0, "undo", errno.EACCES),
        (READER, 0, "undo", errno.EACCES),
    ],
)
async def test_revert_refusals_make_no_call(
    handle: str, history_id: int, reason: str, expected: int
) -> None:
    store = make_store()
    editor, _, _ = make_editor(store)
    with pytest.raises(FsError) as caught:
        await editor.revert(handle, history_id, reason)
    assert errno_of(caught) == expected
    assert store.calls["revert_metadata"] == 0


# --- the write buffer ----------------------------------------------------------------------


def flags(buffer: SidecarBuffer) -> tuple[bool, bool]:
    """(dirty, unsaved)"""
    return buffer.dirty, buffer.unsaved


def test_sidecar_buffer_writes_at_any_offset_and_truncates() -> None:
    assert not SidecarBuffer(HANDLE, b"abcdef").unsaved
    replaced = SidecarBuffer(HANDLE, b"", replaced=True)
    assert flags(replaced) == (False, True)
    buffer = SidecarBuffer(HANDLE, b"abcdef")
    assert buffer.write(2, b"XY") == 2
    assert buffer.contents() == b"abXYef"
    buffer.write(8, b"!")
    assert buffer.contents() == b"abXYef\x00\x00!"
    buffer.truncate(3)
    assert buffer.contents() == b"abX"
    assert flags(buffer) == (True, True)
    assert buffer.take_for_commit() == b"abX"
    assert flags(buffer) == (False, False)
    with pytest.raises(FsError) as caught:
        buffer.write(SIDECAR_MAX_BYTES, b"x")
    assert errno_of(caught) == errno.EFBIG


# --- the filesystem: sidecars opened for writing ------------------------------------------

WRITE_TRUNC = os.O_WRONLY | os.O_TRUNC


def build(store: MetadataStore, *extra: str) -> Filesystem:
    mount_options = options("-o", ",".join(("rw", *extra)))
    fs, _ = build_filesystem(store, MemoryBlobStore(), mount_options=mount_options)
    return fs


async def sidecar(fs: Filesystem, handle: str = HANDLE) -> Attributes:
    prefix, suffix = handle.split("/")
    parent = await fs.lookup(ROOT_INODE, prefix, CALLER)
    return await fs.lookup(parent.inode, f"{suffix}.json", CALLER)


async def read_sidecar(fs: Filesystem, handle: str = HANDLE) -> dict[str, Any]:
    opened = await fs.open((await sidecar(fs, handle)).inode, os.O_RDONLY, CALLER)
    data = await fs.read(opened.fh, 0, 1 << 24)
    await fs.release(opened.fh)
    result: dict[str, Any] = json.loads(data)
    return result


async def write_sidecar(fs: Filesystem, data: bytes, handle: str = HANDLE) -> int:
    """open(O_WRONLY|O_TRUNC), write, then flush (close); the fh, released."""
    opened = await fs.open((await sidecar(fs, handle)).inode, WRITE_TRUNC, CALLER)
    try:
        assert await fs.write(opened.fh, 0, data) == len(data)
        await fs.flush(opened.fh)
    finally:
        await fs.release(opened.fh)
    return opened.fh


async def test_sidecar_write_bits_tell_the_truth() -> None:
    store = make_store()
    fs = build(store)
    assert stat.S_IMODE((await sidecar(fs, HANDLE)).mode) == 0o644
    for handle in (LOCKED, READER, DATA_WRITER):
        assert stat.S_IMODE((await sidecar(fs, handle)).mode) == 0o444
    read_only, _ = build_filesystem(store, MemoryBlobStore(), mount_options=options("-o", "ro"))
    assert stat.S_IMODE((await sidecar(read_only, HANDLE)).mode) == 0o444
    plain, _ = build_filesystem(FakeDataStore(), MemoryBlobStore(), mount_options=options())
    assert plain.sidecar_editor is None


async def test_writing_the_sidecar_commits_once_at_flush_and_the_next_read_shows_it() -> None:
    store = make_store()
    fs = build(store)
    document = await read_sidecar(fs)
    document["item"]["collection_format"]["dataset_info"]["description"] = "Edited"
    data = encode(document)
    opened = await fs.open((await sidecar(fs)).inode, WRITE_TRUNC, CALLER)
    assert opened.direct_io
    await fs.write(opened.fh, 0, data[:10])
    await fs.write(opened.fh, 10, data[10:])
    assert (await sidecar(fs)).size == len(data)  # the unsaved edit, while it is open
    assert store.calls["update_metadata"] == 0
    await fs.flush(opened.fh)
    await fs.flush(opened.fh)  # a dup'ed descriptor's close: nothing new to commit
    await fs.release(opened.fh)
    assert store.calls["update_metadata"] == 1
    after = await read_sidecar(fs)
    assert after["item"]["collection_format"]["dataset_info"]["description"] == "Edited"
    assert after["item"]["history"][0]["reason"] == ("provenafs: edited dataset_info.description")
    assert (await sidecar(fs)).size == len(sidecar_bytes(await store.fetch_dataset(HANDLE)))


async def test_read_write_open_starts_from_the_current_bytes_and_edits_in_place() -> None:
    store = make_store()
    fs = build(store)
    record = await store.fetch_dataset(HANDLE)
    current = sidecar_bytes(record)
    opened = await fs.open((await sidecar(fs)).inode, os.O_RDWR, CALLER)
    assert await fs.read(opened.fh, 0, len(current) + 10) == current
    at = current.index(b"Hourly temperatures")
    await fs.write(opened.fh, at, b"Weekly")
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert store.updates[0][2]["dataset_info"]["description"] == "Weekly temperatures"


async def test_ftruncate_then_write_replaces_the_document() -> None:
    store = make_store()
    fs = build(store)
    inode = (await sidecar(fs)).inode
    opened = await fs.open(inode, os.O_WRONLY, CALLER)
    attributes = await fs.setattr(inode, CALLER, size=0, fh=opened.fh)
    assert attributes.size == 0
    await fs.write(opened.fh, 0, changed_format("Truncated first"))
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert store.updates[0][2]["dataset_info"]["description"] == "Truncated first"


async def test_a_failed_commit_fails_every_flush_of_that_file_with_one_call() -> None:
    store = make_store()
    fs = build(store)
    before = copy.deepcopy(store.items[HANDLE])
    opened = await fs.open((await sidecar(fs)).inode, WRITE_TRUNC, CALLER)
    await fs.write(opened.fh, 0, encode(collection_format(name="")))
    for _ in range(2):
        with pytest.raises(FsError) as caught:
            await fs.flush(opened.fh)
        assert errno_of(caught) == errno.EINVAL
    await fs.release(opened.fh)
    assert store.calls["update_metadata"] == 1
    assert store.items[HANDLE] == before
    assert (await read_sidecar(fs))["item"] == before


async def test_invalid_json_fails_at_flush() -> None:
    store = make_store()
    fs = build(store)
    with pytest.raises(FsError) as caught:
        await write_sidecar(fs, b"{not json")
    assert errno_of(caught) == errno.EINVAL
    assert store.calls["update_metadata"] == 0


async def test_a_truncating_open_is_an_edit_only_once_written() -> None:
    """``echo ... > x.json``: the shell closes a duplicate of the descriptor before writing."""

    store = make_store()
    fs = build(store)
    inode = (await sidecar(fs)).inode
    opened = await fs.open(inode, WRITE_TRUNC, CALLER)
    assert (await fs.getattr(inode, CALLER)).size == 0
    await fs.flush(opened.fh)  # the shell's first close: nothing written, nothing sent
    await fs.write(opened.fh, 0, changed_format("via a shell"))
    await fs.flush(opened.fh)
    await fs.release(opened.fh)
    assert [cf["dataset_info"]["description"] for _, _, cf in store.updates] == ["via a shell"]
    empty = await fs.open(inode, WRITE_TRUNC, CALLER)  # `: > x.json`
    await fs.flush(empty.fh)
    await fs.release(empty.fh)
    assert store.calls["update_metadata"] == 1
    assert (await fs.getattr(inode, CALLER)).size == len(
        sidecar_bytes(await store.fetch_dataset(HANDLE))
    )
    cut = await fs.open(inode, os.O_WRONLY, CALLER)  # `truncate -s 0 x.json`
    await fs.setattr(inode, CALLER, size=0, fh=cut.fh)
    with pytest.raises(FsError) as caught:
        await fs.flush(cut.fh)
    assert errno_of(caught) == errno.EINVAL
    await fs.release(cut.fh)


@pytest.mark.parametrize(("handle", "expected"), [(LOCKED, errno.EACCES), (READER, errno.EACCES)])
async def test_opening_a_sidecar_that_cannot_be_edited_for_writing_is_refused(
    handle: str, expected: int
) -> None:
    store = make_store()
    fs = build(store)
    for flags in (os.O_WRONLY, os.O_RDWR, WRITE_TRUNC):
        with pytest.raises(FsError) as caught:
            await fs.open((await sidecar(fs, handle)).inode, flags, CALLER)
        assert errno_of(caught) == expected
    read_only, _ = build_filesystem(store, MemoryBlobStore(), mount_options=options("-o", "ro"))
    with pytest.raises(FsError) as caught:
        await read_only.open((await sidecar(read_only)).inode, os.O_WRONLY, CALLER)
    assert errno_of(caught) == errno.EROFS


async def test_reason_xattr_is_used_by_the_next_commit_then_forgotten() -> None:
    store = make_store()
    fs = build(store, "metadata_reason=mount default")
    inode = (await sidecar(fs)).inode
    await fs.setxattr(inode, REASON_XATTR, b"Fix the description", CALLER)
    assert await fs.getxattr(inode, REASON_XATTR, CALLER) == b"Fix the description"
    assert REASON_XATTR in await fs.listxattr(inode, CALLER)
    await write_sidecar(fs, changed_format("one"))
    await write_sidecar(fs, changed_format("two"))
    assert [reason for _, reason, _ in store.updates] == [
        "Fix the description",
        "mount default",
    ]
    with pytest.raises(FsError) as caught:
        await fs.getxattr(inode, REASON_XATTR, CALLER)
    assert errno_of(caught) == errno.ENODATA
    await fs.setxattr(inode, REASON_XATTR, b"dropped", CALLER)
    await fs.removexattr(inode, REASON_XATTR, CALLER)
    await write_sidecar(fs, changed_format("three"))
    assert store.updates[-1][1] == "mount default"
    with pytest.raises(FsError) as caught:
        await fs.setxattr(inode, "user.other", b"x", CALLER)
    assert errno_of(caught) == errno.ENOTSUP
    locked_inode = (await sidecar(fs, LOCKED)).inode
    with pytest.raises(FsError) as caught:
        await fs.setxattr(locked_inode, REASON_XATTR, b"x", CALLER)
    assert errno_of(caught) == errno.EACCES


async def test_revert_through_the_filesystem_editor_shows_at_once() -> None:
    store = make_store()
    fs = build(store)
    await write_sidecar(fs, changed_format("edited"))
    assert (await read_sidecar(fs))["item"]["history"][0]["id"] == 1
    editor = fs.sidecar_editor
    assert editor is not None
    assert await editor.revert(HANDLE, 0, "undo") == 2
    document = await read_sidecar(fs)
    assert document["item"]["history"][0]["reason"] == (
        "Reverting dataset to history id 0. Reason: undo."
    )
    description = document["item"]["collection_format"]["dataset_info"]["description"]
    assert description == "Hourly temperatures"


# --- the revert command (its daemon round trip is in tests/e2e/test_metadata_edits.py) -----


def test_revert_command_refuses_paths_outside_a_mount_and_empty_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main("revert", [str(tmp_path), "--to", "0", "-m", "why"]) == 1
    assert "is not inside a provenafs mount" in capsys.readouterr().err
    assert commands.main("revert", [str(tmp_path), "--to", "0", "-m", "  "]) == 2
    assert "must not be empty" in capsys.readouterr().err
    assert commands.main("revert", [str(tmp_path), "--to", "x", "-m", "why"]) == 2
    assert commands.main("revert", [str(tmp_path), "-m", "why"]) == 2
