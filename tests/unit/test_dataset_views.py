"""``<n>.locks.json``, ``<n>.access.json``, ``<n>.cff``, the dataset actions and validated edits.

Over the fake data store and services: the files exist by lookup only (a prefix listing does
not show them), show what the services hold, are read-only except the access file for an item
admin, whose edits follow the sidecar rules (invalid: ``EINVAL``, not allowed: ``EACCES``, and
nothing is sent either way); the actions of the control socket change the record and the
tree's answers at once; a sidecar edit the data store's validation refuses is ``EINVAL``.
"""

from __future__ import annotations

import errno
import json
import os
import stat

import pytest

from provenafs.api.models import DatasetRecord, RegistryItem
from provenafs.api.registry import AccessSettings
from provenafs.core.citation import citation_cff, spdx_license
from provenafs.core.dataset_actions import ActionError
from provenafs.core.filesystem import Filesystem
from provenafs.errors import FsError
from provenafs.storage.blobstore import MemoryBlobStore
from provenafs.write.access_edit import settings_from_document
from tests.unit.fakes import (
    ALL_ROLES,
    CALLER,
    METADATA_ONLY,
    FakeDataStore,
    MetadataStore,
    build_filesystem,
    options,
)
from tests.unit.services_fake import FakeServices
from tests.unit.support import names, raises_errno, read_all, walk

OWN = "10378.1/1"
READ_ONLY = "10378.1/2"


def world(**kwargs: object) -> tuple[Filesystem, FakeServices, MetadataStore]:
    store = MetadataStore()  # with update-metadata: sidecars are editable
    store.add_dataset(OWN)
    store.add_dataset(READ_ONLY, roles=METADATA_ONLY)
    services = FakeServices(store)
    fs, _ = build_filesystem(store, MemoryBlobStore(), services=services, **kwargs)  # type: ignore[arg-type]
    return fs, services, store


async def write_whole(fs: Filesystem, path: str, data: bytes) -> None:
    """``open(O_WRONLY|O_TRUNC)``, write, close: the way a shell redirect writes a file."""
    opened = await fs.open((await walk(fs, path)).inode, os.O_WRONLY | os.O_TRUNC, CALLER)
    try:
        await fs.write(opened.fh, 0, data)
        await fs.flush(opened.fh)
    finally:
        await fs.release(opened.fh)


async def test_views_are_found_by_lookup_but_not_listed() -> None:
    fs, _, _ = world()
    listed = await names(fs, "10378.1")
    assert not [name for name in listed if name.endswith((".locks.json", ".access.json", ".cff"))]
    for suffix in (".locks.json", ".access.json", ".cff"):
        assert stat.S_ISREG((await walk(fs, f"10378.1/1{suffix}")).mode)
    with raises_errno(errno.ENOENT):
        await walk(fs, "10378.1/999.cff")


async def test_lock_history_and_the_lock_actions() -> None:
    fs, _services, _store = world()
    assert json.loads(await read_all(fs, "10378.1/1.locks.json")) == {
        "handle": OWN,
        "history": [],
        "locked": False,
    }
    assert fs.dataset_actions is not None
    await fs.dataset_actions.lock({"handle": OWN, "reason": "frozen for review"})
    assert stat.S_IMODE((await walk(fs, "10378.1/1.json")).mode) == 0o444  # at once
    locks = json.loads(await read_all(fs, "10378.1/1.locks.json"))
    assert locks["locked"] is True
    assert [(e["action"], e["reason"]) for e in locks["history"]] == [("LOCK", "frozen for review")]
    await fs.dataset_actions.unlock({"handle": OWN, "reason": "done"})
    assert stat.S_IMODE((await walk(fs, "10378.1/1.json")).mode) == 0o644
    with raises_errno(errno.EACCES):  # generated: not writable
        await fs.open((await walk(fs, "10378.1/1.locks.json")).inode, os.O_WRONLY, CALLER)
    with pytest.raises(ActionError):
        await fs.dataset_actions.lock({"handle": OWN, "reason": "  "})


