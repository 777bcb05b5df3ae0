"""Metadata edits through a ``<handle>.json`` sidecar, and reverts to an earlier history entry.

``SidecarEditor.commit`` takes what a program wrote into a sidecar and turns it into one
``POST /register/update-metadata`` (docs/API.md §3.6, a full replace of the
``collection_format``); ``SidecarEditor.revert`` is ``PUT /register/revert-metadata`` (§3.7).
``SidecarBuffer`` is the write buffer of one sidecar opened for writing; the filesystem commits
it at ``flush``, so ``close()`` returns the errno (errors of ``release`` never reach a program).

What a sidecar accepts, as its whole new content (UTF-8 JSON, at most ``SIDECAR_MAX_BYTES``):

- the full document as read (``{"item": {...}, "roles": [...], "locked": ...}``);
- just the ``item`` (any subset of its fields, ``collection_format`` required);
- just a ``collection_format`` (keys among ``associations``, ``approvals``, ``dataset_info``).

Only ``collection_format`` is editable; everything else in the record is the registry's. A
read-only field that is present must still hold the current value (``display_name``,
``user_metadata`` and ``access_info_uri`` may instead hold what the new ``collection_format``
implies, since the data store derives them from it). Outcomes:

- the same ``collection_format`` and no read-only field changed: success, no call (rewriting
  the bytes that were read is harmless);
- opened with ``O_TRUNC`` and closed with nothing written: no edit, no error (a shell closes a
  duplicate of a redirected descriptor before the command writes); an explicit truncate
  (``ftruncate``, ``truncate -s``) is an edit and commits what it leaves;
- a read-only field changed (``history``, ``s3``, ``roles``, ``locked``, ...): ``EINVAL``, with
  or without a change to ``collection_format``, and nothing is sent. ``EINVAL``, not ``EACCES``:
  the content is what is wrong, not the caller's rights. A changed ``history`` or
  ``updated_timestamp`` usually means the record changed since it was read; this is what keeps
  an edit from silently undoing someone else's (re-read the sidecar and edit again);
- invalid UTF-8, invalid JSON (``NaN``, duplicate keys included), not an object, or an object of
  none of the three shapes: ``EINVAL``; more than ``SIDECAR_MAX_BYTES``: ``EFBIG``;
- a ``collection_format`` the data store's validate-metadata route rejects (its schema or
  field rules; checked before the update is sent): ``EINVAL``, the message naming the field;
- a record the data store rejects (400/422): ``EINVAL``, its ``detail`` logged once;
- a locked dataset, or a caller without item role ``metadata-write`` or ``admin``: ``EACCES``
  (checked on a fresh fetch before anything is sent); data store unreachable: ``EIO``.

On any failure nothing changes. On success the catalog forgets the dataset
(``catalog.invalidate``) and ``on_changed(handle)`` lets the filesystem drop kernel caches, so
the next read shows the new record with its new history entry.

The reason sent with an edit is, first found: the ``reason`` argument; the sidecar's
``user.provena.reason`` xattr (``set_reason``; kept per handle until the next successful
commit); the mount option ``-o metadata_reason=...`` (``default_reason``); else a generated
``"provenafs: edited dataset_info.description, dataset_info.keywords"``.

Renaming a file over a sidecar (an editor's write-temp-then-rename) is not supported: prefix
directories accept no new files. Editors that fall back to rewriting in place (vim, nano,
emacs with backup-by-copying) work.

This module makes no blocking calls, imports no httpx or pyfuse3, never logs the document's
content (only field names and the data store's detail), and runs on the trio thread only.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from provenafs.api.errors import ApiError
from provenafs.api.models import CollectionFormat, DatasetRecord
from provenafs.errors import FsError, to_errno

__all__ = [
    "METADATA_WRITE_ROLES",
    "REASON_MAX_BYTES",
    "REASON_XATTR",
    "SIDECAR_MAX_BYTES",
    "MetadataApi",
    "RecordCache",
    "SidecarBuffer",
    "SidecarEditor",
    "can_edit_metadata",
    "parse_document",
    "parse_reason",
]

log = logging.getLogger(__name__)

SIDECAR_MAX_BYTES = 8 << 20  # a sidecar with a long history of large records stays well below
REASON_MAX_BYTES = 4096
REASON_XATTR = "user.provena.reason"
# Item roles with which the data store accepts a metadata update (REG re-checks exactly these).
METADATA_WRITE_ROLES = frozenset({"metadata-write", "admin"})

_DOCUMENT_KEYS = frozenset({"item", "roles", "locked", "status"})
_COLLECTION_FORMAT_KEYS = frozenset({"associations", "approvals", "dataset_info"})
_MAX_NAMED_FIELDS = 6


@runtime_checkable
class MetadataApi(Protocol):
    """The part of ``DataStoreClient`` metadata edits use."""

    async def fetch_dataset(self, handle: str) -> DatasetRecord: ...

    async def update_metadata(
        self, handle: str, reason: str, collection_format: CollectionFormat
    ) -> None: ...

    async def revert_metadata(self, handle: str, history_id: int, reason: str) -> None: ...


class RecordCache(Protocol):
    """The part of ``Catalog`` metadata edits use."""

    async def record(self, handle: str) -> DatasetRecord: ...

    def invalidate(self, handle: str) -> None: ...


def can_edit_metadata(record: DatasetRecord) -> bool:
    """Whether the caller may edit *record*'s metadata: not locked, ``metadata-write``/``admin``."""
    return not record.locked and bool((record.roles or frozenset()) & METADATA_WRITE_ROLES)


