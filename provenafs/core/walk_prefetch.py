"""``WalkPrefetcher``: when a walk opens a dataset's folders one by one, list the next ones ahead.

``find``, ``du``, ``ls -R`` and ``tar`` open the folders of a directory in the order ``readdir``
gave them (name order), and each opendir would otherwise wait for its own S3 LIST. When a
folder is opened, the folders listed after it in its parent (already listed: no I/O to know
them) are listed in the background, at most ``ahead`` of them and ``ahead`` LISTs at a time,
through the catalog's single-flight listings, so the walk finds them listed or in flight. A
plain ``ls`` of a directory opens no folder and lists nothing ahead; a walk that stops lists
at most ``ahead`` folders it did not need.

Speculative and quiet: a listing that fails here is asked again, and reported, by the opendir
that needs it. No blocking calls; trio thread only.
"""

from __future__ import annotations

import logging

import trio

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.types import parent_path

__all__ = ["WalkPrefetcher"]

log = logging.getLogger(__name__)

WALK_AHEAD = 4  # folders listed ahead of a walk, and LISTs in flight for it


class WalkPrefetcher:
    """Lists the next folders of a directory while a walk is in one of them."""

    def __init__(self, catalog: Catalog, nursery: trio.Nursery, *, ahead: int = WALK_AHEAD):
        self._catalog = catalog
        self._nursery = nursery
        self._ahead = ahead
        self._limiter = trio.CapacityLimiter(max(ahead, 1))
        self._pending: set[tuple[str, str]] = set()
        self._stats = {"folders_listed_ahead": 0, "failures": 0}

    def opened(self, record: DatasetRecord, path: str) -> None:
        """The folder *path* of *record*'s dataset was opened: list the folders after it."""
        if not path or self._ahead <= 0:
            return
        parent, name = parent_path(path)
        listing = self._catalog.cached_listing(record.handle, parent)
        index = None if listing is None else listing.index(name)
        if listing is None or index is None:
            return
        names, dirs = listing.sorted_names
        wanted = 0
        for later in range(index + 1, len(names)):
            if not dirs[later]:
                continue
            wanted += 1
            if wanted > self._ahead:
                break
            folder = f"{parent}/{names[later]}" if parent else names[later]
            key = (record.handle, folder)
            if key in self._pending or self._catalog.cached_listing(*key) is not None:
                continue
            self._pending.add(key)
            self._nursery.start_soon(self._list, record, folder)

    async def _list(self, record: DatasetRecord, folder: str) -> None:
        try:
            async with self._limiter:
                await self._catalog.listing(record, folder)
            self._stats["folders_listed_ahead"] += 1
        except Exception as exc:  # noqa: BLE001 -- a guess: the opendir that needs it reports
            self._stats["failures"] += 1
            log.debug("listing %s/%s ahead: %r", record.handle, folder, exc)
        finally:
            self._pending.discard((record.handle, folder))

    def statistics(self) -> dict[str, int]:
        return dict(self._stats)
