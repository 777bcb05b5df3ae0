"""Publishing a draft as a new dataset version, resumably, and deciding when to.

What a user sees of it is docs/SEMANTICS.md, "Writes: drafts" and "Writes in place".

``Publisher.publish(handle, reason, progress)`` turns the draft of ``handle`` into the next
version of that dataset and answers the new handle:

1. list the base version (its read credentials) and ask the draft for its ``DraftPlan``; a
   planned key that S3 would refuse or store under another name (``object_keys``) fails the
   publish here, before anything is minted;
2. unless the draft already names one, ``POST /register/version`` and **record the new id in the
   draft's journal before anything is copied**, so a crash or an error resumes into the same new
   version and never mints a second one. The request itself (with its reason) is journaled
   before it is sent: a publish that finds a request without an answer (lost in transit, or a
   crash while it was in flight) adopts the base's successor if this user made it with that
   reason (a generated reason carries a random request id);
3. fetch the new version (its fresh ``s3``), take its write credentials, and fill its prefix:
   unchanged files streamed from the old version part by part (ranged GETs with the old
   version's read credentials, multipart upload with the new version's write credentials, one
   part in memory per stream), staged files uploaded from local disk, links as objects whose
   body is their target, a zero-byte ``dir/`` key for each empty directory and each directory
   with attributes, removed files left out; every object carries its mode and mtime as s3fs and
   rclone read them (``publish_attributes``); each file is ``mark_published`` as it lands, so
   a resumed publish skips it;
4. list the new prefix and verify every planned key: present, with the planned size, and with
   the ETag its bytes imply where S3's ETag is a checksum (the MD5 of a single PUT, or the MD5 of
   the parts' MD5s of a multipart upload). Leftovers of an earlier attempt that the plan no longer
   holds are deleted; the server's ``metadata.json`` is never written, copied or deleted;
   then the attributes manifest (``.provenafs/``) is written from what landed;
5. ``publish_done(old, new)`` on the filesystem, then ``draft.discard()``.

A failure leaves the draft (and any recorded new version id) in place for a retry. A fresh
dataset (version 1 whose prefix holds only ``metadata.json``: just minted, e.g. by ``provenafs
new``) is published in place instead, as below: a second version differing from the first only
by the draft would be pointless. With ``in_place=True`` (``-o writes=in-place``) step 2 is
skipped and the changes go straight into the draft's own dataset with its write credentials:
renamed files are copied first (they read keys the rest may overwrite or delete), then changed
and new files are uploaded, then removed files and the markers of removed folders are deleted
(no manifest is written in place: the objects' own metadata holds their attributes). The data
store refuses write credentials for a locked, pending or released dataset, and that refusal is
the error. Step 5 then ``settle``s the draft: the entries pushed that did not change meanwhile
are forgotten (the dataset's own listing shows them now), and a draft with nothing left is
discarded. The filesystem pushes this way at every close and namespace change
(``begin_publish`` holds its change gate so that no change lands in the middle of a push).

``publish_scheduler.PublishScheduler`` decides when a draft publishes and serialises publishes
per dataset; this module does one publish.

Rules: trio thread only; blocking work (reading staged files, hashing parts) runs in worker
threads per multi-MiB part. Never logs a credential. Memory: at most ``max_parallel`` parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import secrets
import stat
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import trio

from provenafs.api import errors as api_errors
from provenafs.api.models import Credentials, DatasetRecord, VersionCreated
from provenafs.storage.attribute_manifest import (
    INDEX_KEY,
    MANIFEST_DIR,
    MAX_OBJECT_BYTES,
    decode_index,
)
from provenafs.storage.blobstore import (
    BlobError,
    Listing,
    NoSuchKeyError,
    ObjectHead,
    ObjectInfo,
    StaleObjectError,
    WritableBlobStore,
    multipart_etag,
)
from provenafs.storage.posix_metadata import (
    LINK_TARGET_MAX,
    PosixMetadata,
    metadata_for,
    parse_metadata,
)
from provenafs.write.draft_entries import METADATA_FILE, Entry
from provenafs.write.draft_plan import DraftPlan, DraftSummary
from provenafs.write.object_keys import key_problem
from provenafs.write.publish_attributes import (
    LINK_PERMISSIONS,
    AttributeIntent,
    ManifestBuilder,
    directory_metadata,
)

__all__ = [
    "DEFAULT_PART_SIZE",
    "NothingToPublishError",
    "PublishError",
    "PublishFailure",
    "PublishProgress",
    "Publisher",
    "generated_reason",
    "is_md5_etag",
]

log = logging.getLogger(__name__)

DEFAULT_PART_SIZE = 16 << 20
_PREFIX_GROWTH = 8  # bytes a new version's prefix may outgrow its base's (a longer handle)
_HASH_INLINE_BYTES = 1 << 20  # smaller bodies are hashed on the trio thread
_T = TypeVar("_T")

Phase = Literal["listing", "versioning", "copying", "verifying", "finishing", "done"]


# --- what the publisher needs from its neighbours --------------------------------------------


class PublishDraft(Protocol):
    """The part of ``drafts.Draft`` publishing uses."""

    handle: str
    bucket: str
    base_prefix: str

    async def plan(self, base: Listing) -> DraftPlan: ...

    def summary(self) -> DraftSummary: ...

    def record_new_version(self, new_handle: str) -> None: ...

    @property
    def new_version_id(self) -> str | None: ...

    def record_version_request(self, reason: str | None) -> None: ...

    @property
    def version_request(self) -> str | None: ...

    def mark_published(self, path: str) -> None: ...

    def is_published(self, path: str) -> bool: ...

    def is_quiet(self) -> bool: ...

    async def sync(self) -> None: ...

    def settle(self, pushed: Mapping[str, Entry] | None = None) -> bool: ...

    def discard(self) -> None: ...


class PublishDraftStore(Protocol):
    def drafts(self) -> Sequence[PublishDraft]: ...

    def get(self, handle: str) -> PublishDraft | None: ...


class PublishHooks(Protocol):
    """What the filesystem does around a publish (``Filesystem`` provides these)."""

    async def begin_publish(self, handle: str) -> None:
        """The draft is being published: changes to it wait (or fail) until ``end_publish``."""
        ...

    def end_publish(self, handle: str) -> None: ...

    async def publish_done(self, old_handle: str, new_handle: str) -> None:
        """Drop the draft view, invalidate catalog entries and kernel caches."""
        ...


class VersioningClient(Protocol):
    """The part of ``DataStoreClient`` publishing uses."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def create_version(self, handle: str, reason: str) -> VersionCreated: ...

    async def username(self) -> str | None: ...


