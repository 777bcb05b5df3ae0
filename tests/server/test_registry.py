"""The SQLite registry on its own: records, history, versioning, roles, locks, release, paging.

No server and no S3: these pin docs/API.md §4.1, §5, §6, §8.3 and the §3.2 paging rules.
"""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from provenafs.server.access import REALM_ADMIN
from provenafs.server.models import (
    ITEM_ROLES,
    CollectionFormat,
    ReleaseStatus,
    SortOptions,
    SortType,
    collection_format_problems,
    metadata_json_bytes,
)
from provenafs.server.registry import (
    FIRST_HANDLE_NUMBER,
    InvalidPaginationKey,
    InvalidRequest,
    ItemIsSeed,
    ItemNotDataset,
    NotDesignatedReviewer,
    NotLatestVersion,
    Registry,
    UnknownItem,
    dataset_s3_location,
)
from tests.server.support import ITEM_KEYS

BUCKET = "test-bucket"
RW = ("entity-registry-read", "entity-registry-write")


def collection_format_document(name: str = "Reef temps") -> dict[str, Any]:
    no = {"relevant": False, "obtained": False}
    return {
        "associations": {"organisation_id": "10378.1/1925605"},
        "approvals": {
            "ethics_registration": no,
            "ethics_access": no,
            "indigenous_knowledge": no,
            "export_controls": no,
        },
        "dataset_info": {
            "name": name,
            "description": "Hourly readings.",
            "access_info": {"reposited": True},
            "publisher_id": "10378.1/1925605",
            "created_date": {"relevant": True, "value": "2024-08-09"},
            "published_date": {"relevant": False},
            "license": "https://example.com",
            "user_metadata": {"project": "reef"},
        },
    }


def make_cf(name: str = "Reef temps") -> CollectionFormat:
    return CollectionFormat.model_validate(collection_format_document(name))


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry.in_data_dir(tmp_path)
    for user in ("alice", "bob", "carol", "dave"):
        reg.add_user(user, f"{user}@example.org", RW)
    reg.set_group("team", ["carol"])
    return reg


def mint(registry: Registry, owner: str = "alice", name: str = "Reef temps") -> str:
    handle = registry.create_seed_dataset(owner)
    registry.complete_dataset(
        handle,
        make_cf(name),
        dataset_s3_location(BUCKET, handle),
        username=owner,
        create_workflow_id="wf-1",
    )
    return handle


# --------------------------------------------------------------------------- models


def test_collection_format_rejects_unknown_keys_and_empty_strings() -> None:
    document = collection_format_document()
    document["dataset_info"]["surprise"] = 1
    with pytest.raises(ValidationError):
        CollectionFormat.model_validate(document)
    document = collection_format_document()
    document["dataset_info"]["description"] = ""
    with pytest.raises(ValidationError):
        CollectionFormat.model_validate(document)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("dataset_info", "license"), "ftp://example.com/licence"),
        (("dataset_info", "access_info"), {"reposited": True, "uri": "https://x.org"}),
        (("dataset_info", "access_info"), {"reposited": False}),
        (("dataset_info", "created_date"), {"relevant": True}),
        (("dataset_info", "created_date"), {"relevant": False, "value": "2024-01-01"}),
        (("dataset_info", "created_date"), {"relevant": True, "value": "09/08/2024"}),
        (("dataset_info", "spatial_info"), {"coverage": "x" * 50_001}),
        (("dataset_info", "spatial_info"), {"resolution": "-1"}),
        (("dataset_info", "temporal_info"), {"resolution": "hourly"}),
        (("associations", "organisation_id"), 5),
    ],
)
def test_collection_format_field_rules_are_422(path: tuple[str, str], value: Any) -> None:
    document = collection_format_document()
    document[path[0]][path[1]] = value
    with pytest.raises(ValidationError):
        CollectionFormat.model_validate(document)


def test_license_is_kept_as_sent_and_metadata_json_excludes_none() -> None:
    cf = make_cf()
    assert cf.dataset_info.license == "https://example.com"
    written = json.loads(metadata_json_bytes(cf))
    assert written["dataset_info"]["license"] == "https://example.com"
    assert "purpose" not in written["dataset_info"]
    assert written["dataset_info"]["created_date"] == {"relevant": True, "value": "2024-08-09"}
    assert metadata_json_bytes(cf).startswith(b'{\n  "associations"')


