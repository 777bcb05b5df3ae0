"""Drafts: a dataset's pending changes, staged on local disk and journaled so no crash loses them.

A ``Draft`` is an overlay over the dataset's base version, keyed by path inside the dataset:

- ``StagedEntry``: a file whose bytes are local, in ``blobs/<random id>`` (never a user's name);
- ``CarriedEntry``: a base object shown (and later copied) under a path, e.g. after a rename,
  so moving a file never downloads it;
- ``DirectoryEntry``: a directory the draft made; it is *opaque*: nothing of the base shows
  below it unless the draft put it there (``opaque=False``: a base directory whose own
  attributes changed, the base showing below it; the dataset's top may have one, at ``""``);
- ``LinkEntry``: a symbolic link;
- ``Whiteout``: a base file or directory that is deleted.

A path with no entry, and no opaque entry on any ancestor, is the base's to answer
(``resolve`` returns None). Invariant: no entry ever sits below a ``Whiteout``, a file or a
link entry. The entries are ``draft_entries``, the journal ``draft_journal``, and what a
publish reads of a draft ``draft_plan`` (with every entry's mode and times).

Durability: every change appends one checksummed record to an append-only ``journal``
(``<crc32 hex> <json>\\n``), and ``sync`` fsyncs it (with the directories that gained files).
An append costs one small ``write``; rewriting a manifest instead would cost O(draft) per
``close()`` and make ``tar x`` of many files quadratic. A change spanning several paths (a
directory rename) is one record, so replay applies it whole or not at all; a torn or corrupt
tail is dropped (and cut off) on replay. Opening a store replays every journal and compacts a
long one (temp file, fsync, rename, fsync of the directory). A staged file's bytes are fsynced
before the record naming its size is, so an acknowledged ``close()``/``fsync()`` survives
``kill -9``; bytes written after the last acknowledgement may or may not be there, as POSIX
allows.

In place (``-o writes=in-place``), a push writes the draft into the dataset itself and then
``settle``s it: entries it wrote that did not change meanwhile are dropped one by one (a
``drop`` record), files still open are dropped after their last close. A change of a path
clears its publish mark, so a resumed publish never skips a path changed since it landed.

Layout: ``<root>/<sanitized handle>-<hash>/journal`` and ``.../blobs/<id>``; directories 0700,
files 0600. ``root`` is the private per-source state directory (``default_root``).

Rules: trio thread only for the in-memory state; blocking disk I/O of size (blob reads and
writes, fsync, deleting trees) runs in ``trio.to_thread.run_sync``. This module knows nothing of
FUSE, S3 or the data store: it is told what to record.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import trio

from provenafs.errors import FsError
from provenafs.storage.attribute_manifest import MANIFEST_DIR
from provenafs.storage.blobstore import Listing
from provenafs.write.draft_entries import (
    METADATA_FILE,
    WHITEOUT,
    CarriedEntry,
    DirectoryEntry,
    Entry,
    LinkEntry,
    StagedEntry,
    Whiteout,
    entry_from_json,
    entry_to_json,
    is_under,
    join,
    parent_of,
)
from provenafs.write.draft_journal import DraftJournal, decode_records, fsync_dir_blocking
from provenafs.write.draft_plan import (
    CarriedFile,
    DirectoryAttributes,
    DraftPlan,
    DraftSummary,
    LinkFile,
    StagedFile,
)

__all__ = [
    "Draft",
    "DraftStore",
    "StagedBlob",
    "default_root",
    "default_state_dir",
    "mkdir_private",
    "state_root",
]

log = logging.getLogger(__name__)

_JOURNAL = "journal"
_BLOBS = "blobs"
_COMPACT_MIN_RECORDS = 256  # replay compacts a journal with more records than this ...
_COMPACT_FACTOR = 4  # ... and more than this many per live entry
_BIG_IO = 64 << 10  # blob reads and writes at least this large run in a worker thread


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/provenafs`` (``~/.local/state/provenafs``): drafts, runs, uploads."""
    env = os.environ.get("XDG_STATE_HOME")
    return (Path(env) if env else Path.home() / ".local" / "state") / "provenafs"


