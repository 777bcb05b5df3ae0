"""In-process fakes for driving the filesystem core without a kernel or a server.

``FakeDataStore`` plays ``DataStoreClient``: datasets with item roles, version chains, short and
empty list pages (the page limit applies before access filtering, as in Provena), and counts of
every call. Records are parsed with the real ``parse_dataset_record``, so the core sees exactly
the shapes the client produces. ``build_filesystem`` wires a ``Filesystem`` over it with the
real ``CredentialBroker``, ``BlockCache``, ``PrefetchBudget`` and ``ObjectReader`` and a
``MemoryBlobStore``. ``MetadataStore`` adds metadata updates and reverts as the server applies
them; ``TreeListingStore`` adds paged tree listings that stop early as S3 can.
"""

from __future__ import annotations

import collections
import copy
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import trio

from provenafs.api import errors as api_errors
from provenafs.api.client import parse_dataset_record
from provenafs.api.models import CollectionFormat, Credentials, DatasetPage, DatasetRecord
from provenafs.cache.block_cache import BlockCache
from provenafs.core.filesystem import Filesystem
from provenafs.core.services import RegistryServices
from provenafs.core.types import Caller
from provenafs.mount_options import MountOptions, parse_mount_args
from provenafs.read.reader import PrefetchBudget
from provenafs.storage.blobstore import Listing, MemoryBlobStore, ObjectInfo
from provenafs.storage.credentials import CredentialBroker

ALL_ROLES = ("metadata-read", "metadata-write", "admin", "dataset-data-read", "dataset-data-write")
METADATA_ONLY = ("metadata-read",)
BUCKET = "provena-bucket"
SECRET_KEY = "fake-secret-key-must-never-show"
SESSION_TOKEN = "fake-session-token-must-never-show"
CALLER = Caller(uid=1000, gid=1000, pid=4242)

T = TypeVar("T")


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def s3_path(handle: str) -> str:
    return "datasets/" + handle.replace(".", "-").replace("/", "-") + "/"