def test_field_problems_cover_approvals_and_date_order() -> None:
    document = collection_format_document()
    assert collection_format_problems(CollectionFormat.model_validate(document)) == []
    document["approvals"]["ethics_access"] = {"relevant": True, "obtained": False}
    document["approvals"]["export_controls"] = {"relevant": False, "obtained": True}
    document["dataset_info"]["published_date"] = {"relevant": True, "value": "2024-01-01"}
    problems = collection_format_problems(CollectionFormat.model_validate(document))
    assert len(problems) == 3


def test_sort_options_begins_with_rule() -> None:
    with pytest.raises(ValidationError):
        SortOptions(sort_type=SortType.ACCESS_INFO_URI_BEGINS_WITH)
    with pytest.raises(ValidationError):
        SortOptions(sort_type=SortType.DISPLAY_NAME, begins_with="https")


# --------------------------------------------------------------------------- records


def test_handles_count_from_the_start_and_survive_reopening(tmp_path: Path) -> None:
    registry = Registry.in_data_dir(tmp_path)
    first = registry.allocate_handle()
    assert first == f"10378.1/{FIRST_HANDLE_NUMBER}"
    registry.close()
    again = Registry.in_data_dir(tmp_path)
    assert again.allocate_handle() == f"10378.1/{FIRST_HANDLE_NUMBER + 1}"


def test_minted_record_shape(registry: Registry) -> None:
    handle = mint(registry)
    item = registry.fetch_dataset(handle)
    document = json.loads(item.model_dump_json())
    assert list(document) == ITEM_KEYS
    suffix = handle.split("/")[1]
    assert document["s3"] == {
        "bucket_name": BUCKET,
        "path": f"datasets/10378-1-{suffix}/",
        "s3_uri": f"s3://{BUCKET}/datasets/10378-1-{suffix}/",
    }
    assert document["display_name"] == "Reef temps"
    assert document["user_metadata"] == {"project": "reef"}
    assert document["release_status"] == "NOT_RELEASED"
    assert isinstance(document["created_timestamp"], int)
    assert [h["reason"] for h in document["history"]] == ["Initial record creation"]
    assert document["history"][0]["item"]["collection_format"] == document["collection_format"]
    assert document["versioning_info"] == {
        "previous_version": None,
        "version": 1,
        "reason": None,
        "next_version": None,
    }
    assert document["workflow_links"]["create_activity_workflow_id"] == "wf-1"


def test_unknown_seed_and_non_dataset_ids_are_refused(registry: Registry) -> None:
    with pytest.raises(UnknownItem):
        registry.fetch_dataset("10378.1/1")
    seed = registry.create_seed_dataset("alice")
    with pytest.raises(ItemIsSeed):
        registry.fetch_dataset(seed)
    registry.put_entity("10378.1/1925605", "ORGANISATION", "Org")
    with pytest.raises(ItemNotDataset):
        registry.fetch_dataset("10378.1/1925605")


def test_update_and_revert_history(registry: Registry) -> None:
    handle = mint(registry)
    registry.update_metadata(handle, make_cf("Renamed"), reason="Rename", username="bob")
    item = registry.update_metadata(handle, make_cf("Again"), reason="Again", username="alice")
    assert [h.id for h in item.history] == [2, 1, 0]
    assert [h.reason for h in item.history] == ["Again", "Rename", "Initial record creation"]
    assert item.display_name == "Again"
    assert item.history[1].username == "bob"
    reverted = registry.revert_metadata(handle, 0, reason="oops", username="alice")
    assert reverted.display_name == "Reef temps"
    assert reverted.history[0].id == 3
    assert reverted.history[0].reason == "Reverting dataset to history id 0. Reason: oops."
    assert reverted.s3 == item.s3
    with pytest.raises(InvalidRequest):
        registry.revert_metadata(handle, 99, reason="x", username="alice")
    assert len(registry.fetch_dataset(handle).history) == 4


