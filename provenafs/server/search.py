"""Provena's search API in the local store: full-text search over the registry with SQLite FTS5.

Real Provena indexes a linearised copy of every registry item in OpenSearch and answers
``GET /search/entity-registry?query=&subtype_filter=&record_limit=`` with ``{id, score}`` hits
(``search-api/routes/search/entity_registry.py``): any query word may match (``operator: or``,
fuzzy), at most ``record_limit`` hits (default 10, capped at 50), and no permission filtering.
Here the linearised record is the item's current text fields (for datasets the fields of
``ItemDataset.get_search_ready_object``: names, description, keywords, formats, user metadata
keys and values, ids of organisation, publisher, custodian…; for other items every text field
outside ``history``), kept in an FTS5 table by triggers on the registry's ``items`` table, so
every mint, metadata update, revert, version, release or lock change from any process updates
the index in the same transaction. Words match as prefixes (a stand-in for OpenSearch's
fuzziness); scores are BM25.

It must not filter by permission (the real one does not) nor import from the mount side.
"""

from __future__ import annotations

import re

from fastapi import APIRouter

from provenafs.server.app import Reader
from provenafs.server.datastore import DataStoreError
from provenafs.server.models import Status
from provenafs.server.registry import Registry
from provenafs.server.registry_models import ItemSubType, QueryResult, QueryResults

__all__ = ["DEFAULT_QUERY_SIZE", "MAX_QUERY_SIZE", "RegistrySearch", "search_router"]

DEFAULT_QUERY_SIZE = 10  # search-api/config.py
MAX_QUERY_SIZE = 50

_DATASET_FIELDS = (
    "$.id",
    "$.item_category",
    "$.item_subtype",
    "$.owner_username",
    "$.display_name",
    "$.collection_format.dataset_info.description",
    "$.collection_format.dataset_info.name",
    "$.collection_format.dataset_info.publisher_id",
    "$.collection_format.associations.organisation_id",
    "$.collection_format.dataset_info.preferred_citation",
    "$.collection_format.dataset_info.usage_limitations",
    "$.collection_format.dataset_info.rights_holder",
    "$.collection_format.dataset_info.purpose",
    "$.collection_format.associations.data_custodian_id",
)
_DATASET_LISTS = (
    "$.collection_format.dataset_info.keywords",
    "$.collection_format.dataset_info.formats",
)


def _linearised(document: str) -> str:
    """SQL for the linearised text of the item in column *document* (JSON1 only, so that the
    triggers run in every process that writes the registry; paths are given to JSON1, never
    compared with ``json_tree`` keys, whose quoting differs between SQLite versions)."""
    metadata = (
        f"(SELECT group_concat(key || ' ' || value, ' ') FROM json_each({document},"  # noqa: S608
        " '$.user_metadata'))"
    )
    dataset = " || ' ' || ".join(
        [
            *(f"ifnull(json_extract({document}, '{field}'), '')" for field in _DATASET_FIELDS),
            *(
                f"ifnull((SELECT group_concat(value, ' ')"  # noqa: S608 (constant SQL)
                f" FROM json_each({document}, '{path}')), '')"
                for path in _DATASET_LISTS
            ),
            f"ifnull({metadata}, '')",
        ]
    )
    other = (
        f"ifnull((SELECT group_concat(value, ' ') FROM json_tree({document}, '$') AS t"  # noqa: S608
        " WHERE t.type = 'text' AND t.id NOT IN (SELECT c.id FROM json_tree("
        f"{document}, '$.history') AS c)), '') || ' ' || ifnull({metadata}, '')"
    )
    return (
        f"(CASE json_extract({document}, '$.item_subtype') WHEN 'DATASET' THEN {dataset}"
        f" ELSE {other} END)"
    )


