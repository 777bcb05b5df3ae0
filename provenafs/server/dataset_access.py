"""The registry's dataset routes the data store has no twin for: access, locks, review queue.

``GET|PUT /registry/entity/dataset/auth/configuration`` (item ``admin`` only; the owner cannot
change; only dataset roles), ``…/auth/evaluate``, ``…/auth/roles``, ``…/locks/lock|unlock``
(item ``admin``; locking twice is 400), ``…/locks/history|locked`` and the reviewer's queue
``POST …/user/releases`` (403 unless the filter names the caller's own Person), with the
registry's texts (``registry-api/helpers/action_helpers.py``, ``routes/dataset/dataset.py``).

This module must not talk to S3 nor import from the mount side; it reads and writes the
registry only through ``Registry`` and :class:`EntityRegistry`.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Body

from provenafs.server.app import Reader, Writer
from provenafs.server.datastore import Caller, DataStoreError
from provenafs.server.entities import DATASET_ROUTE, FETCH_ROLES, EntityRegistry
from provenafs.server.models import ItemDataset, Status, StatusResponse
from provenafs.server.registry import InvalidPaginationKey, RegistryError
from provenafs.server.registry_models import (
    DATASET_ROLES,
    ROLE_DESCRIPTIONS,
    AccessSettingsModel,
    AuthRolesResponse,
    DescribeAccessResponse,
    ListUserReviewingDatasetsRequest,
    LockChangeRequest,
    LockEventModel,
    LockHistoryResponse,
    LockStatusResponse,
)

__all__ = ["DatasetAccess", "dataset_access_router"]


class DatasetAccess:
    """Access settings, locks and release queues of datasets, as the registry keeps them."""

    def __init__(self, entities: EntityRegistry) -> None:
        self.entities = entities
        self.registry = entities.registry

    def put_access_settings(
        self, item_id: str, settings: AccessSettingsModel, caller: Caller
    ) -> StatusResponse:
        raw = self.entities.raw(item_id)
        if "admin" not in self.entities.roles(item_id, caller, DATASET_ROLES):
            raise DataStoreError(
                401,
                f"You are not authorised to edit the access configuration for item id={item_id!r}.",
            )
        self.entities.check_subtype(item_id, raw, DATASET_ROUTE)
        current = self.registry.get_access(item_id)
        if settings.owner != current.owner:
            raise DataStoreError(
                400,
                "The owner of a resource cannot be changed. Old: "
                f"{current.owner}, New: {settings.owner}.",
            )
        proposed = set(settings.general).union(*settings.groups.values())
        invalid = proposed - set(DATASET_ROLES)
        if invalid:
            raise DataStoreError(
                400,
                "Inappropriate roles are being added to the role configuration - ensure these"
                " roles are available for the resource type. Invalid roles:"
                f" {invalid}. Available roles: {set(DATASET_ROLES)}.",
            )
        try:
            self.registry.set_access(item_id, general=settings.general, groups=settings.groups)
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        return StatusResponse(
            status=Status(
                success=True,
                details="Successfully updated the authorisation configuration for item"
                f" id={item_id!r}.",
            )
        )

    def evaluate(self, item_id: str, caller: Caller) -> DescribeAccessResponse:
        self.entities.raw(item_id)
        return DescribeAccessResponse(roles=self.entities.roles(item_id, caller, DATASET_ROLES))

    # ----------------------------------------------------------------- dataset locks

    def _lock_target(self, item_id: str) -> None:
        """Every item has a lock record from its creation: an unknown id has none."""
        if self.entities.document(item_id) is None:
            raise DataStoreError(
                400,
                f"Failed to retrieve ID {item_id} from the lock table, are you sure it exists?",
            )

    def change_lock(self, request: LockChangeRequest, caller: Caller, *, lock: bool) -> Status:
        self._lock_target(request.id)
        if "admin" not in self.entities.roles(request.id, caller, DATASET_ROLES):
            raise DataStoreError(401, "You are not authorised to lock this item.")
        self.entities.check_subtype(request.id, self.entities.raw(request.id), DATASET_ROUTE)
        if self.registry.is_locked(request.id) == lock:
            raise DataStoreError(
                400,
                "Resource is already locked."
                if lock
                else "Cannot unlock already unlocked resource.",
            )
        try:
            self.registry.set_locked(
                request.id,
                lock,
                username=caller.username,
                email=caller.email,
                reason=request.reason,
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        return Status(
            success=True,
            details="Resource locked successfully." if lock else "Resource unlocked successfully.",
        )

    def lock_history(self, item_id: str, caller: Caller) -> LockHistoryResponse:
        self._lock_target(item_id)
        if FETCH_ROLES.isdisjoint(self.entities.roles(item_id, caller, DATASET_ROLES)):
            raise DataStoreError(
                401, "You are not authorised to view the lock history of this item."
            )
        history = [
            LockEventModel.model_validate(dataclasses.asdict(event))
            for event in self.registry.lock_history(item_id)
        ]
        return LockHistoryResponse(
            status=Status(success=True, details="Successfully fetched the lock history"),
            history=history,
        )

    def locked(self, item_id: str, caller: Caller) -> LockStatusResponse:
        self._lock_target(item_id)
        if FETCH_ROLES.isdisjoint(self.entities.roles(item_id, caller, DATASET_ROLES)):
            raise DataStoreError(
                401, "You are not authorised to view the lock history of this item."
            )
        return LockStatusResponse(locked=self.registry.is_locked(item_id))

    # ----------------------------------------------------------------- releases

    def releases(self, request: ListUserReviewingDatasetsRequest, caller: Caller) -> dict[str, Any]:
        """``POST /registry/entity/dataset/user/releases``: the caller's review queue."""
        reviewer = request.filter_by.release_reviewer
        if reviewer is None:
            raise DataStoreError(400, "release reviewer id must be specified inside of filter_by")
        person = self.entities.linked_person(caller)
        if person != reviewer:
            raise DataStoreError(
                403,
                "You can only search for your own dataset releases. User requesting is not the"
                " same as the release reviewer id."
                f' requesting username and ID are "{caller.username}"" and "{person}".'
                f" Reviewer ID filter is {reviewer}.",
            )
        try:
            page = self.registry.datasets_reviewed_by(
                reviewer,
                release_status=request.filter_by.release_status,
                ascending=bool(request.sort_by and request.sort_by.ascending),
                pagination_key=request.pagination_key,
                page_size=request.page_size,
            )
        except InvalidPaginationKey as exc:
            raise DataStoreError(
                400, f"Failed to generate query parameters. Error: {exc}"
            ) from None
        items = [
            ItemDataset.model_validate(doc).model_dump(mode="json")
            for doc in page.documents
            if not FETCH_ROLES.isdisjoint(
                self.entities.roles(str(doc["id"]), caller, DATASET_ROLES)
            )
        ]
        return {
            "status": {
                "success": True,
                "details": "Searched database and returned dataset items matching query.",
            },
            "dataset_items": items,
            "total_dataset_count": len(items),
            "pagination_key": page.pagination_key,
        }


