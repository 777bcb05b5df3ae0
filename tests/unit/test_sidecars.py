"""Sidecar bytes: the fetch result as sorted, indented, UTF-8 JSON with a trailing newline."""

from __future__ import annotations

import json
from types import MappingProxyType
from typing import Any

import hypothesis
from hypothesis import strategies as st

from provenafs.api.client import parse_dataset_record
from provenafs.api.models import DatasetRecord
from provenafs.core.sidecar_render import SidecarRenderer, sidecar_bytes, sidecar_size
from tests.unit.fakes import ALL_ROLES, FakeDataStore


def _record(document: dict[str, object] | None = None) -> DatasetRecord:
    """The record FakeDataStore's fetch gives (no I/O needed: hypothesis tests call it too)."""
    item = FakeDataStore().add("10378.1/1", name="Récif \u2013 températures")
    if document is None:
        return parse_dataset_record(
            item, list(ALL_ROLES), False, {"item": item, "roles": list(ALL_ROLES), "locked": False}
        )
    return parse_dataset_record(item, ["admin"], True, document)


def test_bytes_are_sorted_indented_utf8_with_newline() -> None:
    record = _record()
    data = sidecar_bytes(record)
    assert data.endswith(b"}\n") and not data.endswith(b"\n\n")
    assert "Récif \u2013 températures".encode() in data
    assert data.startswith(b'{\n  "item": {\n    "access_info_uri": null,')
    assert list(json.loads(data)) == ["item", "locked", "roles"]
    assert json.loads(data) == record.document


def test_same_record_same_bytes_and_read_only_views_are_accepted() -> None:
    record = _record()
    frozen = _record(MappingProxyType(dict(record.document)))  # type: ignore[arg-type]
    assert sidecar_bytes(frozen) == sidecar_bytes(record)
    assert sidecar_bytes(record) == sidecar_bytes(record)


def test_renderer_reuses_bytes_until_the_record_changes() -> None:
    renderer = SidecarRenderer(max_entries=1)
    first = _record()
    data = renderer.render(first)
    assert renderer.render(first) is data
    changed = _record({"item": {"id": "10378.1/1"}, "roles": [], "locked": False})
    assert (
        renderer.render(changed)
        == b'{\n  "item": {\n    "id": "10378.1/1"\n  },\n  "locked": false,\n  "roles": []\n}\n'
    )


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(st.characters(exclude_categories=())),  # lone surrogates and controls too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(item=st.dictionaries(st.text(), JSON_VALUES), roles=st.lists(st.text()))
def test_sidecar_size_is_the_length_of_the_bytes(item: dict[str, Any], roles: list[str]) -> None:
    record = _record({"item": item, "roles": roles, "locked": False})
    assert sidecar_size(record) == len(sidecar_bytes(record))


def test_sidecar_size_of_records_and_read_only_views() -> None:
    record = _record()
    assert sidecar_size(record) == len(sidecar_bytes(record))
    frozen = _record(MappingProxyType(dict(record.document)))  # type: ignore[arg-type]
    assert sidecar_size(frozen) == len(sidecar_bytes(record))
    renderer = SidecarRenderer()
    assert renderer.size(record) == len(renderer.render(record))
