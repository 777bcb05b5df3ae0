"""What the core needs from Provena's services beyond the data store: one Protocol.

``api.registry.RegistryClient`` provides it (search, any registry item, access settings, locks,
release and review, metadata validation, the caller's identity); the daemon wires it in, and
unit tests pass a fake. A core built without it (``None``) shows the facets of the dataset list
only: no ``search/``, ``reviews/`` or dataset views. This module holds no behaviour.
"""

from __future__ import annotations

from typing import Protocol

from provenafs.api.account import Identity
from provenafs.api.models import CollectionFormat, DatasetRecord, RegistryItem
from provenafs.api.registry import AccessSettings, LockEvent, SearchHit

__all__ = ["RegistryServices"]


class RegistryServices(Protocol):
    """The part of ``RegistryClient`` the core uses."""

    async def search_datasets(self, query: str, limit: int = 25) -> list[SearchHit]: ...

    async def fetch_item(self, item_id: str) -> RegistryItem: ...

    async def access_settings(self, handle: str) -> AccessSettings: ...

    async def put_access_settings(self, handle: str, settings: AccessSettings) -> None: ...

    async def lock(self, handle: str, reason: str) -> None: ...

    async def unlock(self, handle: str, reason: str) -> None: ...

    async def lock_history(self, handle: str) -> list[LockEvent]: ...

    async def reviewers(self) -> list[str]: ...

    async def request_release(self, handle: str, approver_id: str, notes: str) -> str: ...

    async def action_release(self, handle: str, *, approve: bool, notes: str) -> str: ...

    async def review_queue(
        self, reviewer_id: str, release_status: str | None = "PENDING"
    ) -> list[DatasetRecord]: ...

    async def validate_metadata(self, collection_format: CollectionFormat) -> None: ...

    async def whoami(self) -> Identity: ...

    async def linked_person(self, username: str) -> str | None: ...
