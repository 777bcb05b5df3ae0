"""A listed dataset directory as ``readdir`` answers it: one inode block, attributes on demand.

``opendir`` of a dataset directory without a draft answers from one ``ListedEntries`` over the
catalog's ``DirectoryListing``: the listing's names, sorted once per listing, are numbered by
the inode table's ``ListingBlock`` for that directory, and an entry's attributes are made from
the listing's columns only when ``readdir`` hands the entry to the kernel. Listing 200,000 objects
thus makes no object per entry before the kernel takes it, and the lookup counts of what it
took cost an array slot each. Modes, owner and cache lifetimes are the directory's, the same
for every entry (a directory with a draft, or whose objects carry modes, times or links of
their own, is answered entry by entry instead).

No I/O; trio thread only.
"""

from __future__ import annotations

from provenafs.core.catalog import DirectoryListing
from provenafs.core.inodes import ListingBlock
from provenafs.core.types import Attributes

__all__ = ["ListedEntries"]


class ListedEntries:
    """The entries of one listing of a dataset directory, in name order."""

    __slots__ = (
        "_dir_attributes",
        "_gid",
        "_mtimes",
        "_sizes",
        "_timeout",
        "_uid",
        "block",
        "dirs",
        "file_mode",
        "names",
        "special_modes",
    )

    def __init__(
        self,
        listing: DirectoryListing,
        block: ListingBlock,
        *,
        dir_mode: int,  # with the type bits, like st_mode
        file_mode: int,
        timeout: float,
        uid: int,
        gid: int,
        dir_mtime_ns: int,
        special_modes: dict[str, int] | None = None,  # names with a mode of their own
    ) -> None:
        self.block = block
        self.names, self.dirs = listing.sorted_names
        self._sizes, self._mtimes = listing.sizes, listing.mtimes
        self.file_mode = file_mode
        self.special_modes = special_modes or {}
        self._timeout = timeout
        self._uid = uid
        self._gid = gid
        self._dir_attributes = Attributes(
            0,
            dir_mode,
            0,
            1,  # a directory's link count: unknown
            uid,
            gid,
            dir_mtime_ns,
            dir_mtime_ns,
            dir_mtime_ns,
            timeout,
            timeout,
        )

    def __len__(self) -> int:
        return len(self.names)

    def attributes(self, index: int, inode: int) -> Attributes:
        """The attributes of entry *index*, numbered *inode*."""
        if self.dirs[index]:
            return self._dir_attributes.with_inode(inode)
        mtime_ns = int(self._mtimes[index] * 1_000_000_000)
        timeout = self._timeout
        return Attributes(
            inode,
            self.special_modes.get(self.names[index], self.file_mode),
            self._sizes[index],
            1,
            self._uid,
            self._gid,
            mtime_ns,
            mtime_ns,
            mtime_ns,
            timeout,
            timeout,
        )
