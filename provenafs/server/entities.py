"""The registry API beyond datasets: entity, agent and activity items at Provena's paths.

``EntityRegistry`` creates, fetches and lists models, dataset templates, model run workflow
templates, studies, people and organisations, and fetches the activities other services record
(model runs, Create and Version activities), all with the registry's rules
(``registry-api/helpers/action_helpers.py``): a handle per item, access settings (owner gets
every role of the item type, ``general`` defaults to ``metadata-read``), an unlocked lock, history
entry 0 ``Initial record creation``, a linked Person for the item types that need one, and a
Create activity job for the provenance-versioned types; it also reads an item's access settings
(the auth API's link rule and the dataset routes of :mod:`dataset_access` use that). Answers
follow the registry's quirks: an unknown id on ``fetch`` is 200 with ``status.success: false``,
role failures are 401, a wrong-subtype id on the auth routes is 400.

``registry_router`` serves them; every other action of the real registry on these paths answers
501 naming what is not served. This module must not talk to S3, must not import from the mount
side, and reads the registry only through ``Registry``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from provenafs.server.access import AccessSettings
from provenafs.server.app import AnyUser, Reader, Writer
from provenafs.server.datastore import LINK_REQUIRED, Caller, DataStoreError
from provenafs.server.jobs import JobStore
from provenafs.server.models import ItemDataset
from provenafs.server.registry import (
    InvalidPaginationKey,
    Registry,
    RegistryError,
)
from provenafs.server.registry_models import (
    DATASET_ROLES,
    ENTITY_ROLES,
    AccessSettingsModel,
    DomainInfo,
    ItemCategory,
    ItemSubType,
    ModelRunWorkflowTemplateDomainInfo,
    PersonDomainInfo,
    QueryRecordTypes,
    RecordType,
    SeededItem,
    SubtypeListRequest,
    item_model,
)

__all__ = [
    "DATASET_ROUTE",
    "FETCH_ROLES",
    "ITEM_ROUTES",
    "LINK_REQUIRED",
    "ROUTE_BY_SUBTYPE",
    "EntityRegistry",
    "FetchOutcome",
    "ItemRoute",
    "invalid_body",
    "registry_router",
]

FETCH_ROLES = frozenset({"metadata-read", "metadata-write", "admin"})


@dataclasses.dataclass(frozen=True)
class ItemRoute:
    """One item type of the registry API (a ``RouteConfig`` of ``registry-api/main.py``)."""

    path: str
    category: ItemCategory
    subtype: ItemSubType
    creatable: bool  # STANDARD_ROUTE_ACTIONS (others are read-only or proxy-only)
    needs_link: bool  # enforce_username_person_link
    records_creation: bool  # provenance_enabled_versioning: a Create activity, versioning info
    roles: tuple[str, ...] = ENTITY_ROLES


ITEM_ROUTES: tuple[ItemRoute, ...] = (
    ItemRoute(
        "/registry/agent/organisation",
        ItemCategory.AGENT,
        ItemSubType.ORGANISATION,
        creatable=True,
        needs_link=False,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/agent/person",
        ItemCategory.AGENT,
        ItemSubType.PERSON,
        creatable=True,
        needs_link=False,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/entity/model",
        ItemCategory.ENTITY,
        ItemSubType.MODEL,
        creatable=True,
        needs_link=True,
        records_creation=True,
    ),
    ItemRoute(
        "/registry/entity/model_run_workflow",
        ItemCategory.ENTITY,
        ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE,
        creatable=True,
        needs_link=True,
        records_creation=True,
    ),
    ItemRoute(
        "/registry/entity/dataset_template",
        ItemCategory.ENTITY,
        ItemSubType.DATASET_TEMPLATE,
        creatable=True,
        needs_link=True,
        records_creation=True,
    ),
    ItemRoute(
        "/registry/activity/study",
        ItemCategory.ACTIVITY,
        ItemSubType.STUDY,
        creatable=True,
        needs_link=True,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/activity/create",
        ItemCategory.ACTIVITY,
        ItemSubType.CREATE,
        creatable=False,
        needs_link=True,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/activity/version",
        ItemCategory.ACTIVITY,
        ItemSubType.VERSION,
        creatable=False,
        needs_link=True,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/activity/model_run",
        ItemCategory.ACTIVITY,
        ItemSubType.MODEL_RUN,
        creatable=False,
        needs_link=False,
        records_creation=False,
    ),
    ItemRoute(
        "/registry/entity/dataset",
        ItemCategory.ENTITY,
        ItemSubType.DATASET,
        creatable=False,
        needs_link=True,
        records_creation=True,
        roles=DATASET_ROLES,
    ),
)
ROUTE_BY_SUBTYPE = {route.subtype: route for route in ITEM_ROUTES}

# Every action path of the real registry (``RegistryRouteActions.py``): those not served here
# answer 501; any other path stays a 404, as it is in Provena.
_SHARED_ACTIONS = (
    ("DELETE", "/delete"), ("GET", "/fetch"), ("GET", "/proxy/fetch"), ("POST", "/list"),
    ("GET", "/schema"), ("GET", "/ui_schema"), ("POST", "/validate"),
    ("GET", "/auth/evaluate"), ("GET", "/auth/configuration"), ("PUT", "/auth/configuration"),
    ("GET", "/auth/roles"), ("PUT", "/locks/lock"), ("PUT", "/locks/unlock"),
    ("GET", "/locks/history"), ("GET", "/locks/locked"),
)  # fmt: skip
_EDIT_ACTIONS = (("POST", "/seed"), ("PUT", "/update"), ("POST", "/create"), ("PUT", "/revert"))
_PROXY_ACTIONS = (
    ("POST", "/proxy/seed"), ("POST", "/proxy/create"), ("PUT", "/proxy/update"),
    ("PUT", "/proxy/revert"),
)  # fmt: skip
_GENERAL_ACTIONS = (
    ("POST", "/list"), ("GET", "/proxy/fetch"), ("DELETE", "/delete"), ("GET", "/about/version"),
)  # fmt: skip


def _real_actions(route: ItemRoute) -> tuple[tuple[str, str], ...]:
    proxied = route.subtype in (ItemSubType.DATASET, ItemSubType.MODEL_RUN)
    actions = list(_SHARED_ACTIONS)
    if route.creatable:
        actions += _EDIT_ACTIONS
    if proxied:
        actions += _PROXY_ACTIONS
    if route.records_creation:
        actions.append(("POST", "/proxy/version" if proxied else "/version"))
    return tuple(actions)


DATASET_ROUTE = ROUTE_BY_SUBTYPE[ItemSubType.DATASET]


def _now() -> int:
    return int(time.time())


def _key_error(item_id: str) -> str:
    """``str(KeyError(...))`` of the registry's missing-item lookup (the repr of its text)."""
    return repr(f"Failed to find item. Is the ID ('{item_id}') correct and in the database?")


