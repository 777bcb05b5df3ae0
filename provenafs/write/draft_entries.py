"""The entries of a draft: what a path of a dataset is in the overlay over its base version.

- ``StagedEntry``: a file whose bytes are local, in the draft's ``blobs/<random id>``;
- ``CarriedEntry``: a base object shown (and later copied) under a path, e.g. after a rename,
  so moving a file never downloads it;
- ``DirectoryEntry``: a directory the draft made; it is *opaque*: nothing of the base shows
  below it unless the draft put it there. With ``opaque=False`` it is a base directory whose
  own attributes (mode, times) changed: the base still shows below it;
- ``LinkEntry``: a symbolic link, its target kept as written;
- ``Whiteout``: a base file or directory that is deleted.

Every entry but a whiteout carries its POSIX attributes (``PosixTimes`` and a mode): ``mode``
is the permission bits (``0o7777``), None for "as the base object says, else the default";
``atime_ns`` and ``ctime_ns`` None mean "the mtime". Journals written before these fields
existed hold none of them and read as exactly that.

Values only, with their journal form (``entry_to_json``/``entry_from_json``) and the path
helpers every part of the write path shares. No I/O.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

__all__ = [
    "BLOB_ID_RE",
    "METADATA_FILE",
    "WHITEOUT",
    "CarriedEntry",
    "DirectoryEntry",
    "Entry",
    "LinkEntry",
    "StagedEntry",
    "Whiteout",
    "entry_from_json",
    "entry_to_json",
    "is_under",
    "join",
    "parent_of",
]

METADATA_FILE = "metadata.json"  # the server writes this one at the top of every version
BLOB_ID_RE = re.compile(r"[0-9a-f]{32}")  # a staged file's local name: random, never a user's


@dataclasses.dataclass(frozen=True)
class StagedEntry:
    blob: str  # id of the local file under blobs/
    size: int  # size at the last record; an open file's live size is its StagedBlob's
    mtime_ns: int
    replaced_base: bool  # the path held a base file before (a change, not an addition)
    mode: int | None = None  # permission bits; None: the default
    atime_ns: int | None = None  # None: the mtime
    ctime_ns: int | None = None  # None: the mtime


@dataclasses.dataclass(frozen=True)
class CarriedEntry:
    base_key: str  # full S3 key in the base version
    size: int
    etag: str
    mtime_ns: int
    mode: int | None = None  # None: what the base object's metadata says (else the default)
    atime_ns: int | None = None
    ctime_ns: int | None = None


@dataclasses.dataclass(frozen=True)
class DirectoryEntry:
    mtime_ns: int
    mode: int | None = None
    atime_ns: int | None = None
    ctime_ns: int | None = None
    opaque: bool = True  # False: a base directory whose attributes changed


@dataclasses.dataclass(frozen=True)
class LinkEntry:
    target: str  # as written (``os.fsdecode``d bytes)
    mtime_ns: int
    atime_ns: int | None = None
    ctime_ns: int | None = None


@dataclasses.dataclass(frozen=True)
class Whiteout:
    pass


Entry = StagedEntry | CarriedEntry | DirectoryEntry | LinkEntry | Whiteout
WHITEOUT = Whiteout()

_ATTRIBUTE_KEYS = (("mode", "mode"), ("atime", "atime_ns"), ("ctime", "ctime_ns"))


def _attributes_to_json(entry: Entry, encoded: dict[str, Any]) -> dict[str, Any]:
    """Add the optional attributes that are set (absent keys keep old journals' meaning)."""
    for key, field in _ATTRIBUTE_KEYS:
        value = getattr(entry, field, None)
        if value is not None:
            encoded[key] = value
    return encoded


def _optional_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return None if value is None else int(value)


def entry_to_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, StagedEntry):
        encoded = {
            "k": "staged",
            "blob": entry.blob,
            "size": entry.size,
            "mtime": entry.mtime_ns,
            "rb": entry.replaced_base,
        }
        return _attributes_to_json(entry, encoded)
    if isinstance(entry, CarriedEntry):
        encoded = {
            "k": "carried",
            "key": entry.base_key,
            "size": entry.size,
            "etag": entry.etag,
            "mtime": entry.mtime_ns,
        }
        return _attributes_to_json(entry, encoded)
    if isinstance(entry, DirectoryEntry):
        encoded = {"k": "dir", "mtime": entry.mtime_ns}
        if not entry.opaque:
            encoded["open"] = True
        return _attributes_to_json(entry, encoded)
    if isinstance(entry, LinkEntry):
        return _attributes_to_json(
            entry, {"k": "link", "target": entry.target, "mtime": entry.mtime_ns}
        )
    return {"k": "wh"}


def entry_from_json(raw: Mapping[str, Any]) -> Entry:
    kind = raw["k"]
    mode, atime, ctime = (_optional_int(raw, key) for key, _ in _ATTRIBUTE_KEYS)
    if kind == "staged":
        blob = str(raw["blob"])
        if not BLOB_ID_RE.fullmatch(blob):
            raise ValueError("malformed blob id")
        size, mtime = int(raw["size"]), int(raw["mtime"])
        return StagedEntry(blob, size, mtime, bool(raw["rb"]), mode, atime, ctime)
    if kind == "carried":
        key, etag = str(raw["key"]), str(raw["etag"])
        return CarriedEntry(key, int(raw["size"]), etag, int(raw["mtime"]), mode, atime, ctime)
    if kind == "dir":
        opaque = not raw.get("open", False)
        return DirectoryEntry(int(raw["mtime"]), mode, atime, ctime, opaque)
    if kind == "link":
        target = raw["target"]
        if not isinstance(target, str) or not target or "\x00" in target:
            raise ValueError("malformed link target")
        return LinkEntry(target, int(raw["mtime"]), atime, ctime)
    if kind == "wh":
        return WHITEOUT
    raise ValueError(f"unknown entry kind {kind!r}")


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def is_under(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor + "/")
