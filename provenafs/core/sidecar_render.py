"""The bytes of a ``<handle>.json`` sidecar: the data store's fetch result, as stable JSON.

The document is the fetch result without ``status`` (``item``, ``roles``, ``locked``), dumped
with sorted keys, two-space indentation, non-ASCII kept as is, a trailing newline, UTF-8. The
same record always gives the same bytes, so ``st_size`` equals what ``read`` returns.

This module does no I/O and must not reshape the record (the registry is authoritative).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from provenafs.api.models import DatasetRecord

__all__ = ["SidecarRenderer", "sidecar_bytes"]


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists, so ``json`` accepts read-only views too."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(item) for item in value]
    return value


def sidecar_bytes(record: DatasetRecord) -> bytes:
    """The sidecar of a fetched *record*."""
    text = json.dumps(_plain(record.document), sort_keys=True, indent=2, ensure_ascii=False)
    return (text + "\n").encode("utf-8", "surrogatepass")


class SidecarRenderer:
    """Renders sidecars, reusing the bytes while the record object is the same one."""

    def __init__(self, max_entries: int = 256) -> None:
        self._rendered: dict[str, tuple[DatasetRecord, bytes]] = {}
        self._max_entries = max_entries

    def render(self, record: DatasetRecord) -> bytes:
        cached = self._rendered.get(record.handle)
        if cached is not None and cached[0] is record:
            return cached[1]
        data = sidecar_bytes(record)
        if len(self._rendered) >= self._max_entries:
            self._rendered.pop(next(iter(self._rendered)))
        self._rendered[record.handle] = (record, data)
        return data