class FakeDataStore:
    """Datasets by handle, each with the caller's item roles and lock flag."""

    def __init__(self, *, realm_admin: bool = False) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.roles: dict[str, tuple[str, ...]] = {}
        self.locked: dict[str, bool] = {}
        self.realm_admin = realm_admin
        self.calls: collections.Counter[str] = collections.Counter()
        self.gate: trio.Event | None = None  # when set, fetch/list/credential calls wait on it
        self.failure: Exception | None = None  # raised by every call when set
        self.empty_pages = 0  # leading empty pages (with a pagination key) before real ones

    # --- building ------------------------------------------------------------------------

    def add(
        self,
        handle: str,
        *,
        name: str | None = None,
        roles: tuple[str, ...] = ALL_ROLES,
        locked: bool = False,
        version: int = 1,
        previous: str | None = None,
        next_version: str | None = None,
        release_status: str = "NOT_RELEASED",
        created: int = 1_721_629_472,
        updated: int = 1_721_714_647,
        owner: str = "jsmith",
    ) -> dict[str, Any]:
        display = name if name is not None else f"Dataset {handle}"
        item: dict[str, Any] = {
            "display_name": display,
            "user_metadata": None,
            "collection_format": {
                "dataset_info": {"name": display, "description": "Températures, 2023"},
            },
            "s3": {
                "bucket_name": BUCKET,
                "path": s3_path(handle),
                "s3_uri": f"s3://{BUCKET}/{s3_path(handle)}",
            },
            "release_history": [],
            "release_status": release_status,
            "release_approver": None,
            "release_timestamp": None,
            "access_info_uri": None,
            "history": [],
            "id": handle,
            "owner_username": owner,
            "created_timestamp": created,
            "updated_timestamp": updated,
            "item_category": "ENTITY",
            "item_subtype": "DATASET",
            "record_type": "COMPLETE_ITEM",
            "workflow_links": None,
            "versioning_info": {
                "previous_version": previous,
                "version": version,
                "reason": "new version" if previous else None,
                "next_version": next_version,
            },
        }
        self.items[handle] = item
        self.roles[handle] = roles
        self.locked[handle] = locked
        return item

    def add_chain(self, handles: list[str], **kwargs: Any) -> None:
        """Versions 1..n of one dataset, linked both ways."""
        for index, handle in enumerate(handles):
            self.add(
                handle,
                version=index + 1,
                previous=handles[index - 1] if index else None,
                next_version=handles[index + 1] if index + 1 < len(handles) else None,
                created=1_721_000_000 + index * 1000,
                **kwargs,
            )

    # --- DataStoreClient -----------------------------------------------------------------

    async def _enter(self, route: str) -> None:
        self.calls[route] += 1
        if self.gate is not None:
            await self.gate.wait()
        else:
            await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise self.failure

    def _visible(self, handle: str) -> bool:
        roles = set(self.roles[handle])
        return self.realm_admin or bool(roles & {"metadata-read", "metadata-write", "admin"})

    async def fetch_dataset(self, handle: str) -> DatasetRecord:
        await self._enter("fetch")
        if handle not in self.items:
            raise api_errors.NotFoundError(f"no dataset {handle}")
        if not self._visible(handle):
            raise api_errors.PermissionDeniedError("You are not authorised to fetch this item.")
        item = self.items[handle]
        roles = list(self.roles[handle])
        locked = self.locked[handle]
        document = {"item": item, "roles": roles, "locked": locked}
        return parse_dataset_record(item, roles, locked, document)

    async def list_page(
        self, pagination_key: Mapping[str, Any] | None, page_size: int = 100
    ) -> DatasetPage:
        await self._enter("list")
        start = int(pagination_key["offset"]) if pagination_key else -self.empty_pages
        if start < 0:
            return DatasetPage((), {"offset": start + 1})
        ordered = sorted(self.items.values(), key=lambda i: -i["updated_timestamp"])
        page = ordered[start : start + page_size]
        records = tuple(
            parse_dataset_record(item, None, None, {"item": item})
            for item in page
            if self._visible(item["id"])
        )
        more = start + page_size < len(ordered)
        return DatasetPage(records, {"offset": start + page_size} if more else None)

    async def list_all(
        self,
        page_size: int = 100,
        on_page: Callable[[Sequence[DatasetRecord]], None] | None = None,
    ) -> list[DatasetRecord]:
        records: list[DatasetRecord] = []
        key: Mapping[str, Any] | None = None
        while True:
            page = await self.list_page(key, page_size)
            records.extend(page.items)
            if on_page is not None:
                on_page(page.items)
            if page.pagination_key is None:
                return records
            key = page.pagination_key

    async def read_credentials(self, handle: str) -> Credentials:
        await self._enter("read_credentials")
        roles = set(self.roles.get(handle, ()))
        if not (self.realm_admin or roles & {"dataset-data-read", "dataset-data-write", "admin"}):
            raise api_errors.PermissionDeniedError(
                "You do not have sufficient permissions to read from this dataset!"
            )
        expiry = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8)
        return Credentials("ASIAFAKE" + handle, SECRET_KEY, SESSION_TOKEN, expiry)

    async def write_credentials(self, handle: str) -> Credentials:
        await self._enter("write_credentials")
        raise api_errors.PermissionDeniedError("writes are not part of this fake")

    async def presigned_url(self, handle: str, file_path: str, expires_in: int = 3600) -> str:
        await self._enter("presign")
        if "dataset-data-read" not in self.roles.get(handle, ()):
            raise api_errors.PermissionDeniedError("needs dataset-data-read")
        return (
            f"https://s3.example/{BUCKET}/{s3_path(handle)}{file_path}?X-Amz-Expires={expires_in}"
        )

    async def username(self) -> str | None:
        """The token's user: the owner of every dataset ``add`` makes."""
        return "jsmith"

    def statistics(self) -> Mapping[str, int]:
        return dict(self.calls)


def options(*extra: str) -> MountOptions:
    return parse_mount_args(
        ["http://127.0.0.1:8750", "/mnt/provena", "-o", "uid=1000,gid=1001", *extra]
    )


def build_filesystem(
    store: FakeDataStore,
    blobs: MemoryBlobStore,
    *,
    clock: Callable[[], float] | None = None,
    mount_options: MountOptions | None = None,
    services: RegistryServices | None = None,
    username: str | None = None,
) -> tuple[Filesystem, CredentialBroker]:
    broker = CredentialBroker(store, clock=clock or time.time)
    fs = Filesystem(
        services=services,
        client=store,
        broker=broker,
        store=blobs,
        cache=BlockCache(8 << 20, block_size=64 << 10),
        budget=PrefetchBudget(4 << 20),
        options=mount_options or options(),
        clock=clock or time.time,
        username=username,
    )
    return fs, broker