def parse_reason(value: bytes) -> str | None:
    """The reason in an xattr value; ``None`` for an empty one; ``EINVAL`` if unusable."""
    if len(value) > REASON_MAX_BYTES:
        raise FsError(errno.EINVAL, f"a reason is at most {REASON_MAX_BYTES} bytes")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise FsError(errno.EINVAL, "a reason must be UTF-8 text") from None
    if "\x00" in text:
        raise FsError(errno.EINVAL, "a reason must not contain NUL")
    text = text.strip()
    return text or None


class SidecarBuffer:
    """The bytes of one sidecar opened for writing, and whether they await a commit.

    ``dirty``: written or truncated since the last commit attempt (a file opened with
    ``O_TRUNC`` and closed without a write is not an edit: shells close a redirected descriptor
    once before the command writes). ``unsaved``: its bytes, not the record's, are what the
    file holds for now (its size is the file's size). A commit attempt (``take_for_commit``)
    clears both; the filesystem keeps a failed attempt's error in ``failure`` so every later
    ``flush`` of the same file reports it without a second call to the data store.
    """

    def __init__(self, handle: str, initial: bytes, *, replaced: bool = False) -> None:
        if len(initial) > SIDECAR_MAX_BYTES:
            raise FsError(errno.EFBIG, f"sidecars are at most {SIDECAR_MAX_BYTES} bytes")
        self.handle = handle
        self._data = bytearray(initial)
        self.dirty = False
        self.unsaved = replaced
        self.failure: FsError | None = None

    def __len__(self) -> int:
        return len(self._data)

    def contents(self) -> bytes:
        return bytes(self._data)

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._data[offset : offset + size])

    def write(self, offset: int, data: bytes) -> int:
        """Write *data* at *offset* (zero-filling a gap), as ``pwrite`` does."""
        end = offset + len(data)
        if offset < 0:
            raise FsError(errno.EINVAL, "negative offset")
        if end > SIDECAR_MAX_BYTES:
            raise FsError(errno.EFBIG, f"sidecars are at most {SIDECAR_MAX_BYTES} bytes")
        if offset > len(self._data):
            self._data.extend(bytes(offset - len(self._data)))
        self._data[offset:end] = data
        self._mark_dirty()
        return len(data)

    def truncate(self, size: int) -> None:
        if size < 0:
            raise FsError(errno.EINVAL, "negative size")
        if size > SIDECAR_MAX_BYTES:
            raise FsError(errno.EFBIG, f"sidecars are at most {SIDECAR_MAX_BYTES} bytes")
        if size < len(self._data):
            del self._data[size:]
        else:
            self._data.extend(bytes(size - len(self._data)))
        self._mark_dirty()

    def take_for_commit(self) -> bytes:
        """The bytes to commit; the buffer counts as clean from now on."""
        self.dirty = False
        self.unsaved = False
        return bytes(self._data)

    def _mark_dirty(self) -> None:
        self.dirty = True
        self.unsaved = True
        self.failure = None


@dataclasses.dataclass(frozen=True)
class _Edit:
    """What a written sidecar asks for: a ``collection_format`` and read-only fields it changed."""

    collection_format: dict[str, Any]
    changed_read_only: tuple[str, ...]


