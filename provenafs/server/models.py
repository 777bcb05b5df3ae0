"""Pydantic models of the data store wire (docs/API.md §2-§4), as the local data store speaks it.

Real Provena is FastAPI + pydantic, so declaring the routes with these models reproduces its
422 shapes and parameter locations. ``CollectionFormat`` follows §4.2: every sub-model forbids
unknown keys and empty strings. Rules that the real data store checks *after* parsing
(``validate_fields``: approval consistency, date order) live in :func:`collection_format_problems`
so that each route can answer them with its own status quirk (mint: 200 ``success:false``;
update: 400; validate-metadata: flat ``Status``).

This module must not import from the mount side (``provenafs.api`` and friends), nor do I/O.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

__all__ = [
    "ITEM_ROLES",
    "AccessCredentials",
    "AccessInfo",
    "ActionApprovalRequest",
    "ActionApprovalRequestResponse",
    "ApprovalCheck",
    "CollectionFormat",
    "CollectionFormatApprovals",
    "CollectionFormatAssociations",
    "CollectionFormatDatasetInfo",
    "CredentialResponse",
    "CredentialsRequest",
    "DatasetDomainInfo",
    "DatasetListResponse",
    "FaultRuleRequest",
    "HistoryEntry",
    "ItemDataset",
    "ItemRevertRequest",
    "MintResponse",
    "NoFilterSubtypeListRequest",
    "OptionallyRequiredDate",
    "PresignedURLRequest",
    "PresignedURLResponse",
    "RegistryFetchResponse",
    "ReleaseApprovalRequest",
    "ReleaseApprovalRequestResponse",
    "ReleaseHistoryEntry",
    "ReleaseStatus",
    "S3Location",
    "SchemaResponse",
    "SortOptions",
    "SortType",
    "SpatialInfo",
    "Status",
    "StatusResponse",
    "TemporalDuration",
    "TemporalInfo",
    "UpdateMetadataResponse",
    "User",
    "VersionRequest",
    "VersionResponse",
    "VersioningInfo",
    "WorkflowLinks",
    "collection_format_problems",
    "metadata_json_bytes",
]

ITEM_ROLES: tuple[str, ...] = (
    "metadata-read",
    "metadata-write",
    "admin",
    "dataset-data-read",
    "dataset-data-write",
)
"""Every dataset item role, in the order the registry lists them for an owner (§4.3)."""

EWKT_MAX_LENGTH = 50_000
_HTTP_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl)
_EWKT = re.compile(r"^\s*(SRID=\d+;)?\s*[A-Za-z]+\s*(EMPTY|\(.*\))\s*$", re.DOTALL)
_ISO_DURATION = re.compile(
    r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$"
)


def _require_http_url(value: str) -> str:
    """Check that *value* is an http(s) URL but keep the exact string the user sent (§4.2)."""
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise ValueError("must be an http(s) URL") from None
    return value


class _CollectionModel(BaseModel):
    """Base of every ``CollectionFormat`` sub-model: unknown keys and empty strings are 422."""

    model_config = ConfigDict(extra="forbid", str_min_length=1)


class CollectionFormatAssociations(_CollectionModel):
    organisation_id: str
    data_custodian_id: str | None = None
    point_of_contact: str | None = None


class ApprovalCheck(_CollectionModel):
    relevant: bool = False
    obtained: bool = False


class CollectionFormatApprovals(_CollectionModel):
    ethics_registration: ApprovalCheck
    ethics_access: ApprovalCheck
    indigenous_knowledge: ApprovalCheck
    export_controls: ApprovalCheck


class AccessInfo(_CollectionModel):
    reposited: bool = True
    uri: str | None = None
    description: str | None = None

    @field_validator("uri")
    @classmethod
    def _uri_is_http(cls, value: str | None) -> str | None:
        return None if value is None else _require_http_url(value)

    @model_validator(mode="after")
    def _reposited_rule(self) -> AccessInfo:
        if self.reposited and (self.uri is not None or self.description is not None):
            raise ValueError("uri and description must be null when the data is reposited")
        if not self.reposited and (self.uri is None or self.description is None):
            raise ValueError("uri and description are required when the data is not reposited")
        return self


class OptionallyRequiredDate(_CollectionModel):
    relevant: bool = False
    value: dt.date | None = None

    @model_validator(mode="after")
    def _value_exactly_when_relevant(self) -> OptionallyRequiredDate:
        if self.relevant and self.value is None:
            raise ValueError("a relevant date needs a value")
        if not self.relevant and self.value is not None:
            raise ValueError("a date that is not relevant must have no value")
        return self


class SpatialInfo(_CollectionModel):
    coverage: str | None = Field(default=None, max_length=EWKT_MAX_LENGTH)
    resolution: str | None = None
    extent: str | None = Field(default=None, max_length=EWKT_MAX_LENGTH)

    @field_validator("coverage", "extent")
    @classmethod
    def _ewkt(cls, value: str | None) -> str | None:
        if value is not None and not _EWKT.match(value):
            raise ValueError("must be EWKT, e.g. 'SRID=4326;POINT(145.0 -17.0)'")
        return value

    @field_validator("resolution")
    @classmethod
    def _positive_decimal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ValueError("must be a positive decimal number") from None
        if not number.is_finite() or number <= 0:
            raise ValueError("must be a positive decimal number")
        return value


class TemporalDuration(_CollectionModel):
    begin_date: dt.date
    end_date: dt.date


class TemporalInfo(_CollectionModel):
    duration: TemporalDuration | None = None
    resolution: str | None = None

    @field_validator("resolution")
    @classmethod
    def _iso_duration(cls, value: str | None) -> str | None:
        if value is not None and not _ISO_DURATION.match(value):
            raise ValueError("must be an ISO 8601 duration, e.g. 'PT1H'")
        return value


class CollectionFormatDatasetInfo(_CollectionModel):
    name: str
    description: str
    access_info: AccessInfo
    publisher_id: str
    created_date: OptionallyRequiredDate
    published_date: OptionallyRequiredDate
    license: str
    purpose: str | None = None
    rights_holder: str | None = None
    usage_limitations: str | None = None
    preferred_citation: str | None = None
    spatial_info: SpatialInfo | None = None
    temporal_info: TemporalInfo | None = None
    formats: list[str] | None = None
    keywords: list[str] | None = None
    user_metadata: dict[str, str] | None = None
    version: SkipJsonSchema[str | None] = None

    @field_validator("license")
    @classmethod
    def _license_is_http(cls, value: str) -> str:
        return _require_http_url(value)


class CollectionFormat(_CollectionModel):
    """The user-editable dataset metadata (§4.2)."""

    associations: CollectionFormatAssociations
    approvals: CollectionFormatApprovals
    dataset_info: CollectionFormatDatasetInfo


def collection_format_problems(collection_format: CollectionFormat) -> list[str]:
    """The data store's ``validate_fields`` checks: approval consistency and date order.

    An empty list means the metadata is valid.
    """
    problems: list[str] = []
    approvals = collection_format.approvals
    for name in CollectionFormatApprovals.model_fields:
        check: ApprovalCheck = getattr(approvals, name)
        if check.relevant and not check.obtained:
            problems.append(f"Approval '{name}' is relevant but has not been obtained.")
        elif check.obtained and not check.relevant:
            problems.append(f"Approval '{name}' is marked obtained but is not relevant.")
    info = collection_format.dataset_info
    created, published = info.created_date.value, info.published_date.value
    if created is not None and published is not None and published < created:
        problems.append("The published date must not be before the created date.")
    duration = info.temporal_info.duration if info.temporal_info else None
    if duration is not None and duration.end_date < duration.begin_date:
        problems.append("The temporal end date must not be before the begin date.")
    return problems


def metadata_json_bytes(collection_format: CollectionFormat) -> bytes:
    """The ``metadata.json`` the data store writes into a dataset's prefix (§5)."""
    document = collection_format.model_dump(mode="json", exclude_none=True)
    return json.dumps(document, indent=2).encode("utf-8")


