"""Shaping dataset records: the history entry and metadata replacement every change applies.

Pure functions from one ``ItemDataset`` to the next (history newest first, as docs/API.md
§4.1), so the registry only stores what they return. They must not touch SQLite, storage or HTTP.
"""

from __future__ import annotations

from provenafs.server.models import CollectionFormat, HistoryEntry, ItemDataset

__all__ = ["with_collection_format", "with_history"]


def with_history(item: ItemDataset, reason: str, username: str, now: int) -> ItemDataset:
    """Prepend a history entry snapshotting *item*'s domain info (newest first)."""
    next_id = max((entry.id for entry in item.history), default=-1) + 1
    entry = HistoryEntry(
        id=next_id, timestamp=now, reason=reason, username=username, item=item.domain_info()
    )
    return item.model_copy(update={"history": [entry, *item.history]})


def with_collection_format(
    item: ItemDataset, collection_format: CollectionFormat, now: int
) -> ItemDataset:
    info = collection_format.dataset_info
    return item.model_copy(
        update={
            "collection_format": collection_format,
            "display_name": info.name,
            "user_metadata": info.user_metadata,
            "access_info_uri": info.access_info.uri,
            "updated_timestamp": now,
        }
    )