async def test_access_file_shows_settings_and_the_inverse_view() -> None:
    fs, services, _ = world()
    services.access[OWN] = AccessSettings("jsmith", ("metadata-read",), {"team": ("admin",)})
    shown = json.loads(await read_all(fs, "10378.1/1.access.json"))
    assert shown["owner"] == "jsmith"
    assert shown["general"] == ["metadata-read"]
    assert shown["groups"] == {"team": ["admin"]}
    assert shown["by_role"]["admin"] == ["owner:jsmith", "group:team"]
    assert shown["by_role"]["metadata-read"] == ["owner:jsmith", "general"]
    assert stat.S_IMODE((await walk(fs, "10378.1/1.access.json")).mode) == 0o644


async def test_access_file_of_a_non_admin_is_closed_and_asks_nothing() -> None:
    fs, services, _ = world()
    attributes = await walk(fs, "10378.1/2.access.json")
    assert stat.S_IMODE(attributes.mode) == 0
    assert services.calls["access_settings"] == 0
    with raises_errno(errno.EACCES):
        await read_all(fs, "10378.1/2.access.json")
    with raises_errno(errno.EACCES):
        await write_whole(fs, "10378.1/2.access.json", b'{"general": []}')
    assert services.puts == []


async def test_access_edits_follow_the_sidecar_rules() -> None:
    fs, services, _ = world()
    path = "10378.1/1.access.json"
    current = json.loads(await read_all(fs, path))
    await write_whole(fs, path, json.dumps(current).encode())  # as read: no call
    assert services.puts == []
    for bad in (
        b"not json",
        json.dumps({**current, "owner": "mallory"}).encode(),
        json.dumps({**current, "general": ["superuser"]}).encode(),
        json.dumps({**current, "extra": 1}).encode(),
        json.dumps({**current, "by_role": {"admin": ["general"]}}).encode(),
    ):
        with raises_errno(errno.EINVAL):
            await write_whole(fs, path, bad)
    assert services.puts == []
    await write_whole(fs, path, json.dumps({"general": [], "groups": {"g": ["admin"]}}).encode())
    assert services.puts == [(OWN, AccessSettings("jsmith", (), {"g": ("admin",)}))]
    assert json.loads(await read_all(fs, path))["groups"] == {"g": ["admin"]}  # shown at once


async def test_access_edits_on_a_read_only_mount_are_erofs() -> None:
    fs, _services, _ = world(mount_options=options("-o", "ro"))
    assert stat.S_IMODE((await walk(fs, "10378.1/1.access.json")).mode) == 0o444
    with raises_errno(errno.EROFS):
        await write_whole(fs, "10378.1/1.access.json", b"{}")


def test_settings_from_document_keeps_what_is_left_out() -> None:
    current = AccessSettings("alice", ("metadata-read",), {"g": ("admin",)})
    assert settings_from_document({}, current) == current
    changed = settings_from_document({"general": ["metadata-read", "dataset-data-read"]}, current)
    assert changed.general == ("metadata-read", "dataset-data-read")
    assert changed.groups == {"g": ("admin",)}
    with pytest.raises(FsError) as excinfo:
        settings_from_document({"groups": {"g": "admin"}}, current)
    assert excinfo.value.errno == errno.EINVAL
    assert "groups.g" in str(excinfo.value)


# --- citation ---------------------------------------------------------------------------------


def cited(store: FakeDataStore, handle: str) -> DatasetRecord:
    from provenafs.api.client import parse_dataset_record

    item = store.items[handle]
    item["collection_format"] = {
        "associations": {"organisation_id": "org/1", "data_custodian_id": "person/1"},
        "dataset_info": {
            "name": 'Reef "loggers": 2023',
            "description": "Hourly\nreadings",
            "publisher_id": "org/2",
            "license": "https://creativecommons.org/licenses/by/4.0/",
            "created_date": {"relevant": True, "value": "2024-08-09"},
            "published_date": {"relevant": False},
            "keywords": ["reef"],
        },
    }
    return parse_dataset_record(item, list(ALL_ROLES), False, {"item": item})


