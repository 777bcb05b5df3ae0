"""The POSIX attributes a publish writes: on every object (s3fs's metadata) and in the manifest.

Every object a publish writes carries ``x-amz-meta-mode`` and ``x-amz-meta-mtime``
(``storage.posix_metadata``): what the draft says, completed by what the base object's own
metadata says (an unchanged file keeps the mode and mtime it had; one without metadata keeps
the listing's time and the default mode). A symbolic link is an object whose body is its
target and whose mode has ``S_IFLNK``; a directory with attributes gets a ``dir/`` marker
carrying them. A new version also gets the attributes manifest
(``storage.attribute_manifest``), built from what landed, so that reading it back costs no
HEAD per object.

Values and the manifest's assembly only; the publisher does the I/O.
"""

from __future__ import annotations

import dataclasses
import stat

from provenafs.storage.attribute_manifest import ManifestEntry, encode_manifest, modified_ms
from provenafs.storage.blobstore import ObjectInfo
from provenafs.storage.posix_metadata import PosixMetadata

__all__ = [
    "DEFAULT_DIR_PERMISSIONS",
    "DEFAULT_FILE_PERMISSIONS",
    "LINK_PERMISSIONS",
    "AttributeIntent",
    "ManifestBuilder",
    "directory_metadata",
]

DEFAULT_FILE_PERMISSIONS = 0o644
DEFAULT_DIR_PERMISSIONS = 0o755
LINK_PERMISSIONS = 0o777


@dataclasses.dataclass(frozen=True)
class AttributeIntent:
    """What the draft says of one object's attributes.

    ``permissions`` None and ``mtime_from_base`` defer to the base object's metadata (a copy
    reads it from the answer to its GET, or a HEAD before a multipart copy).
    """

    kind: int  # stat.S_IFREG or stat.S_IFLNK
    permissions: int | None
    mtime_ns: int
    mtime_from_base: bool = False

    @property
    def needs_base(self) -> bool:
        return self.permissions is None or self.mtime_from_base

    def resolve(self, base: PosixMetadata | None) -> PosixMetadata:
        """The mode (type included) and mtime to write."""
        kind, permissions = self.kind, self.permissions
        if base is not None and base.mode is not None:
            if self.mtime_from_base:  # an unchanged base object keeps its own type
                kind = stat.S_IFLNK if base.is_link else stat.S_IFREG
            if permissions is None:
                permissions = base.permissions
        if permissions is None:
            permissions = LINK_PERMISSIONS if kind == stat.S_IFLNK else DEFAULT_FILE_PERMISSIONS
        mtime = self.mtime_ns
        if self.mtime_from_base and base is not None and base.mtime_ns is not None:
            mtime = base.mtime_ns
        return PosixMetadata(kind | permissions, mtime)


def directory_metadata(
    permissions: int | None, mtime_ns: int, base: PosixMetadata | None = None
) -> PosixMetadata:
    """A directory marker's attributes: the draft's, else its base marker's, else defaults."""
    if permissions is None and base is not None:
        permissions = base.permissions
    return PosixMetadata(
        stat.S_IFDIR | (DEFAULT_DIR_PERMISSIONS if permissions is None else permissions), mtime_ns
    )


class ManifestBuilder:
    """Collects what landed in a new version and encodes its attributes manifest."""

    def __init__(self) -> None:
        self._entries: dict[str, ManifestEntry] = {}

    def add_object(
        self, path: str, metadata: PosixMetadata, info: ObjectInfo, target: str | None
    ) -> None:
        assert metadata.mode is not None and metadata.mtime_ns is not None
        directory, _, name = path.rpartition("/")
        self._entries[path] = ManifestEntry(
            directory,
            name,
            metadata.mode,
            metadata.mtime_ns,
            info.etag,
            info.size,
            modified_ms(info),
            target if metadata.is_link else None,
        )

    def add_directory(self, path: str, metadata: PosixMetadata) -> None:
        assert metadata.mode is not None and metadata.mtime_ns is not None
        directory, _, name = path.rpartition("/")
        self._entries[path] = ManifestEntry(directory, name, metadata.mode, metadata.mtime_ns)

    def encode(self, root: PosixMetadata) -> dict[str, bytes]:
        return encode_manifest(self._entries.values(), root)