def collection_format(name: str = "Reef logger temperatures 2023") -> dict[str, Any]:
    return {
        "associations": {
            "organisation_id": "10378.1/1925605",
            "data_custodian_id": None,
            "point_of_contact": None,
        },
        "approvals": {
            "ethics_registration": {"relevant": False, "obtained": False},
            "ethics_access": {"relevant": False, "obtained": False},
            "indigenous_knowledge": {"relevant": False, "obtained": False},
            "export_controls": {"relevant": False, "obtained": False},
        },
        "dataset_info": {
            "name": name,
            "description": "Hourly temperatures",
            "access_info": {"reposited": True, "uri": None, "description": None},
            "publisher_id": "10378.1/1925605",
            "license": "https://creativecommons.org/licenses/by/4.0/",
            "keywords": ["reef"],
            "user_metadata": None,
        },
    }


class MetadataStore(FakeDataStore):
    """``FakeDataStore`` plus update-metadata and revert-metadata, applied as the server does."""

    def __init__(self) -> None:
        super().__init__()
        self.updates: list[tuple[str, str, dict[str, Any]]] = []
        self.reverts: list[tuple[str, int, str]] = []
        self.update_failure: Exception | None = None

    def add_dataset(self, handle: str, **kwargs: Any) -> dict[str, Any]:
        item = self.add(handle, name="Reef logger temperatures 2023", **kwargs)
        item["collection_format"] = collection_format()
        item["history"] = [
            {
                "id": 0,
                "timestamp": 1_721_629_472,
                "reason": "Initial record creation",
                "username": "jsmith",
                "item": {"collection_format": copy.deepcopy(item["collection_format"])},
            }
        ]
        return item

    def _apply(self, handle: str, cf: Mapping[str, Any], reason: str) -> None:
        item = self.items[handle]
        item["collection_format"] = copy.deepcopy(dict(cf))
        item["display_name"] = cf["dataset_info"]["name"]
        item["updated_timestamp"] += 10
        entry = {
            "id": max(e["id"] for e in item["history"]) + 1,
            "timestamp": item["updated_timestamp"],
            "reason": reason,
            "username": "jsmith",
            "item": {"collection_format": copy.deepcopy(dict(cf))},
        }
        item["history"].insert(0, entry)

    def _check_writable(self, handle: str) -> None:
        if self.locked[handle]:
            raise api_errors.PermissionDeniedError("update_metadata: This dataset is locked")
        if not set(self.roles[handle]) & {"metadata-write", "admin"}:
            raise api_errors.PermissionDeniedError("update_metadata: not authorised")

    async def update_metadata(self, handle: str, reason: str, form: CollectionFormat) -> None:
        await self._enter("update_metadata")
        collection_format = form.fields
        self.updates.append((handle, reason, copy.deepcopy(dict(collection_format))))
        if self.update_failure is not None:
            raise self.update_failure
        self._check_writable(handle)
        if not collection_format["dataset_info"].get("name"):
            raise api_errors.InvalidRequestError("update_metadata: dataset_info.name: too short")
        self._apply(handle, collection_format, reason)

    async def revert_metadata(self, handle: str, history_id: int, reason: str) -> None:
        await self._enter("revert_metadata")
        self.reverts.append((handle, history_id, reason))
        self._check_writable(handle)
        entry = next((e for e in self.items[handle]["history"] if e["id"] == history_id), None)
        if entry is None:
            raise api_errors.InvalidRequestError(f"revert_metadata: no history entry {history_id}")
        text = f"Reverting dataset to history id {history_id}. Reason: {reason}."
        self._apply(handle, entry["item"]["collection_format"], text)


class TreeListingStore(MemoryBlobStore):
    """Also lists every key under a prefix, in pages of ``page_size``, stopping early as S3 can.

    ``calls["list"]`` counts only delimited listings (``list_prefix``); ``tree_calls`` and
    ``tree_pages`` count tree listings. ``gate`` makes tree listings wait; each entry of
    ``failures`` is raised by one tree listing.
    """

    def __init__(self, page_size: int = 1000) -> None:
        super().__init__()
        self.page_size = page_size
        self.tree_calls = 0
        self.tree_pages = 0
        self.gate: trio.Event | None = None
        self.failures: list[Exception] = []

    async def list_tree(
        self, creds: Credentials, bucket: str, prefix: str, *, max_keys: int
    ) -> Listing:
        self.tree_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        keys = [
            info
            for (b, key), (_, info) in sorted(self.objects.items())
            if b == bucket
            if key.startswith(prefix)
        ]
        listed: list[ObjectInfo] = []
        while True:
            self.tree_pages += 1
            listed += keys[len(listed) : len(listed) + self.page_size]
            if len(listed) == len(keys):
                return Listing(tuple(listed), ())
            if len(listed) >= max_keys:
                return Listing(tuple(listed), (), truncated=True)