def test_citation_names_the_custodian_publisher_licence_and_handle() -> None:
    store = FakeDataStore()
    store.add(OWN)
    items = {
        "person/1": RegistryItem(
            "person/1",
            "PERSON",
            "Ann Lee",
            first_name="Ann",
            last_name="Lee",
            email="ann@example.org",
            orcid="https://orcid.org/0000-0002-1825-0097",
        ),
        "org/1": RegistryItem("org/1", "ORGANISATION", "Org", name="Reef Institute"),
        "org/2": RegistryItem("org/2", "ORGANISATION", "Pub", name="Data Press"),
    }
    text = citation_cff(cited(store, OWN), items).decode()
    assert 'cff-version: "1.2.0"' in text
    assert 'title: "Reef \\"loggers\\": 2023"' in text
    assert '  - family-names: "Lee"\n    given-names: "Ann"' in text
    assert 'orcid: "https://orcid.org/0000-0002-1825-0097"' in text
    assert 'affiliation: "Reef Institute"' in text
    assert 'license: "CC-BY-4.0"' in text
    assert 'url: "https://hdl.handle.net/10378.1/1"' in text
    assert 'date-released: "2024-08-09"' in text
    assert 'abstract: "Hourly\\nreadings"' in text
    assert '  publisher:\n    name: "Data Press"' in text
    # without the custodian's name, the organisation is the author
    alone = citation_cff(cited(store, OWN), {}).decode()
    assert 'authors:\n  - name: "org/1"' in alone


def test_spdx_ids_of_creative_commons_urls() -> None:
    assert spdx_license("https://creativecommons.org/licenses/by-nc-sa/4.0/") == "CC-BY-NC-SA-4.0"
    assert spdx_license("http://creativecommons.org/publicdomain/zero/1.0") == "CC0-1.0"
    assert spdx_license("https://example.org/licence") is None


# --- release and review, validated edits ------------------------------------------------------


async def test_release_resolves_the_reviewer_and_the_tree_follows_at_once() -> None:
    fs, services, store = world(mount_options=options("-o", "writes=in-place"))
    assert fs.dataset_actions is not None
    services.items["10378.1/9001"] = RegistryItem("10378.1/9001", "PERSON", "Rita Reviewer")
    with pytest.raises(ActionError, match="not a release reviewer"):
        await fs.dataset_actions.release({"handle": OWN, "to": "nobody", "notes": "n"})
    assert stat.S_IMODE((await walk(fs, "10378.1/1")).mode) == 0o755
    for wanted in ("10378.1/9001", "reviewer", "rita reviewer"):
        store.items[OWN]["release_status"] = "NOT_RELEASED"
        answer = await fs.dataset_actions.release({"handle": OWN, "to": wanted, "notes": "n"})
        assert answer["reviewer"] == "10378.1/9001"
    # pending: no in-place writes, at once (the record was dropped with the action)
    assert stat.S_IMODE((await walk(fs, "10378.1/1")).mode) == 0o555
    directory = (await walk(fs, "10378.1/1")).inode
    approver = await fs.getxattr(directory, "user.provena.release_approver", CALLER)
    assert approver == b"10378.1/9001"
    answer = await fs.dataset_actions.review({"handle": OWN, "approve": True, "notes": "ok"})
    assert answer["release_status"] == "RELEASED"


async def test_a_sidecar_edit_the_data_store_refuses_is_einval_and_sends_nothing() -> None:
    fs, services, store = world()
    services.invalid = "dataset_info.license"
    document = json.loads(await read_all(fs, "10378.1/1.json"))
    document["item"]["collection_format"]["dataset_info"]["description"] = "changed"
    with raises_errno(errno.EINVAL):
        await write_whole(fs, "10378.1/1.json", json.dumps(document).encode())
    assert services.calls["validate_metadata"] == 1
    assert store.items[OWN]["collection_format"]["dataset_info"]["description"] != "changed"
