"""Sidecar bytes: the fetch result as sorted, indented, UTF-8 JSON with a trailing newline."""

from __future__ import annotations

import json
from types import MappingProxyType

from provenafs.api.client import parse_dataset_record
from provenafs.api.models import DatasetRecord
from provenafs.core.sidecar_render import SidecarRenderer, sidecar_bytes
from tests.unit.fakes import FakeDataStore


async def _record(document: dict[str, object] | None = None) -> DatasetRecord:
    store = FakeDataStore()
    store.add("10378.1/1", name="Récif \u2013 températures")
    record = await store.fetch_dataset("10378.1/1")
    if document is None:
        return record
    return parse_dataset_record(record.document["item"], ["admin"], True, document)


async def test_bytes_are_sorted_indented_utf8_with_newline() -> None:
    record = await _record()
    data = sidecar_bytes(record)
    assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
    assert "Récif \u2013 températures".encode() in data
    assert data.startswith(b'{\n  "item": {\n    "access_info_uri": null,')
    assert list(json.loads(data)) == ["item", "locked", "roles"]
    assert json.loads(data) == record.document


async def test_same_record_same_bytes_and_read_only_views_are_accepted() -> None:
    record = await _record()
    frozen = await _record(MappingProxyType(dict(record.document)))  # type: ignore[arg-type]
    assert sidecar_bytes(frozen) == sidecar_bytes(record)
    assert sidecar_bytes(record) == sidecar_bytes(record)


async def test_renderer_reuses_bytes_until_the_record_changes() -> None:
    renderer = SidecarRenderer(max_entries=1)
    first = await _record()
    data = renderer.render(first)
    assert renderer.render(first) is data
    changed = await _record({"item": {"id": "10378.1/1"}, "roles": [], "locked": False})
    assert (
        renderer.render(changed)
        == b'{\n  "item": {\n    "id": "10378.1/1"\n  },\n  "locked": false,\n  "roles": []\n}\n'
    )
