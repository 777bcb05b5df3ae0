"""``search/<query>/``: a full-text query's hits the caller may fetch, ranked, kept briefly.

Provena's search API answers hits that are **not** filtered by permission (docs/API.md §17),
so each hit is fetched through the catalog (``SEARCH_FETCHES`` at a time, single-flight with
every other fetch of the same handle, and kept as records for what comes next) and only the
hits the caller may fetch are kept: a hit answered ``NotFoundError`` or a refusal is left out.
Names are ``NN <display name>`` by rank among the kept hits (``01`` best), so a name is unique
even where two hits share a display name. At most ``limit`` hits (default 25, the python
client's; the search API caps at 50).

Results live ``ttl`` seconds (default 60; lineage and edits change what matches), at most
``max_queries`` queries; the same query asked meanwhile costs nothing, and concurrent askers
share one search. No I/O but through the services and the catalog; trio thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import cachetools
import trio

from provenafs.api import errors as api_errors
from provenafs.api.models import DatasetRecord
from provenafs.cache.single_flight import SingleFlight
from provenafs.core.catalog import Catalog
from provenafs.core.facets import ranked
from provenafs.core.namespace import entry_name
from provenafs.core.services import RegistryServices

__all__ = ["SEARCH_FETCHES", "SearchResults"]

log = logging.getLogger(__name__)

SEARCH_FETCHES = 8  # hits fetched at once
_HIDDEN = (
    api_errors.NotFoundError,
    api_errors.PermissionDeniedError,
    api_errors.ForbiddenError,
)


class SearchResults:
    """Queries to their visible hits (entry name -> handle), cached for ``ttl`` seconds."""

    def __init__(
        self,
        services: RegistryServices,
        catalog: Catalog,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = 60.0,
        limit: int = 25,
        max_queries: int = 64,
    ) -> None:
        self._services = services
        self._catalog = catalog
        self._limit = limit
        self._results: cachetools.TTLCache[str, Mapping[str, str]] = cachetools.TTLCache(
            max_queries, ttl, timer=clock
        )
        self._flights: SingleFlight[str, Mapping[str, str]] = SingleFlight()
        self.counts = {"searches": 0, "hits": 0, "hits_hidden": 0}

    async def results(self, query: str) -> Mapping[str, str]:
        cached = self._results.get(query)
        if cached is not None:
            return cached
        return await self._flights.run(query, lambda: self._search(query))

    def forget(self) -> None:
        """Drop every cached query (a dataset's record or access changed)."""
        self._results.clear()

    async def _search(self, query: str) -> Mapping[str, str]:
        self.counts["searches"] += 1
        hits = await self._services.search_datasets(query, self._limit)
        found: list[DatasetRecord | None] = [None] * len(hits)
        failures: list[api_errors.ApiError] = []
        limiter = trio.CapacityLimiter(SEARCH_FETCHES)

        async def fetch(index: int, handle: str) -> None:
            async with limiter:
                try:
                    found[index] = await self._catalog.record(handle)
                except _HIDDEN:
                    self.counts["hits_hidden"] += 1
                except api_errors.ApiError as exc:  # the data store failed: the listing fails
                    failures.append(exc)

        async with trio.open_nursery() as nursery:
            for index, hit in enumerate(dict.fromkeys(hit.id for hit in hits)):
                nursery.start_soon(fetch, index, hit)
        if failures:
            raise failures[0]
        visible = [record for record in found if record is not None]
        self.counts["hits"] += len(visible)
        results = {
            ranked(rank, entry_name(record.display_name)): record.handle
            for rank, record in enumerate(visible, start=1)
        }
        self._results[query] = results
        log.debug("search %r: %d hits, %d visible", query, len(hits), len(visible))
        return results