def test_version_chain_semantics(registry: Registry) -> None:
    v1 = mint(registry)
    registry.set_access(v1, general=["metadata-read"], groups={"team": ["metadata-read"]})
    registry.set_locked(v1, True, username="alice", email=None, reason="freeze")
    before = registry.fetch_dataset(v1)
    v2_item = registry.create_version(
        v1, reason="second", username="bob", bucket=BUCKET, job_session_id="job-2"
    )
    v2 = v2_item.id
    assert v2 != v1
    assert v2_item.owner_username == "bob"
    assert v2_item.versioning_info is not None
    assert v2_item.versioning_info.model_dump() == {
        "previous_version": v1,
        "version": 2,
        "reason": "second",
        "next_version": None,
    }
    assert [h.id for h in v2_item.history] == [1, 0]
    assert v2_item.history[1].reason == f"New version of existing item (id={v1})."
    assert v2_item.history[0].reason == (
        "(System) Dataset S3 path updated to new version's storage location"
    )
    assert v2_item.history[1].item.s3 == before.s3  # entry 0 still points at the old storage
    assert v2_item.s3 == dataset_s3_location(BUCKET, v2)
    assert v2_item.user_metadata is None
    assert v2_item.collection_format.dataset_info.user_metadata == {"project": "reef"}
    assert v2_item.release_status == ReleaseStatus.NOT_RELEASED
    assert v2_item.workflow_links is not None
    assert v2_item.workflow_links.version_activity_workflow_id == "job-2"
    assert not registry.is_locked(v2)
    access = registry.get_access(v2)
    assert access.owner == "bob"
    assert access.general == ("metadata-read",)
    assert dict(access.groups) == {"team": ("metadata-read",)}
    after = registry.fetch_dataset(v1)
    assert after.versioning_info is not None
    assert after.versioning_info.next_version == v2
    assert after.updated_timestamp == before.updated_timestamp
    assert after.history == before.history
    assert registry.is_locked(v1)
    with pytest.raises(NotLatestVersion, match="not the latest version"):
        registry.create_version(
            v1, reason="branch", username="bob", bucket=BUCKET, job_session_id="j"
        )
    v3_item = registry.create_version(
        v2, reason="third", username="alice", bucket=BUCKET, job_session_id="job-3"
    )
    assert v3_item.versioning_info is not None
    assert v3_item.versioning_info.version == 3
    assert v3_item.versioning_info.previous_version == v2


# --------------------------------------------------------------------------- item roles


def test_item_roles_follow_the_access_settings(registry: Registry) -> None:
    handle = mint(registry)
    assert registry.item_roles(handle, "alice", RW) == ITEM_ROLES
    assert registry.item_roles(handle, "bob", RW) == ("metadata-read", "dataset-data-read")
    registry.set_access(handle, general=[], groups={"team": ["dataset-data-write"]})
    assert registry.item_roles(handle, "bob", RW) == ()
    # no also_grants expansion: dataset-data-write alone does not add metadata-read
    assert registry.item_roles(handle, "carol", RW) == ("dataset-data-write",)
    assert registry.item_roles(handle, "bob", (*RW, REALM_ADMIN)) == ITEM_ROLES
    registry.set_access(handle, general=["metadata-write"], groups={"team": ["metadata-read"]})
    assert registry.item_roles(handle, "carol", RW) == ("metadata-read", "metadata-write")
    with pytest.raises(InvalidRequest):
        registry.set_access(handle, general=["superuser"])
    with pytest.raises(InvalidRequest):
        registry.set_access(handle, groups={"nobody": ["metadata-read"]})


def test_new_owner_gets_every_role_and_the_record_says_so(registry: Registry) -> None:
    handle = mint(registry)
    registry.set_access(handle, owner="dave", general=[])
    assert registry.item_roles(handle, "dave", RW) == ITEM_ROLES
    assert registry.item_roles(handle, "alice", RW) == ()
    assert registry.fetch_dataset(handle).owner_username == "dave"


# --------------------------------------------------------------------------- locks and release


def test_lock_history(registry: Registry) -> None:
    handle = mint(registry)
    registry.set_locked(handle, True, username="alice", email="a@x", reason="hold")
    assert registry.is_locked(handle)
    registry.set_locked(handle, False, username="bob", email=None, reason="go")
    assert not registry.is_locked(handle)
    events = registry.lock_history(handle)
    assert [(e.action_type, e.username, e.reason) for e in events] == [
        ("LOCK", "alice", "hold"),
        ("UNLOCK", "bob", "go"),
    ]


def test_release_lifecycle_adds_no_metadata_history(registry: Registry) -> None:
    handle = mint(registry)
    with pytest.raises(InvalidRequest, match="not a system reviewer"):
        registry.request_release(handle, approver_id="bob", requester="alice", notes="n")
    registry.add_reviewer("bob")
    item = registry.request_release(handle, approver_id="bob", requester="alice", notes="n")
    assert item.release_status == ReleaseStatus.PENDING
    assert item.release_approver == "bob"
    assert isinstance(item.release_timestamp, int)
    with pytest.raises(InvalidRequest):
        registry.request_release(handle, approver_id="bob", requester="alice", notes="again")
    with pytest.raises(NotDesignatedReviewer):
        registry.action_release(handle, approve=True, reviewer="carol", notes="me?")
    rejected = registry.action_release(handle, approve=False, reviewer="bob", notes="no")
    assert rejected.release_status == ReleaseStatus.NOT_RELEASED
    registry.request_release(handle, approver_id="bob", requester="alice", notes="n2")
    released = registry.action_release(handle, approve=True, reviewer="bob", notes="ok")
    assert released.release_status == ReleaseStatus.RELEASED
    assert [e.action for e in released.release_history] == [
        "REQUEST",
        "REJECT",
        "REQUEST",
        "APPROVE",
    ]
    assert len(released.history) == 1