# --------------------------------------------------------------------------- the registry record


class ReleaseStatus(StrEnum):
    NOT_RELEASED = "NOT_RELEASED"
    PENDING = "PENDING"
    RELEASED = "RELEASED"


class S3Location(BaseModel):
    bucket_name: str
    path: str
    s3_uri: str


class ReleaseHistoryEntry(BaseModel):
    action: Literal["REQUEST", "APPROVE", "REJECT"]
    timestamp: int
    approver: str
    requester: str | None = None
    notes: str


class DatasetDomainInfo(BaseModel):
    """The domain part of a dataset record: what a history entry snapshots (§4.1)."""

    display_name: str
    user_metadata: dict[str, str] | None = None
    collection_format: CollectionFormat
    s3: S3Location
    release_history: list[ReleaseHistoryEntry] = Field(default_factory=list)
    release_status: ReleaseStatus = ReleaseStatus.NOT_RELEASED
    release_approver: str | None = None
    release_timestamp: int | None = None
    access_info_uri: str | None = None


class HistoryEntry(BaseModel):
    id: int
    timestamp: int
    reason: str
    username: str
    item: DatasetDomainInfo


class WorkflowLinks(BaseModel):
    create_activity_workflow_id: str | None = None
    version_activity_workflow_id: str | None = None


class VersioningInfo(BaseModel):
    previous_version: str | None = None
    version: int
    reason: str | None = None
    next_version: str | None = None