def _without_nulls(value: Any) -> Any:
    """The registry stores items with ``exclude_none``; raw reads come back without nulls."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _model_of(route: ItemRoute) -> type[BaseModel]:
    return ItemDataset if route.subtype == ItemSubType.DATASET else item_model(route.subtype)[0]


@dataclasses.dataclass(frozen=True)
class FetchOutcome:
    """A registry typed fetch (``GenericFetchResponse``) before serialisation."""

    success: bool
    details: str
    item: dict[str, Any] | None = None
    roles: list[str] | None = None
    locked: bool | None = None
    item_is_seed: bool | None = None

    def response(self) -> dict[str, Any]:
        return {
            "status": {"success": self.success, "details": self.details},
            "item": self.item,
            "roles": self.roles,
            "locked": self.locked,
            "item_is_seed": self.item_is_seed,
        }


class EntityRegistry:
    """The registry's item logic for every type in :data:`ITEM_ROUTES`."""

    def __init__(self, registry: Registry, jobs: JobStore) -> None:
        self.registry = registry
        self.jobs = jobs

    # ----------------------------------------------------------------- access

    def roles(self, item_id: str, caller: Caller, available: Sequence[str]) -> list[str]:
        """``describe_access_helper``: the caller's roles on the item, limited to *available*."""
        try:
            granted = set(self.registry.item_roles(item_id, caller.username, caller.roles))
        except RegistryError:
            return []
        return [role for role in available if role in granted]

    def linked_person(self, caller: Caller) -> str:
        """The caller's Person, or the registry's 400 for an unlinked user."""
        person = self.registry.linked_person(caller.username)
        if person is None:
            raise DataStoreError(400, LINK_REQUIRED)
        return person

    def document(self, item_id: str) -> dict[str, Any] | None:
        with self.registry.reading() as db:
            return self.registry.item_document(db, item_id)

    # ----------------------------------------------------------------- fetch and list

    def fetch(
        self, route: ItemRoute, item_id: str, caller: Caller, *, seed_allowed: bool = False
    ) -> FetchOutcome:
        """``fetch_helper`` of the route's type, as *caller* sees it (raises 401)."""
        if item_id == "":
            return FetchOutcome(False, "Value error. Details ID cannot be empty.")
        raw = self.document(item_id)
        if raw is None:
            return FetchOutcome(
                False,
                f"Could not find the given key ({item_id}) in the registry."
                f" Details {_key_error(item_id)}.",
            )
        roles = self.roles(item_id, caller, route.roles)
        if FETCH_ROLES.isdisjoint(roles):
            raise DataStoreError(401, "You are not authorised to fetch this item.")
        seed = raw.get("record_type") == RecordType.SEED_ITEM
        try:
            parsed: BaseModel = (SeededItem if seed else _model_of(route)).model_validate(raw)
        except ValidationError as exc:
            return FetchOutcome(
                False,
                f"The record was found but could not parsed as an appropriate type: Error {exc}",
            )
        if seed and not seed_allowed:
            return FetchOutcome(
                False, "A valid seed item was found, but seed_allowed was set to false."
            )
        if raw.get("item_subtype") != route.subtype or raw.get("item_category") != route.category:
            raise DataStoreError(
                400,
                f"Item with id {item_id} did not have the correct category or subtype for the"
                " specified item type.",
            )
        return FetchOutcome(
            True,
            f"Successfully retrieved {'seed' if seed else 'complete'} item and parsed into"
            " current data model.",
            item=parsed.model_dump(mode="json"),
            roles=roles,
            locked=self.registry.is_locked(item_id),
            item_is_seed=seed,
        )

    def general_fetch(self, item_id: str, caller: Caller) -> dict[str, Any]:
        """``/registry/general/fetch``: the raw stored item (no nulls) of any type."""
        if item_id == "":
            raise DataStoreError(500, "Internal server error.")
        raw = self.document(item_id)
        if raw is None:
            return {
                "status": {
                    "success": False,
                    "details": "The id you specified was not available in the registry, error:"
                    f" {_key_error(item_id)}.",
                },
                "item": None,
            }
        if FETCH_ROLES.isdisjoint(self.roles(item_id, caller, sorted(FETCH_ROLES))):
            raise DataStoreError(401, "You are not authorised to fetch this item.")
        return {
            "status": {
                "success": True,
                "details": "Successfully retrieved item from the registry.",
            },
            "item": _without_nulls(raw),
        }

    def list_items(
        self, route: ItemRoute, request: SubtypeListRequest, caller: Caller
    ) -> dict[str, Any]:
        """``list_items`` + ``item_list_validate_and_filter_helper`` of the route's type."""
        sort = request.sort_by
        wanted = request.filter_by.record_type if request.filter_by else None
        record_types = {
            QueryRecordTypes.ALL: ("COMPLETE_ITEM", "SEED_ITEM"),
            QueryRecordTypes.SEED_ONLY: ("SEED_ITEM",),
        }.get(wanted or QueryRecordTypes.COMPLETE_ONLY, ("COMPLETE_ITEM",))
        try:
            page = self.registry.item_page(
                route.subtype.value,
                sort=sort,
                pagination_key=request.pagination_key,
                page_size=request.page_size,
                record_types=record_types,
            )
        except InvalidPaginationKey as exc:
            raise DataStoreError(400, str(exc)) from None
        visible = [
            doc
            for doc in page.documents
            if not FETCH_ROLES.isdisjoint(self.roles(str(doc["id"]), caller, route.roles))
        ]
        items: list[dict[str, Any]] = []
        seeds: list[dict[str, Any]] = []
        unparsable: list[dict[str, Any]] = []
        for doc in visible:
            seed = doc.get("record_type") == RecordType.SEED_ITEM
            try:
                parsed = (SeededItem if seed else _model_of(route)).model_validate(doc)
            except ValidationError:
                unparsable.append(doc)
                continue
            (seeds if seed else items).append(parsed.model_dump(mode="json"))
        return {
            "status": {
                "success": not unparsable,
                "details": "Successfully listed items."
                if not unparsable
                else " WARNING at least one unparsable entity exists in the registry.",
            },
            "items": items,
            "seed_items": seeds,
            "unparsable_items": unparsable,
            "total_item_count": len(visible),
            "complete_item_count": len(items),
            "seed_item_count": len(seeds),
            "unparsable_item_count": len(unparsable),
            "not_authorised_count": len(page.documents) - len(visible),
            "pagination_key": page.pagination_key,
        }

    # ----------------------------------------------------------------- create

    def _validate_reference(self, target: str, item_id: str, subtype: ItemSubType) -> None:
        raw = self.document(item_id)
        if raw is None:
            raise ValueError(
                f"Could not find {target} with ID {item_id} in registry. Please ensure it exists."
            )
        if raw.get("record_type") == RecordType.SEED_ITEM:
            raise ValueError(
                f"Seed items ({item_id}) are not allowed to be used in this type. Use complete"
                " items only"
            )
        if raw.get("item_subtype") != subtype:
            raise ValueError(
                f"Mismatch between expected item types. Please ensure {item_id} refers to a"
                f" {subtype.value}."
            )

    def _custom_validation(self, route: ItemRoute, domain: DomainInfo) -> None:
        """``custom_type_validators`` of the registry (raises ValueError)."""
        if isinstance(domain, ModelRunWorkflowTemplateDomainInfo):
            self._validate_reference("Software ID", domain.software_id, ItemSubType.MODEL)
            for template in [*domain.input_templates, *domain.output_templates]:
                self._validate_reference(
                    "Dataset Template", template.template_id, ItemSubType.DATASET_TEMPLATE
                )
        if isinstance(domain, PersonDomainInfo) and not domain.ethics_approved:
            raise ValueError(
                "Please ensure mandatory ethics consent is obtained before proceeding with"
                " registration or updating of person."
            )

    def create(self, route: ItemRoute, domain: DomainInfo, caller: Caller) -> dict[str, Any]:
        """``create_item``: validate, mint, seed access and lock, spin off the Create job."""
        person = None
        if route.needs_link or route.records_creation:
            person = self.linked_person(caller)
        try:
            self._custom_validation(route, domain)
        except ValueError as exc:
            return {
                "status": {"success": False, "details": f"Validation Error: {exc}"},
                "created_item": None,
                "register_create_activity_session_id": None,
            }
        if caller.email is None:
            raise DataStoreError(
                400, "User does not have an email address. Item creation not possible."
            )
        model = item_model(route.subtype)[0]
        with self.registry.transaction() as db:
            handle = self.registry.mint_handle(db)
            now = _now()
            item = model.model_validate(
                {
                    **domain.model_dump(),
                    "history": [
                        {
                            "id": 0,
                            "timestamp": now,
                            "reason": "Initial record creation",
                            "username": caller.username,
                            "item": domain.model_dump(),
                        }
                    ],
                    "id": handle,
                    "owner_username": caller.username,
                    "created_timestamp": now,
                    "updated_timestamp": now,
                    "versioning_info": {"version": 1} if route.records_creation else None,
                }
            )
            document = item.model_dump(mode="json")
            session_id = None
            if route.records_creation and person is not None:
                session_id = self.record_creation(db, caller.username, handle, route, person)
                document["workflow_links"] = {
                    "create_activity_workflow_id": session_id,
                    "version_activity_workflow_id": None,
                }
            self.registry.write_item(
                db, document, access=AccessSettings(caller.username, ("metadata-read",), {})
            )
        return {
            "status": {
                "success": True,
                "details": "Successfully uploaded the complete item. Return item includes"
                " handle id.",
            },
            "created_item": document,
            "register_create_activity_session_id": session_id,
        }

    def record_creation(
        self, db: sqlite3.Connection, username: str, item_id: str, route: ItemRoute, person: str
    ) -> str:
        """Queue the registry's ``REGISTER_CREATE_ACTIVITY`` job; returns its session id."""
        return self.jobs.submit(
            db,
            username=username,
            job_type="REGISTRY",
            job_sub_type="REGISTER_CREATE_ACTIVITY",
            payload={
                "created_item_id": item_id,
                "created_item_subtype": route.subtype.value,
                "linked_person_id": person,
            },
        )

    def new_activity(
        self,
        db: sqlite3.Connection,
        subtype: ItemSubType,
        domain: DomainInfo,
        username: str,
    ) -> str:
        """Store a Create or Version activity item (the registry job's step) and return its id."""
        handle = self.registry.mint_handle(db)
        now = _now()
        document = (
            item_model(subtype)[0]
            .model_validate(
                {
                    **domain.model_dump(),
                    "history": [
                        {
                            "id": 0,
                            "timestamp": now,
                            "reason": "Initial record creation",
                            "username": username,
                            "item": domain.model_dump(),
                        }
                    ],
                    "id": handle,
                    "owner_username": username,
                    "created_timestamp": now,
                    "updated_timestamp": now,
                }
            )
            .model_dump(mode="json")
        )
        self.registry.write_item(
            db, document, access=AccessSettings(username, ("metadata-read",), {})
        )
        return handle

    # ----------------------------------------------------------------- dataset access settings

    def raw(self, item_id: str) -> dict[str, Any]:
        raw = self.document(item_id)
        if raw is None:
            raise DataStoreError(
                400,
                f"Item (id={item_id!r}) was not present in the registry. Are you sure the id is"
                " correct?",
            )
        return raw

    @staticmethod
    def check_subtype(item_id: str, raw: Mapping[str, Any], route: ItemRoute) -> None:
        """``check_raw_item_subtype``: 400 when the id names another item type."""
        if raw.get("item_subtype") == route.subtype:
            return
        seed = raw.get("record_type") == RecordType.SEED_ITEM
        try:
            (SeededItem if seed else _model_of(route)).model_validate(raw)
        except ValidationError as exc:
            raise DataStoreError(
                400,
                f"Failed to parse item with the associated route's subtype model of"
                f" {route.subtype.value}. Are you using the correct endpoint route for id"
                f" {item_id} pointing to an item subtype of {raw.get('item_subtype')}?"
                f" Error: {exc}.",
            ) from None
        raise DataStoreError(
            400,
            f"Fetched item with handle {item_id} has item subtype of {raw.get('item_subtype')}"
            f" but expected {route.subtype.value}. Are you using the correct endpoint route for"
            f" {raw.get('item_subtype')}'s?.",
        )

    def access_settings(
        self, item_id: str, caller: Caller, route: ItemRoute = DATASET_ROUTE
    ) -> AccessSettingsModel:
        """``GET …/auth/configuration``: needs item ``admin``; 400 for another item type."""
        raw = self.raw(item_id)
        if "admin" not in self.roles(item_id, caller, route.roles):
            raise DataStoreError(
                401,
                f"You are not authorised to view the access configuration for item id={item_id!r}.",
            )
        self.check_subtype(item_id, raw, route)
        access = self.registry.get_access(item_id)
        return AccessSettingsModel(
            owner=access.owner,
            general=list(access.general),
            groups={group: list(roles) for group, roles in access.groups.items()},
        )


