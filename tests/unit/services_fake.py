"""A fake of the registry and search services (``core.services.RegistryServices``) for unit tests.

It answers from plain tables the test fills, counts every call by name, and behaves like the
local store where the core relies on it: search hits are not filtered by permission, access
settings need item ``admin`` (``PermissionDeniedError`` otherwise), a validation failure is
``InvalidRequestError`` naming the field.
"""

from __future__ import annotations

import collections
from typing import Any

import trio

from provenafs.api import errors as api_errors
from provenafs.api.account import Identity
from provenafs.api.models import CollectionFormat, DatasetRecord, RegistryItem
from provenafs.api.registry import AccessSettings, LockEvent, SearchHit
from tests.unit.fakes import FakeDataStore


class FakeServices:
    """``RegistryServices`` over tables (see the module docstring)."""

    def __init__(self, store: FakeDataStore, username: str = "jsmith") -> None:
        self.store = store
        self.identity = Identity(
            username, f"{username}@example.org", ("entity-registry-read",), "10378.1/9000"
        )
        self.hits: dict[str, list[str]] = {}  # query -> handles, best first
        self.items: dict[str, RegistryItem] = {}
        self.access: dict[str, AccessSettings] = {}
        self.locks: dict[str, list[LockEvent]] = {}
        self.queue: list[str] = []
        self.reviewer_ids: list[str] = ["10378.1/9001"]
        self.links: dict[str, str] = {"reviewer": "10378.1/9001"}
        self.invalid: str | None = None  # validate_metadata fails naming this field
        self.calls: collections.Counter[str] = collections.Counter()
        self.puts: list[tuple[str, AccessSettings]] = []
        self.releases: list[tuple[str, str, str]] = []
        self.actions: list[tuple[str, bool, str]] = []

    async def _enter(self, name: str) -> None:
        self.calls[name] += 1
        await trio.lowlevel.checkpoint()

    async def search_datasets(self, query: str, limit: int = 25) -> list[SearchHit]:
        await self._enter("search")
        return [SearchHit(h, 1.0 / (i + 1)) for i, h in enumerate(self.hits.get(query, []))]

    async def fetch_item(self, item_id: str) -> RegistryItem:
        await self._enter("fetch_item")
        if item_id not in self.items:
            raise api_errors.NotFoundError(f"no item {item_id}")
        return self.items[item_id]

    def _admin(self, handle: str) -> None:
        if "admin" not in self.store.roles.get(handle, ()):
            raise api_errors.PermissionDeniedError(
                "You are not authorised to edit the access configuration."
            )

    async def access_settings(self, handle: str) -> AccessSettings:
        await self._enter("access_settings")
        self._admin(handle)
        return self.access.get(handle) or AccessSettings(
            "jsmith", ("metadata-read", "dataset-data-read"), {}
        )

    async def put_access_settings(self, handle: str, settings: AccessSettings) -> None:
        await self._enter("put_access_settings")
        self._admin(handle)
        self.puts.append((handle, settings))
        self.access[handle] = settings

    async def lock(self, handle: str, reason: str) -> None:
        await self._enter("lock")
        self.store.locked[handle] = True
        self.locks.setdefault(handle, []).append(
            LockEvent("LOCK", "jsmith", None, reason, 1_800_000_000)
        )

    async def unlock(self, handle: str, reason: str) -> None:
        await self._enter("unlock")
        self.store.locked[handle] = False
        self.locks.setdefault(handle, []).append(
            LockEvent("UNLOCK", "jsmith", None, reason, 1_800_000_100)
        )

    async def lock_history(self, handle: str) -> list[LockEvent]:
        await self._enter("lock_history")
        return list(self.locks.get(handle, []))

    async def reviewers(self) -> list[str]:
        await self._enter("reviewers")
        return list(self.reviewer_ids)

    async def request_release(self, handle: str, approver_id: str, notes: str) -> str:
        await self._enter("request_release")
        self.releases.append((handle, approver_id, notes))
        item = self.store.items[handle]
        item.update(release_status="PENDING", release_approver=approver_id)
        item["release_timestamp"] = 1_800_000_000
        return "requested"

    async def action_release(self, handle: str, *, approve: bool, notes: str) -> str:
        await self._enter("action_release")
        self.actions.append((handle, approve, notes))
        item = self.store.items[handle]
        item["release_status"] = "RELEASED" if approve else "NOT_RELEASED"
        return "done"

    async def review_queue(
        self, reviewer_id: str, release_status: str | None = "PENDING"
    ) -> list[DatasetRecord]:
        await self._enter("review_queue")
        return [await self.store.fetch_dataset(handle) for handle in self.queue]

    async def validate_metadata(self, collection_format: CollectionFormat) -> None:
        await self._enter("validate_metadata")
        if self.invalid is not None:
            raise api_errors.InvalidRequestError(
                f"validate_metadata: {self.invalid}: Input should be a valid URL"
            )

    async def whoami(self) -> Identity:
        await self._enter("whoami")
        return self.identity

    async def linked_person(self, username: str) -> str | None:
        await self._enter("linked_person")
        return self.links.get(username)


def describe(store: FakeDataStore, handle: str, **fields: Any) -> None:
    """Set list-visible fields of a fake dataset: ``owner``, ``keywords``, ``user_metadata``."""
    item = store.items[handle]
    info = item["collection_format"]["dataset_info"]
    if "owner" in fields:
        item["owner_username"] = fields["owner"]
    if "keywords" in fields:
        info["keywords"] = fields["keywords"]
    if "user_metadata" in fields:
        info["user_metadata"] = fields["user_metadata"]
        item["user_metadata"] = fields["user_metadata"]