def dataset_access_router(access: DatasetAccess) -> APIRouter:
    """The registry's dataset auth, lock and release routes."""
    router = APIRouter()
    dataset = "/registry/entity/dataset"

    @router.get(f"{dataset}/auth/configuration", response_model=AccessSettingsModel)
    def get_access(id: str, caller: Reader) -> AccessSettingsModel:
        return access.entities.access_settings(id, caller)

    @router.put(f"{dataset}/auth/configuration", response_model=StatusResponse)
    def put_access(
        id: str, settings: Annotated[AccessSettingsModel, Body()], caller: Writer
    ) -> StatusResponse:
        return access.put_access_settings(id, settings, caller)

    @router.get(f"{dataset}/auth/evaluate", response_model=DescribeAccessResponse)
    def evaluate(id: str, caller: Reader) -> DescribeAccessResponse:
        return access.evaluate(id, caller)

    @router.get(f"{dataset}/auth/roles", response_model=AuthRolesResponse)
    def roles(caller: Reader) -> AuthRolesResponse:
        return AuthRolesResponse(roles=[ROLE_DESCRIPTIONS[role] for role in DATASET_ROLES])

    @router.put(f"{dataset}/locks/lock", response_model=StatusResponse)
    def lock(request: LockChangeRequest, caller: Writer) -> StatusResponse:
        return StatusResponse(status=access.change_lock(request, caller, lock=True))

    @router.put(f"{dataset}/locks/unlock", response_model=StatusResponse)
    def unlock(request: LockChangeRequest, caller: Writer) -> StatusResponse:
        return StatusResponse(status=access.change_lock(request, caller, lock=False))

    @router.get(f"{dataset}/locks/history", response_model=LockHistoryResponse)
    def lock_history(id: str, caller: Reader) -> LockHistoryResponse:
        return access.lock_history(id, caller)

    @router.get(f"{dataset}/locks/locked", response_model=LockStatusResponse)
    def locked(id: str, caller: Reader) -> LockStatusResponse:
        return access.locked(id, caller)

    @router.post(f"{dataset}/user/releases")
    def releases(request: ListUserReviewingDatasetsRequest, caller: Reader) -> dict[str, Any]:
        return access.releases(request, caller)

    return router