# --------------------------------------------------------------------------- routes


def _not_served(method: str, path: str) -> DataStoreError:
    return DataStoreError(501, f"The local data store does not serve {method} {path}.")


def registry_router(entities: EntityRegistry, *served: APIRouter) -> APIRouter:
    """The registry API routes for the item types of :data:`ITEM_ROUTES`, the generic fetch,
    the routes of *served* (included first), and 501 for every other real registry action."""
    router = APIRouter()
    for included in served:
        router.include_router(included)

    for route in ITEM_ROUTES:
        _add_item_routes(router, entities, route)

    @router.get("/registry/general/fetch")
    def general_fetch(id: str, caller: Reader) -> dict[str, Any]:
        return entities.general_fetch(id, caller)

    unserved = [(m, "/registry/general" + a) for m, a in _GENERAL_ACTIONS]
    for route in ITEM_ROUTES:
        unserved += [(method, route.path + action) for method, action in _real_actions(route)]
    for method, path in unserved:  # routes served above match first

        @router.api_route(path, methods=[method], include_in_schema=False)
        def not_served(request: Request, caller: AnyUser) -> None:
            raise _not_served(request.method, request.url.path)

    return router


def _add_item_routes(router: APIRouter, entities: EntityRegistry, route: ItemRoute) -> None:
    @router.get(f"{route.path}/fetch")
    def fetch(id: str, caller: Reader, seed_allowed: bool = False) -> dict[str, Any]:
        return entities.fetch(route, id, caller, seed_allowed=seed_allowed).response()

    @router.post(f"{route.path}/list")
    def list_items(request: SubtypeListRequest, caller: Reader) -> dict[str, Any]:
        return entities.list_items(route, request, caller)

    if route.creatable:
        domain_type = item_model(route.subtype)[1]

        @router.post(f"{route.path}/create")
        def create(body: Annotated[dict[str, Any], Body()], caller: Writer) -> dict[str, Any]:
            try:
                domain = domain_type.model_validate(body)
            except ValidationError as exc:
                raise invalid_body(exc) from None
            return entities.create(route, domain, caller)


def invalid_body(exc: ValidationError) -> RequestValidationError:
    """FastAPI's 422 for a body checked after parsing (a type chosen by the route)."""
    return RequestValidationError(
        [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
    )
