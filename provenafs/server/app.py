"""The local data store's HTTP face: the DS routes of docs/API.md §3 around ``DataStore``.

``create_app`` wraps the façade (``datastore.py``) in FastAPI with the §2 conventions (401 with
``WWW-Authenticate: Bearer``, realm-role checks, ``{"detail": ...}`` errors), the discovery
document, the realm router, further routers it is given, fault injection and a request body limit.
The realm-role dependencies (``Reader``, ``Writer``...) are public for those routers.

It must not import from the mount side, never log a token, secret key or request body, and
never stream file bytes (clients go to S3 with the credentials the façade issues).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable
from typing import Annotated, Any, Protocol

from fastapi import APIRouter, Body, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from provenafs.server.access import REALM_ADMIN, REALM_READ, REALM_WRITE
from provenafs.server.datastore import (
    METADATA_FILE_NAME,
    Caller,
    DataStore,
    DataStoreError,
)
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
    ActionApprovalRequest,
    ActionApprovalRequestResponse,
    CollectionFormat,
    CredentialResponse,
    CredentialsRequest,
    DatasetListResponse,
    FaultRuleRequest,
    ItemRevertRequest,
    MintResponse,
    NoFilterSubtypeListRequest,
    PresignedURLRequest,
    PresignedURLResponse,
    RegistryFetchResponse,
    ReleaseApprovalRequest,
    ReleaseApprovalRequestResponse,
    SchemaResponse,
    Status,
    StatusResponse,
    UpdateMetadataResponse,
    User,
    VersionRequest,
    VersionResponse,
)

__all__ = [
    "Admin",
    "AnyUser",
    "AppState",
    "Reader",
    "RealmAdmin",
    "SysAdmin",
    "SysAdminWriter",
    "TokenVerifier",
    "Writer",
    "create_app",
]

log = logging.getLogger(__name__)

SYS_ADMIN_READ, SYS_ADMIN_WRITE, SYS_ADMIN_ADMIN = (
    "sys-admin-read",
    "sys-admin-write",
    "sys-admin-admin",
)
UNAUTHENTICATED = "Could not validate credentials"
# FastAPI's OAuth2PasswordBearer, which Provena's services use, before any token is checked:
# no Authorization header, or a scheme other than Bearer.
NOT_AUTHENTICATED = "Not authenticated"
WRONG_REALM_ROLE = (
    "You are not authorised to access this resource as you don't have the correct role."
)
_TOKEN_DETAILS = frozenset({UNAUTHENTICATED, "Token had incorrect structure."})


class TokenVerifier(Protocol):
    """``auth.TokenAuthority``: raises ``auth.TokenInvalid`` (its text is the 401 detail)."""

    def verify_access_token(self, token: str) -> Caller: ...


# --------------------------------------------------------------------------- the HTTP app


@dataclasses.dataclass(frozen=True)
class AppState:
    """Everything ``create_app`` wires together."""

    datastore: DataStore
    authority: TokenVerifier
    faults: FaultInjector
    realm_router: APIRouter | None = None
    routers: tuple[APIRouter, ...] = ()  # the registry, prov, job, search and auth APIs
    ready: threading.Event = dataclasses.field(default_factory=threading.Event)


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
    if scheme.lower() != "bearer":
        raise StarletteHTTPException(401, NOT_AUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    if not token.strip():
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
