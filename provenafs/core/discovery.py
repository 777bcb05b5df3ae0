"""The directories for finding datasets: facets, ``search/`` and ``reviews/``.

::

    mine/, shared-with-me/, recent/, by-keyword/<kw>/, by-owner/<user>/,
    by-status/<status>/, by-meta/<key>=<value>/     FACET_DIR: links from the dataset list
    search/                                         FACET_DIR, lists nothing (lookup only)
    search/<query>/                                 FACET_DIR: the query's visible hits
    reviews/                                        FACET_DIR: releases awaiting my review
    <any of those>/<name> -> ../10378.1/1932274     FACET_LINK

Facets come from ``core.facets`` (the dataset list, no extra call), search hits from
``core.search_results``. ``search/`` lists nothing, so ``find`` and ``ls -R`` from the root
never run a query; looking up ``search/<query>`` runs it. ``reviews/`` asks the registry for
the datasets whose release the caller's linked Person is asked to review (``PENDING``; none
without a linked Person), kept ``REVIEWS_TTL`` seconds or until a review through this mount.
A link points at the dataset's directory (``../`` per level, then the handle).

Only names and kinds are decided here (attributes: ``core.attributes``). No pyfuse3; trio
thread only.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable, Mapping

from provenafs.api import errors as api_errors
from provenafs.api.account import Identity
from provenafs.core.catalog import Catalog
from provenafs.core.facets import FACETS, GROUPED_FACETS, FacetIndex, Facets, link_name
from provenafs.core.inodes import NodeId, NodeKind
from provenafs.core.search_results import SearchResults
from provenafs.core.services import RegistryServices
from provenafs.errors import FsError

__all__ = ["REVIEWS", "SEARCH", "Discovery"]

log = logging.getLogger(__name__)

SEARCH = "search"
REVIEWS = "reviews"
REVIEWS_TTL = 10.0
IDENTITY_TTL = 60.0


class Discovery:
    """Names and children of the finding directories, and where their links point."""

    def __init__(
        self,
        catalog: Catalog,
        services: RegistryServices | None,
        *,
        username: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._catalog = catalog
        self._services = services
        self._clock = clock
        self.facets = Facets(catalog, username)
        self.search = None if services is None else SearchResults(services, catalog, clock=clock)
        self._identity: tuple[float, Identity] | None = None
        self._identity_failed_at = -IDENTITY_TTL
        self._reviews: tuple[float, Mapping[str, str]] | None = None
        self.review_queue_fetches = 0

    @property
    def services_available(self) -> bool:
        """Whether search, reviews and the generated dataset files can be served."""
        return self._services is not None

    # --- the root ------------------------------------------------------------------------

    def root_names(self) -> tuple[str, ...]:
        extra = () if self._services is None else (SEARCH, REVIEWS)
        return (*FACETS, *extra)

    def root_child(self, name: str) -> NodeId | None:
        return NodeId(NodeKind.FACET_DIR, "", name) if name in self.root_names() else None

    def root_entries(self) -> list[tuple[str, NodeId]]:
        return [(name, NodeId(NodeKind.FACET_DIR, "", name)) for name in self.root_names()]

    # --- lookup and listing --------------------------------------------------------------

    async def child(self, parent: NodeId, name: str) -> NodeId:
        """The node *name* in the finding directory *parent*; ``ENOENT`` if there is none."""
        path = parent.path
        if path == SEARCH:
            await self._search_results(name)  # looking a query up runs it
            return NodeId(NodeKind.FACET_DIR, "", f"{SEARCH}/{name}")
        if path in GROUPED_FACETS:
            groups = (await self._index()).groups(path) or {}
            if name not in groups:
                raise FsError(errno.ENOENT, f"no {path}/{name!r}")
            return NodeId(NodeKind.FACET_DIR, "", f"{path}/{name}")
        links = await self._links(path)
        if name not in links:
            raise FsError(errno.ENOENT, f"no {path}/{name!r}")
        return NodeId(NodeKind.FACET_LINK, links[name], f"{path}/{name}")

    async def children(self, parent: NodeId) -> list[tuple[str, NodeId]]:
        path = parent.path
        if path == SEARCH:
            return []  # lookup only: nothing under it is ever listed or walked
        if path in GROUPED_FACETS:
            groups = (await self._index()).groups(path) or {}
            return [(name, NodeId(NodeKind.FACET_DIR, "", f"{path}/{name}")) for name in groups]
        links = await self._links(path)
        return [
            (name, NodeId(NodeKind.FACET_LINK, handle, f"{path}/{name}"))
            for name, handle in links.items()
        ]

    @staticmethod
    def link_target(node: NodeId) -> str:
        """``../`` per level of the link's directory, then the dataset's handle."""
        return "../" * node.path.count("/") + node.handle

    async def _links(self, path: str) -> Mapping[str, str]:
        if path.startswith(SEARCH + "/"):
            return await self._search_results(path.removeprefix(SEARCH + "/"))
        if path == REVIEWS:
            return await self._review_links()
        links = (await self._index()).entries(path)
        if links is None:
            raise FsError(errno.ENOENT, f"no facet {path!r}")
        return links

    async def _index(self) -> FacetIndex:
        """The facet index; the caller's username is asked for first when not yet known."""
        now = self._clock()
        if (
            self.facets.username is None
            and self._services is not None
            and now - self._identity_failed_at >= IDENTITY_TTL
        ):
            try:
                await self.identity()
            except api_errors.ApiError as exc:
                self._identity_failed_at = now
                log.warning("who the caller is is unknown (%s): mine/ stays empty", exc)
        return await self.facets.index()

    async def _search_results(self, query: str) -> Mapping[str, str]:
        if self.search is None:
            raise FsError(errno.ENOENT, "search needs the search service")
        return await self.search.results(query)

    # --- identity and reviews ------------------------------------------------------------

    async def identity(self) -> Identity | None:
        """The caller (kept ``IDENTITY_TTL`` seconds); None without the services."""
        if self._services is None:
            return None
        now = self._clock()
        if self._identity is not None and now - self._identity[0] < IDENTITY_TTL:
            return self._identity[1]
        identity = await self._services.whoami()
        self._identity = (now, identity)
        if self.facets.username is None:
            self.facets.username = identity.username
        return identity

    def forget_identity(self) -> None:
        self._identity = None

    async def _review_links(self) -> Mapping[str, str]:
        now = self._clock()
        if self._reviews is not None and now - self._reviews[0] < REVIEWS_TTL:
            return self._reviews[1]
        identity = await self.identity()
        links: dict[str, str] = {}
        if self._services is not None and identity is not None and identity.person_id:
            self.review_queue_fetches += 1
            try:
                queue = await self._services.review_queue(identity.person_id)
            except (api_errors.PermissionDeniedError, api_errors.ForbiddenError) as exc:
                log.info("the review queue is not available: %s", exc)
                queue = []
            names = (await self._index()).names
            for record in queue:
                links[link_name(record, names)] = record.handle
        self._reviews = (now, links)
        return links

    def forget_reviews(self) -> None:
        self._reviews = None

    def statistics(self) -> dict[str, int]:
        counts = dict(self.search.counts) if self.search is not None else {}
        return {
            **counts,
            "facet_indexes_built": self.facets.indexes_built,
            "review_queue_fetches": self.review_queue_fetches,
        }
