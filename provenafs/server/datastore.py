"""The local data store's logic: every DS route of docs/API.md §3, independent of HTTP.

``DataStore`` is the façade the real DS is: it checks item roles, locks and release status,
validates metadata, calls the registry, writes ``metadata.json`` and mints scoped credentials
through the object store, and refuses with ``DataStoreError`` (the status and ``detail`` the real
DS answers). The HTTP framing (``app.py``), the CLI and seeding all drive it.

It must not import from the mount side, know about HTTP, never log a token, secret key or request
body, and never stream file bytes (clients go to S3 with the credentials it issues).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from typing import Any, Protocol

from provenafs.server.access import METADATA_VISIBLE_ROLES, REALM_ADMIN
from provenafs.server.models import (
    AccessCredentials,
    ActionApprovalRequest,
    ActionApprovalRequestResponse,
    CollectionFormat,
    CredentialResponse,
    CredentialsRequest,
    DatasetListResponse,
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
    Status,
    StatusResponse,
    UpdateMetadataResponse,
    VersionRequest,
    VersionResponse,
    collection_format_problems,
    metadata_json_bytes,
)
from provenafs.server.registry import (
    NotDesignatedReviewer,
    Registry,
    RegistryError,
    dataset_s3_location,
)

__all__ = [
    "METADATA_FILE_NAME",
    "REGION",
    "SESSION_DURATION_SECONDS",
    "Caller",
    "DataStore",
    "DataStoreError",
    "Objects",
    "ServerSettings",
    "SessionCredentials",
]

log = logging.getLogger(__name__)

REGION = "ap-southeast-2"
METADATA_FILE_NAME = "metadata.json"
SESSION_DURATION_SECONDS = 28800  # SERVICE_SESSION_DURATION_SECONDS of the real DS (§7)
# checked in this order: the first one found names the refusal, as in the real data store
_FORBIDDEN_PATH_PARTS = ("../", "/../", "..", "//", "\\", "\\\\")


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


class SessionCredentials(Protocol):
    """STS credentials (``objects.StsCredentials``)."""

    @property
    def access_key_id(self) -> str: ...
    @property
    def secret_access_key(self) -> str: ...
    @property
    def session_token(self) -> str: ...
    @property
    def expiration(self) -> dt.datetime: ...


class Objects(Protocol):
    """What the façade needs of ``objects.ObjectStore``."""

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
    """The DS logic of docs/API.md §3, independent of HTTP (the CLI and seeding use it too).

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
        if METADATA_VISIBLE_ROLES.isdisjoint(roles):
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
        path = request.file_path
        illegal = next((part for part in _FORBIDDEN_PATH_PARTS if part in path), None)
        if illegal is not None:
            raise DataStoreError(
                400, f"File path '{path}' contains '{illegal}' which is not allowed."
            )
        key = f"{item.s3.path}{path}"
        # a key S3 refuses outright (a "." segment, a NUL) exists no more than a missing one
        if not path or not self.objects.object_exists(key):
            raise DataStoreError(
                400, f"File path '{path}' does not exist in dataset with id {request.dataset_id}"
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
        if METADATA_VISIBLE_ROLES.isdisjoint(self._roles(item.id, caller)):
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
