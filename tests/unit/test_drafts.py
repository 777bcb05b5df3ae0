"""The draft store on its own: journal durability, torn tails, replay, compaction, plans, modes.

A "crash" is simulated by dropping every object without closing anything and opening a new
``DraftStore`` on the same directory, which is what a new mount after ``kill -9`` does.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import trio

from provenafs.storage.blobstore import Listing, ObjectInfo
from provenafs.write.draft_entries import WHITEOUT, CarriedEntry, DirectoryEntry, StagedEntry
from provenafs.write.drafts import Draft, DraftStore, default_root

HANDLE = "10378.1/1932274"
PREFIX = "datasets/10378-1-1932274/"


async def new_draft(root: Path) -> tuple[DraftStore, Draft]:
    store = DraftStore(root)
    draft = await store.open(HANDLE, bucket="bucket", base_prefix=PREFIX)
    return store, draft


async def stage(draft: Draft, path: str, data: bytes, *, acknowledge: bool = True) -> None:
    blob = await draft.new_blob(path, replaced_base=False)
    draft.put(path, blob.entry())
    blob.open_count += 1
    await blob.write(0, data)
    if acknowledge:
        await draft.record_blob(blob)
        draft.release_blob(blob)


def staged_bytes(draft: Draft, path: str) -> bytes:
    entry = draft.entries[path]
    assert isinstance(entry, StagedEntry)
    return (draft.blob_dir / entry.blob).read_bytes()


def journal(draft: Draft) -> Path:
    return draft.directory / "journal"


async def test_acknowledged_changes_survive_a_crash(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    await stage(draft, "a.csv", b"alpha")
    draft.put("dir", DirectoryEntry(7))
    draft.put("gone.txt", WHITEOUT)
    draft.put("moved.bin", CarriedEntry(PREFIX + "old.bin", 10, "etag1", 5))
    await draft.sync()
    again = DraftStore(tmp_path).get(HANDLE)  # the first store was never closed
    assert again is not None
    assert (again.bucket, again.base_prefix) == ("bucket", PREFIX)
    assert staged_bytes(again, "a.csv") == b"alpha"
    assert again.entries["dir"] == DirectoryEntry(7)
    assert again.entries["gone.txt"] == WHITEOUT
    assert again.entries["moved.bin"] == CarriedEntry(PREFIX + "old.bin", 10, "etag1", 5)


async def test_bytes_after_the_last_acknowledgement_are_cut_to_the_recorded_size(
    tmp_path: Path,
) -> None:
    _, draft = await new_draft(tmp_path)
    await stage(draft, "a.csv", b"12345")
    entry = draft.entries["a.csv"]
    assert isinstance(entry, StagedEntry)
    blob = draft.blob_for("a.csv", entry)
    blob.open_count += 1
    await blob.write(5, b"unacknowledged")  # no flush: the daemon dies here
    await stage(draft, "never-flushed.txt", b"lost", acknowledge=False)
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None
    assert staged_bytes(again, "a.csv") == b"12345"
    # A file created but never flushed may exist (empty) or not; it never shows stray bytes.
    if "never-flushed.txt" in again.entries:
        assert staged_bytes(again, "never-flushed.txt") == b""
    referenced = {e.blob for e in again.entries.values() if isinstance(e, StagedEntry)}
    assert {p.name for p in again.blob_dir.iterdir()} == referenced  # leftovers deleted


async def test_a_torn_tail_record_is_ignored_and_cut_off(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("kept", DirectoryEntry(1))
    await draft.sync()
    path = next(tmp_path.iterdir()) / "journal"
    good = path.read_bytes()
    with open(path, "ab") as file:
        file.write(b'0badc0de {"op":"set","p":"torn","e":{"k":"dir","mt')  # no newline
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None
    assert dict(again.entries) == {"kept": DirectoryEntry(1)}
    assert path.read_bytes() == good  # the torn bytes are gone: later appends stay readable

    async def more() -> None:
        again.put("after", DirectoryEntry(2))
        await again.sync()

    await more()
    third = DraftStore(tmp_path).get(HANDLE)
    assert third is not None and set(third.entries) == {"kept", "after"}


async def test_a_record_with_a_bad_checksum_ends_the_replay(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("one", DirectoryEntry(1))
    draft.put("two", DirectoryEntry(2))
    draft.put("three", DirectoryEntry(3))
    await draft.sync()
    path = next(tmp_path.iterdir()) / "journal"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"two"', b'"TWO"')  # a flipped byte: checksum mismatch
    path.write_bytes(b"".join(lines))
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None and set(again.entries) == {"one"}


async def test_a_multi_path_change_is_all_or_nothing(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("src", DirectoryEntry(1))
    draft.put("src/f", CarriedEntry(PREFIX + "f", 1, "e", 1))
    await draft.sync()
    draft.apply(
        [
            ("set", "dst", DirectoryEntry(2)),
            ("set", "dst/f", CarriedEntry(PREFIX + "f", 1, "e", 1)),
            ("del", "src", None),
        ]
    )
    await draft.sync()
    path = next(tmp_path.iterdir()) / "journal"
    whole = path.read_bytes()
    path.write_bytes(whole[:-10])  # the rename's record torn
    torn = DraftStore(tmp_path).get(HANDLE)
    assert torn is not None and set(torn.entries) == {"src", "src/f"}


async def test_overlay_resolution_and_invariants(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("new", DirectoryEntry(1))
    draft.put("new/a", CarriedEntry(PREFIX + "x", 1, "e", 1))
    assert draft.resolve("new/a") == CarriedEntry(PREFIX + "x", 1, "e", 1)
    assert draft.resolve("new/base-file") == WHITEOUT  # opaque: the base stays hidden
    assert draft.resolve("untouched/file") is None  # the base decides
    draft.put("new", WHITEOUT)  # a whiteout drops everything below it
    assert dict(draft.entries) == {"new": WHITEOUT}
    assert draft.children("") == {"new": WHITEOUT}
    draft.remove("new")
    assert dict(draft.entries) == {} and draft.children("") == {}


async def test_compaction_on_open_keeps_the_state_and_shrinks_the_journal(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    for n in range(600):
        draft.put("flip", DirectoryEntry(n))
    await stage(draft, "file", b"bytes")
    draft.mark_published("file")
    draft.record_new_version("10378.1/1932300")
    await draft.sync()
    path = next(tmp_path.iterdir()) / "journal"
    before = path.stat().st_size
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None
    assert path.stat().st_size < before / 10
    assert again.entries["flip"] == DirectoryEntry(599)
    assert staged_bytes(again, "file") == b"bytes"
    assert again.new_version_id == "10378.1/1932300"
    assert again.is_published("file") and not again.is_published("other")
    third = DraftStore(tmp_path).get(HANDLE)
    assert third is not None and third.entries == again.entries


async def test_new_version_is_durable_at_once_and_discard_removes_everything(
    tmp_path: Path,
) -> None:
    store, draft = await new_draft(tmp_path)
    draft.record_new_version("10378.1/1932300")  # no sync call: durable on return
    reopened = DraftStore(tmp_path).get(HANDLE)
    assert reopened is not None and reopened.new_version_id == "10378.1/1932300"
    draft.discard()
    draft.discard()  # twice is harmless
    assert store.get(HANDLE) is None
    assert not draft.directory.exists()
    assert DraftStore(tmp_path).drafts() == []


async def test_modes_are_private_and_names_never_user_text(tmp_path: Path) -> None:
    root = default_root("http://127.0.0.1:8750", tmp_path / "state")
    assert root.parent.parent == tmp_path / "state"

    _, draft = await new_draft(root)
    await stage(draft, "../../etc/passwd with spaces", b"x")
    await stage(draft, "ünïcode/名前.txt", b"y")
    for path in [root, root.parent, root.parent.parent, *root.rglob("*")]:
        expected = 0o700 if path.is_dir() else 0o600
        assert stat.S_IMODE(path.stat().st_mode) == expected, path
    names = [p.name for p in root.rglob("*")]
    assert all(name.isascii() and "passwd" not in name and " " not in name for name in names)


async def test_plan_lists_staged_carried_dirs_and_removed(tmp_path: Path) -> None:
    def info(key: str, size: int = 3) -> ObjectInfo:
        return ObjectInfo(PREFIX + key, size, "etag-" + key, 1_700_000_000.0)

    base = Listing(
        (
            info("metadata.json"),
            info("keep.txt"),
            info("changed.txt"),
            info("deleted.txt"),
            info("old/moved.bin", 9),
            info("empty/", 0),
            info("emptied/last.txt"),
        ),
        (),
    )

    _, draft = await new_draft(tmp_path)
    blob = await draft.new_blob("changed.txt", replaced_base=True)
    blob.open_count += 1
    await blob.write(0, b"new bytes")
    draft.put("changed.txt", blob.entry())
    await draft.record_blob(blob)
    draft.put("deleted.txt", WHITEOUT)
    draft.put("emptied/last.txt", WHITEOUT)  # the folder stays, empty
    draft.apply(
        [
            ("set", "new", DirectoryEntry(1)),
            ("set", "new/moved.bin", CarriedEntry(PREFIX + "old/moved.bin", 9, "e", 2)),
            ("set", "old", WHITEOUT),
            ("set", "made", DirectoryEntry(3)),
        ]
    )
    plan = await draft.plan(base)
    assert [(f.path, f.size) for f in plan.staged] == [("changed.txt", 9)]
    assert plan.staged[0].local_path.read_bytes() == b"new bytes"
    assert [(f.path, f.base_key) for f in plan.carried] == [
        ("keep.txt", PREFIX + "keep.txt"),
        ("new/moved.bin", PREFIX + "old/moved.bin"),
    ]
    assert plan.empty_dirs == ("emptied", "empty", "made")
    assert plan.removed == ("deleted.txt", "emptied/last.txt", "old/moved.bin")
    summary = draft.summary()
    assert (summary.changed, summary.added, summary.removed) == (1, 1, 3)
    assert summary.staged_bytes == 9 and summary.open_writers == 0


async def test_concurrent_syncs_share_fsyncs_and_all_return_durable(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)

    async def change(n: int) -> None:
        draft.put(f"d{n}", DirectoryEntry(n))
        await draft.sync()

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(change, n)
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None and len(again.entries) == 20
    assert os.path.getsize(next(tmp_path.iterdir()) / "journal") > 0


async def test_subtree_changes_reach_entries_under_folders_the_draft_never_recorded(
    tmp_path: Path,
) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("base/folder/new.txt", CarriedEntry(PREFIX + "x", 1, "e", 1))
    assert [path for path, _ in draft.entries_under("base")] == ["base/folder/new.txt"]
    assert draft.children("base") == {}  # "base/folder" is no entry of its own
    draft.put("base", WHITEOUT)  # the base folder goes: so does everything below
    assert dict(draft.entries) == {"base": WHITEOUT}
    draft.remove("base")
    assert dict(draft.entries) == {} and list(draft.entries_under("")) == []


# --- settle: forgetting what an in-place push wrote into the dataset ---------------------------


async def test_settle_drops_pushed_entries_and_keeps_what_changed_or_is_open(
    tmp_path: Path,
) -> None:
    _, draft = await new_draft(tmp_path)
    await stage(draft, "done.csv", b"closed")
    draft.put("sub", DirectoryEntry(1))
    open_blobs = []
    for path in ("open.csv", "sub/child.txt"):  # flushed (as before a push), still open
        await stage(draft, path, b"still open", acknowledge=False)
        entry = draft.entries[path]
        assert isinstance(entry, StagedEntry)
        blob = draft.live_blob(entry.blob)
        assert blob is not None
        await draft.record_blob(blob)
        open_blobs.append(blob)
    await stage(draft, "changed.csv", b"v1")
    draft.put("gone.txt", WHITEOUT)
    pushed = dict(draft.entries)
    done_blob = draft.entries["done.csv"]
    assert isinstance(done_blob, StagedEntry)
    await stage(draft, "changed.csv", b"v2")  # after the push's snapshot
    assert draft.settle(pushed) is False
    assert sorted(draft.entries) == ["changed.csv", "open.csv", "sub", "sub/child.txt"]
    assert not (draft.blob_dir / done_blob.blob).exists()  # its local bytes are gone
    # The open files close unchanged: the next settle() drops them, then their folder.
    for blob in open_blobs:
        await draft.record_blob(blob)
        draft.release_blob(blob)
    assert draft.settle() is False
    assert sorted(draft.entries) == ["changed.csv"]  # pushed at v1, now v2: not dropped
    await draft.sync()
    again = DraftStore(tmp_path).get(HANDLE)  # the drops are journaled
    assert again is not None
    assert sorted(again.entries) == ["changed.csv"]
    assert staged_bytes(again, "changed.csv") == b"v2"


async def test_settle_of_a_directory_keeps_the_entries_below_it(tmp_path: Path) -> None:
    _, draft = await new_draft(tmp_path)
    draft.put("d", DirectoryEntry(1))
    pushed = {"d": draft.entries["d"]}
    draft.put("d/late.txt", CarriedEntry(PREFIX + "x", 1, "e", 1))  # after the snapshot
    assert draft.settle(pushed) is False
    assert sorted(draft.entries) == ["d", "d/late.txt"]  # d still holds a pending child
    draft.put("d/late.txt", WHITEOUT)
    assert draft.settle({"d/late.txt": WHITEOUT}) is True
    assert dict(draft.entries) == {}


async def test_a_change_clears_the_publish_mark_of_its_path(tmp_path: Path) -> None:
    """A resumed publish skips marked paths; one changed since must be written again."""

    _, draft = await new_draft(tmp_path)
    await stage(draft, "a.csv", b"one")
    draft.put("dir", DirectoryEntry(1))
    draft.put("dir/b.csv", CarriedEntry(PREFIX + "b.csv", 1, "e", 1))
    for path in ("a.csv", "dir/b.csv"):
        draft.mark_published(path)
    await stage(draft, "a.csv", b"two")
    draft.remove("dir")
    assert not draft.is_published("a.csv")
    assert not draft.is_published("dir/b.csv")
    draft.mark_published("a.csv")
    await draft.sync()
    again = DraftStore(tmp_path).get(HANDLE)
    assert again is not None
    assert again.is_published("a.csv")  # marked after the change: the replay keeps it


async def test_a_version_request_is_durable_until_its_answer_is_recorded(tmp_path: Path) -> None:
    """Journaled before ``POST /register/version`` is sent, so a crash while it is in flight
    leaves the next daemon a reason to look for (and adopt) the version it may have made."""

    _, draft = await new_draft(tmp_path)
    for n in range(600):  # enough records that the replay compacts the journal
        draft.put("flip", DirectoryEntry(n))
    draft.record_version_request("nightly run")  # no sync call: durable on return
    reopened = DraftStore(tmp_path).get(HANDLE)  # replays and compacts
    assert reopened is not None
    assert (reopened.version_request, reopened.new_version_id) == ("nightly run", None)
    again = DraftStore(tmp_path).get(HANDLE)  # the compacted journal kept it
    assert again is not None and again.version_request == "nightly run"
    again.record_new_version("10378.1/1932300")  # the answer: the request is settled
    answered = DraftStore(tmp_path).get(HANDLE)
    assert answered is not None
    assert (answered.version_request, answered.new_version_id) == (None, "10378.1/1932300")
    again.record_version_request(None)
    last = DraftStore(tmp_path).get(HANDLE)
    assert last is not None
    assert (last.version_request, last.new_version_id) == (None, "10378.1/1932300")
