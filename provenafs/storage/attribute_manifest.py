"""The attributes manifest: every entry's mode, mtime and link target of one published version.

S3 listings carry no user metadata, so the metadata a publish writes on each object (the
s3fs convention of ``posix_metadata``, which s3fs and rclone read) would cost a HEAD per
object to read back. The publisher therefore also writes, under the version's own prefix,

- ``.provenafs/attributes.json``: the index (format tag, the dataset root's own attributes,
  and either every entry inline or the list of chunks), and
- ``.provenafs/attributes-<n>.json``: chunks of at most ``CHUNK_ENTRIES`` entries, for big
  versions, so that a folder's attributes cost the chunks that hold it, not the whole tree.

Entries are sorted by (folder, name), so one folder's entries are contiguous. A file's or
link's entry vouches for its object only while the listing still shows the same ETag, size
and LastModified (``vouches_for``): an object replaced, or whose metadata another tool
changed (a copy onto itself keeps the ETag but not the LastModified), is read from its own
metadata instead. Directories are vouched for by their path.

Values and their encoding only: no I/O. The manifest is an accelerator for this mount's own
reads; other tools read the objects' metadata.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from typing import Any

from provenafs.storage.blobstore import ObjectInfo
from provenafs.storage.posix_metadata import PosixMetadata

__all__ = [
    "CHUNK_ENTRIES",
    "FORMAT",
    "INDEX_KEY",
    "MANIFEST_DIR",
    "MAX_OBJECT_BYTES",
    "ChunkRef",
    "ManifestEntry",
    "ManifestIndex",
    "decode_chunk",
    "decode_index",
    "encode_manifest",
    "modified_ms",
]

MANIFEST_DIR = ".provenafs"  # at the top of a version: hidden by the mount, never carried
INDEX_KEY = f"{MANIFEST_DIR}/attributes.json"
FORMAT = "provenafs-attributes/1"
CHUNK_ENTRIES = 4096
MAX_OBJECT_BYTES = 16 << 20  # an index or chunk bigger than this is not read (not ours)
_LAST_NAME = "\U0010ffff"


def modified_ms(info: ObjectInfo) -> int:
    """A listing's LastModified in whole milliseconds (what S3 listings carry)."""
    return round(info.last_modified * 1000)


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One entry of a version: its folder ("" at the top), name, ``st_mode`` and mtime; for a
    file or link also what vouches for its object, and a link's target."""

    directory: str
    name: str
    mode: int
    mtime_ns: int
    etag: str | None = None
    size: int | None = None
    modified_ms: int | None = None
    target: str | None = None

    @property
    def metadata(self) -> PosixMetadata:
        return PosixMetadata(self.mode, self.mtime_ns)

    def vouches_for(self, info: ObjectInfo) -> bool:
        """Whether the listed object is still the one this entry describes."""
        return (
            self.etag == info.etag
            and self.size == info.size
            and self.modified_ms == modified_ms(info)
        )

    def sort_key(self) -> tuple[str, str]:
        return self.directory, self.name

    def to_json(self) -> list[Any]:
        return [
            self.directory,
            self.name,
            self.mode,
            self.mtime_ns,
            self.etag,
            self.size,
            self.modified_ms,
            self.target,
        ]

    @classmethod
    def from_json(cls, raw: Any) -> ManifestEntry:
        if not isinstance(raw, list) or len(raw) != 8:
            raise ValueError("a manifest entry is a list of 8")
        directory, name, mode, mtime, etag, size, modified, target = raw
        if not (isinstance(directory, str) and isinstance(name, str) and name):
            raise ValueError("a manifest entry needs a folder and a name")
        return cls(
            directory,
            name,
            _int(mode),
            _int(mtime),
            None if etag is None else str(etag),
            None if size is None else _int(size),
            None if modified is None else _int(modified),
            None if target is None else str(target),
        )


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class ChunkRef:
    """One chunk of a big manifest: its key (relative to the version) and entry range."""

    key: str
    first: tuple[str, str]
    last: tuple[str, str]

    def may_hold(self, directory: str) -> bool:
        return self.first <= (directory, _LAST_NAME) and self.last >= (directory, "")


@dataclasses.dataclass(frozen=True)
class ManifestIndex:
    """The index: the root's own attributes, and the entries inline or by chunk."""

    root: PosixMetadata
    entries: tuple[ManifestEntry, ...]
    chunks: tuple[ChunkRef, ...]

    def chunks_for(self, directory: str) -> list[ChunkRef]:
        """The chunks that may hold entries of *directory*."""
        return [chunk for chunk in self.chunks if chunk.may_hold(directory)]


def _dumps(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=True).encode()


def encode_manifest(entries: Iterable[ManifestEntry], root: PosixMetadata) -> dict[str, bytes]:
    """The manifest's objects, keyed relative to the version's prefix (the index included)."""
    ordered = sorted(entries, key=ManifestEntry.sort_key)
    index: dict[str, Any] = {"format": FORMAT, "root": [root.mode, root.mtime_ns]}
    objects: dict[str, bytes] = {}
    if len(ordered) <= CHUNK_ENTRIES:
        index["entries"] = [entry.to_json() for entry in ordered]
    else:
        chunks = []
        for number, start in enumerate(range(0, len(ordered), CHUNK_ENTRIES)):
            part = ordered[start : start + CHUNK_ENTRIES]
            key = f"{MANIFEST_DIR}/attributes-{number:05d}.json"
            objects[key] = _dumps({"format": FORMAT, "entries": [e.to_json() for e in part]})
            chunks.append({"key": key, "first": part[0].sort_key(), "last": part[-1].sort_key()})
        index["chunks"] = chunks
    objects[INDEX_KEY] = _dumps(index)
    return objects


def _load(body: bytes) -> dict[str, Any]:
    document = json.loads(body)
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError("not a provenafs attributes manifest of a known format")
    return document


def _entries(raw: Any) -> tuple[ManifestEntry, ...]:
    if not isinstance(raw, list):
        raise ValueError("manifest entries are a list")
    return tuple(ManifestEntry.from_json(item) for item in raw)


def _pair(raw: Any) -> tuple[str, str]:
    if not (isinstance(raw, Sequence) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):
        raise ValueError("a chunk bound is a (folder, name) pair")
    return str(raw[0]), str(raw[1])


def decode_index(body: bytes) -> ManifestIndex:
    """The index from its bytes; ``ValueError`` for anything else."""
    document = _load(body)
    root_raw = document.get("root") or [None, None]
    if not isinstance(root_raw, list) or len(root_raw) != 2:
        raise ValueError("the root's attributes are a pair")
    root_mode, root_mtime = (None if v is None else _int(v) for v in root_raw)
    chunks = tuple(
        ChunkRef(str(raw["key"]), _pair(raw["first"]), _pair(raw["last"]))
        for raw in document.get("chunks", [])
    )
    for chunk in chunks:
        if not chunk.key.startswith(f"{MANIFEST_DIR}/") or ".." in chunk.key.split("/"):
            raise ValueError("a chunk lies outside the manifest's folder")
    return ManifestIndex(
        PosixMetadata(root_mode, root_mtime), _entries(document.get("entries", [])), chunks
    )


def decode_chunk(body: bytes) -> tuple[ManifestEntry, ...]:
    return _entries(_load(body).get("entries", []))