class CredentialSource(Protocol):
    """The part of ``CredentialBroker`` publishing uses."""

    async def read(self, handle: str) -> Credentials: ...

    async def write(self, handle: str) -> Credentials: ...

    def invalidate(self, handle: str) -> None: ...

    async def call(
        self,
        handle: str,
        kind: Literal["read", "write"],
        op: Callable[[Credentials], Awaitable[_T]],
    ) -> _T: ...


# --- values -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PublishProgress:
    """Where one publish is; ``bytes_done`` and ``files_done`` never go down."""

    handle: str
    new_handle: str | None
    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    phase: Phase


@dataclasses.dataclass(frozen=True)
class PublishFailure:
    handle: str
    new_handle: str | None
    cause: str
    at: float  # Unix seconds


class PublishError(Exception):
    """Publishing failed; the draft (and any recorded new version id) is kept for a retry."""


class NothingToPublishError(PublishError):
    """The dataset has no draft, or its draft changes nothing.

    ``current_handle`` is the version that holds the dataset's latest published state when it
    is known to differ from the handle asked about (its draft was published moments ago).
    """

    def __init__(self, message: str, current_handle: str | None = None) -> None:
        super().__init__(message)
        self.current_handle = current_handle


@dataclasses.dataclass(frozen=True)
class _Transfer:
    """One file to write into the target prefix."""

    path: str
    key: str
    size: int
    read: Callable[[int, int], Awaitable[bytes]]  # (offset, length) -> exactly those bytes
    known_etag: str | None  # an MD5 ETag the bytes must have (the base's single-part ETag)
    attributes: AttributeIntent
    # A copy's base object: the whole of it with its metadata (one GET), and its metadata
    # alone (a HEAD, before a multipart copy); None for local bytes.
    read_with_metadata: Callable[[], Awaitable[tuple[bytes, ObjectHead]]] | None = None
    head_base: Callable[[], Awaitable[ObjectHead]] | None = None
    target: str | None = None  # a link's target (its body)


@dataclasses.dataclass
class _Landed:
    """What a publish wrote, for the manifest: each path's attributes (and link target)."""

    objects: dict[str, tuple[PosixMetadata, str | None]] = dataclasses.field(default_factory=dict)
    directories: dict[str, PosixMetadata] = dataclasses.field(default_factory=dict)


def generated_reason(plan: DraftPlan, base_paths: set[str], *, names: int = 3) -> str:
    """``provenafs: 3 added, 1 changed, 2 removed (a.csv, b/c.txt, d.nc, …)``."""
    added = [f.path for f in plan.staged if f.path not in base_paths]
    added += [f.path for f in plan.carried if f.path not in base_paths]
    added += [link.path for link in plan.links if link.path not in base_paths]
    changed = [f.path for f in plan.staged if f.path in base_paths]
    removed = list(plan.removed)
    counts = f"{len(added)} added, {len(changed)} changed, {len(removed)} removed"
    touched = sorted({*added, *changed, *removed})
    if not touched:
        return f"provenafs: {counts}"
    shown = ", ".join(touched[:names]) + (", …" if len(touched) > names else "")
    return f"provenafs: {counts} ({shown})"


def _with_nonce(reason: str) -> str:
    """A generated reason made unique to one version request (journaled with it), so that a
    lost answer is only ever matched to the version this request made."""
    return f"{reason} [request {secrets.token_hex(4)}]"


@contextlib.contextmanager
def _one_error() -> Iterator[None]:
    """Nurseries raise groups; callers of the publisher see the first real failure."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
        preferred = [e for e in real if isinstance(e, PublishError)] or real
        if not preferred:
            raise
        raise preferred[0] from None


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def is_md5_etag(etag: str) -> bool:
    """Whether an ETag is a plain MD5 of the bytes (a single PUT's), not a multipart one."""
    return len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower())


def _digest(data: bytes) -> bytes:
    return hashlib.md5(data).digest()  # noqa: S324 (S3's ETag is an MD5)


async def _hash(data: bytes) -> bytes:
    if len(data) <= _HASH_INLINE_BYTES:
        return _digest(data)
    return await trio.to_thread.run_sync(_digest, data)


