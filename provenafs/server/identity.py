"""The auth API's identity routes: the username → Person link service and the user group views.

Provena links each Keycloak username to one Person item (``auth-api/routes/identity/user.py``):
anyone with a valid token may look a username up; a user may link themselves once, only to a
Person they own (the auth API asks the registry for the Person's access settings with the user's
token, so the registry's own answers come back wrapped: 401 when it refuses, 500 for anything
else, e.g. an unknown id). Changing a link is an admin task (``provenafs serve`` has no route for
it). The group routes (``auth-api/routes/groups/user.py``) show the local groups the registry
evaluates access with.

All routes need a valid token and no realm role (``user_general_dependency``). This module must
not import from the mount side.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from provenafs.server.access import REALM_READ
from provenafs.server.app import WRONG_REALM_ROLE, AnyUser
from provenafs.server.datastore import Caller, DataStoreError
from provenafs.server.entities import ROUTE_BY_SUBTYPE, EntityRegistry
from provenafs.server.registry_models import (
    AddLinkRequest,
    ItemSubType,
    UserLinkUserLookupResponse,
)

__all__ = ["identity_router", "link_problem"]

_PERSON = ROUTE_BY_SUBTYPE[ItemSubType.PERSON]


def link_problem(entities: EntityRegistry, caller: Caller, person_id: str) -> DataStoreError | None:
    """Why *caller* may not link to *person_id* (the assign route's checks), or None."""
    existing = entities.registry.linked_person(caller.username)
    if existing is not None:
        return DataStoreError(
            400,
            f"The username {caller.username} already has a person ID assigned, ID {existing}."
            " You cannot deassign a Person ID without contacting an admin.",
        )
    try:
        if REALM_READ not in caller.roles:  # the registry route's own realm check
            raise DataStoreError(401, WRONG_REALM_ROLE)
        settings = entities.access_settings(person_id, caller, _PERSON)
    except DataStoreError as refused:
        if refused.status == 401:
            return DataStoreError(
                401,
                "Registry did not grant access to the auth configuration for this person."
                f" Details: {refused.detail}.",
            )
        return DataStoreError(
            500,
            "Unexpected non 200 status code in Registry person auth configuration fetch. Status"
            f" code: {refused.status}. Details: {refused.detail}.",
        )
    if settings.owner != caller.username:
        return DataStoreError(
            401,
            "You are not authorised to assign your identity to a Person in the Registry which"
            f" you do not own. Username: {caller.username}. Person ID: {person_id}.",
        )
    return None


def _group(group_id: str) -> dict[str, Any]:
    return {
        "id": group_id,
        "display_name": group_id,
        "description": f"Local group {group_id}",
        "default_data_store_access": None,
    }


def identity_router(entities: EntityRegistry) -> APIRouter:
    """``/link/user/*`` and ``/groups/user/*`` of Provena's auth API."""
    router = APIRouter()
    registry = entities.registry

    @router.get("/link/user/lookup", response_model=UserLinkUserLookupResponse)
    def lookup(caller: AnyUser, username: str | None = None) -> UserLinkUserLookupResponse:
        person = registry.linked_person(username or caller.username)
        return UserLinkUserLookupResponse(person_id=person, success=person is not None)

    @router.post("/link/user/assign")
    def assign(request: AddLinkRequest, caller: AnyUser) -> dict[str, Any]:
        problem = link_problem(entities, caller, request.person_id)
        if problem is not None:
            raise problem
        with registry.transaction() as db:
            registry.link_person(db, caller.username, request.person_id)
        return {}

    @router.post("/link/user/validate")
    def validate(request: AddLinkRequest, caller: AnyUser) -> dict[str, Any]:
        problem = link_problem(entities, caller, request.person_id)
        if problem is not None and problem.status != 500:
            return {"status": {"success": False, "details": problem.detail}}
        if problem is not None:
            raise problem
        return {
            "status": {
                "success": True,
                "details": "This person ID could be linked to the specified username."
                " Validation successful.",
            }
        }

    @router.get("/groups/user/list_groups")
    def list_groups(caller: AnyUser) -> dict[str, Any]:
        groups = [_group(group) for group in registry.list_groups()]
        return {
            "status": {"success": True, "details": f"Retrieved {len(groups)} groups successfully"},
            "groups": groups,
        }

    @router.get("/groups/user/list_user_membership")
    def list_user_membership(caller: AnyUser) -> dict[str, Any]:
        groups = [
            _group(group)
            for group, members in registry.list_groups().items()
            if caller.username in members
        ]
        return {
            "status": {
                "success": True,
                "details": f"Member is part of {len(groups)} groups as listed.",
            },
            "groups": groups,
        }

    @router.get("/groups/user/describe_group")
    def describe_group(id: str, caller: AnyUser) -> dict[str, Any]:
        if id not in registry.list_groups():
            return {
                "status": {"success": False, "details": f"No group with id {id} was found."},
                "group": None,
            }
        return {
            "status": {"success": True, "details": "Group metadata retrieved."},
            "group": _group(id),
        }

    @router.get("/groups/user/list_members")
    def list_members(id: str, caller: AnyUser) -> dict[str, Any]:
        members = registry.list_groups().get(id)
        if members is None:
            return {
                "status": {"success": False, "details": f"No group with id {id} was found."},
                "group": None,
            }
        if caller.username not in members:
            return {
                "status": {
                    "success": False,
                    "details": f"You are not a member of group with id {id}.",
                },
                "group": None,
            }
        users = []
        for member in members:
            account = registry.get_user(member)
            users.append(
                {
                    "username": member,
                    "email": account.email if account else None,
                    "first_name": None,
                    "last_name": None,
                }
            )
        return {
            "status": {"success": True, "details": f"Group with {len(users)} returned."},
            "group": {**_group(id), "users": users},
        }

    @router.get("/groups/user/check_membership")
    def check_membership(group_id: str, caller: AnyUser) -> dict[str, Any]:
        members = registry.list_groups().get(group_id)
        if members is None:
            return {
                "status": {"success": False, "details": f"No group with id {group_id} was found."},
                "is_member": None,
            }
        return {
            "status": {"success": True, "details": "Group was found and membership determined."},
            "is_member": caller.username in members,
        }

    return router
