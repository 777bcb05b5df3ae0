"""What a draft asks of a publish (``DraftPlan``) and tells of itself (``DraftSummary``).

The seam between ``drafts`` and ``publish``: the publisher reads a plan (files staged locally,
files carried from the base version, links, empty directories, directories with attributes,
removed paths) and never the draft's overlay itself. Modes are permission bits (``0o7777``),
None for "the base object's own, else the default". Values only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from provenafs.write.draft_entries import Entry

__all__ = [
    "CarriedFile",
    "DirectoryAttributes",
    "DraftPlan",
    "DraftSummary",
    "LinkFile",
    "StagedFile",
]


@dataclasses.dataclass(frozen=True)
class StagedFile:
    """A file of the draft's final tree whose bytes are local."""

    path: str
    local_path: Path
    size: int
    mtime_ns: int
    mode: int | None = None


@dataclasses.dataclass(frozen=True)
class CarriedFile:
    """A file of the final tree copied unchanged from the base version."""

    path: str
    base_key: str
    size: int
    etag: str
    mtime_ns: int
    mode: int | None = None
    # An unchanged base file: its mode and mtime are the base object's metadata where it has
    # them (``mtime_ns`` is then only the listing's time, for an object without any).
    attributes_from_base: bool = False


@dataclasses.dataclass(frozen=True)
class LinkFile:
    """A symbolic link of the final tree: an object whose body is the target (s3fs's form)."""

    path: str
    target: str
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class DirectoryAttributes:
    """A directory whose own attributes the draft holds ("" is the dataset's top)."""

    path: str
    mode: int | None
    mtime_ns: int


@dataclasses.dataclass(frozen=True)
class DraftPlan:
    """What publishing must produce in the new version's prefix.

    ``empty_dirs`` are the directories that need a zero-byte ``dir/`` marker: those with no file
    beneath them, and the base's own markers that are still in the tree. ``removed`` are base
    files left out. The top-level ``metadata.json`` is never in the plan: the server writes it.
    """

    staged: tuple[StagedFile, ...]
    carried: tuple[CarriedFile, ...]
    empty_dirs: tuple[str, ...]
    removed: tuple[str, ...]
    # The draft's entries the plan was made from: what an in-place push hands to ``settle``.
    entries: Mapping[str, Entry] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    links: tuple[LinkFile, ...] = ()
    # Directories with attributes of the draft's: each gets a ``dir/`` marker carrying them
    # (the top, "", only the manifest).
    directories: tuple[DirectoryAttributes, ...] = ()


@dataclasses.dataclass(frozen=True)
class DraftSummary:
    handle: str
    added: int
    changed: int
    removed: int
    staged_bytes: int
    open_writers: int
    last_change: float
    new_version_id: str | None
    published_paths: int
