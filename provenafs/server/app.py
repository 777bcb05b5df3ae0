"""The local data store's HTTP face: every DS route of provena-api.md §3, faithful to its quirks.

``DataStore`` is the façade the real DS is: it checks item roles, locks and release status,
validates metadata, calls the registry, writes ``metadata.json`` and mints scoped credentials
through the object store. ``create_app`` wraps it in FastAPI with the §2 conventions (401 with
``WWW-Authenticate: Bearer``, realm-role checks, ``{"detail": ...}`` errors), the discovery
document, the realm router, fault injection and a request body limit.

It must not import from the mount side, never log a token, secret key or request body, and
never stream file bytes (clients go to S3 with the credentials it issues).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from provenafs.server.faults import (
    ASGIApp,
    FaultInjector,
    FaultMiddleware,
    FaultRule,
    Receive,
    Scope,
    Send,
)
from provenafs.server.models import (
    AccessCredentials,
    ActionApprovalRequest,
    ActionApprovalRequestResponse,
    CollectionFormat,
    CredentialResponse,
    CredentialsRequest,
    DatasetListResponse,
    FaultRuleRequest,
    ItemDataset,
    ItemRevertRequest,
    MintResponse,
    NoFilterSubtypeListRequest,
    PresignedURLRequest,
    PresignedURLResponse,
    RegistryFetchResponse,
    ReleaseApprovalRequest,
    ReleaseApprovalRequestResponse,
    ReleaseStatus,
    SchemaResponse,
    Status,
    StatusResponse,
    UpdateMetadataResponse,
    User,
    VersionRequest,
    VersionResponse,
    collection_format_problems,
    metadata_json_bytes,
)
from provenafs.server.registry import (
    REALM_ADMIN,
    REALM_READ,
    REALM_WRITE,
    NotDesignatedReviewer,
    Registry,
    RegistryError,
    dataset_s3_location,
)

__all__ = [
    "AppState",
    "Caller",
    "DataStore",
    "DataStoreError",
    "ServerSettings",
    "create_app",
]

log = logging.getLogger(__name__)

REGION = "ap-southeast-2"
METADATA_FILE_NAME = "metadata.json"
SESSION_DURATION_SECONDS = 28800  # SERVICE_SESSION_DURATION_SECONDS of the real DS (§7)
SYS_ADMIN_READ, SYS_ADMIN_WRITE, SYS_ADMIN_ADMIN = (
    "sys-admin-read",
    "sys-admin-write",
    "sys-admin-admin",
)
UNAUTHENTICATED = "Could not validate credentials"
WRONG_REALM_ROLE = (
    "You are not authorised to access this resource as you don't have the correct role."
)
_TOKEN_DETAILS = frozenset({UNAUTHENTICATED, "Token had incorrect structure."})
METADATA_VISIBLE = frozenset({"metadata-read", "metadata-write", "admin"})
_FORBIDDEN_PATH_PARTS = ("../", "/../", "..", "//", "\\")


# --------------------------------------------------------------------------- collaborators


class Caller(Protocol):
    """The verified token's subject (``auth.Principal``)."""

    @property
    def username(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def roles(self) -> tuple[str, ...]: ...
    @property
    def token(self) -> str: ...


class TokenVerifier(Protocol):
    """``auth.TokenAuthority``: raises ``auth.TokenInvalid`` (its text is the 401 detail)."""

    def verify_access_token(self, token: str) -> Caller: ...


class SessionCredentials(Protocol):
    """STS credentials (``storage.StsCredentials``)."""

    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str: ...
    @property
    def expiration(self) -> dt.datetime: ...


class Objects(Protocol):
    """What the façade needs of ``storage.ObjectStore``."""

    def prefix_exists(self, prefix: str) -> bool: ...
    def object_exists(self, key: str) -> bool: ...
    def put_object(self, key: str, body: bytes, *, content_type: str = ...) -> Any: ...
    def mint_credentials(
        self, prefix: str, *, write: bool, session_name: str, duration_seconds: int = ...
    ) -> SessionCredentials: ...
    def presign_get(self, key: str, *, creds: Any, expires_in: int, filename: str) -> str: ...


class DatasetActivities(Protocol):
    """Records the registry's Create / Version activities of datasets (``prov.Provenance``)."""

    def dataset_created(self, username: str, handle: str, session_id: str, person: str) -> None: ...

    def dataset_versioned(
        self,
        username: str,
        *,
        old: str,
        new: str,
        version: int,
        reason: str,
        session_id: str,
        person: str,
    ) -> None: ...


LINK_REQUIRED = (
    "In order to perform this operation you must link your User account to a Person in the"
    " registry."
)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    bucket: str
    s3_endpoint_url: str
    region: str = REGION
    realm: str = "provena"
    credential_ttl: int | None = None  # advertised expiry; None: the real session length
    session_seconds: int = SESSION_DURATION_SECONDS
    max_body_bytes: int = 1 << 20


class DataStoreError(Exception):
    """A refusal with the HTTP status and ``detail`` the real DS answers."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


# --------------------------------------------------------------------------- the façade


def _utc_iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).replace(microsecond=0).isoformat()


class DataStore:
    """The DS logic of provena-api.md §3, independent of HTTP (the CLI and seeding use it too).

    Minting, versioning and metadata changes need the caller's linked Person (REG enforces it on
    its proxy routes); ``activities``, when set, queues the registry's Create / Version jobs.
    """

    def __init__(self, registry: Registry, objects: Objects, settings: ServerSettings) -> None:
        self.registry = registry
        self.objects = objects
        self.settings = settings
        self.activities: DatasetActivities | None = None

    # ------------------------------------------------------------- helpers

    def _dataset(self, handle: str) -> ItemDataset:
        if not handle:
            raise DataStoreError(400, "The handle_id must not be empty.")
        try:
            return self.registry.fetch_dataset(handle)
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None

    def _linked_person(self, caller: Caller, wrapped: str, status: int = 500) -> str:
        """The caller's Person; REG's proxy routes refuse unlinked users with 400, which the
        data store relays as *wrapped* (its own text around REG's detail)."""
        person = self.registry.linked_person(caller.username)
        if person is None:
            raise DataStoreError(status, f"{wrapped}. Status code: 400. Details: {LINK_REQUIRED}.")
        return person

    def _roles(self, handle: str, caller: Caller) -> tuple[str, ...]:
        return self.registry.item_roles(handle, caller.username, caller.roles)

    def _write_metadata_file(self, item: ItemDataset) -> None:
        key = f"{item.s3.path}{METADATA_FILE_NAME}"
        try:
            self.objects.put_object(
                key, metadata_json_bytes(item.collection_format), content_type="application/json"
            )
        except Exception as exc:  # noqa: BLE001 (any storage failure is a 500)
            log.error("writing %s failed: %s", key, type(exc).__name__)
            raise DataStoreError(500, f"Failed to write {METADATA_FILE_NAME} to storage.") from None

    def _check_metadata_writable(self, item: ItemDataset, caller: Caller) -> None:
        if self.registry.is_locked(item.id):
            raise DataStoreError(
                401,
                "This dataset is locked - you cannot update the metadata of a locked dataset."
                " Unlock the dataset first.",
            )
        roles = set(self._roles(item.id, caller))
        if roles.isdisjoint({"metadata-write", "dataset-data-write", "admin"}):
            raise DataStoreError(
                401,
                "You do not have sufficient permissions to modify the metadata of this dataset!",
            )
        if roles.isdisjoint({"metadata-write", "admin"}):  # REG's own re-check (§3.6)
            raise DataStoreError(
                401,
                "Registry API responded with status 401: You are not authorised to modify"
                " this item (item role metadata-write or admin is required).",
            )

    # ------------------------------------------------------------- routes

    def fetch(self, caller: Caller, handle: str) -> RegistryFetchResponse:
        item = self._dataset(handle)
        roles = self._roles(handle, caller)
        if METADATA_VISIBLE.isdisjoint(roles):
            raise DataStoreError(401, "You are not authorised to fetch this item.")
        return RegistryFetchResponse(
            status=Status(success=True, details=f"Successfully fetched data for handle '{handle}'"),
            item=item,
            roles=list(roles),
            locked=self.registry.is_locked(handle),
        )

    def list_datasets(
        self, caller: Caller, request: NoFilterSubtypeListRequest
    ) -> DatasetListResponse:
        try:
            page = self.registry.list_datasets(
                sort=request.sort_by,
                pagination_key=request.pagination_key,
                page_size=request.page_size,
                username=caller.username,
                realm_roles=caller.roles,
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        if page.unparsable_items:
            raise DataStoreError(400, "Registry API failed to parse some items in this page.")
        return DatasetListResponse(
            status=Status(success=True, details="Successfully retrieved datasets."),
            items=list(page.items),
            seed_items=[],
            unparsable_items=[],
            total_item_count=len(page.items),
            complete_item_count=len(page.items),
            seed_item_count=0,
            unparsable_item_count=0,
            not_authorised_count=page.not_authorised_count,
            pagination_key=page.pagination_key,
        )

    def presigned_url(self, caller: Caller, request: PresignedURLRequest) -> PresignedURLResponse:
        item = self._dataset(request.dataset_id)
        if "dataset-data-read" not in self._roles(item.id, caller):
            raise DataStoreError(
                401,
                "You do not have sufficient permissions to download files from this dataset"
                " (item role dataset-data-read is required).",
            )
        if any(part in request.file_path for part in _FORBIDDEN_PATH_PARTS):
            raise DataStoreError(400, "The file path must not contain '..', '//' or backslashes.")
        key = f"{item.s3.path}{request.file_path}"
        if not request.file_path or not self.objects.object_exists(key):
            raise DataStoreError(
                400, f"The file '{request.file_path}' does not exist in dataset '{item.id}'."
            )
        try:
            creds = self.objects.mint_credentials(
                item.s3.path,
                write=False,
                session_name="Generate-presigned-url-for-dataset-download",
                duration_seconds=self.settings.session_seconds,
            )
            url = self.objects.presign_get(
                key, creds=creds, expires_in=request.expires_in, filename=key
            )
        except Exception as exc:  # noqa: BLE001 (any storage failure is a 500)
            log.error("presigning failed: %s", type(exc).__name__)
            raise DataStoreError(500, "Failed to generate a presigned URL.") from None
        return PresignedURLResponse(
            dataset_id=item.id, file_path=request.file_path, presigned_url=url
        )

    def credentials(
        self, caller: Caller, request: CredentialsRequest, *, write: bool
    ) -> CredentialResponse:
        item = self._dataset(request.dataset_id)
        roles = set(self._roles(item.id, caller))
        realm_admin = REALM_ADMIN in caller.roles
        if write:
            if self.registry.is_locked(item.id):
                raise DataStoreError(
                    401,
                    "This dataset is locked - you cannot modify the files of a locked dataset."
                    " Unlock the dataset first.",
                )
            if roles.isdisjoint({"dataset-data-write", "admin"}) and not realm_admin:
                raise DataStoreError(
                    401, "You do not have sufficient permissions to write to this dataset!"
                )
            if item.release_status in (ReleaseStatus.PENDING, ReleaseStatus.RELEASED):
                raise DataStoreError(
                    403,
                    f"Dataset {item.id} is pending review or is released. Cannot modify dataset"
                    " files while a review is ongoing.",
                )
        elif roles.isdisjoint({"dataset-data-read", "dataset-data-write", "admin"}) and not (
            realm_admin
        ):
            raise DataStoreError(
                401, "You do not have sufficient permissions to read from this dataset!"
            )
        access = "write" if write else "read"
        try:
            creds = self.objects.mint_credentials(
                item.s3.path,
                write=write,
                session_name=f"{caller.username},{access}-prog-bucket-access",
                duration_seconds=self.settings.session_seconds,
            )
        except Exception as exc:  # noqa: BLE001 (any storage failure is a 500)
            log.error("minting %s credentials failed: %s", access, type(exc).__name__)
            raise DataStoreError(500, "Failed to generate STS credentials.") from None
        expiry = creds.expiration
        if self.settings.credential_ttl is not None:
            advertised = dt.datetime.now(dt.UTC) + dt.timedelta(
                seconds=self.settings.credential_ttl
            )
            expiry = min(expiry, advertised)
        return CredentialResponse(
            status=Status(
                success=True, details="STS credentials generated successfully for specified path."
            ),
            credentials=AccessCredentials(
                aws_access_key_id=creds.access_key_id,
                aws_secret_access_key=creds.secret_access_key,
                aws_session_token=creds.session_token,
                expiry=_utc_iso(expiry),
            ),
            console_session_url=None,
        )

    def mint(self, caller: Caller, collection_format: CollectionFormat) -> MintResponse:
        problems = collection_format_problems(collection_format)
        if problems:
            details = "Metadata validation failed: " + " ".join(problems)
            return MintResponse(status=Status(success=False, details=details))
        person = self._linked_person(
            caller, "Unexpected non 200 status code in dataset minting process"
        )
        handle = self.registry.create_seed_dataset(caller.username)
        s3 = dataset_s3_location(self.settings.bucket, handle)
        if self.objects.prefix_exists(s3.path):
            raise DataStoreError(
                400, f"The storage location {s3.s3_uri} already exists; refusing to mint into it."
            )
        try:
            self.objects.put_object(
                f"{s3.path}{METADATA_FILE_NAME}",
                metadata_json_bytes(collection_format),
                content_type="application/json",
            )
        except Exception as exc:  # noqa: BLE001 (any storage failure is a 500)
            log.error("writing metadata.json for %s failed: %s", handle, type(exc).__name__)
            raise DataStoreError(500, "Failed to write metadata.json to storage.") from None
        session_id = str(uuid.uuid4())
        self.registry.complete_dataset(
            handle, collection_format, s3, username=caller.username, create_workflow_id=session_id
        )
        if self.activities is not None:
            self.activities.dataset_created(caller.username, handle, session_id, person)
        return MintResponse(
            status=Status(success=True, details="Successfully registered dataset."),
            handle=handle,
            s3_location=s3,
            register_create_activity_session_id=session_id,
        )

    def update_metadata(
        self, caller: Caller, handle: str, reason: str, collection_format: CollectionFormat
    ) -> UpdateMetadataResponse:
        item = self._dataset(handle)
        self._check_metadata_writable(item, caller)
        problems = collection_format_problems(collection_format)
        if problems:
            raise DataStoreError(400, "Metadata validation failed: " + " ".join(problems))
        if not reason:
            raise DataStoreError(400, "A reason for the update is required.")
        self._linked_person(caller, "Unexpected non 200 status code in dataset update process")
        try:
            updated = self.registry.update_metadata(
                handle, collection_format, reason=reason, username=caller.username
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        self._write_metadata_file(updated)
        return UpdateMetadataResponse(
            status=Status(success=True, details="Successfully updated metadata."),
            handle=handle,
            s3_location=updated.s3,
        )

    def revert_metadata(self, caller: Caller, request: ItemRevertRequest) -> StatusResponse:
        item = self._dataset(request.id)
        self._check_metadata_writable(item, caller)
        self._linked_person(caller, "Unexpected non 200 status code in dataset revert process")
        try:
            reverted = self.registry.revert_metadata(
                request.id, request.history_id, reason=request.reason, username=caller.username
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        self._write_metadata_file(reverted)
        return StatusResponse(
            status=Status(
                success=True,
                details=f"Successfully reverted dataset to history id {request.history_id}.",
            )
        )

    def version(self, caller: Caller, request: VersionRequest) -> VersionResponse:
        item = self._dataset(request.id)
        person = self._linked_person(
            caller, "Non 200 status code in dataset version process", status=400
        )
        if "admin" not in self._roles(item.id, caller):
            raise DataStoreError(
                401,
                "Registry API responded with status 401: You do not have the admin role on this"
                " item, which is required to create a new version.",
            )
        job_session_id = str(uuid.uuid4())
        try:
            new_item = self.registry.create_version(
                item.id,
                reason=request.reason,
                username=caller.username,
                bucket=self.settings.bucket,
                job_session_id=job_session_id,
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        if self.activities is not None and new_item.versioning_info is not None:
            self.activities.dataset_versioned(
                caller.username,
                old=item.id,
                new=new_item.id,
                version=new_item.versioning_info.version,
                reason=request.reason,
                session_id=job_session_id,
                person=person,
            )
        if self.objects.prefix_exists(new_item.s3.path):
            raise DataStoreError(500, "Could not find a unique S3 path for the new version.")
        self._write_metadata_file(new_item)
        return VersionResponse(new_version_id=new_item.id, version_job_session_id=job_session_id)

    def validate_metadata(self, collection_format: CollectionFormat) -> Status:
        problems = collection_format_problems(collection_format)
        if problems:
            return Status(
                success=False, details="Metadata validation failed: " + " ".join(problems)
            )
        return Status(success=True, details="Metadata is valid.")

    def _reviewable(self, handle: str, caller: Caller) -> ItemDataset:
        """The data store's fetch of a dataset through REG with the caller's token."""
        item = self._dataset(handle)
        if METADATA_VISIBLE.isdisjoint(self._roles(item.id, caller)):
            raise DataStoreError(
                401,
                "Registry did not grant access to the dataset. Details: You are not authorised"
                " to fetch this item..",
            )
        return item

    def request_release(
        self, caller: Caller, request: ReleaseApprovalRequest
    ) -> ReleaseApprovalRequestResponse:
        """``perform_approval_request``: a linked Person, item ``admin``, ``NOT_RELEASED``, an
        approver (a Person id) on the reviewer list; the request names the requester's Person."""
        requester = self.registry.linked_person(caller.username)
        if requester is None:
            raise DataStoreError(
                400,
                "You cannot request a review without having a linked Person in the registry.",
            )
        item = self._reviewable(request.dataset_id, caller)
        if "admin" not in self._roles(item.id, caller):
            raise DataStoreError(
                401,
                f"User {caller.username} is not an admin of dataset {item.id}. Only admins of"
                " datasets can request for the dataset to be reviewed.",
            )
        if item.release_status != ReleaseStatus.NOT_RELEASED:
            raise DataStoreError(
                400,
                f"Dataset {item.id} is already pending review or is released. Cannot request a"
                " review while another is unresolved.",
            )
        if request.approver_id not in self.registry.list_reviewers():
            raise DataStoreError(
                400,
                f"User {request.approver_id} is not a system dataset reviewer. Please provide an"
                " ID for entity pointing to a person who is a valid dataset reviewer for this"
                " system.",
            )
        try:
            self.registry.request_release(
                item.id, approver_id=request.approver_id, requester=requester, notes=request.notes
            )
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        return ReleaseApprovalRequestResponse(
            dataset_id=item.id,
            approver_id=request.approver_id,
            details="Successfully sent request to approve dataset release to approver. Email"
            " notification included.",
        )

    def action_release(
        self, caller: Caller, request: ActionApprovalRequest
    ) -> ActionApprovalRequestResponse:
        """``perform_action_of_approval_request``: only the Person named as approver acts."""
        reviewer = self.registry.linked_person(caller.username)
        if reviewer is None:
            raise DataStoreError(400, LINK_REQUIRED)
        if reviewer not in self.registry.list_reviewers():
            raise DataStoreError(
                401,
                "You are not a dataset reviewer. Only system dataset reviewers can perform this"
                " action. Contact system admins to request to be a reviewer.",
            )
        item = self._reviewable(request.dataset_id, caller)
        if item.release_status != ReleaseStatus.PENDING:
            raise DataStoreError(
                400, f"Dataset {item.id} is not pending review. Cannot perform this action."
            )
        if item.release_approver != reviewer:
            raise DataStoreError(
                401,
                f"User with name {caller.username} and linked ID {reviewer} is not the approver"
                f" for dataset {item.id}. Only the designated approver can perform this action.",
            )
        try:
            self.registry.action_release(
                item.id, approve=request.approve, reviewer=reviewer, notes=request.notes
            )
        except NotDesignatedReviewer as exc:
            raise DataStoreError(401, str(exc)) from None
        except RegistryError as exc:
            raise DataStoreError(400, str(exc)) from None
        return ActionApprovalRequestResponse(
            dataset_id=item.id,
            approved=request.approve,
            details="Succesfully responded to dataset release approval request.",
        )


# --------------------------------------------------------------------------- the HTTP app


@dataclasses.dataclass(frozen=True)
class AppState:
    """Everything ``create_app`` wires together."""

    datastore: DataStore
    authority: TokenVerifier
    faults: FaultInjector
    realm_router: APIRouter | None = None
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)
    routers: tuple[APIRouter, ...] = ()  # the registry, prov, job, search and auth APIs


class BodyLimitMiddleware:
    """Answer 413 to request bodies over the limit, before any parsing."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        body = json.dumps({"detail": f"Request body too large (limit {self.max_bytes} bytes)."})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body.encode()})


def _bearer_token(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise StarletteHTTPException(401, UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def _app_state(request: Request) -> AppState:
    state: AppState = request.app.state.provenafs
    return state


def _authenticated(request: Request) -> Caller:
    """The caller of a DS route: 401 ``Could not validate credentials`` without a valid token."""
    token = _bearer_token(request)
    try:
        return _app_state(request).authority.verify_access_token(token)
    except Exception as exc:  # noqa: BLE001 (auth.TokenInvalid or a bug: either way, fail closed)
        detail = str(exc) if str(exc) in _TOKEN_DETAILS else UNAUTHENTICATED
        raise StarletteHTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"}) from None


def _needs(*roles: str) -> Callable[[Caller], Caller]:
    """A dependency requiring every realm role in *roles* (401 with the role detail otherwise)."""

    def check(caller: Annotated[Caller, Depends(_authenticated)]) -> Caller:
        if not set(roles).issubset(caller.roles):
            raise StarletteHTTPException(401, WRONG_REALM_ROLE)
        return caller

    return check


AnyUser = Annotated[Caller, Depends(_authenticated)]
Reader = Annotated[Caller, Depends(_needs(REALM_READ))]
Writer = Annotated[Caller, Depends(_needs(REALM_READ, REALM_WRITE))]
Admin = Annotated[Caller, Depends(_needs(REALM_READ, REALM_WRITE, REALM_ADMIN))]
SysAdminWriter = Annotated[Caller, Depends(_needs(SYS_ADMIN_READ, SYS_ADMIN_WRITE))]
SysAdmin = Annotated[Caller, Depends(_needs(SYS_ADMIN_READ, SYS_ADMIN_WRITE, SYS_ADMIN_ADMIN))]
RealmAdmin = Annotated[Caller, Depends(_needs(REALM_ADMIN))]


def create_app(state: AppState) -> FastAPI:
    """The FastAPI app of the local data store: DS routes at the root, realm, discovery, faults."""
    store = state.datastore
    settings = store.settings
    app = FastAPI(
        title="Provena data store API (provenafs local emulator)",
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
    )
    app.state.provenafs = state

    @app.exception_handler(DataStoreError)
    async def _refusal(_: Request, exc: DataStoreError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled %s on %s", type(exc).__name__, request.url.path)
        return JSONResponse({"detail": "Internal server error."}, status_code=500)

    # ------------------------------------------------------------------ health and discovery

    @app.get("/")
    def health() -> JSONResponse:
        if not state.ready.is_set():
            return JSONResponse({"detail": "The data store is starting."}, status_code=503)
        return JSONResponse({"message": "Health check successful."})

    @app.get("/.well-known/provenafs")
    def discovery(request: Request) -> dict[str, str]:
        base = str(request.base_url).rstrip("/")
        return {
            "s3_endpoint_url": settings.s3_endpoint_url,
            "region": settings.region,
            "realm_url": f"{base}/auth/realms/{settings.realm}",
            "bucket": settings.bucket,
            "client_id": "client-tools",
            # one root answers every Provena service the store emulates
            "registry_api": base,
            "prov_api": base,
            "search_api": base,
            "job_api": base,
            "auth_api": base,
        }

    # ------------------------------------------------------------------ registry items

    @app.get("/registry/items/fetch-dataset", response_model=RegistryFetchResponse)
    def fetch_dataset(handle_id: str, caller: Reader) -> RegistryFetchResponse:
        return store.fetch(caller, handle_id)

    @app.post("/registry/items/list", response_model=DatasetListResponse)
    def list_datasets(request: NoFilterSubtypeListRequest, caller: Reader) -> DatasetListResponse:
        return store.list_datasets(caller, request)

    @app.post("/registry/items/generate-presigned-url", response_model=PresignedURLResponse)
    def generate_presigned_url(
        request: PresignedURLRequest, caller: Reader
    ) -> PresignedURLResponse:
        return store.presigned_url(caller, request)

    @app.post(
        "/registry/credentials/generate-read-access-credentials",
        response_model=CredentialResponse,
    )
    def read_credentials(request: CredentialsRequest, caller: Reader) -> CredentialResponse:
        return store.credentials(caller, request, write=False)

    @app.post(
        "/registry/credentials/generate-write-access-credentials",
        response_model=CredentialResponse,
    )
    def write_credentials(request: CredentialsRequest, caller: Writer) -> CredentialResponse:
        return store.credentials(caller, request, write=True)

    # ------------------------------------------------------------------ register

    @app.post("/register/mint-dataset", response_model=MintResponse)
    def mint_dataset(collection_format: CollectionFormat, caller: Writer) -> MintResponse:
        return store.mint(caller, collection_format)

    @app.post("/register/update-metadata", response_model=UpdateMetadataResponse)
    def update_metadata(
        handle_id: str, reason: str, collection_format: CollectionFormat, caller: Writer
    ) -> UpdateMetadataResponse:
        return store.update_metadata(caller, handle_id, reason, collection_format)

    @app.put("/register/revert-metadata", response_model=StatusResponse)
    def revert_metadata(request: ItemRevertRequest, caller: Writer) -> StatusResponse:
        return store.revert_metadata(caller, request)

    @app.post("/register/version", response_model=VersionResponse)
    def version(request: VersionRequest, caller: Writer) -> VersionResponse:
        return store.version(caller, request)

    # ------------------------------------------------------------------ metadata

    @app.post("/metadata/validate-metadata", response_model=Status)
    def validate_metadata(collection_format: CollectionFormat, caller: Reader) -> Status:
        return store.validate_metadata(collection_format)

    @app.get("/metadata/dataset-schema", response_model=SchemaResponse)
    def dataset_schema(caller: Reader) -> SchemaResponse:
        return SchemaResponse(json_schema=CollectionFormat.model_json_schema())

    # ------------------------------------------------------------------ check access

    def _user(caller: Caller) -> User:
        return User(
            username=caller.username,
            email=caller.email,
            roles=list(caller.roles),
            access_token=caller.token,
        )

    @app.get("/check-access/check-general-access", response_model=User)
    def check_general_access(caller: AnyUser) -> User:
        return _user(caller)

    @app.get("/check-access/check-read-access", response_model=User)
    def check_read_access(caller: Reader) -> User:
        return _user(caller)

    @app.get("/check-access/check-write-access", response_model=User)
    def check_write_access(caller: Writer) -> User:
        return _user(caller)

    @app.get("/check-access/check-admin-access", response_model=User)
    def check_admin_access(caller: Admin) -> User:
        return _user(caller)

    # ------------------------------------------------------------------ release

    @app.post("/release/approval-request", response_model=ReleaseApprovalRequestResponse)
    def approval_request(
        request: ReleaseApprovalRequest, caller: Writer
    ) -> ReleaseApprovalRequestResponse:
        return store.request_release(caller, request)

    @app.put("/release/action-approval-request", response_model=ActionApprovalRequestResponse)
    def action_approval_request(
        request: ActionApprovalRequest, caller: Writer
    ) -> ActionApprovalRequestResponse:
        return store.action_release(caller, request)

    @app.get("/release/sys-reviewers/list")
    def list_reviewers(caller: Writer) -> list[str]:
        return store.registry.list_reviewers()

    @app.post("/release/sys-reviewers/add")
    def add_reviewer(reviewer_id: str, caller: SysAdminWriter) -> None:
        # Person ids, not verified (a TODO in Provena's release_helpers.py)
        store.registry.add_reviewer(reviewer_id)

    @app.delete("/release/sys-reviewers/delete")
    def delete_reviewer(reviewer_id: str, caller: SysAdmin) -> None:
        store.registry.remove_reviewer(reviewer_id)  # deleting an absent id is no error

    # ------------------------------------------------------------------ admin

    @app.get("/admin/config")
    def admin_config(caller: Admin) -> dict[str, Any]:
        return {
            "bucket_name": settings.bucket,
            "s3_endpoint_url": settings.s3_endpoint_url,
            "region": settings.region,
            "realm": settings.realm,
            "credential_ttl": settings.credential_ttl,
            "session_duration_seconds": settings.session_seconds,
            "metadata_file_name": METADATA_FILE_NAME,
        }

    @app.get("/admin/sentry-debug")
    def sentry_debug(caller: Admin) -> JSONResponse:
        return JSONResponse({"detail": "Sentry debug: intentional error."}, status_code=500)

    # ------------------------------------------------------------------ fault control

    def _fault_list() -> dict[str, list[dict[str, Any]]]:
        return {"faults": [dataclasses.asdict(rule) for rule in state.faults.rules()]}

    @app.get("/_provenafs/faults")
    def get_faults(caller: RealmAdmin) -> dict[str, list[dict[str, Any]]]:
        return _fault_list()

    @app.put("/_provenafs/faults")
    def put_faults(
        rule: Annotated[FaultRuleRequest, Body()], caller: RealmAdmin
    ) -> dict[str, list[dict[str, Any]]]:
        state.faults.set_rule(FaultRule(**rule.model_dump()))
        return _fault_list()

    @app.delete("/_provenafs/faults")
    def delete_faults(caller: RealmAdmin) -> dict[str, list[dict[str, Any]]]:
        state.faults.clear()
        return _fault_list()

    if state.realm_router is not None:
        app.include_router(state.realm_router, prefix=f"/auth/realms/{settings.realm}")
    for router in state.routers:
        app.include_router(router)

    app.add_middleware(FaultMiddleware, injector=state.faults)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    return app
