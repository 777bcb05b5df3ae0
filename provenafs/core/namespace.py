"""The tree of docs/SEMANTICS.md: which names exist under which node, and what each name is.

::

    /                       ROOT: handle prefixes, ``by-name``; ``.provenafs`` is hidden
    10378.1/                PREFIX_DIR: per dataset ``<n>/``, ``<n>.json``, ``<n>@latest``
    10378.1/1932274/        DATASET_DIR: the objects under the dataset's S3 prefix
    10378.1/1932274/raw/    DATASET_SUBDIR (S3 "folders", empty ones from ``dir/`` markers)
    10378.1/1932274.json    SIDECAR
    10378.1/1932274@latest  LATEST_LINK -> the latest version's name in the same prefix
    by-name/<name>          BY_NAME_LINK -> ../10378.1/<n> (latest versions only)
    .provenafs/status.json  CONTROL_FILE
    10378.1/1932274@inputs/ LINEAGE_DIR (and @derived/, @runs/, .lineage.json): looked up only,
                            answered by ``lineage_nodes``
    mine/, search/, ...     FACET_DIR, FACET_LINK: the finding directories (core.discovery)
    10378.1/1932274.cff     DATASET_VIEW: .locks.json, .access.json, .cff (core.dataset_views)

Names are checked before anything is fetched: ``..``, NUL, ``/`` and malformed handles are
``ENOENT``, names over 255 bytes ``ENAMETOOLONG``. A handle in the fresh dataset list (or with a
fresh record) exists without any call; any other handle is looked up by fetching that handle
only: no lookup except in ``by-name`` needs the full dataset list. ``by-name``'s names are
worked out once per list snapshot.

Inside a dataset with a draft (``provenafs.write.drafts``), the draft's overlay decides first: its
entries add, replace and hide names; where it has nothing to say the base listing answers.
A base object is a symlink when its metadata says so (``StoredAttributes``); the attributes
manifest's ``.provenafs/`` folder at the top of a version is never a name.

This module decides names and kinds only: attributes, permissions and handles live in
``filesystem``, caching in ``catalog``. No pyfuse3, no blocking calls; trio thread only.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from provenafs.api import errors as api_errors
from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import FOLDER, Catalog
from provenafs.core.dataset_views import dataset_view_of
from provenafs.core.inodes import NodeId, NodeKind
from provenafs.core.lineage_nodes import LINEAGE_FILE_SUFFIX, Lineage, lineage_node
from provenafs.core.stored_attributes import StoredAttributes, is_link
from provenafs.core.types import NAME_MAX
from provenafs.errors import FsError
from provenafs.storage.attribute_manifest import MANIFEST_DIR
from provenafs.storage.blobstore import ObjectInfo
from provenafs.write.draft_entries import DirectoryEntry, LinkEntry, Whiteout, join
from provenafs.write.drafts import Draft

if TYPE_CHECKING:  # discovery builds on this module's names
    from provenafs.core.discovery import Discovery

__all__ = [
    "BY_NAME",
    "CONTROL_DIR",
    "CONTROL_FILES",
    "LATEST_SUFFIX",
    "SIDECAR_SUFFIX",
    "SLASH_STANDIN",
    "Namespace",
    "by_name_entries",
    "check_name",
    "entry_name",
    "split_handle",
]

BY_NAME = "by-name"
CONTROL_DIR = ".provenafs"
STATUS_FILE = "status.json"
CONTROL_FILES = (STATUS_FILE,)
SIDECAR_SUFFIX = ".json"
LATEST_SUFFIX = "@latest"

# A handle prefix is dotted digits (``10378.1``); a suffix is a plain token (``1932274``).
_PREFIX_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_SUFFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# The replacement for ``/`` (and NUL) in display names: U+2215 DIVISION SLASH looks like a slash
# but is a valid name character.
_SLASH_STANDIN = "\u2215"


def check_name(name: str) -> None:
    """Reject names no node can have: ``ENAMETOOLONG`` over 255 bytes, ``ENOENT`` otherwise."""
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise FsError(errno.ENAMETOOLONG, "name longer than 255 bytes")
    if name in ("", ".", "..") or "/" in name or "\x00" in name:
        raise FsError(errno.ENOENT, f"invalid name {name!r}")


def split_handle(handle: str) -> tuple[str, str] | None:
    """``("10378.1", "1932274")`` for a well-formed handle, None otherwise."""
    prefix, slash, suffix = handle.partition("/")
    if not slash or not _PREFIX_RE.fullmatch(prefix) or not _SUFFIX_RE.fullmatch(suffix):
        return None
    return prefix, suffix


def _entry_kind(entry: object) -> NodeKind:
    """The node kind a draft entry (not a whiteout) makes."""
    if isinstance(entry, DirectoryEntry):
        return NodeKind.DATASET_SUBDIR
    if isinstance(entry, LinkEntry):
        return NodeKind.DATASET_LINK
    return NodeKind.DATASET_FILE


def _entry_name(display_name: str) -> str:
    """A display name made valid as one directory entry (no ``/``, NUL, ≤ 255 bytes)."""
    name = display_name.replace("/", _SLASH_STANDIN).replace("\x00", _SLASH_STANDIN).strip()
    encoded = name.encode("utf-8", "surrogateescape")
    if len(encoded) > NAME_MAX - 64:  # room for a " (<handle>)" suffix
        name = encoded[: NAME_MAX - 64].decode("utf-8", "ignore").rstrip()
    if name in ("", ".", ".."):
        name = f"unnamed{name}"
    return name


def entry_name(display_name: str) -> str:
    """A display name made a valid directory entry, as ``by-name`` names it."""
    return _entry_name(display_name)


SLASH_STANDIN = _SLASH_STANDIN  # for the other listings of datasets by name (core.facets)


def by_name_entries(records: Iterable[DatasetRecord]) -> dict[str, str]:
    """``by-name`` entry names to handles, for the latest version of every chain.

    The earliest-created dataset keeps the plain name; the others that share it become
    ``"<name> (<handle>)"`` with the handle's ``/`` replaced like any other.
    """
    latest = [r for r in records if r.is_latest and split_handle(r.handle) is not None]
    latest.sort(key=lambda r: (r.created_timestamp, r.handle))
    entries: dict[str, str] = {}
    for record in latest:
        name = _entry_name(record.display_name)
        if name in entries:
            name = f"{name} ({record.handle.replace('/', _SLASH_STANDIN)})"
        entries.setdefault(name, record.handle)
    return entries


class Namespace:
    """Resolves names under nodes and lists nodes' children, fetching through the catalog."""

    def __init__(
        self,
        catalog: Catalog,
        drafts: Callable[[str], Draft | None] | None = None,
        discovery: Discovery | None = None,
        stored: StoredAttributes | None = None,
    ) -> None:
        self._catalog = catalog
        self._drafts = drafts or (lambda handle: None)
        self.lineage = Lineage(entry_name)  # lookup-only nodes beside each dataset
        self._discovery = discovery  # facets, search/, reviews/ (core.discovery)
        self._by_name: tuple[tuple[DatasetRecord, ...], dict[str, str]] | None = None
        self._stored = stored

    # --- lookup --------------------------------------------------------------------------

    async def child(self, parent: NodeId, name: str) -> NodeId:
        """The node called *name* under *parent*; ``FsError(ENOENT)`` if there is none."""
        check_name(name)
        kind = parent.kind
        if kind is NodeKind.ROOT:
            return await self._root_child(name)
        if kind is NodeKind.PREFIX_DIR:
            return await self._prefix_child(parent.handle, name)
        if kind in (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR):
            return await self._dataset_child(parent, name)
        if kind is NodeKind.BY_NAME_DIR:
            entries = await self._by_name_entries()
            if name not in entries:
                raise FsError(errno.ENOENT, f"no dataset named {name!r}")
            return NodeId(NodeKind.BY_NAME_LINK, entries[name], name)
        if kind is NodeKind.CONTROL_DIR:
            if name not in CONTROL_FILES:
                raise FsError(errno.ENOENT, f"no control file {name!r}")
            return NodeId(NodeKind.CONTROL_FILE, "", name)
        if kind is NodeKind.LINEAGE_DIR:
            return await self.lineage.child(parent, name)
        if kind is NodeKind.FACET_DIR and self._discovery is not None:
            return await self._discovery.child(parent, name)
        raise FsError(errno.ENOTDIR, f"{kind.value} is not a directory")

    async def _root_child(self, name: str) -> NodeId:
        if name == BY_NAME:
            return NodeId(NodeKind.BY_NAME_DIR)
        if name == CONTROL_DIR:
            return NodeId(NodeKind.CONTROL_DIR)
        found = None if self._discovery is None else self._discovery.root_child(name)
        if found is not None:
            return found
        if _PREFIX_RE.fullmatch(name):
            # Any well-formed prefix is a directory: the handles under it are looked up one by
            # one, so a private prefix works without listing everything.
            return NodeId(NodeKind.PREFIX_DIR, name)
        raise FsError(errno.ENOENT, f"not a handle prefix: {name!r}")

    @staticmethod
    def dataset_dir_handle(parent: NodeId, name: str) -> str | None:
        """The handle *name* names as a dataset directory under the prefix dir *parent*, if it
        can be one (no I/O: whether it exists is not known)."""
        if parent.kind is not NodeKind.PREFIX_DIR or name.endswith((SIDECAR_SUFFIX, LATEST_SUFFIX)):
            return None
        return f"{parent.handle}/{name}" if _SUFFIX_RE.fullmatch(name) else None

    async def _prefix_child(self, prefix: str, name: str) -> NodeId:
        lineage = await self._lineage_child(prefix, name)
        if lineage is not None:
            return lineage
        views = self._discovery is not None and self._discovery.services_available
        view = dataset_view_of(name) if views else None
        if view is not None:
            kind, suffix = NodeKind.DATASET_VIEW, view[0]
        elif name.endswith(LATEST_SUFFIX):
            kind, suffix = NodeKind.LATEST_LINK, name.removesuffix(LATEST_SUFFIX)
        elif name.endswith(SIDECAR_SUFFIX):
            kind, suffix = NodeKind.SIDECAR, name.removesuffix(SIDECAR_SUFFIX)
        else:
            kind, suffix = NodeKind.DATASET_DIR, name
        if not _SUFFIX_RE.fullmatch(suffix):
            raise FsError(errno.ENOENT, f"malformed handle {prefix}/{suffix!r}")
        handle = f"{prefix}/{suffix}"
        await self._require_dataset(handle)
        return NodeId(kind, handle, view[1] if view is not None else "")

    async def _require_dataset(self, handle: str) -> None:
        """ENOENT unless *handle* is a dataset: no call when the fresh list or record says so."""
        if self._catalog.listed(handle) is not None or self._catalog.fresh_record(handle):
            return
        try:
            await self._catalog.record(handle)
        except api_errors.NotFoundError as exc:
            raise FsError(errno.ENOENT, f"no dataset {handle}") from exc

    async def _lineage_child(self, prefix: str, name: str) -> NodeId | None:
        """``<n>@inputs``, ``<n>@derived``, ``<n>@runs``, ``<n>.lineage.json`` (looked up
        only, never listed), or None for any other name."""
        if name.endswith(LINEAGE_FILE_SUFFIX):
            suffix, tail = name.removesuffix(LINEAGE_FILE_SUFFIX), LINEAGE_FILE_SUFFIX
        else:
            suffix, at, tail = name.partition("@")
            tail = at + tail
        node = lineage_node(f"{prefix}/{suffix}", tail)
        if node is None or not _SUFFIX_RE.fullmatch(suffix) or not self.lineage.available:
            return None
        await self._require_dataset(node.handle)
        return node

    async def _dataset_child(self, parent: NodeId, name: str) -> NodeId:
        record = await self._catalog.record(parent.handle)
        if not await self._catalog.data_readable(record):
            raise FsError(errno.EACCES, f"no data-read access to {parent.handle}")
        path = join(parent.path, name)
        if path == MANIFEST_DIR:
            raise FsError(errno.ENOENT, f"{MANIFEST_DIR} holds the attributes of {parent.handle}")
        draft = self._drafts(parent.handle)
        entry = draft.resolve(path) if draft is not None else None
        if entry is not None:
            if isinstance(entry, Whiteout):
                raise FsError(errno.ENOENT, f"{path!r} was removed in the draft of {parent.handle}")
            return NodeId(_entry_kind(entry), parent.handle, path)
        found = await self._catalog.entry(record, parent.path, name)
        if found == FOLDER:
            return NodeId(NodeKind.DATASET_SUBDIR, parent.handle, path)
        if isinstance(found, ObjectInfo):
            return NodeId(await self._object_kind(record, path, found), parent.handle, path)
        raise FsError(errno.ENOENT, f"no {path!r} in {parent.handle}")

    async def _object_kind(self, record: DatasetRecord, path: str, info: ObjectInfo) -> NodeKind:
        """A stored object's kind: a link where its attributes say so, else a file."""
        if self._stored is not None and is_link(
            await self._stored.of_object(record, path, info), info
        ):
            return NodeKind.DATASET_LINK
        return NodeKind.DATASET_FILE

    # --- listing -------------------------------------------------------------------------

    async def children(self, parent: NodeId) -> list[tuple[str, NodeId]]:
        """Every visible child of *parent*, sorted by name (hidden ``.provenafs`` left out)."""
        kind = parent.kind
        if kind is NodeKind.ROOT:
            prefixes = {split[0] for split in self._known_splits(await self._catalog.datasets())}
            entries = [(p, NodeId(NodeKind.PREFIX_DIR, p)) for p in prefixes]
            entries.append((BY_NAME, NodeId(NodeKind.BY_NAME_DIR)))
            if self._discovery is not None:
                entries += self._discovery.root_entries()
        elif kind is NodeKind.PREFIX_DIR:
            entries = []
            for prefix, suffix in self._known_splits(await self._catalog.datasets()):
                if prefix != parent.handle:
                    continue
                handle = f"{prefix}/{suffix}"
                entries.append((suffix, NodeId(NodeKind.DATASET_DIR, handle)))
                entries.append((suffix + SIDECAR_SUFFIX, NodeId(NodeKind.SIDECAR, handle)))
                entries.append((suffix + LATEST_SUFFIX, NodeId(NodeKind.LATEST_LINK, handle)))
        elif kind in (NodeKind.DATASET_DIR, NodeKind.DATASET_SUBDIR):
            record = await self._catalog.record(parent.handle)
            if not await self._catalog.data_readable(record):
                raise FsError(errno.EACCES, f"no data-read access to {parent.handle}")
            entries = []
            for name, child_kind in sorted((await self._dataset_names(record, parent)).items()):
                path = join(parent.path, name)
                entries.append((name, NodeId(child_kind, parent.handle, path)))
        elif kind is NodeKind.BY_NAME_DIR:
            named = await self._by_name_entries()
            entries = [(n, NodeId(NodeKind.BY_NAME_LINK, h, n)) for n, h in named.items()]
        elif kind is NodeKind.CONTROL_DIR:
            entries = [(n, NodeId(NodeKind.CONTROL_FILE, "", n)) for n in CONTROL_FILES]
        elif kind is NodeKind.LINEAGE_DIR:
            entries = await self.lineage.children(parent)
        elif kind is NodeKind.FACET_DIR and self._discovery is not None:
            entries = await self._discovery.children(parent)
        else:
            raise FsError(errno.ENOTDIR, f"{kind.value} is not a directory")
        return sorted(entries, key=lambda entry: entry[0])

    async def _dataset_names(
        self, record: DatasetRecord, parent: NodeId, *, tell_links: bool = True
    ) -> dict[str, NodeKind]:
        """Names in a dataset directory (to the kind of each), draft over base. Without
        *tell_links* no attributes are asked for, and a stored link shows as a file."""
        draft = self._drafts(parent.handle)
        names: dict[str, NodeKind] = {}
        if draft is None or draft.shows_base(parent.path):
            listing = await self._catalog.listing(record, parent.path)
            if tell_links and self._stored is not None:
                await self._stored.warm(record, parent.path)
            for name in listing.subdirs:
                names[name] = NodeKind.DATASET_SUBDIR
            for name, info in listing.files.items():
                if name not in names:
                    names[name] = (
                        await self._object_kind(record, join(parent.path, name), info)
                        if tell_links
                        else NodeKind.DATASET_FILE
                    )
            if not parent.path:
                names.pop(MANIFEST_DIR, None)
        if draft is not None:
            for name, entry in draft.children(parent.path).items():
                if isinstance(entry, Whiteout):
                    names.pop(name, None)
                else:
                    names[name] = _entry_kind(entry)
        return names

    async def _by_name_entries(self) -> dict[str, str]:
        """``by_name_entries`` of the dataset list, worked out once per list snapshot."""
        records = await self._catalog.datasets()
        if self._by_name is None or self._by_name[0] is not records:
            self._by_name = (records, by_name_entries(records))
        return self._by_name[1]

    async def is_empty(self, parent: NodeId) -> bool:
        """Whether a dataset directory has no entries (no attributes are asked for)."""
        record = await self._catalog.record(parent.handle)
        return not await self._dataset_names(record, parent, tell_links=False)

    def _known_splits(self, listed: Iterable[DatasetRecord]) -> set[tuple[str, str]]:
        """(prefix, suffix) of every listed handle and every handle fetched directly."""
        handles = {record.handle for record in listed}
        handles.update(self._catalog.fetched_handles())
        return {split for handle in handles if (split := split_handle(handle)) is not None}

    # --- symlinks ------------------------------------------------------------------------

    async def link_target(self, node: NodeId) -> str:
        """Where a ``@latest`` or ``by-name`` link points (relative, like ``ls -l`` shows it)."""
        target = self.listed_link_target(node)
        if target is not None:
            return target
        if node.kind is NodeKind.LATEST_LINK:
            return self._latest_target(node.handle, await self._catalog.latest_handle(node.handle))
        if node.kind is NodeKind.LINEAGE_LINK:
            return await self.lineage.link_target(node)
        raise FsError(errno.EINVAL, f"{node.kind.value} is not a symlink")

    def listed_link_target(self, node: NodeId) -> str | None:
        """``link_target`` without I/O: a ``@latest`` from the fresh list; None if unknown."""
        if node.kind is NodeKind.BY_NAME_LINK:
            return f"../{node.handle}"
        if node.kind is NodeKind.FACET_LINK and self._discovery is not None:
            return self._discovery.link_target(node)
        if node.kind is NodeKind.LATEST_LINK:
            latest = self._catalog.listed_latest(node.handle)
            return None if latest is None else self._latest_target(node.handle, latest)
        return None

    @staticmethod
    def _latest_target(handle: str, latest: str) -> str:
        split = split_handle(latest)
        if split is None or split[0] != split_handle(handle)[0]:  # type: ignore[index]
            return f"../{latest}"
        return split[1]