class SidecarEditor:
    """Commits written sidecars as metadata updates and reverts metadata (module docstring)."""

    def __init__(
        self,
        client: MetadataApi,
        catalog: RecordCache,
        *,
        default_reason: str | None,
        on_changed: Callable[[str], Awaitable[None]] | None = None,
        validate: Callable[[CollectionFormat], Awaitable[None]] | None = None,
    ) -> None:
        self._client = client
        self._validate = validate  # the data store's validate-metadata, before any update
        self._catalog = catalog
        self._default_reason = default_reason or None
        self._on_changed = on_changed
        self._reasons: dict[str, str] = {}
        self._counts = {"commits": 0, "unchanged": 0, "rejected": 0, "reverts": 0}

    # --- reasons (the sidecar's user.provena.reason xattr) ------------------------------------

    def set_reason(self, handle: str, reason: str | None) -> None:
        """Use *reason* for the next commit of *handle*'s sidecar; ``None`` forgets it."""
        if reason is None:
            self._reasons.pop(handle, None)
        else:
            self._reasons[handle] = reason

    def reason_for(self, handle: str) -> str | None:
        """The reason set for *handle*'s next commit, if any."""
        return self._reasons.get(handle)

    def statistics(self) -> dict[str, int]:
        return {**self._counts, "pending_reasons": len(self._reasons)}

    # --- commit -------------------------------------------------------------------------------

    async def commit(self, handle: str, data: bytes, reason: str | None) -> None:
        """Send *data*, the new content of *handle*'s sidecar, as a metadata update."""
        try:
            document = parse_document(data)
            current = await self._fetch(handle)
            edit = _extract_edit(document, current)
        except FsError as exc:
            self._reject(handle, exc)
            raise
        if edit.changed_read_only:
            fields = ", ".join(edit.changed_read_only)
            refusal = FsError(
                errno.EINVAL,
                f"read-only fields changed: {fields} (only collection_format can be edited;"
                " if the record changed since it was read, read the sidecar again)",
            )
            self._reject(handle, refusal)
            self._catalog.invalidate(handle)  # so that reading the sidecar again shows today's
            raise refusal
        current_format = current.collection_format
        new_format = CollectionFormat.from_json(edit.collection_format)
        if new_format == current_format:
            self._counts["unchanged"] += 1
            log.debug("sidecar of %s written back unchanged: nothing to update", handle)
            return
        self._require_editable(handle, current)
        await self._validated(handle, new_format)
        changed = _changed_fields(current_format.fields, new_format.fields)
        chosen = reason or self._reasons.get(handle) or self._default_reason
        chosen = chosen or _generated_reason(changed)
        try:
            await self._client.update_metadata(handle, chosen, new_format)
        except ApiError as exc:
            self._catalog.invalidate(handle)  # an outage may hide an applied update
            failure = FsError(to_errno(exc), f"the data store refused the edit: {exc}")
            self._reject(handle, failure)
            raise failure from exc
        self._counts["commits"] += 1
        self._reasons.pop(handle, None)
        log.info("metadata of %s updated (%s)", handle, ", ".join(changed) or "collection_format")
        await self._changed(handle)

    # --- revert -------------------------------------------------------------------------------

    async def revert(self, handle: str, history_id: int, reason: str) -> int | None:
        """Restore the metadata of history entry *history_id*; the new entry's id (None if unknown).

        Metadata only: files are not restored (docs/API.md §3.7).
        """
        reason = reason.strip()
        if not reason:
            raise FsError(errno.EINVAL, "a revert needs a reason")
        if history_id < 0:
            raise FsError(errno.EINVAL, "history ids are not negative")
        current = await self._fetch(handle)
        known = _history_ids(current)
        if known and history_id not in known:
            listed = ", ".join(str(i) for i in sorted(known))
            raise FsError(
                errno.EINVAL, f"{handle} has no history entry {history_id} (it has {listed})"
            )
        self._require_editable(handle, current)
        try:
            await self._client.revert_metadata(handle, history_id, reason)
        except ApiError as exc:
            self._catalog.invalidate(handle)
            failure = FsError(to_errno(exc), f"the data store refused the revert: {exc}")
            self._reject(handle, failure)
            raise failure from exc
        self._counts["reverts"] += 1
        log.info("metadata of %s reverted to history entry %d", handle, history_id)
        await self._changed(handle)
        try:
            newest = _history_ids(await self._catalog.record(handle))
        except ApiError:
            return None
        return max(newest) if newest else None

    # --- helpers ------------------------------------------------------------------------------

    async def _fetch(self, handle: str) -> DatasetRecord:
        """A fresh record (not the catalog's): what the edit is checked against."""
        try:
            return await self._client.fetch_dataset(handle)
        except ApiError as exc:
            raise FsError(to_errno(exc), f"cannot fetch {handle}: {exc}") from exc

    async def _validated(self, handle: str, collection_format: CollectionFormat) -> None:
        """The data store's schema and field rules accept *collection_format* (when a
        validator is wired in); else ``EINVAL`` naming the field, and nothing is sent."""
        if self._validate is None:
            return
        try:
            await self._validate(collection_format)
        except ApiError as exc:
            failure = FsError(to_errno(exc), f"the metadata is not valid: {exc}")
            self._reject(handle, failure)
            raise failure from exc

    def _require_editable(self, handle: str, record: DatasetRecord) -> None:
        if record.locked:
            failure = FsError(errno.EACCES, f"{handle} is locked: its metadata cannot change")
        elif not (record.roles or frozenset()) & METADATA_WRITE_ROLES:
            failure = FsError(
                errno.EACCES, f"editing {handle} needs item role metadata-write or admin"
            )
        else:
            return
        self._reject(handle, failure)
        raise failure

    def _reject(self, handle: str, failure: FsError) -> None:
        """Log a refused edit once, with its cause (never the document's content)."""
        self._counts["rejected"] += 1
        level = logging.ERROR if failure.errno == errno.EIO else logging.WARNING
        log.log(level, "metadata edit of %s refused: %s", handle, failure)

    async def _changed(self, handle: str) -> None:
        self._catalog.invalidate(handle)
        if self._on_changed is not None:
            await self._on_changed(handle)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def parse_document(data: bytes) -> dict[str, Any]:
    """The JSON object in *data*; ``EFBIG``/``EINVAL`` for what cannot be one (also the rules
    of other JSON documents edited through the mount, ``write.access_edit``)."""
    if len(data) > SIDECAR_MAX_BYTES:
        raise FsError(errno.EFBIG, f"sidecars are at most {SIDECAR_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise FsError(errno.EINVAL, f"not UTF-8 text (byte {exc.start})") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise FsError(errno.EINVAL, f"invalid JSON: {exc.msg} (line {exc.lineno})") from None
    except (ValueError, RecursionError) as exc:
        raise FsError(errno.EINVAL, f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise FsError(errno.EINVAL, "the sidecar must hold a JSON object")
    return document


def _extract_edit(document: dict[str, Any], current: DatasetRecord) -> _Edit:
    """The ``collection_format`` a document carries, and which read-only fields it changed."""
    current_item = current.document.get("item")
    if not isinstance(current_item, Mapping):
        raise FsError(errno.EIO, f"the record of {current.handle} has no item")
    if "item" in document:
        unknown = sorted(set(document) - _DOCUMENT_KEYS)
        if unknown:
            raise FsError(errno.EINVAL, f"unknown top-level fields: {', '.join(unknown)}")
        item = document["item"]
        if not isinstance(item, dict):
            raise FsError(errno.EINVAL, "item must be a JSON object")
        changed = [
            key
            for key in ("roles", "locked")
            if key in document and document[key] != current.document.get(key)
        ]
        edit = _edit_of_item(item, current_item)
        return _Edit(edit.collection_format, (*edit.changed_read_only, *changed))
    if "collection_format" in document:
        return _edit_of_item(document, current_item)
    if document and set(document) <= _COLLECTION_FORMAT_KEYS:
        return _Edit(document, ())
    raise FsError(
        errno.EINVAL,
        "not a dataset record: write the sidecar document, its item, or a collection_format",
    )


def _edit_of_item(item: dict[str, Any], current_item: Mapping[str, Any]) -> _Edit:
    collection_format = item.get("collection_format")
    if not isinstance(collection_format, dict):
        raise FsError(errno.EINVAL, "collection_format must be a JSON object")
    implied = _implied_fields(collection_format)
    changed = []
    for key, value in item.items():
        if key == "collection_format":
            continue
        if key in current_item and value == current_item[key]:
            continue
        if key in implied and value == implied[key]:
            continue
        changed.append(key)
    return _Edit(collection_format, tuple(sorted(changed)))


def _implied_fields(collection_format: Mapping[str, Any]) -> dict[str, Any]:
    """The item fields the data store derives from a ``collection_format`` (§3.6 side effects)."""
    info = collection_format.get("dataset_info")
    if not isinstance(info, Mapping):
        return {}
    access = info.get("access_info")
    return {
        "display_name": info.get("name"),
        "user_metadata": info.get("user_metadata"),
        "access_info_uri": access.get("uri") if isinstance(access, Mapping) else None,
    }


def _changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths of what differs between two JSON values (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        result = []
        for key in sorted(set(old) | set(new)):
            result += _changed_fields(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return result
    return [] if old == new else [path or "collection_format"]


def _generated_reason(changed: list[str]) -> str:
    named = changed[:_MAX_NAMED_FIELDS]
    more = len(changed) - len(named)
    text = ", ".join(named) or "collection_format"
    if more:
        text += f" and {more} more"
    return f"provenafs: edited {text}"


def _history_ids(record: DatasetRecord) -> set[int]:
    item = record.document.get("item")
    history = item.get("history") if isinstance(item, Mapping) else None
    if not isinstance(history, list):
        return set()
    return {
        entry["id"]
        for entry in history
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), int)
    }