def state_root(kind: str, source: str, state_dir: Path | None = None) -> Path:
    """``<state_dir>/<kind>/<hash of the source URL>``: private per data store."""
    digest = hashlib.sha256(source.rstrip("/").encode()).hexdigest()[:16]
    return (state_dir or default_state_dir()) / kind / digest


def default_root(source: str, state_dir: Path | None = None) -> Path:
    """Where the drafts of *source* live: ``<state_dir>/drafts/<hash of the source URL>``."""
    return state_root("drafts", source, state_dir)


def _draft_dirname(handle: str) -> str:
    """A directory name for *handle*: readable, but its hash keeps distinct handles apart."""
    readable = re.sub(r"[^A-Za-z0-9.-]", "_", handle)[:80]
    return f"{readable}-{hashlib.sha256(handle.encode()).hexdigest()[:12]}"


def mkdir_private(path: Path) -> None:
    """Make *path* (0700), and every missing parent 0700 too (they are ours alone)."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
    path.chmod(0o700)


# --- staged files ----------------------------------------------------------------------------


class StagedBlob:
    """The live state of one staged file: its local bytes, size and open handles.

    ``path`` is where the file sits in the dataset, None once it is unlinked (it lives on while
    open). ``dirty`` means bytes or size changed since its entry was last recorded.
    """

    def __init__(self, draft: Draft, blob_id: str, size: int, mtime_ns: int, path: str | None):
        self.draft = draft
        self.id = blob_id
        self.local_path = draft.blob_dir / blob_id
        self.size = size
        self.mtime_ns = mtime_ns
        self.mode: int | None = None  # permission bits; None: the default
        self.atime_ns: int | None = None
        self.ctime_ns: int | None = None
        self.path = path
        self.replaced_base = False
        self.dirty = False
        self.open_count = 0
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"StagedBlob({self.id}, size={self.size}, open={self.open_count})"

    def _fd_or_open(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.local_path, os.O_RDWR | os.O_CLOEXEC)
        return self._fd

    async def read(self, offset: int, size: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        fd = self._fd_or_open()
        if size >= _BIG_IO:
            data = await trio.to_thread.run_sync(os.pread, fd, size, offset)
        else:
            data = os.pread(fd, size, offset)
        # Bytes past the blob's end (a grow not yet written through) read as zeros.
        return data + bytes(size - len(data))

    async def write(self, offset: int, data: bytes) -> int:
        fd = self._fd_or_open()
        if len(data) >= _BIG_IO:
            await trio.to_thread.run_sync(_pwrite_all, fd, data, offset)
        else:
            _pwrite_all(fd, data, offset)
        self.size = max(self.size, offset + len(data))
        self.touch()
        return len(data)

    async def truncate(self, size: int) -> None:
        fd = self._fd_or_open()
        await trio.to_thread.run_sync(os.ftruncate, fd, size)
        self.size = size
        self.touch()

    def touch(self, mtime_ns: int | None = None) -> None:
        """Bytes or times changed: mtime (now, or as given) and ctime (now)."""
        now = time.time_ns()
        self.mtime_ns = mtime_ns if mtime_ns is not None else now
        self.ctime_ns = now
        self.dirty = True
        self.draft.changed()

    def set_attributes(self, *, mode: int | None, atime_ns: int | None) -> None:
        """``chmod`` (permission bits) or an atime, kept at the next record; ctime is now."""
        if mode is not None:
            self.mode = mode
        if atime_ns is not None:
            self.atime_ns = atime_ns
        self.ctime_ns = time.time_ns()
        self.dirty = True
        self.draft.changed()

    async def sync_data(self) -> None:
        if self._fd is not None:
            await trio.to_thread.run_sync(os.fsync, self._fd)

    def close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def entry(self) -> StagedEntry:
        return StagedEntry(
            self.id,
            self.size,
            self.mtime_ns,
            self.replaced_base,
            self.mode,
            self.atime_ns,
            self.ctime_ns,
        )


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


# --- drafts ----------------------------------------------------------------------------------


class Draft:
    """One dataset's overlay of changes over its base version (see the module docstring)."""

    def __init__(
        self,
        store: DraftStore,
        directory: Path,
        *,
        handle: str,
        bucket: str,
        base_prefix: str,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self.directory = directory
        self.blob_dir = directory / _BLOBS
        self.handle = handle
        self.bucket = bucket
        self.base_prefix = base_prefix
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._children: dict[str, set[str]] = {}
        self._live: dict[str, StagedBlob] = {}
        self._new_version: str | None = None
        self._version_request: str | None = None  # reason of a version call whose answer
        # was never recorded (sent, and lost or interrupted)
        self._published: set[str] = set()
        self._pushed: dict[str, Entry] = {}  # pushed in place, kept while the file is open
        self._journal: DraftJournal | None = None
        self.open_writers = 0
        self.last_change = clock()
        self.discarded = False

    def __repr__(self) -> str:
        return f"Draft({self.handle!r}, entries={len(self._entries)})"

    # --- reading the overlay -------------------------------------------------------------

    @property
    def entries(self) -> Mapping[str, Entry]:
        return self._entries

    def resolve(self, path: str) -> Entry | None:
        """The entry that decides *path*; None when the base decides.

        A path below a file, whiteout or draft-made (opaque) directory that has no entry of its
        own does not exist: ``WHITEOUT``.
        """
        entry = self._entries.get(path)
        if entry is not None:
            return entry
        ancestor = parent_of(path)
        while ancestor:
            above = self._entries.get(ancestor)
            if above is not None and not _shows_base_below(above):
                return WHITEOUT
            ancestor = parent_of(ancestor)
        return None

    def shows_base(self, directory: str) -> bool:
        """Whether the base version's entries show in *directory* (under the draft's)."""
        entry = self.resolve(directory)
        return entry is None or _shows_base_below(entry)

    def children(self, directory: str) -> dict[str, Entry]:
        """The entries directly under *directory* (whiteouts included), by name."""
        found = {}
        for name in self._children.get(directory, ()):
            entry = self._entries.get(join(directory, name))
            if entry is not None:
                found[name] = entry
        return found

    def entries_under(self, directory: str) -> Iterator[tuple[str, Entry]]:
        """Every entry strictly below *directory*, parents before children."""
        stack = [directory]
        while stack:
            current = stack.pop()
            for name in sorted(self._children.get(current, ()), reverse=True):
                path = join(current, name)
                stack.append(path)
            if current != directory and current in self._entries:
                yield current, self._entries[current]

    def live_blob(self, blob_id: str) -> StagedBlob | None:
        return self._live.get(blob_id)

    async def read_staged(self, entry: StagedEntry, offset: int, size: int) -> bytes:
        """Bytes of a staged file, through its live state if open, else from its local file."""
        live = self._live.get(entry.blob)
        if live is not None:
            return await live.read(offset, size)
        size = max(0, min(size, entry.size - offset))
        if size == 0:
            return b""

        def read() -> bytes:
            with open(self.blob_dir / entry.blob, "rb") as file:
                file.seek(offset)
                return file.read(size)

        data = await trio.to_thread.run_sync(read)
        return data + bytes(size - len(data))

    def staged_size(self, entry: StagedEntry) -> int:
        live = self._live.get(entry.blob)
        return live.size if live is not None else entry.size

    def staged_mtime(self, entry: StagedEntry) -> int:
        live = self._live.get(entry.blob)
        return live.mtime_ns if live is not None else entry.mtime_ns

    def staged_entry(self, entry: StagedEntry) -> StagedEntry:
        """*entry* with the live size and attributes of its open file, if it is open."""
        live = self._live.get(entry.blob)
        return live.entry() if live is not None else entry

    # --- changing the overlay ------------------------------------------------------------

    def put(self, path: str, entry: Entry) -> None:
        """Record *entry* at *path* (a file or whiteout also drops everything below it)."""
        self.apply([("set", path, entry)])

    def remove(self, path: str) -> None:
        """Drop the entries at and below *path*: the base decides there again."""
        self.apply([("del", path, None)])

    def apply(self, operations: list[tuple[str, str, Entry | None]]) -> None:
        """Apply ``("set", path, entry)`` / ``("del", path, None)`` as one journal record."""
        self._check_open()
        encoded: list[dict[str, Any]] = []
        for op, path, entry in operations:
            if op == "set":
                assert entry is not None
                encoded.append({"op": "set", "p": path, "e": entry_to_json(entry)})
            else:
                encoded.append({"op": "del", "p": path})
        record = encoded[0] if len(encoded) == 1 else {"op": "batch", "ops": encoded}
        self._journal_or_fail().append(record)
        self._apply_record(record)
        self.changed()

    def changed(self) -> None:
        self.last_change = self._clock()

    def _apply_record(self, record: Mapping[str, Any]) -> None:
        op = record["op"]
        if op == "batch":
            for inner in record["ops"]:
                self._apply_record(inner)
        elif op == "set":
            self._set_entry(str(record["p"]), entry_from_json(record["e"]))
            self._published.discard(str(record["p"]))
        elif op == "del":
            self._delete_subtree(str(record["p"]))
            self._forget_published_at_and_below(str(record["p"]))
        elif op == "drop":
            self._drop_entry(str(record["p"]))
        elif op == "version":
            self._new_version = str(record["id"])
            self._version_request = None
        elif op == "version_request":
            reason = record["reason"]
            self._version_request = None if reason is None else str(reason)
        elif op == "published":
            self._published.add(str(record["p"]))
        elif op != "head":
            raise ValueError(f"unknown journal record {op!r}")

    # ``_children`` is a trie of every path that has an entry at or below it (a directory
    # the draft never recorded, e.g. a base folder holding a new file, is a node too), so
    # subtree operations never scan the whole draft.

    def _set_entry(self, path: str, entry: Entry) -> None:
        if not isinstance(entry, DirectoryEntry):
            self._delete_below(path)
        self._entries[path] = entry
        node = path
        while node:
            parent, _, name = node.rpartition("/")
            names = self._children.setdefault(parent, set())
            if name in names:
                break
            names.add(name)
            node = parent

    def _forget_published_at_and_below(self, path: str) -> None:
        """A changed path must be written again: a publish mark must not make it skip."""
        if self._published:
            self._published = {p for p in self._published if p != path and not is_under(p, path)}

    def _drop_entry(self, path: str) -> None:
        """Drop the entry at *path* only (entries below it stay): the base decides there again."""
        self._entries.pop(path, None)
        self._published.discard(path)
        node = path
        while node and node not in self._entries and not self._children.get(node):
            self._children.pop(node, None)
            parent, _, name = node.rpartition("/")
            siblings = self._children.get(parent)
            if siblings is not None:
                siblings.discard(name)
                if not siblings:
                    del self._children[parent]
            node = parent

    def _delete_below(self, path: str) -> None:
        for child in list(self._children.get(path, ())):
            self._delete_subtree(join(path, child))

    def _delete_subtree(self, path: str) -> None:
        self._delete_below(path)
        self._drop_entry(path)

    # --- staged files --------------------------------------------------------------------

    async def new_blob(self, path: str, *, replaced_base: bool) -> StagedBlob:
        """A new empty local file for *path* (the caller records its entry)."""
        self._check_open()
        blob_id = secrets.token_hex(16)
        local = self.blob_dir / blob_id
        fd = os.open(local, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
        self._journal_or_fail().dirs_to_sync.add(self.blob_dir)
        blob = StagedBlob(self, blob_id, 0, time.time_ns(), path)
        blob.replaced_base = replaced_base
        blob.dirty = True
        self._live[blob_id] = blob
        return blob

    def blob_for(self, path: str, entry: StagedEntry) -> StagedBlob:
        """The live state of the staged file at *path* (made live if it was not)."""
        live = self._live.get(entry.blob)
        if live is None:
            live = StagedBlob(self, entry.blob, entry.size, entry.mtime_ns, path)
            live.replaced_base = entry.replaced_base
            live.mode, live.atime_ns, live.ctime_ns = entry.mode, entry.atime_ns, entry.ctime_ns
            self._live[entry.blob] = live
        return live

    async def record_blob(self, blob: StagedBlob, *, sync: bool = True) -> None:
        """Make *blob*'s bytes and size durable under its path (a flush, fsync or close)."""
        if self.discarded:
            raise FsError(errno.EROFS, "the draft was published or discarded")
        if blob.dirty:
            await blob.sync_data()
            blob.dirty = False
            if blob.path is not None and self._entries_blob(blob.path) == blob.id:
                self.put(blob.path, blob.entry())
        if sync:
            await self.sync()

    def _entries_blob(self, path: str) -> str | None:
        entry = self._entries.get(path)
        return entry.blob if isinstance(entry, StagedEntry) else None

    def release_blob(self, blob: StagedBlob) -> None:
        """One handle on *blob* closed; at the last, its fd closes (and an unlinked one goes)."""
        blob.open_count -= 1
        if blob.open_count > 0:
            return
        blob.close_fd()
        if blob.path is None or self._entries_blob(blob.path) != blob.id:
            self._live.pop(blob.id, None)
            if blob.id not in self._referenced_blobs():
                with contextlib.suppress(FileNotFoundError):
                    blob.local_path.unlink()
        elif not blob.dirty:
            self._live.pop(blob.id, None)

    def forget_unreferenced_blob(self, blob_id: str) -> None:
        """Delete the local bytes of a blob no entry and no handle uses any more."""
        live = self._live.get(blob_id)
        if live is not None and live.open_count > 0:
            live.path = None
            return
        self._live.pop(blob_id, None)
        if blob_id not in self._referenced_blobs():
            with contextlib.suppress(FileNotFoundError):
                (self.blob_dir / blob_id).unlink()

    def rebind(self, old_path: str, new_path: str) -> None:
        """Open staged files at or below *old_path* now sit below *new_path* (after a rename)."""
        for blob in self._live.values():
            if blob.path == old_path:
                blob.path = new_path
            elif blob.path is not None and is_under(blob.path, old_path):
                blob.path = new_path + blob.path[len(old_path) :]

    def _referenced_blobs(self) -> set[str]:
        return {e.blob for e in self._entries.values() if isinstance(e, StagedEntry)}

    async def sync(self) -> None:
        """Return once every change recorded so far is on disk."""
        if self._journal is not None and not self.discarded:
            await self._journal.sync()

    # --- lifecycle (the publisher's seam) ------------------------------------------------

    def record_new_version(self, new_handle: str) -> None:
        """Durably remember the version being published into, before any copy starts."""
        self._record_durably({"op": "version", "id": new_handle})

    @property
    def new_version_id(self) -> str | None:
        return self._new_version

    def record_version_request(self, reason: str | None) -> None:
        """Durably remember, before ``POST /register/version`` is sent, that a version with
        this reason is asked for (None: the call surely made none). After a crash, the next
        publish looks for a successor with that reason before it asks again."""
        self._record_durably({"op": "version_request", "reason": reason})

    def _record_durably(self, record: Mapping[str, Any]) -> None:
        """Journal and apply ``record``, on disk before this returns (an fsync on the caller's
        thread: once or twice per publish, where a lost record could mint a second version)."""
        journal = self._journal_or_fail()
        journal.append(record)
        self._apply_record(record)
        journal.sync_blocking()

    @property
    def version_request(self) -> str | None:
        """The reason of a version call sent whose answer was never recorded."""
        return self._version_request

    def mark_published(self, path: str) -> None:
        """Remember that *path* landed in the new version (made durable with the next sync)."""
        record = {"op": "published", "p": path}
        self._journal_or_fail().append(record)
        self._apply_record(record)

    def is_published(self, path: str) -> bool:
        return path in self._published

    def is_quiet(self) -> bool:
        """No handle is open for writing."""
        return self.open_writers == 0

    def discard(self) -> None:
        """Delete the draft from disk (after a verified publish); the store forgets it."""
        self.discarded = True
        for blob in self._live.values():
            blob.close_fd()
        self._live.clear()
        if self._journal is not None:
            self._journal.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        self._store._forget(self)

    def settle(self, pushed: Mapping[str, Entry] | None = None) -> bool:
        """Forget changes an in-place push wrote into the dataset; True when nothing is left.

        *pushed* are the entries the push was planned from. Each still equal to its entry here
        is dropped (the dataset's own listing shows it now), except a staged file that is open
        or written since: it is kept, and a later ``settle()`` (after its last close) drops it
        if it is still unchanged. A directory entry goes once nothing of the draft is below it.
        """
        self._check_open()
        self._pushed.update(pushed or {})
        drops: list[dict[str, Any]] = []
        for path in sorted(self._pushed, key=lambda p: p.count("/") + bool(p), reverse=True):
            entry = self._pushed[path]
            if self._entries.get(path) != entry:
                del self._pushed[path]  # changed since the push: it waits for the next one
                continue
            if isinstance(entry, StagedEntry):
                live = self._live.get(entry.blob)
                if live is not None and (live.open_count > 0 or live.dirty):
                    continue
            if isinstance(entry, DirectoryEntry) and self._children.get(path):
                continue
            del self._pushed[path]
            record = {"op": "drop", "p": path}
            self._apply_record(record)
            drops.append(record)
            if isinstance(entry, StagedEntry):
                self.forget_unreferenced_blob(entry.blob)
        if drops:
            self._journal_or_fail().append(
                drops[0] if len(drops) == 1 else {"op": "batch", "ops": drops}
            )
        return not self._entries and not self._live

    def summary(self) -> DraftSummary:
        added = changed = removed = staged_bytes = 0
        for path, entry in self._entries.items():
            if isinstance(entry, StagedEntry):
                staged_bytes += self.staged_size(entry)
                if entry.replaced_base:
                    changed += 1
                else:
                    added += 1
            elif isinstance(entry, CarriedEntry):
                if entry.base_key != self.base_prefix + path:
                    added += 1
                else:
                    changed += 1  # its attributes
            elif isinstance(entry, LinkEntry):
                added += 1
            elif isinstance(entry, Whiteout):
                removed += 1
        return DraftSummary(
            handle=self.handle,
            added=added,
            changed=changed,
            removed=removed,
            staged_bytes=staged_bytes,
            open_writers=self.open_writers,
            last_change=self.last_change,
            new_version_id=self._new_version,
            published_paths=len(self._published),
        )

    async def plan(self, base: Listing) -> DraftPlan:
        """What the new version must hold, given the base version's recursive listing."""
        await trio.lowlevel.checkpoint()
        base_files: dict[str, Any] = {}
        markers: set[str] = set()
        for info in base.objects:
            if not info.key.startswith(self.base_prefix):
                continue
            rel = info.key[len(self.base_prefix) :]
            if not rel or rel.split("/", 1)[0] == MANIFEST_DIR:
                continue  # the base's own attributes manifest: a publish writes its own
            if rel.endswith("/"):
                markers.add(rel.rstrip("/"))
            else:
                base_files[rel] = info
        carried: list[CarriedFile] = []
        staged: list[StagedFile] = []
        final_paths: set[str] = set()
        for rel, info in sorted(base_files.items()):
            if rel == METADATA_FILE or self.resolve(rel) is not None:
                continue
            mtime = int(info.last_modified * 1_000_000_000)
            carried.append(
                CarriedFile(rel, info.key, info.size, info.etag, mtime, attributes_from_base=True)
            )
            final_paths.add(rel)
        # Base folders that are still there (marked, or implied by keys below them): one
        # emptied by unlinks stays, as POSIX says, and needs a marker now.
        base_dirs = set(markers)
        for rel in base_files:
            base_dirs.update(_ancestors(rel))
        dirs = {d for d in base_dirs if d and self.resolve(d) is None}
        links: list[LinkFile] = []
        attributes: list[DirectoryAttributes] = []
        for path, entry in sorted(self._entries.items()):
            if isinstance(entry, StagedEntry):
                live = self.staged_entry(entry)
                local = self.blob_dir / entry.blob
                staged.append(StagedFile(path, local, live.size, live.mtime_ns, live.mode))
                final_paths.add(path)
            elif isinstance(entry, CarriedEntry):
                carried.append(
                    CarriedFile(
                        path, entry.base_key, entry.size, entry.etag, entry.mtime_ns, entry.mode
                    )
                )
                final_paths.add(path)
            elif isinstance(entry, LinkEntry):
                links.append(LinkFile(path, entry.target, entry.mtime_ns))
                final_paths.add(path)
            elif isinstance(entry, DirectoryEntry):
                attributes.append(DirectoryAttributes(path, entry.mode, entry.mtime_ns))
                if path:
                    dirs.add(path)
        has_files = {parent for p in final_paths for parent in _ancestors(p)}
        empty_dirs = sorted(d for d in dirs if d not in has_files or d in markers)
        removed = sorted(rel for rel in base_files if rel not in final_paths and rel != "")
        removed = [rel for rel in removed if rel != METADATA_FILE]
        return DraftPlan(
            tuple(staged),
            tuple(carried),
            tuple(empty_dirs),
            tuple(removed),
            dict(self._entries),
            links=tuple(links),
            directories=tuple(attributes),
        )

    # --- opening and replaying -----------------------------------------------------------

    def _check_open(self) -> None:
        if self.discarded:
            raise FsError(errno.EROFS, "the draft was published or discarded")

    def _journal_or_fail(self) -> DraftJournal:
        self._check_open()
        if self._journal is None:
            raise FsError(errno.EIO, "the draft's journal is not open")
        return self._journal

    def _snapshot_records(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = [self._head()]
        if "" in self._entries:  # the dataset's top (its own attributes)
            records.append({"op": "set", "p": "", "e": entry_to_json(self._entries[""])})
        for path, entry in self.entries_under(""):
            records.append({"op": "set", "p": path, "e": entry_to_json(entry)})
        if self._new_version is not None:
            records.append({"op": "version", "id": self._new_version})
        if self._version_request is not None:
            records.append({"op": "version_request", "reason": self._version_request})
        records.extend({"op": "published", "p": path} for path in sorted(self._published))
        return records

    def _head(self) -> dict[str, Any]:
        return {
            "op": "head",
            "handle": self.handle,
            "bucket": self.bucket,
            "base_prefix": self.base_prefix,
        }

    def _create_blocking(self) -> None:
        mkdir_private(self.directory)
        mkdir_private(self.blob_dir)
        self._journal = DraftJournal(self.directory / _JOURNAL)
        self._journal.append(self._head())
        self._journal.sync_blocking()
        fsync_dir_blocking(self.directory)
        fsync_dir_blocking(self.directory.parent)

    def _replay_blocking(self, records: list[dict[str, Any]]) -> None:
        for record in records[1:]:
            try:
                self._apply_record(record)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("draft %s: skipping a malformed journal record: %s", self.handle, exc)
        mkdir_private(self.blob_dir)
        referenced = self._referenced_blobs()
        for local in self.blob_dir.iterdir():
            if local.name not in referenced:
                local.unlink()  # a crash left it: never recorded, or unlinked before
        for path, entry in list(self._entries.items()):
            if not isinstance(entry, StagedEntry):
                continue
            local = self.blob_dir / entry.blob
            if not local.exists():
                log.warning("draft %s: bytes of %r are missing; showing zeros", self.handle, path)
            with open(local, "ab") as file:
                # Bytes written after the last acknowledged size are not part of the file.
                file.truncate(entry.size)
            local.chmod(0o600)
        self._journal = DraftJournal(self.directory / _JOURNAL)
        self._journal.records = len(records)
        if len(records) > max(_COMPACT_MIN_RECORDS, _COMPACT_FACTOR * (len(self._entries) + 1)):
            self._journal.replace_blocking(self._snapshot_records())


class DraftStore:
    """Every draft of one data store's mount, under a private state directory.

    Construction replays the drafts found on disk (a crash leaves them there); nothing is
    created on disk until the first draft is.
    """

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self._clock = clock
        self._drafts: dict[str, Draft] = {}
        if root.is_dir():
            root.chmod(0o700)
            for directory in sorted(root.iterdir()):
                if (directory / _JOURNAL).is_file():
                    self._load_blocking(directory)

    def __repr__(self) -> str:
        return f"DraftStore({str(self.root)!r}, drafts={len(self._drafts)})"

    def drafts(self) -> list[Draft]:
        return list(self._drafts.values())

    def get(self, handle: str) -> Draft | None:
        return self._drafts.get(handle)

    async def open(self, handle: str, *, bucket: str, base_prefix: str) -> Draft:
        """The draft of *handle*, created (durably, empty) if there is none."""
        existing = self._drafts.get(handle)
        if existing is not None:
            return existing
        directory = self.root / _draft_dirname(handle)
        draft = Draft(
            self,
            directory,
            handle=handle,
            bucket=bucket,
            base_prefix=base_prefix,
            clock=self._clock,
        )

        def create() -> None:
            mkdir_private(self.root)
            draft._create_blocking()

        await trio.to_thread.run_sync(create)
        # Another task may have opened it while this one waited for the disk.
        return self._drafts.setdefault(handle, draft)

    def _forget(self, draft: Draft) -> None:
        if self._drafts.get(draft.handle) is draft:
            del self._drafts[draft.handle]

    def close(self) -> None:
        """Close every journal and blob (the store is not used afterwards)."""
        for draft in self._drafts.values():
            for blob in draft._live.values():
                blob.close_fd()
            if draft._journal is not None:
                draft._journal.close()

    def _load_blocking(self, directory: Path) -> None:
        journal_path = directory / _JOURNAL
        data = journal_path.read_bytes()
        records, good = decode_records(data)
        if not records or records[0].get("op") != "head":
            log.warning("ignoring draft directory %s: no journal header", directory)
            return
        if good < len(data):
            log.warning(
                "draft journal %s: dropping a torn tail of %d bytes", journal_path, len(data) - good
            )
            with open(journal_path, "r+b") as file:
                file.truncate(good)
                os.fsync(file.fileno())
        head = records[0]
        draft = Draft(
            self,
            directory,
            handle=str(head["handle"]),
            bucket=str(head["bucket"]),
            base_prefix=str(head["base_prefix"]),
            clock=self._clock,
        )
        draft._replay_blocking(records)
        self._drafts[draft.handle] = draft
        log.info("recovered the draft of %s (%d entries)", draft.handle, len(draft.entries))


def _shows_base_below(entry: Entry) -> bool:
    return isinstance(entry, DirectoryEntry) and not entry.opaque


def _ancestors(path: str) -> Iterator[str]:
    parent = parent_of(path)
    while parent:
        yield parent
        parent = parent_of(parent)