def _reindex(row: str) -> str:
    """Statements that (re)index the item *row* (``NEW`` in a trigger). Conflict clauses are
    avoided: inside a trigger, an ``INSERT OR REPLACE`` on ``items`` would override them."""
    return f"""
        INSERT INTO search_ids (id) SELECT {row}.id
            WHERE NOT EXISTS (SELECT 1 FROM search_ids WHERE id = {row}.id);
        DELETE FROM search_text WHERE rowid = (SELECT rid FROM search_ids WHERE id = {row}.id);
        INSERT INTO search_text (rowid, id, item_subtype, body)
            SELECT rid, {row}.id, {row}.item_subtype, {_linearised(row + ".document")}
            FROM search_ids WHERE id = {row}.id AND {row}.record_type = 'COMPLETE_ITEM';"""  # noqa: S608 (constant SQL)


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS search_ids (rid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE)",
    "CREATE VIRTUAL TABLE IF NOT EXISTS search_text USING fts5(id UNINDEXED, item_subtype"
    " UNINDEXED, body, tokenize = 'unicode61 remove_diacritics 2')",
    # recreated on every start, so that a newer linearisation replaces an older one
    "DROP TRIGGER IF EXISTS search_items_inserted",
    "DROP TRIGGER IF EXISTS search_items_updated",
    "DROP TRIGGER IF EXISTS search_items_deleted",
    f"CREATE TRIGGER search_items_inserted AFTER INSERT ON items BEGIN {_reindex('NEW')} END",
    f"CREATE TRIGGER search_items_updated AFTER UPDATE ON items BEGIN {_reindex('NEW')} END",
    "CREATE TRIGGER search_items_deleted AFTER DELETE ON items BEGIN DELETE FROM search_text"
    " WHERE rowid = (SELECT rid FROM search_ids WHERE id = OLD.id); END",
    "DELETE FROM search_text",
    "INSERT OR IGNORE INTO search_ids (id) SELECT id FROM items",
    "INSERT INTO search_text (rowid, id, item_subtype, body)"  # noqa: S608 (constant SQL)
    f" SELECT s.rid, i.id, i.item_subtype, {_linearised('i.document')}"
    " FROM items AS i JOIN search_ids AS s ON s.id = i.id WHERE i.record_type = 'COMPLETE_ITEM'",
)
_WORD = re.compile(r"\w+")


class RegistrySearch:
    """The FTS5 index of the registry (tables ``search_ids``, ``search_text`` and triggers)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        with registry.transaction() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    def query(self, text: str, subtype: ItemSubType | None, size: int) -> list[QueryResult]:
        words = _WORD.findall(text)
        if not words or size == 0:
            return []
        match = " OR ".join('"' + word.replace('"', '""') + '"*' for word in words)
        sql = "SELECT id, -bm25(search_text) AS score FROM search_text WHERE search_text MATCH ?"
        params: list[object] = [match]
        if subtype is not None:
            sql += " AND item_subtype = ?"
            params.append(subtype.value)
        sql += " ORDER BY bm25(search_text), id LIMIT ?"
        with self.registry.reading() as db:
            rows = db.execute(sql, [*params, size]).fetchall()
        return [QueryResult(id=row["id"], score=float(row["score"])) for row in rows]


def search_router(search: RegistrySearch) -> APIRouter:
    """``GET /search/entity-registry`` of Provena's search API."""
    router = APIRouter()

    @router.get("/search/entity-registry", response_model=QueryResults)
    def search_entity_registry(
        query: str,
        caller: Reader,
        subtype_filter: ItemSubType | None = None,
        record_limit: int | None = None,
    ) -> QueryResults:
        size = min(record_limit, MAX_QUERY_SIZE) if record_limit else DEFAULT_QUERY_SIZE
        if size < 0:
            raise DataStoreError(
                500, f"Failed to search, error: [size] parameter cannot be negative, found [{size}]"
            )
        results = search.query(query, subtype_filter, size)
        return QueryResults(
            status=Status(success=True, details=f"Returned {len(results)} results with no issues."),
            results=results,
            warnings=None,
        )

    return router
