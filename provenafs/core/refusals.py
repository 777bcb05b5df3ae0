"""Which changes the mount refuses, and with which errno: the one place that decides.

The rules (docs/SEMANTICS.md, "Writes"): ``-o ro``, or a version that is not the latest, is
``EROFS``; a change without item role ``admin`` (in place: ``dataset-data-write``; there the
data store's refusal of write credentials decides, its reason logged once) is ``EACCES``; the
top-level ``metadata.json`` is the data store's (``EACCES``), and a top-level ``.provenafs`` is
where a version keeps its attributes manifest (``EACCES``); the levels above datasets are
``EROFS``; a change while the dataset's publish runs is ``EBUSY`` (draft mode; in place the
change waits at the ``ChangeGate`` instead). A sidecar is editable where the caller holds item
``metadata-write`` or ``admin`` and the dataset is not locked.

A name a change gives (create, mkdir, a rename's new name, symlink, mknod, link) must publish
as the same S3 key: ``check_new_name`` is the one check, ``EINVAL`` for a name that is not valid
UTF-8, holds a control character or a backslash (``write.object_keys``).

Only the mount's owner (``-o uid=``, else the daemon's uid) changes anything: every change
uses the owner's token, so a caller with another uid (``-o allow_other``; root included) gets
``EACCES`` for every write, create, remove, rename, attribute or xattr change, sidecar edit and
presigned URL (``require_owner``), and reads only what the mode options share with group or
others (``shared_mode``, ``require_shared``; nothing by default).

Permission bits come from the same answers (``write_refusal`` is None exactly where a write
bit shows), so ``access(W_OK)`` and a write agree. This module decides; it changes nothing
but its own log-once table and the set of datasets whose publish runs.
"""

from __future__ import annotations

import errno
import logging
import stat

from provenafs.api.errors import AuthenticationError, ForbiddenError, PermissionDeniedError
from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.inodes import NodeId, NodeKind
from provenafs.core.namespace import check_name
from provenafs.core.types import DATASET_KINDS, Caller
from provenafs.errors import FsError
from provenafs.mount_options import MountOptions
from provenafs.storage.attribute_manifest import MANIFEST_DIR
from provenafs.storage.credentials import CredentialBroker
from provenafs.write.draft_entries import METADATA_FILE
from provenafs.write.metadata_edit import SidecarEditor, can_edit_metadata
from provenafs.write.object_keys import name_problem

__all__ = ["READ_BITS", "SEARCH_BITS", "RefusalPolicy", "check_new_name"]

log = logging.getLogger(__name__)

READ_BITS = stat.S_IRGRP | stat.S_IROTH
SEARCH_BITS = stat.S_IXGRP | stat.S_IXOTH


def check_new_name(name: str) -> None:
    """Refuse a name no node can have (as a lookup would), or one that cannot be published as
    the same key: ``EINVAL``, before anything changes."""
    check_name(name)
    problem = name_problem(name)
    if problem is not None:
        raise FsError(errno.EINVAL, f"the name {name!r} {problem}: it could not be published")


