"""Facets: the dataset list the mount already holds, grouped into directories of symlinks.

::

    mine/<name>                     the latest version of each dataset the caller owns
    shared-with-me/<name>           ... of each dataset someone else owns that the caller sees
    by-keyword/<keyword>/<name>     ... by ``dataset_info.keywords``
    by-owner/<username>/<name>      ... by ``owner_username``
    by-meta/<key>=<value>/<name>    ... by ``dataset_info.user_metadata`` (exact key and value)
    by-status/<release status>/<name>   every version, by ``release_status``
    recent/NN <name>                the RECENT_COUNT latest versions updated last, newest first

A ``<name>`` is the dataset's ``by-name`` entry (``by_name_entries``); a version that is not the
latest is ``<display name> (<handle>)`` (``/`` replaced as in ``by-name``). Keywords, usernames and
``key=value`` pairs become names the same way. The list has no item roles, so "shared with me"
means "owned by someone else and visible to me": with Provena's default access settings
(every user may read a new dataset) that is most of the registry.

``FacetIndex.build`` computes every facet in one pass over one snapshot of the list (linear in
its length, plus the sorts of ``by-name`` and ``recent``); ``Facets`` keeps the index of the
snapshot it was built from, so listing and looking up entries costs no call and no work beyond
the entries themselves. No I/O here but the catalog's list; trio thread only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from provenafs.api.models import DatasetRecord
from provenafs.core.catalog import Catalog
from provenafs.core.namespace import SLASH_STANDIN, by_name_entries, entry_name, split_handle

__all__ = [
    "FACETS",
    "GROUPED_FACETS",
    "RECENT_COUNT",
    "FacetIndex",
    "Facets",
    "link_name",
    "ranked",
]

RECENT_COUNT = 50
FLAT_FACETS = ("mine", "shared-with-me", "recent")
GROUPED_FACETS = ("by-keyword", "by-owner", "by-status", "by-meta")
FACETS = (*FLAT_FACETS, *GROUPED_FACETS)


def link_name(record: DatasetRecord, names: Mapping[str, str]) -> str:
    """The entry name of *record*: its ``by-name`` name, else ``<display name> (<handle>)``."""
    known = names.get(record.handle)
    if known is not None:
        return known
    return f"{entry_name(record.display_name)} ({record.handle.replace('/', SLASH_STANDIN)})"


def ranked(rank: int, name: str) -> str:
    """``01 <name>``: an entry of a listing whose order matters (``recent``, ``search``)."""
    return f"{rank:02d} {name}"


@dataclasses.dataclass(frozen=True)
class FacetIndex:
    """Every facet of one list snapshot: entry name -> handle, per directory."""

    flat: Mapping[str, Mapping[str, str]]  # "mine" -> {name: handle}
    grouped: Mapping[str, Mapping[str, Mapping[str, str]]]  # "by-keyword" -> {"reef": {...}}
    names: Mapping[str, str]  # handle -> by-name name (latest versions)

    @classmethod
    def build(cls, records: Iterable[DatasetRecord], username: str | None) -> FacetIndex:
        listed = tuple(records)
        names = {handle: name for name, handle in by_name_entries(listed).items()}
        mine: dict[str, str] = {}
        shared: dict[str, str] = {}
        grouped: dict[str, dict[str, dict[str, str]]] = {facet: {} for facet in GROUPED_FACETS}
        keywords, owners, meta = grouped["by-keyword"], grouped["by-owner"], grouped["by-meta"]
        latest = []
        for record in listed:
            name = names.get(record.handle)
            if name is None:
                continue  # not the latest version (or a malformed handle): by-status only
            latest.append(record)
            if username is not None:
                (mine if record.owner_username == username else shared)[name] = record.handle
            for keyword in dict.fromkeys(record.keywords):
                if keyword.strip():
                    keywords.setdefault(entry_name(keyword), {})[name] = record.handle
            owners.setdefault(entry_name(record.owner_username), {})[name] = record.handle
            for key, value in record.user_metadata.items():
                meta.setdefault(entry_name(f"{key}={value}"), {})[name] = record.handle
        statuses = grouped["by-status"]
        for record in listed:
            if split_handle(record.handle) is not None:
                name = link_name(record, names)
                statuses.setdefault(entry_name(record.release_status), {})[name] = record.handle
        latest.sort(key=lambda r: (-r.updated_timestamp, r.handle))
        recent = {
            ranked(rank, names[r.handle]): r.handle
            for rank, r in enumerate(latest[:RECENT_COUNT], start=1)
        }
        flat = {"mine": mine, "shared-with-me": shared, "recent": recent}
        return cls(flat, grouped, names)

    def entries(self, path: str) -> Mapping[str, str] | None:
        """The links of the facet directory *path* (``mine``, ``by-keyword/reef``), or None
        when *path* is no such directory (a grouped facet's top level has no links)."""
        facet, _, group = path.partition("/")
        if not group:
            return self.flat.get(facet)
        groups = self.grouped.get(facet)
        return None if groups is None else groups.get(group)

    def groups(self, facet: str) -> Mapping[str, Mapping[str, str]] | None:
        """The subdirectories of a grouped facet (``by-keyword``), or None."""
        return self.grouped.get(facet)


class Facets:
    """The facet index of the catalog's current list snapshot, built once per snapshot."""

    def __init__(self, catalog: Catalog, username: str | None) -> None:
        self._catalog = catalog
        self.username = username
        self._built: tuple[tuple[DatasetRecord, ...], str | None, FacetIndex] | None = None
        self.indexes_built = 0

    async def index(self) -> FacetIndex:
        records = await self._catalog.datasets()
        built = self._built
        if built is None or built[0] is not records or built[1] != self.username:
            built = (records, self.username, FacetIndex.build(records, self.username))
            self._built = built
            self.indexes_built += 1
        return built[2]
