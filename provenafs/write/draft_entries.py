"""The entries of a draft: what a path of a dataset is in the overlay over its base version.

- ``StagedEntry``: a file whose bytes are local, in the draft's ``blobs/<random id>``;
- ``CarriedEntry``: a base object shown (and later copied) under a path, e.g. after a rename,
  so moving a file never downloads it;
- ``DirectoryEntry``: a directory the draft made; it is *opaque*: nothing of the base shows
  below it unless the draft put it there;
- ``Whiteout``: a base file or directory that is deleted.

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


@dataclasses.dataclass(frozen=True)
class CarriedEntry:
    base_key: str  # full S3 key in the base version
    size: int
    etag: str
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class DirectoryEntry:
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class Whiteout:
    pass


Entry = StagedEntry | CarriedEntry | DirectoryEntry | Whiteout
WHITEOUT = Whiteout()


def entry_to_json(entry: Entry) -> dict[str, Any]:
    if isinstance(entry, StagedEntry):
        return {
            "k": "staged",
            "blob": entry.blob,
            "size": entry.size,
            "mtime": entry.mtime_ns,
            "rb": entry.replaced_base,
        }
    if isinstance(entry, CarriedEntry):
        return {
            "k": "carried",
            "key": entry.base_key,
            "size": entry.size,
            "etag": entry.etag,
            "mtime": entry.mtime_ns,
        }
    if isinstance(entry, DirectoryEntry):
        return {"k": "dir", "mtime": entry.mtime_ns}
    return {"k": "wh"}


def entry_from_json(raw: Mapping[str, Any]) -> Entry:
    kind = raw["k"]
    if kind == "staged":
        blob = str(raw["blob"])
        if not BLOB_ID_RE.fullmatch(blob):
            raise ValueError("malformed blob id")
        return StagedEntry(blob, int(raw["size"]), int(raw["mtime"]), bool(raw["rb"]))
    if kind == "carried":
        return CarriedEntry(str(raw["key"]), int(raw["size"]), str(raw["etag"]), int(raw["mtime"]))
    if kind == "dir":
        return DirectoryEntry(int(raw["mtime"]))
    if kind == "wh":
        return WHITEOUT
    raise ValueError(f"unknown entry kind {kind!r}")


def parent_of(path: str) -> str:
    return path.rpartition("/")[0]


def join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def is_under(path: str, ancestor: str) -> bool:
    return path.startswith(ancestor + "/")
