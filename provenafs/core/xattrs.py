"""The extended attributes the mount shows (``user.*`` only; docs/SEMANTICS.md).

Datasets show their handle, version, release status, lock, the caller's roles, their
neighbours in the version chain, the release's reviewer and time, and their handle URL; files
their handle, S3 key and ETag (and, on request, a presigned URL from the data store); sidecars
the reason of their next edit. Nothing is stored:
setting an attribute is ``SidecarEdits.set_reason`` or a refusal. No I/O beyond the catalog's
caches and, for a presigned URL, one data store call.
"""

from __future__ import annotations

import datetime as dt
import errno

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.citation import HANDLE_RESOLVER
from provenafs.core.file_views import FileViews
from provenafs.core.inodes import NodeId, NodeKind
from provenafs.core.types import DataStoreApi
from provenafs.errors import FsError
from provenafs.write.metadata_edit import REASON_XATTR, SidecarEditor

__all__ = ["PRESIGNED_URL", "ExtendedAttributes"]

PRESIGNED_URL = "user.provena.presigned_url"  # asked for by name, never listed


def release_attributes(record: DatasetRecord) -> dict[str, str]:
    """Who reviews (or reviewed) the release, when it was last requested or reviewed (ISO 8601,
    UTC), and the handle's resolver URL; empty strings where there is none."""
    stamp = record.release_timestamp
    when = "" if stamp is None else dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat()
    return {
        "user.provena.release_approver": record.release_approver or "",
        "user.provena.release_timestamp": when.replace("+00:00", "Z"),
        "user.provena.url": HANDLE_RESOLVER + record.handle,
    }


class ExtendedAttributes:
    """Answers ``getxattr`` and ``listxattr`` of every node."""

    def __init__(
        self,
        client: DataStoreApi,
        catalog: Catalog,
        views: FileViews,
        editor: SidecarEditor | None,
    ) -> None:
        self._client = client
        self._catalog = catalog
        self._views = views
        self._editor = editor

    async def get(self, node: NodeId, name: str) -> bytes:
        """The value of *name* on *node*; ``ENODATA`` if it has none."""
        if node.kind is NodeKind.DATASET_FILE and name == PRESIGNED_URL:
            record = await self._catalog.record(node.handle)
            view = await self._views.view(record, node)
            if view.info is None or not view.info.key.startswith(record.s3.path):
                raise FsError(errno.ENODATA, "a file of the draft has no object to presign yet")
            key_path = view.info.key[len(record.s3.path) :]
            url = await self._client.presigned_url(node.handle, key_path)
            return url.encode()
        value = (await self._values(node)).get(name)
        if value is None:
            raise FsError(errno.ENODATA, f"no attribute {name!r}")
        return value.encode("utf-8", "surrogateescape")

    async def names(self, node: NodeId) -> list[str]:
        return sorted(await self._values(node))

    async def _values(self, node: NodeId) -> dict[str, str]:
        kind = node.kind
        if kind is NodeKind.DATASET_DIR:
            record = await self._catalog.record(node.handle)
            versioning = record.versioning
            return {
                "user.provena.handle": record.handle,
                "user.provena.version": str(versioning.version) if versioning else "",
                "user.provena.release_status": record.release_status,
                "user.provena.locked": "true" if record.locked else "false",
                "user.provena.roles": ",".join(sorted(record.roles or ())),
                "user.provena.previous_version": (versioning and versioning.previous_version) or "",
                "user.provena.next_version": (versioning and versioning.next_version) or "",
                **release_attributes(record),
            }
        if kind is NodeKind.DATASET_FILE:
            record = await self._catalog.record(node.handle)
            info = (await self._views.view(record, node)).info
            if info is None:  # staged in the draft: no object yet
                return {"user.provena.handle": record.handle}
            return {
                "user.provena.handle": record.handle,
                "user.s3.etag": info.etag,
                "user.s3.key": info.key,
            }
        if kind is NodeKind.SIDECAR:
            reason = self._editor and self._editor.reason_for(node.handle)
            return {
                "user.provena.handle": node.handle,
                **({REASON_XATTR: reason} if reason else {}),
            }
        if kind in (NodeKind.DATASET_SUBDIR, NodeKind.LATEST_LINK):
            return {"user.provena.handle": node.handle}
        return {}
