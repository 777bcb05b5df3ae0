"""``RegistryClient``: the registry, search and release routes a researcher uses beyond files.

Search (docs/API.md §17), any item by id (§18, ``/registry/general/fetch``), a dataset's access
settings (§22), locks (§21), the release reviewers and requests (§3.10, §20) and the reviewer's
queue, the metadata schema and validation and minting (§3.5, §3.9). Every call goes through
``DataStoreClient.call`` (token, retries and error translation): the data store's own routes on
the data store's client, the others on one client per service at its base URL (``ServiceUrls``;
an unknown one is an ``ApiError`` naming its mount option). Answers are frozen records; JSON
leaves this module only as ``DatasetRecord.document`` and the dataset schema (a JSON schema,
kept whole).

Requests that could act twice (mint, release request and action, lock, unlock) are never
re-sent once they may have left. This module must not log or hold a token, and must not cache
(the callers decide what to keep).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import httpx

from provenafs.api.account import Identity, whoami
from provenafs.api.client import DataStoreClient, parse_dataset_record
from provenafs.api.errors import InvalidRequestError, NotFoundError, UnavailableError
from provenafs.api.identity import linked_person
from provenafs.api.models import CollectionFormat, DatasetRecord, RegistryItem
from provenafs.api.realm import TokenSource
from provenafs.api.service_clients import ServiceClients
from provenafs.api.services import ServiceUrls

__all__ = [
    "DATASET_ROLES",
    "MAX_SEARCH_RESULTS",
    "AccessSettings",
    "LockEvent",
    "MintedDataset",
    "RegistryClient",
    "SearchHit",
]

MAX_SEARCH_RESULTS = 50  # the search API's cap (docs/API.md §17)
_QUEUE_PAGE = 100


@dataclasses.dataclass(frozen=True)
class _Call:
    """One route of a service: its name (for counters and errors), method, path, and whether
    it may be sent again after an answer was lost."""

    service: str | None  # a ServiceUrls key; None: the data store itself
    name: str
    method: str
    path: str
    retry_safe: bool


_DATASET = "/registry/entity/dataset"
_SEARCH = _Call("search_api", "search", "GET", "/search/entity-registry", True)
_GENERAL_FETCH = _Call("registry_api", "general_fetch", "GET", "/registry/general/fetch", True)
_ACCESS = _Call("registry_api", "access_settings", "GET", f"{_DATASET}/auth/configuration", True)
_PUT_ACCESS = _Call(
    "registry_api", "put_access_settings", "PUT", f"{_DATASET}/auth/configuration", True
)
_LOCK = _Call("registry_api", "lock", "PUT", f"{_DATASET}/locks/lock", False)
_UNLOCK = _Call("registry_api", "unlock", "PUT", f"{_DATASET}/locks/unlock", False)
_LOCK_HISTORY = _Call("registry_api", "lock_history", "GET", f"{_DATASET}/locks/history", True)
_QUEUE = _Call("registry_api", "review_queue", "POST", f"{_DATASET}/user/releases", True)
_REVIEWERS = _Call(None, "reviewers", "GET", "/release/sys-reviewers/list", True)
_REQUEST_RELEASE = _Call(None, "request_release", "POST", "/release/approval-request", False)
_ACTION_RELEASE = _Call(None, "action_release", "PUT", "/release/action-approval-request", False)
_VALIDATE = _Call(None, "validate_metadata", "POST", "/metadata/validate-metadata", True)
_MINT = _Call(None, "mint_dataset", "POST", "/register/mint-dataset", False)
# Every role a dataset has, in the registry's order (docs/API.md §8.3).
DATASET_ROLES = (
    "metadata-read",
    "metadata-write",
    "dataset-data-read",
    "dataset-data-write",
    "admin",
)


@dataclasses.dataclass(frozen=True)
class SearchHit:
    id: str
    score: float


@dataclasses.dataclass(frozen=True)
class AccessSettings:
    """Who may do what on a dataset: its owner, roles for everyone, roles per group."""

    owner: str
    general: tuple[str, ...]
    groups: Mapping[str, tuple[str, ...]]

    def by_role(self) -> dict[str, list[str]]:
        """The inverse view: each role and who holds it (``owner:U``, ``general``, ``group:G``).

        The owner holds every role a dataset has (``roles``), so it is named under each.
        """
        holders: dict[str, list[str]] = {}
        for role in self.general:
            holders.setdefault(role, []).append("general")
        for group, roles in sorted(self.groups.items()):
            for role in roles:
                holders.setdefault(role, []).append(f"group:{group}")
        return {role: [f"owner:{self.owner}", *holders.get(role, [])] for role in DATASET_ROLES}


@dataclasses.dataclass(frozen=True)
class LockEvent:
    action: str  # LOCK or UNLOCK
    username: str
    email: str | None
    reason: str
    timestamp: int


@dataclasses.dataclass(frozen=True)
class MintedDataset:
    handle: str
    bucket: str
    path: str  # the S3 prefix, trailing ``/``


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _roles(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(role, str) for role in value):
        raise UnavailableError("access settings: roles are not a list of strings")
    return tuple(value)


def _access_settings(body: Any) -> AccessSettings:
    if not isinstance(body, dict) or not isinstance(body.get("owner"), str):
        raise UnavailableError("access settings: the answer names no owner")
    groups = body.get("groups") or {}
    if not isinstance(groups, dict):
        raise UnavailableError("access settings: groups is not an object")
    return AccessSettings(
        owner=body["owner"],
        general=_roles(body.get("general") or []),
        groups={str(group): _roles(roles) for group, roles in groups.items()},
    )


class RegistryClient:
    """The registry, search and release routes: the data store's client for its own routes,
    and one client per other service at its base URL (same token, retries and errors)."""

    def __init__(
        self,
        datastore: DataStoreClient,
        urls: ServiceUrls,
        tokens: TokenSource,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.datastore = datastore
        self._services = ServiceClients(urls, tokens, timeout=timeout, transport=transport)

    def _service(self, key: str | None) -> DataStoreClient:
        """The data store's client (*key* None) or that of service *key*."""
        return self.datastore if key is None else self._services.client(key)

    async def _send(
        self,
        call: _Call,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Any:
        return await self._service(call.service).call(
            call.method,
            call.path,
            name=call.name,
            retry_safe=call.retry_safe,
            params=params,
            json=json,
        )

    async def aclose(self) -> None:
        """Close the other services' clients (the data store's is its owner's to close)."""
        await self._services.aclose()

    # --- identity ------------------------------------------------------------------------

    async def whoami(self) -> Identity:
        """The caller's username, realm roles and linked Person."""
        return await whoami(self.datastore, self._service("auth_api"))

    async def linked_person(self, username: str) -> str | None:
        """The Person linked to *username* (anyone's link may be looked up)."""
        return await linked_person(self._service("auth_api"), username)

    # --- search --------------------------------------------------------------------------

    async def search_datasets(self, query: str, limit: int = 25) -> list[SearchHit]:
        """Full-text search over datasets, best first (not filtered by permission)."""
        params = {
            "query": query,
            "subtype_filter": "DATASET",
            "record_limit": str(max(1, min(limit, MAX_SEARCH_RESULTS))),
        }
        body = await self._send(_SEARCH, params=params)
        results = body.get("results") if isinstance(body, dict) else None
        hits = []
        for result in results or ():
            if isinstance(result, dict) and isinstance(result.get("id"), str):
                score = result.get("score")
                hits.append(SearchHit(result["id"], float(score) if score is not None else 0.0))
        return hits

    # --- any item ------------------------------------------------------------------------

    async def fetch_item(self, item_id: str) -> RegistryItem:
        """Any item by id (a Person, an organisation, ...); ``NotFoundError`` if unknown."""
        try:
            body = await self._send(_GENERAL_FETCH, params={"id": item_id})
        except InvalidRequestError as exc:  # 200 with success false: no such item
            raise NotFoundError(str(exc)) from None
        item = body.get("item") if isinstance(body, dict) else None
        if not isinstance(item, dict):
            raise NotFoundError(f"general_fetch: no item {item_id}")
        return RegistryItem(
            id=str(item.get("id") or item_id),
            subtype=str(item.get("item_subtype") or ""),
            display_name=str(item.get("display_name") or item_id),
            first_name=_text(item.get("first_name")),
            last_name=_text(item.get("last_name")),
            email=_text(item.get("email")),
            orcid=_text(item.get("orcid")),
            name=_text(item.get("name")),
            ror=_text(item.get("ror")),
        )

    # --- access settings -----------------------------------------------------------------

    async def access_settings(self, handle: str) -> AccessSettings:
        """A dataset's access settings (needs item role ``admin``)."""
        body = await self._send(_ACCESS, params={"id": handle})
        return _access_settings(body)

    async def put_access_settings(self, handle: str, settings: AccessSettings) -> None:
        body = {
            "owner": settings.owner,
            "general": list(settings.general),
            "groups": {group: list(roles) for group, roles in settings.groups.items()},
        }
        await self._send(_PUT_ACCESS, params={"id": handle}, json=body)

    # --- locks ---------------------------------------------------------------------------

    async def lock(self, handle: str, reason: str) -> None:
        await self._send(_LOCK, json={"id": handle, "reason": reason})

    async def unlock(self, handle: str, reason: str) -> None:
        await self._send(_UNLOCK, json={"id": handle, "reason": reason})

    async def lock_history(self, handle: str) -> list[LockEvent]:
        """Lock and unlock events, oldest first."""
        body = await self._send(_LOCK_HISTORY, params={"id": handle})
        events = []
        for raw in (body.get("history") if isinstance(body, dict) else None) or ():
            if not isinstance(raw, dict):
                continue
            timestamp = raw.get("timestamp")
            events.append(
                LockEvent(
                    action=str(raw.get("action_type") or ""),
                    username=str(raw.get("username") or ""),
                    email=_text(raw.get("email")),
                    reason=str(raw.get("reason") or ""),
                    timestamp=timestamp if isinstance(timestamp, int) else 0,
                )
            )
        return events

    # --- release and review ----------------------------------------------------------------

    async def reviewers(self) -> list[str]:
        """The release reviewers' Person ids."""
        body = await self._send(_REVIEWERS)
        if not isinstance(body, list):
            raise UnavailableError("reviewers: the answer is not a list")
        return [str(entry) for entry in body if isinstance(entry, str)]

    async def request_release(self, handle: str, approver_id: str, notes: str) -> str:
        """Ask *approver_id* (a reviewer's Person id) to review *handle*; the answer's text."""
        body = await self._send(
            _REQUEST_RELEASE,
            json={"dataset_id": handle, "approver_id": approver_id, "notes": notes},
        )
        return str(body.get("details") or "") if isinstance(body, dict) else ""

    async def action_release(self, handle: str, *, approve: bool, notes: str) -> str:
        """Approve or reject the pending release of *handle* (only its named reviewer may)."""
        body = await self._send(
            _ACTION_RELEASE, json={"dataset_id": handle, "approve": approve, "notes": notes}
        )
        return str(body.get("details") or "") if isinstance(body, dict) else ""

    async def review_queue(
        self, reviewer_id: str, release_status: str | None = "PENDING"
    ) -> list[DatasetRecord]:
        """Datasets whose release *reviewer_id* (the caller's own Person) is asked to review."""
        records: list[DatasetRecord] = []
        key: Any = None
        seen: list[Any] = []
        while True:
            request = {
                "filter_by": {"release_reviewer": reviewer_id, "release_status": release_status},
                "pagination_key": key,
                "page_size": _QUEUE_PAGE,
            }
            body = await self._send(_QUEUE, json=request)
            items = body.get("dataset_items") if isinstance(body, dict) else None
            for raw in items or ():
                try:
                    records.append(parse_dataset_record(raw, None, None, {"item": raw}))
                except (ValueError, TypeError, KeyError):
                    continue
            key = body.get("pagination_key") if isinstance(body, dict) else None
            if not isinstance(key, dict) or key in seen:
                return records
            seen.append(key)

    # --- metadata and minting ------------------------------------------------------------

    async def validate_metadata(self, collection_format: CollectionFormat) -> None:
        """Check a ``collection_format`` with the data store's schema and field rules;
        ``InvalidRequestError`` naming the field otherwise."""
        try:
            body = await self._send(_VALIDATE, json=collection_format.fields)
        except InvalidRequestError as exc:  # 422: the schema names the field as body.<path>
            raise InvalidRequestError(str(exc).replace("body.", "")) from None
        if isinstance(body, dict) and body.get("success") is False:
            raise InvalidRequestError(
                f"validate_metadata: {body.get('details') or 'the metadata is not valid'}"
            )

    async def mint(self, collection_format: CollectionFormat) -> MintedDataset:
        """Register a new dataset; its prefix then holds only the data store's metadata.json."""
        body = await self._send(_MINT, json=collection_format.fields)
        handle = body.get("handle") if isinstance(body, dict) else None
        location = body.get("s3_location") if isinstance(body, dict) else None
        if not isinstance(handle, str) or not isinstance(location, dict):
            raise UnavailableError("mint_dataset: the answer names no handle or location")
        return MintedDataset(
            handle, str(location.get("bucket_name") or ""), str(location.get("path") or "")
        )