# --------------------------------------------------------------------------- listing


def walk(
    registry: Registry, user: str, page_size: int, sort: SortOptions | None = None
) -> list[Any]:
    pages = []
    key = None
    while True:
        page = registry.list_datasets(
            sort=sort, pagination_key=key, page_size=page_size, username=user, realm_roles=RW
        )
        pages.append(page)
        key = page.pagination_key
        if key is None:
            return pages


def test_paging_limit_applies_before_filters(registry: Registry) -> None:
    visible = [mint(registry, "alice", f"ds {n}") for n in range(5)]
    hidden = [mint(registry, "bob", f"hidden {n}") for n in range(4)]
    for handle in hidden:
        registry.set_access(handle, general=[])
    registry.create_seed_dataset("alice")  # seed items count toward the Limit, then drop out
    pages = walk(registry, "alice", 3)
    seen = [item.id for page in pages for item in page.items]
    assert sorted(seen) == sorted(visible)
    assert len(seen) == len(set(seen))
    assert sum(page.not_authorised_count for page in pages) == 4
    assert len(pages) == 4  # 10 rows, Limit 3: 3+3+3+1
    assert any(len(page.items) < 3 for page in pages[:-1])
    assert all(page.pagination_key is not None for page in pages[:-1])
    bob_pages = walk(registry, "bob", 2)
    assert sorted(i.id for p in bob_pages for i in p.items) == sorted(visible + hidden)


def test_exact_multiple_gives_a_final_empty_page(registry: Registry) -> None:
    for n in range(4):
        mint(registry, "alice", f"ds {n}")
    pages = walk(registry, "alice", 2)
    assert [len(p.items) for p in pages] == [2, 2, 0]
    key = pages[0].pagination_key
    assert key is not None
    assert set(key) == {"id", "item_subtype", "updated_timestamp"}
    assert key["item_subtype"] == "DATASET"


def test_sort_orders(registry: Registry) -> None:
    names = ["b", "c", "a"]
    handles = [mint(registry, "alice", name) for name in names]
    by_update = [i.id for p in walk(registry, "alice", 10) for i in p.items]
    assert by_update == list(reversed(handles))  # same second: newest id first
    by_name = SortOptions(sort_type=SortType.DISPLAY_NAME, ascending=True)
    assert [i.display_name for p in walk(registry, "alice", 1, by_name) for i in p.items] == [
        "a",
        "b",
        "c",
    ]
    released = SortOptions(sort_type=SortType.RELEASE_TIMESTAMP)
    assert [i for p in walk(registry, "alice", 5, released) for i in p.items] == []
    document = collection_format_document("external")
    document["dataset_info"]["access_info"] = {
        "reposited": False,
        "uri": "https://data.example.org/x",
        "description": "elsewhere",
    }
    registry.update_metadata(
        handles[0], CollectionFormat.model_validate(document), reason="r", username="alice"
    )
    prefix = SortOptions(
        sort_type=SortType.ACCESS_INFO_URI_BEGINS_WITH, begins_with="https://data.example"
    )
    assert [i.id for p in walk(registry, "alice", 5, prefix) for i in p.items] == [handles[0]]


def test_bad_pagination_key_is_refused(registry: Registry) -> None:
    mint(registry)
    with pytest.raises(InvalidPaginationKey):
        registry.list_datasets(
            sort=None,
            pagination_key={"bogus": 1},
            page_size=5,
            username="alice",
            realm_roles=RW,
        )


def test_unparsable_rows_are_reported(registry: Registry, tmp_path: Path) -> None:
    handle = mint(registry)
    raw = sqlite3.connect(tmp_path / "registry.sqlite")
    document = json.loads(
        raw.execute("SELECT document FROM items WHERE id=?", (handle,)).fetchone()[0]
    )
    broken = copy.deepcopy(document)
    del broken["collection_format"]
    raw.execute("UPDATE items SET document=? WHERE id=?", (json.dumps(broken), handle))
    raw.commit()
    raw.close()
    page = registry.list_datasets(
        sort=None, pagination_key=None, page_size=5, username="alice", realm_roles=RW
    )
    assert len(page.unparsable_items) == 1
    assert page.items == ()