class RefusalPolicy:
    """Answers "may this change happen?" with None or the ``FsError`` the caller gets."""

    def __init__(
        self,
        options: MountOptions,
        catalog: Catalog,
        broker: CredentialBroker,
        editor: SidecarEditor | None,
    ) -> None:
        self._options = options
        self._catalog = catalog
        self._broker = broker
        self._editor = editor
        self.in_place = options.write_mode == "in-place"
        self.publishing: set[str] = set()  # draft mode: datasets whose publish runs
        self._write_refusals: dict[str, str] = {}  # the data store's last refusal, logged once

    # --- dataset contents ----------------------------------------------------------------

    def write_refusal(
        self, record: DatasetRecord, path: str, *, from_record: bool = True
    ) -> FsError | None:
        """Why a change at *path* of *record*'s dataset cannot happen; None when it can.

        In place, a lock or a release is read from the record for permission bits only
        (``from_record``); a change asks the data store instead (``require_write_access``).
        """
        if self._options.read_only:
            return FsError(errno.EROFS, "the mount is read-only (-o ro)")
        roles = record.roles or frozenset()
        if self.in_place:
            if not roles & {"admin", "dataset-data-write"}:
                return FsError(errno.EACCES, f"{record.handle}: needs dataset-data-write")
            if from_record and (record.locked or record.release_status != "NOT_RELEASED"):
                state = "locked" if record.locked else record.release_status
                return FsError(errno.EACCES, f"{record.handle} is {state}: no in-place writes")
        else:
            if not record.is_latest:
                return FsError(
                    errno.EROFS, f"{record.handle} is not the latest version (see its @latest)"
                )
            if "admin" not in roles:
                return FsError(errno.EACCES, f"versioning {record.handle} needs item role admin")
        if path == METADATA_FILE:
            return FsError(errno.EACCES, "metadata.json is the data store's (edit the sidecar)")
        if path.split("/", 1)[0] == MANIFEST_DIR:
            return FsError(errno.EACCES, f"{MANIFEST_DIR} holds the version's attributes")
        return None

    async def refusal_for(self, node: NodeId) -> FsError:
        """The error a change of *node* gets when its attributes show no write bit."""
        if self._options.read_only:
            return FsError(errno.EROFS, "the mount is read-only (-o ro)")
        if node.kind in DATASET_KINDS:
            record = await self._catalog.record(node.handle)
            refusal = self.write_refusal(record, node.path)
            return refusal or FsError(errno.EACCES, "not writable")
        if node.kind is NodeKind.SIDECAR:
            return FsError(errno.EACCES, "this sidecar cannot be edited")
        if not node.kind.is_directory and not node.kind.is_symlink:
            return FsError(errno.EACCES, "not writable")
        return FsError(errno.EROFS, "only dataset directories can be changed")

    async def xattr_refusal(self, node: NodeId) -> FsError:
        """Extended attributes are not stored: ``ENOTSUP`` where writes work, else the refusal."""
        if node.kind in DATASET_KINDS:
            record = await self._catalog.record(node.handle)
            refusal = self.write_refusal(record, node.path)
            return refusal or FsError(errno.ENOTSUP, "datasets keep no extended attributes")
        return await self.refusal_for(node)

    async def check_change(self, record: DatasetRecord, *paths: str) -> None:
        """Refuse a change at *paths* that cannot happen (nothing is created on disk)."""
        for path in paths:
            refusal = self.write_refusal(record, path, from_record=False)
            if refusal is not None:
                raise refusal
        if self.in_place:
            await self.require_write_access(record)
        await self.require_data_read(record)
        self.check_not_publishing(record.handle)

    def check_not_publishing(self, handle: str) -> None:
        if handle in self.publishing:
            raise FsError(errno.EBUSY, f"{handle} is being published; try again after")

    async def require_data_read(self, record: DatasetRecord) -> None:
        if not await self._catalog.data_readable(record):
            raise FsError(errno.EACCES, f"no data-read access to {record.handle}")

    async def require_write_access(self, record: DatasetRecord) -> None:
        """In place, the data store decides: its refusal of write credentials (locked, pending
        review, released, no role) is ``EACCES``, and its reason is logged once."""
        handle = record.handle
        try:
            await self._broker.write(handle)
        except (ForbiddenError, PermissionDeniedError, AuthenticationError) as exc:
            reason = str(exc)
            if self._write_refusals.get(handle) != reason:
                self._write_refusals[handle] = reason
                log.warning("%s: the data store refuses in-place writes: %s", handle, reason)
            raise FsError(errno.EACCES, f"{handle}: {reason}") from exc
        self._write_refusals.pop(handle, None)

    # --- callers (docs/SEMANTICS.md, "Security") ----------------------------------------------

    def is_owner(self, caller: Caller) -> bool:
        return caller.uid == self._options.uid

    def require_owner(self, caller: Caller, what: str) -> None:
        """Refuse *what* (a change, a presigned URL) to anyone but the mount's owner."""
        if caller.uid != self._options.uid:
            raise FsError(
                errno.EACCES,
                f"{what}: uid {caller.uid} is not the mount's owner (uid {self._options.uid})",
            )

    def require_reachable(self, caller: Caller) -> None:
        """Below the root, a caller who is not the owner reaches only what shared directories
        (a search bit for group or others) lead to."""
        if not self.is_owner(caller) and not self._options.shared_dir_bits & SEARCH_BITS:
            raise FsError(errno.EACCES, f"uid {caller.uid}: this mount shares nothing")

    def require_shared(self, caller: Caller, mode: int, bits: int) -> None:
        """A caller who is not the owner gets only what *mode* grants group or others of
        *bits* (``READ_BITS``, ``SEARCH_BITS``); the kernel checks which of the two applies
        (``default_permissions`` is on wherever something is shared)."""
        if not self.is_owner(caller) and not mode & bits & 0o077:
            raise FsError(errno.EACCES, f"uid {caller.uid}: not shared with other users")

    def shared_mode(self, mode: int) -> int:
        """*mode* with its group and other bits cut to what the mount shares: read for files,
        read and search for directories (``-o umask=,file_mode=,dir_mode=``)."""
        if stat.S_ISLNK(mode):
            return mode
        options = self._options
        shared = options.shared_dir_bits if stat.S_ISDIR(mode) else options.shared_file_bits
        return (mode & ~0o077) | (mode & shared)

    # --- sidecars (metadata edits) -------------------------------------------------------

    def sidecar_writable(self, record: DatasetRecord) -> bool:
        return (
            self._editor is not None and not self._options.read_only and can_edit_metadata(record)
        )

    async def require_sidecar_writable(self, handle: str) -> SidecarEditor:
        """The editor, where an edit of *handle*'s sidecar can succeed; else the refusal."""
        if self._options.read_only or self._editor is None:
            raise FsError(errno.EROFS, "metadata edits need a read-write mount")
        record = await self._catalog.record(handle)
        if not self.sidecar_writable(record):
            why = "locked" if record.locked else "needs item role metadata-write or admin"
            raise FsError(errno.EACCES, f"the metadata of {handle} cannot be edited ({why})")
        return self._editor