class ItemDataset(DatasetDomainInfo):
    """A complete dataset record, fields in the order FastAPI emits them (§4.1)."""

    history: list[HistoryEntry]
    id: str
    owner_username: str
    created_timestamp: int
    updated_timestamp: int
    item_category: Literal["ENTITY"] = "ENTITY"
    item_subtype: Literal["DATASET"] = "DATASET"
    record_type: Literal["COMPLETE_ITEM"] = "COMPLETE_ITEM"
    workflow_links: WorkflowLinks | None = None
    versioning_info: VersioningInfo | None = None

    def domain_info(self) -> DatasetDomainInfo:
        """The history snapshot of this record."""
        fields = DatasetDomainInfo.model_fields
        return DatasetDomainInfo.model_validate({name: getattr(self, name) for name in fields})


# --------------------------------------------------------------------------- requests


class SortType(StrEnum):
    CREATED_TIME = "CREATED_TIME"
    UPDATED_TIME = "UPDATED_TIME"
    DISPLAY_NAME = "DISPLAY_NAME"
    RELEASE_TIMESTAMP = "RELEASE_TIMESTAMP"
    ACCESS_INFO_URI_BEGINS_WITH = "ACCESS_INFO_URI_BEGINS_WITH"


class SortOptions(BaseModel):
    sort_type: SortType | None = None
    ascending: bool = False
    begins_with: str | None = None

    @model_validator(mode="after")
    def _begins_with_rule(self) -> SortOptions:
        uses_prefix = self.sort_type == SortType.ACCESS_INFO_URI_BEGINS_WITH
        if uses_prefix and self.begins_with is None:
            raise ValueError("sort type ACCESS_INFO_URI_BEGINS_WITH requires begins_with")
        if not uses_prefix and self.begins_with is not None:
            raise ValueError("begins_with is only allowed with ACCESS_INFO_URI_BEGINS_WITH")
        return self


class NoFilterSubtypeListRequest(BaseModel):
    sort_by: SortOptions | None = None
    pagination_key: dict[str, Any] | None = None
    page_size: int = Field(default=20, ge=1)


class CredentialsRequest(BaseModel):
    dataset_id: str
    console_session_required: bool


class PresignedURLRequest(BaseModel):
    dataset_id: str
    file_path: str
    expires_in: int = Field(default=10800, ge=1, le=86400)


class VersionRequest(BaseModel):
    id: str
    reason: str


class ItemRevertRequest(BaseModel):
    id: str
    history_id: int
    reason: str


class ReleaseApprovalRequest(BaseModel):
    dataset_id: str
    approver_id: str
    notes: str


class ActionApprovalRequest(BaseModel):
    dataset_id: str
    approve: bool
    notes: str


class FaultRuleRequest(BaseModel):
    """``PUT /_provenafs/faults``: one rule; a rule for the same prefix replaces the old one."""

    model_config = ConfigDict(extra="forbid")

    path_prefix: str | None = None
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    fail_next: int = Field(default=0, ge=0)
    status: int = Field(default=503, ge=400, le=599)


# --------------------------------------------------------------------------- responses


class Status(BaseModel):
    success: bool
    details: str


class StatusResponse(BaseModel):
    status: Status


class RegistryFetchResponse(StatusResponse):
    item: ItemDataset | None = None
    roles: list[str] | None = None
    locked: bool | None = None


class DatasetListResponse(StatusResponse):
    items: list[ItemDataset]
    seed_items: list[dict[str, Any]]
    unparsable_items: list[dict[str, Any]]
    total_item_count: int
    complete_item_count: int
    seed_item_count: int
    unparsable_item_count: int
    not_authorised_count: int
    pagination_key: dict[str, Any] | None = None


class PresignedURLResponse(BaseModel):
    dataset_id: str
    file_path: str
    presigned_url: str


class AccessCredentials(BaseModel):
    aws_access_key_id: str
    aws_secret_access_key: str = Field(repr=False)
    aws_session_token: str = Field(repr=False)
    expiry: str


class CredentialResponse(StatusResponse):
    credentials: AccessCredentials
    console_session_url: str | None = None


class MintResponse(StatusResponse):
    handle: str | None = None
    s3_location: S3Location | None = None
    register_create_activity_session_id: str | None = None


class UpdateMetadataResponse(StatusResponse):
    handle: str
    s3_location: S3Location


class VersionResponse(BaseModel):
    new_version_id: str
    version_job_session_id: str


class ReleaseApprovalRequestResponse(BaseModel):
    dataset_id: str
    approver_id: str
    details: str


class ActionApprovalRequestResponse(BaseModel):
    dataset_id: str
    approved: bool
    details: str


class User(BaseModel):
    username: str
    email: str | None = None
    roles: list[str]
    access_token: str = Field(repr=False)


class SchemaResponse(BaseModel):
    json_schema: dict[str, Any]