def _read_file_part_blocking(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as file:
        file.seek(offset)
        return file.read(length)


class _Progress:
    """Counts for one publish, reported to its listener after every step."""

    def __init__(self, handle: str, listener: Callable[[PublishProgress], None] | None) -> None:
        self.handle = handle
        self.new_handle: str | None = None
        self.files_done = self.files_total = self.bytes_done = self.bytes_total = 0
        self.phase: Phase = "listing"
        self._listener = listener

    def snapshot(self) -> PublishProgress:
        return PublishProgress(
            self.handle,
            self.new_handle,
            self.files_done,
            self.files_total,
            self.bytes_done,
            self.bytes_total,
            self.phase,
        )

    def report(self, *, phase: Phase | None = None, files: int = 0, nbytes: int = 0) -> None:
        if phase is not None:
            self.phase = phase
        self.files_done += files
        self.bytes_done += nbytes
        if self._listener is not None:
            self._listener(self.snapshot())


# --- the publisher ----------------------------------------------------------------------------


class Publisher:
    """Publishes drafts as new versions (or in place); see the module docstring."""

    def __init__(
        self,
        client: VersioningClient,
        broker: CredentialSource,
        store: WritableBlobStore,
        draft_store: PublishDraftStore,
        hooks: PublishHooks,
        *,
        max_parallel: int = 4,
        part_size: int = DEFAULT_PART_SIZE,
        default_reason: str | None = None,
        in_place: bool = False,
    ) -> None:
        self._client = client
        self._broker = broker
        self._store = store
        self._drafts = draft_store
        self._hooks = hooks
        self._part_size = part_size  # S3 wants at least 5 MiB; tests use less
        self._parts = trio.CapacityLimiter(max(1, max_parallel))  # parts in memory
        self._files = trio.CapacityLimiter(max(1, max_parallel))  # files in flight
        self._default_reason = default_reason
        self.in_place = in_place
        self.versions_created = 0

    @property
    def draft_store(self) -> PublishDraftStore:
        return self._drafts

    async def publish(
        self,
        handle: str,
        reason: str | None = None,
        progress: Callable[[PublishProgress], None] | None = None,
    ) -> str:
        """Publish the draft of ``handle``; answers the new handle (``handle`` itself in place).

        Raises ``NothingToPublishError`` (no draft, or a draft that changes nothing: it is
        discarded) and ``PublishError`` with a cause fit for the user.
        """
        draft = self._drafts.get(handle)
        if draft is None:
            raise NothingToPublishError(f"{handle} has no draft")
        tracker = _Progress(handle, progress)
        await self._hooks.begin_publish(handle)
        try:
            if self.in_place:
                return await self._publish_in_place(draft, tracker)
            return await self._publish_new_version(draft, reason, tracker)
        except (PublishError, trio.Cancelled):
            raise
        except api_errors.ApiError as exc:
            raise PublishError(f"the data store refused: {exc}") from exc
        except BlobError as exc:
            raise PublishError(f"S3 failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._hooks.end_publish(handle)

    # -- new version -----------------------------------------------------------------------

    async def _publish_new_version(
        self, draft: PublishDraft, reason: str | None, tracker: _Progress
    ) -> str:
        handle = draft.handle
        base = await self._list(handle, "read", draft.bucket, draft.base_prefix)
        if await self._is_fresh(draft, base):
            log.info("%s is fresh (version 1, only metadata.json): publishing in place", handle)
            return await self._publish_in_place(draft, tracker)
        plan = await draft.plan(base)
        # Before any version is asked for: a key S3 would refuse or change mints nothing.
        _check_keys(handle, plan, draft.base_prefix, len(draft.base_prefix) + _PREFIX_GROWTH)
        base_paths = {
            info.key[len(draft.base_prefix) :]
            for info in base.objects
            if info.key.startswith(draft.base_prefix)
        }
        new_handle = draft.new_version_id
        if new_handle is None and draft.version_request is not None:
            new_handle = await self.adopt_lost_version(handle, draft.version_request)
            if new_handle is not None:
                draft.record_new_version(new_handle)
        if new_handle is None:
            if _changes_nothing(plan, draft.base_prefix, base_paths):
                draft.discard()
                raise NothingToPublishError(f"the draft of {handle} changes nothing")
            text = reason or self._default_reason or _with_nonce(generated_reason(plan, base_paths))
            tracker.report(phase="versioning")
            new_handle = await self._create_version(draft, text)
            draft.record_new_version(new_handle)
            log.info("publishing %s as new version %s (%s)", handle, new_handle, text)
        else:
            log.info("resuming the publish of %s into %s", handle, new_handle)
        tracker.new_handle = new_handle
        record = await self._client.fetch_dataset(new_handle)
        bucket, prefix = record.s3.bucket_name, record.s3.path
        await self._write_credentials(new_handle)
        copies, uploads = self._transfers(plan, handle, draft.bucket, prefix)
        landed = _Landed()
        verified = await self._fill(
            draft=draft,
            tracker=tracker,
            target=new_handle,
            bucket=bucket,
            prefix=prefix,
            phases=[copies + uploads],
            plan=plan,
            source=(handle, draft.bucket, draft.base_prefix, base),
            written=landed,
        )
        root = await self._base_root(handle, draft, base)
        await self._write_manifest(
            new_handle,
            bucket=bucket,
            prefix=prefix,
            plan=plan,
            written=landed,
            verified=verified,
            root=root,
        )
        await self._finish(draft, tracker, new_handle)
        return new_handle

    async def _is_fresh(self, draft: PublishDraft, base: Listing) -> bool:
        """Whether the draft's dataset is a fresh one: version 1 (no predecessor), its prefix
        holding nothing but the data store's ``metadata.json``, writable in place (not locked,
        ``NOT_RELEASED``), and no version of it asked for yet. Its first changes then go into
        it rather than into a second version that would differ only by them."""
        if draft.new_version_id is not None or draft.version_request is not None:
            return False
        if any(info.key != draft.base_prefix + METADATA_FILE for info in base.objects):
            return False
        record = await self._client.fetch_dataset(draft.handle)
        versioning = record.versioning
        first = versioning is None or (versioning.version == 1 and not versioning.previous_version)
        writable = not record.locked and record.release_status == "NOT_RELEASED"
        return first and record.is_latest and writable

    async def _create_version(self, draft: PublishDraft, reason: str) -> str:
        """``POST /register/version``, once, journaled in the draft before it is sent.

        The version call is never re-sent automatically (it is not idempotent). Until its
        answer is recorded, the draft's journal holds the request: if the answer is lost
        (``UnavailableError``), or the daemon dies while the call is in flight, the next attempt
        (after a restart too) finds the base no longer latest and adopts its successor if
        that was minted with the same reason (``adopt_lost_version``).
        """
        handle = draft.handle
        draft.record_version_request(reason)
        try:
            created = await self._client.create_version(handle, reason)
        except api_errors.PermissionDeniedError as exc:
            draft.record_version_request(None)  # refused: surely no version was made
            raise PublishError(
                f"the data store refused to version {handle} ({exc}); publishing a draft needs "
                "item role admin on the dataset"
            ) from exc
        except api_errors.InvalidRequestError as exc:
            draft.record_version_request(None)
            raise PublishError(f"the data store refused to version {handle}: {exc}") from exc
        self.versions_created += 1
        return created.new_version_id

    async def adopt_lost_version(self, handle: str, reason: str) -> str | None:
        """The successor of *handle* if this user minted it with *reason* (by a call whose
        answer never reached the journal); None when there is none (the call made nothing).

        A successor with that reason made by anyone else (its ``owner_username`` is the user
        who versioned it, docs/API.md §5.1) is never filled with this draft: the version call
        is then asked again, and refused, as the base is no longer the latest. A generated
        reason carries a random request id, so it names one request only.
        """
        record = await self._client.fetch_dataset(handle)
        successor = None if record.versioning is None else record.versioning.next_version
        if successor is None:
            return None
        candidate = await self._client.fetch_dataset(successor)
        if candidate.versioning is None or candidate.versioning.reason != reason:
            return None
        me = await self._client.username()
        if me is None or candidate.owner_username != me:
            log.warning(
                "not adopting %s: it has the reason of this draft's lost version call, but "
                "%s made it, not %s",
                successor,
                candidate.owner_username,
                me or "this mount's user (the token names none)",
            )
            return None
        log.warning("adopting %s: the answer minting it was lost", successor)
        return successor

    # -- in place --------------------------------------------------------------------------

    async def _publish_in_place(self, draft: PublishDraft, tracker: _Progress) -> str:
        """Write the draft's changes into its own dataset, then forget what landed (settle)."""
        handle = draft.handle
        tracker.new_handle = handle
        await self._write_credentials(handle)
        prefix = draft.base_prefix
        base = await self._list(handle, "write", draft.bucket, prefix)
        plan = await draft.plan(base)
        _check_keys(handle, plan, prefix, len(prefix))
        # Renamed files are copied from keys this push may overwrite or delete: copies go first.
        copies, uploads = self._transfers(plan, handle, draft.bucket, prefix, moved_only=True)
        await self._fill(
            draft=draft,
            tracker=tracker,
            target=handle,
            bucket=draft.bucket,
            prefix=prefix,
            phases=[copies, uploads],
            plan=plan,
            source=(handle, draft.bucket, prefix, base),
            written=_Landed(),
            landed=base,
            in_place=True,
        )
        await self._delete_all(handle, draft.bucket, _in_place_deletions(plan, prefix, base))
        await self._finish(draft, tracker, handle, pushed=plan.entries)
        return handle

    async def _delete_all(self, handle: str, bucket: str, keys: Sequence[str]) -> None:
        async def delete_one(key: str) -> None:
            async with self._files:
                await self._delete(handle, bucket, key)

        with _one_error():
            async with trio.open_nursery() as nursery:
                for key in keys:
                    nursery.start_soon(delete_one, key)

    # -- the common steps ------------------------------------------------------------------

    def _transfers(
        self, plan: DraftPlan, handle: str, bucket: str, prefix: str, *, moved_only: bool = False
    ) -> tuple[list[_Transfer], list[_Transfer]]:
        """What filling *prefix* takes: copies of base objects (of *handle*, in *bucket*) and
        uploads of staged files; with ``moved_only`` (in place), only base objects whose key
        changes are copied. The server's ``metadata.json`` is never written."""
        copies = [
            _Transfer(
                f.path,
                prefix + f.path,
                f.size,
                self._base_reader(handle, bucket, f.base_key, f.etag),
                f.etag if is_md5_etag(f.etag) else None,
                AttributeIntent(stat.S_IFREG, f.mode, f.mtime_ns, f.attributes_from_base),
                self._base_whole_reader(handle, bucket, f.base_key, f.etag),
                self._base_header(handle, bucket, f.base_key),
            )
            for f in plan.carried
            if f.path != METADATA_FILE
            and not (moved_only and f.base_key == prefix + f.path and f.attributes_from_base)
        ]
        uploads = [
            _Transfer(
                f.path,
                prefix + f.path,
                f.size,
                self._local_reader(f.local_path),
                None,
                AttributeIntent(stat.S_IFREG, f.mode, f.mtime_ns),
            )
            for f in plan.staged
            if f.path != METADATA_FILE
        ]
        for link in plan.links:
            body = os.fsencode(link.target)
            uploads.append(
                _Transfer(
                    link.path,
                    prefix + link.path,
                    len(body),
                    _bytes_reader(body),
                    None,
                    AttributeIntent(stat.S_IFLNK, LINK_PERMISSIONS, link.mtime_ns),
                    target=link.target,
                )
            )
        return copies, uploads

    async def _fill(
        self,
        *,
        draft: PublishDraft,
        tracker: _Progress,
        target: str,
        bucket: str,
        prefix: str,
        phases: Sequence[Sequence[_Transfer]],
        plan: DraftPlan,
        source: tuple[str, str, str, Listing],
        written: _Landed,
        landed: Listing | None = None,
        in_place: bool = False,
    ) -> dict[str, ObjectInfo]:
        """Write every transfer and directory marker not already in place; then verify and
        answer what the target prefix holds.

        Each phase's transfers run in parallel, and a phase starts once the one before it is
        done. *landed* is a listing of the target prefix taken just before, if there is one;
        *in_place*: the target is the dataset itself (keys the plan does not name are kept);
        *source* the base version (handle, bucket, prefix, listing), whose directory markers'
        attributes carry over; *written* collects every object's and marker's attributes.
        """
        if landed is None:
            landed = await self._list(target, "write", bucket, prefix)
        landed_keys = {info.key: info for info in landed.objects}
        await self._abort_leftover_uploads(target, bucket, prefix)
        transfers = [t for phase in phases for t in phase]

        def already_landed(t: _Transfer) -> bool:
            info = landed_keys.get(t.key)
            return draft.is_published(t.path) and info is not None and info.size == t.size

        done = [t for t in transfers if already_landed(t)]
        tracker.files_total = len(transfers)
        tracker.bytes_total = sum(t.size for t in transfers)
        tracker.report(phase="copying", files=len(done), nbytes=sum(t.size for t in done))
        expected: dict[str, str] = {}

        async def transfer_one(transfer: _Transfer) -> None:
            async with self._files:
                etag = await self._transfer(target, bucket, transfer, tracker, written)
            expected[transfer.key] = etag
            draft.mark_published(transfer.path)
            await draft.sync()
            tracker.report(files=1)

        for phase in phases:
            with _one_error():
                async with trio.open_nursery() as nursery:
                    for transfer in phase:
                        if not already_landed(transfer):
                            nursery.start_soon(transfer_one, transfer)
        # Markers: every empty directory and every directory whose attributes the draft holds
        # (in place, only those the draft changed are written again).
        changed = {d.path for d in plan.directories if d.path}
        marked = changed | {d.strip("/") for d in plan.empty_dirs if d.strip("/")}
        dir_keys = [prefix + path + "/" for path in sorted(marked)]
        to_write = {
            path
            for path in marked
            if prefix + path + "/" not in landed_keys or (in_place and path in changed)
        }
        markers = await self._marker_attributes(plan, source, marked if not in_place else to_write)
        written.directories.update(markers)
        for path in sorted(to_write):
            metadata = markers[path]
            meta = metadata_for(metadata.mode or 0, metadata.mtime_ns or 0)
            await self._put(target, bucket, prefix + path + "/", b"", metadata=meta)
        tracker.report(phase="verifying")
        return await self._verify(
            target=target,
            bucket=bucket,
            prefix=prefix,
            transfers=transfers,
            dir_keys=dir_keys,
            expected=expected,
            in_place=in_place,
        )

    async def _finish(
        self,
        draft: PublishDraft,
        tracker: _Progress,
        new_handle: str,
        *,
        pushed: Mapping[str, Entry] | None = None,
    ) -> None:
        """Clear the draft: all of it, or (in place) the ``pushed`` entries that did not change
        meanwhile; a draft with nothing left is discarded."""
        tracker.report(phase="finishing")
        nothing_left = True
        if pushed is not None:
            nothing_left = draft.settle(pushed)
            await draft.sync()
        await self._hooks.publish_done(draft.handle, new_handle)
        if nothing_left and self._drafts.get(draft.handle) is draft:
            draft.discard()  # publish_done may have discarded it already
        tracker.report(phase="done")

    async def _verify(
        self,
        *,
        target: str,
        bucket: str,
        prefix: str,
        transfers: Sequence[_Transfer],
        dir_keys: Sequence[str],
        expected: Mapping[str, str],
        in_place: bool,
    ) -> dict[str, ObjectInfo]:
        """Every planned key landed with its size (and checksum); in a new version, nothing
        else is there. Answers the target's listing."""
        landed = {
            info.key: info for info in (await self._list(target, "write", bucket, prefix)).objects
        }
        wanted = {t.key: t for t in transfers}
        if not in_place:
            planned = set(wanted) | set(dir_keys) | {prefix + METADATA_FILE}
            planned |= {key for key in landed if key.startswith(f"{prefix}{MANIFEST_DIR}/")}
            for key in sorted(set(landed) - planned):
                log.info(
                    "deleting %s: an earlier attempt left it, the draft no longer holds it", key
                )
                await self._delete(target, bucket, key)
        problems: list[str] = []
        for key, transfer in sorted(wanted.items()):
            info = landed.get(key)
            if info is None:
                problems.append(f"{transfer.path} is missing")
                continue
            if info.size != transfer.size:
                problems.append(f"{transfer.path} has {info.size} bytes, not {transfer.size}")
                continue
            problem = _checksum_problem(transfer, info, expected.get(key))
            if problem:
                problems.append(problem)
        problems += [f"directory {key} is missing" for key in dir_keys if key not in landed]
        if problems:
            shown = "; ".join(problems[:5]) + (" …" if len(problems) > 5 else "")
            raise PublishError(f"verification of {target} failed: {shown}")
        return landed

    # -- attributes ------------------------------------------------------------------------

    async def _marker_attributes(
        self, plan: DraftPlan, source: tuple[str, str, str, Listing], paths: set[str]
    ) -> dict[str, PosixMetadata]:
        """The attributes of each directory marker in *paths*: the draft's, else the base
        marker's own metadata (a HEAD each, in parallel), else the defaults."""
        handle, bucket, base_prefix, base = source
        base_markers = {info.key: info for info in base.objects if info.key.endswith("/")}
        known = {d.path: d for d in plan.directories}
        result: dict[str, PosixMetadata] = {}

        async def one(path: str) -> None:
            draft_dir = known.get(path)
            base_info = base_markers.get(base_prefix + path + "/")
            base_meta: PosixMetadata | None = None
            if base_info is not None and (draft_dir is None or draft_dir.mode is None):
                async with self._files:
                    base_meta = await self._metadata_of(handle, bucket, base_info.key)
            if draft_dir is not None:
                mtime = draft_dir.mtime_ns
            elif base_meta is not None and base_meta.mtime_ns is not None:
                mtime = base_meta.mtime_ns
            elif base_info is not None:
                mtime = int(base_info.last_modified * 1_000_000_000)
            else:
                mtime = time.time_ns()
            mode = draft_dir.mode if draft_dir is not None else None
            result[path] = directory_metadata(mode, mtime, base_meta)

        with _one_error():
            async with trio.open_nursery() as nursery:
                for path in paths:
                    nursery.start_soon(one, path)
        return result

    async def _metadata_of(self, handle: str, bucket: str, key: str) -> PosixMetadata | None:
        """What one object's metadata says (None when it is gone)."""
        try:
            head = await self._with_credentials(
                handle, "read", lambda c: self._store.head_object(c, bucket, key)
            )
        except NoSuchKeyError:
            return None
        return parse_metadata(head.metadata)

    async def _base_root(self, handle: str, draft: PublishDraft, base: Listing) -> PosixMetadata:
        """The dataset top's own attributes: the draft's, else the base manifest's."""
        base_root = PosixMetadata()
        index_key = draft.base_prefix + INDEX_KEY
        if any(info.key == index_key for info in base.objects):
            try:
                body = await self._with_credentials(
                    handle,
                    "read",
                    lambda c: self._store.get_range(
                        c, draft.bucket, index_key, 0, MAX_OBJECT_BYTES + 1
                    ),
                )
                if len(body) > MAX_OBJECT_BYTES:
                    raise ValueError(f"{index_key} is over {MAX_OBJECT_BYTES} bytes")
                base_root = decode_index(body).root
            except (NoSuchKeyError, ValueError) as exc:
                log.info("%s: the base's attributes manifest is unreadable: %s", handle, exc)
        return base_root

    async def _write_manifest(
        self,
        target: str,
        *,
        bucket: str,
        prefix: str,
        plan: DraftPlan,
        written: _Landed,
        verified: Mapping[str, ObjectInfo],
        root: PosixMetadata,
    ) -> None:
        """The new version's attributes manifest, from what landed (objects a resumed publish
        did not write this time are asked for their metadata); stale chunks are deleted."""
        builder = ManifestBuilder()
        paths = [f.path for f in plan.staged] + [f.path for f in plan.carried]
        paths += [link.path for link in plan.links]
        targets = {link.path: link.target for link in plan.links}
        for path in paths:
            info = verified.get(prefix + path)
            if path == METADATA_FILE or info is None:
                continue
            if path in written.objects:
                metadata, target_text = written.objects[path]
            else:
                metadata, target_text = await self._landed_attributes(target, bucket, info)
                target_text = targets.get(path, target_text)
            builder.add_object(path, metadata, info, target_text)
        for path, metadata in written.directories.items():
            builder.add_directory(path, metadata)
        for directory in plan.directories:
            if not directory.path:
                mode = directory.mode if directory.mode is not None else root.permissions
                root = directory_metadata(mode, directory.mtime_ns)
        objects = builder.encode(root)
        for rel, body in sorted(objects.items()):
            await self._put(target, bucket, prefix + rel, body)
        for key in sorted(verified):
            if key.startswith(f"{prefix}{MANIFEST_DIR}/") and key[len(prefix) :] not in objects:
                await self._delete(target, bucket, key)

    async def _landed_attributes(
        self, target: str, bucket: str, info: ObjectInfo
    ) -> tuple[PosixMetadata, str | None]:
        """The attributes an earlier attempt wrote on *info* (and a link's body)."""
        if info.size <= LINK_TARGET_MAX:
            body, head = await self._with_credentials(
                target, "write", lambda c: self._store.get_object(c, bucket, info.key)
            )
        else:
            head = await self._with_credentials(
                target, "write", lambda c: self._store.head_object(c, bucket, info.key)
            )
            body = b""
        metadata = parse_metadata(head.metadata)
        if metadata.mode is None or metadata.mtime_ns is None:
            raise PublishError(f"{info.key} landed without its attributes")
        return metadata, os.fsdecode(body) if metadata.is_link else None

    async def _transfer(
        self, target: str, bucket: str, transfer: _Transfer, tracker: _Progress, written: _Landed
    ) -> str:
        """Write one file; answers the ETag its bytes imply (checked against S3's answers)."""
        intent = transfer.attributes
        if transfer.size <= self._part_size:
            async with self._parts:
                base: PosixMetadata | None = None
                if transfer.read_with_metadata is not None and intent.needs_base:
                    data, head = await transfer.read_with_metadata()
                    base = parse_metadata(head.metadata)
                else:
                    data = await transfer.read(0, transfer.size)
                _check_length(transfer, 0, transfer.size, data)
                digest = await _hash(data)
                if transfer.known_etag is not None and digest.hex() != transfer.known_etag:
                    raise PublishError(
                        f"{transfer.path}: the bytes read do not match the base ETag"
                    )
                final = intent.resolve(base)
                target_text = transfer.target
                if final.is_link and target_text is None:
                    target_text = os.fsdecode(data)
                written.objects[transfer.path] = (final, target_text)
                meta = metadata_for(final.mode or 0, final.mtime_ns or 0)
                etag = await self._put(target, bucket, transfer.key, data, metadata=meta)
            if is_md5_etag(etag) and etag != digest.hex():
                raise PublishError(f"{transfer.path}: S3 stored other bytes than were sent")
            tracker.report(nbytes=transfer.size)
            return digest.hex()
        base = None
        if transfer.head_base is not None and intent.needs_base:
            base = parse_metadata((await transfer.head_base()).metadata)
        final = intent.resolve(base)
        written.objects[transfer.path] = (final, None)
        meta = metadata_for(final.mode or 0, final.mtime_ns or 0)
        upload_id = await self._with_credentials(
            target,
            "write",
            lambda c: self._store.create_multipart(c, bucket, transfer.key, metadata=meta),
        )
        try:
            count = math.ceil(transfer.size / self._part_size)
            digests: list[bytes] = [b""] * count
            etags: list[str] = [""] * count

            async def send_part(index: int) -> None:
                offset = index * self._part_size
                length = min(self._part_size, transfer.size - offset)
                async with self._parts:
                    data = await transfer.read(offset, length)
                    _check_length(transfer, offset, length, data)
                    digests[index] = await _hash(data)
                    etags[index] = await self._with_credentials(
                        target,
                        "write",
                        lambda c: self._store.upload_part(
                            c, bucket, transfer.key, upload_id, number=index + 1, data=data
                        ),
                    )
                if is_md5_etag(etags[index]) and etags[index] != digests[index].hex():
                    raise PublishError(f"{transfer.path}: S3 stored other bytes than were sent")
                tracker.report(nbytes=length)

            with _one_error():
                async with trio.open_nursery() as nursery:
                    for index in range(count):
                        nursery.start_soon(send_part, index)
            parts = [(index + 1, etag) for index, etag in enumerate(etags)]
            await self._with_credentials(
                target,
                "write",
                lambda c: self._store.complete_multipart(c, bucket, transfer.key, upload_id, parts),
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort(target, bucket, transfer.key, upload_id)
            raise
        return multipart_etag(digests)

    # -- reading sources -------------------------------------------------------------------

    def _base_reader(
        self, handle: str, bucket: str, key: str, etag: str
    ) -> Callable[[int, int], Awaitable[bytes]]:
        """Ranged GETs of a base object with the base version's read credentials (If-Match)."""

        async def read(offset: int, length: int) -> bytes:
            try:
                return await self._with_credentials(
                    handle,
                    "read",
                    lambda c: self._store.get_range(
                        c, bucket, key, offset, offset + length, etag=etag or None
                    ),
                )
            except StaleObjectError:
                raise PublishError(
                    f"{key} changed in the base version {handle} during the publish"
                ) from None

        return read

    def _base_whole_reader(
        self, handle: str, bucket: str, key: str, etag: str
    ) -> Callable[[], Awaitable[tuple[bytes, ObjectHead]]]:
        """A small base object whole, with its metadata, in one GET (If-Match its ETag)."""

        async def read() -> tuple[bytes, ObjectHead]:
            try:
                return await self._with_credentials(
                    handle,
                    "read",
                    lambda c: self._store.get_object(c, bucket, key, etag=etag or None),
                )
            except StaleObjectError:
                raise PublishError(
                    f"{key} changed in the base version {handle} during the publish"
                ) from None

        return read

    def _base_header(
        self, handle: str, bucket: str, key: str
    ) -> Callable[[], Awaitable[ObjectHead]]:
        async def head() -> ObjectHead:
            return await self._with_credentials(
                handle, "read", lambda c: self._store.head_object(c, bucket, key)
            )

        return head

    @staticmethod
    def _local_reader(path: Path) -> Callable[[int, int], Awaitable[bytes]]:
        async def read(offset: int, length: int) -> bytes:
            return await trio.to_thread.run_sync(_read_file_part_blocking, path, offset, length)

        return read

    # -- credentials and S3 plumbing -------------------------------------------------------

    async def _write_credentials(self, handle: str) -> None:
        """Fail early, with the data store's reason, when writing is refused."""
        try:
            await self._broker.write(handle)
        except api_errors.ForbiddenError as exc:
            raise PublishError(
                f"the data store refused write access to {handle} (pending review or "
                f"released): {exc}"
            ) from exc
        except (api_errors.PermissionDeniedError, api_errors.AuthenticationError) as exc:
            raise PublishError(f"the data store refused write access to {handle}: {exc}") from exc

    async def _with_credentials(
        self,
        handle: str,
        kind: Literal["read", "write"],
        op: Callable[[Credentials], Awaitable[_T]],
    ) -> _T:
        """Run ``op`` with ``handle``'s credentials; once more with new ones if S3 refused them."""
        return await self._broker.call(handle, kind, op)

    async def _put(
        self,
        handle: str,
        bucket: str,
        key: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        async def put(creds: Credentials) -> str:
            return await self._store.put_object(creds, bucket, key, data, metadata=metadata)

        return await self._with_credentials(handle, "write", put)

    async def _delete(self, handle: str, bucket: str, key: str) -> None:
        async def delete(creds: Credentials) -> None:
            await self._store.delete(creds, bucket, key)

        await self._with_credentials(handle, "write", delete)

    async def _list(
        self, handle: str, kind: Literal["read", "write"], bucket: str, prefix: str
    ) -> Listing:
        return await self._with_credentials(
            handle, kind, lambda c: self._store.list_prefix(c, bucket, prefix, delimiter=None)
        )

    async def _abort_leftover_uploads(self, handle: str, bucket: str, prefix: str) -> None:
        """Unfinished uploads a crashed attempt left under the target prefix (best effort)."""
        try:
            uploads = await self._with_credentials(
                handle, "write", lambda c: self._store.list_multipart_uploads(c, bucket, prefix)
            )
        except BlobError as exc:
            log.info("could not list unfinished uploads under %s: %s", prefix, exc)
            return
        for key, upload_id in uploads:
            await self._abort(handle, bucket, key, upload_id)

    async def _abort(self, handle: str, bucket: str, key: str, upload_id: str) -> None:
        try:
            await self._with_credentials(
                handle,
                "write",
                lambda c: self._store.abort_multipart(c, bucket, key, upload_id),
            )
        except (BlobError, api_errors.ApiError) as exc:
            log.warning("could not abort an unfinished upload of %s: %s", key, exc)


def _check_keys(handle: str, plan: DraftPlan, base_prefix: str, prefix_bytes: int) -> None:
    """Refuse a plan with a key that S3 would refuse or store under another name (a draft an
    older daemon journaled, say): every new name, moved file and folder marker is checked."""
    paths = [f.path for f in plan.staged]
    paths += [f.path for f in plan.carried if f.base_key != base_prefix + f.path]
    paths += [d.strip("/") + "/" for d in plan.empty_dirs if d.strip("/")]
    problems = []
    for path in sorted(set(paths) - {METADATA_FILE}):
        problem = key_problem(path, prefix_bytes)
        if problem is None and path.split("/", 1)[0] == MANIFEST_DIR:  # the mount refuses it
            problem = f"is inside {MANIFEST_DIR}/, which holds the version's attributes"
        if problem is not None:
            problems.append(f"{path!r} {problem}")
    if problems:
        shown = "; ".join(problems[:5]) + (
            f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
        )
        raise PublishError(
            f"the draft of {handle} cannot be published, nothing was: {shown}. Rename or "
            "remove these through the mount, then commit again"
        )


def _bytes_reader(body: bytes) -> Callable[[int, int], Awaitable[bytes]]:
    async def read(offset: int, length: int) -> bytes:
        await trio.lowlevel.checkpoint()
        return body[offset : offset + length]

    return read


def _changes_nothing(plan: DraftPlan, base_prefix: str, base_paths: set[str]) -> bool:
    """The plan's tree is the base's tree, every file carried unchanged from its own key."""
    if plan.staged or plan.removed or plan.links or plan.directories:
        return False
    if any(f.base_key != base_prefix + f.path or not f.attributes_from_base for f in plan.carried):
        return False
    final = {f.path for f in plan.carried} | {d.strip("/") + "/" for d in plan.empty_dirs}
    kept = {path for path in base_paths if path.split("/", 1)[0] != MANIFEST_DIR}
    return final == kept - {METADATA_FILE}


def _in_place_deletions(plan: DraftPlan, prefix: str, base: Listing) -> list[str]:
    """Keys an in-place push deletes: removed files, and markers of directories that went."""
    final_dirs = set(plan.empty_dirs) | {d.path for d in plan.directories}
    paths = [f.path for f in plan.staged] + [f.path for f in plan.carried]
    for path in paths + [link.path for link in plan.links]:
        parent = path.rpartition("/")[0]
        while parent:
            final_dirs.add(parent)
            parent = parent.rpartition("/")[0]
    keys = [prefix + path for path in plan.removed if path != METADATA_FILE]
    for info in base.objects:
        rel = info.key[len(prefix) :]
        if info.key.startswith(prefix) and rel.endswith("/") and rel.strip("/") not in final_dirs:
            keys.append(info.key)
    return keys


def _check_length(transfer: _Transfer, offset: int, length: int, data: bytes) -> None:
    if len(data) != length:
        raise PublishError(
            f"{transfer.path}: read {len(data)} bytes at offset {offset}, expected {length} "
            "(the source is shorter than planned)"
        )


def _checksum_problem(transfer: _Transfer, info: ObjectInfo, expected: str | None) -> str | None:
    """Why the landed object's ETag contradicts its bytes, or None."""
    landed = info.etag.lower()
    if expected is not None:
        comparable = ("-" in landed) == ("-" in expected) and ("-" in landed or is_md5_etag(landed))
        if comparable and landed != expected:
            return f"{transfer.path} has ETag {info.etag}, not {expected}"
        return None
    if transfer.known_etag is not None and is_md5_etag(landed) and landed != transfer.known_etag:
        return f"{transfer.path} has ETag {info.etag}, not the base's {transfer.known_etag}"
    return None
