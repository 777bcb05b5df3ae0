"""Pydantic models of Provena's registry items beyond datasets, and of the prov, job, search and
auth API bodies the local data store answers (Provena's ``ProvenaInterfaces`` shapes).

Field order follows what Provena's FastAPI emits: an item's domain fields, then ``history``, then
the record info (``id`` … ``versioning_info``). Optional fields default to None, so responses carry
explicit nulls as the real services do (they serialise without ``exclude_none``). Provena's models
are pydantic v1: URL fields keep the exact string (v1 ``AnyHttpUrl`` does not normalise), and
``Optional`` fields are not required.

This module must not do I/O nor import from the mount side.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Generic, Literal, TypeVar

from pydantic import AnyHttpUrl as _AnyHttpUrl
from pydantic import (
    BaseModel,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from provenafs.server.models import (
    SortOptions,
    StatusResponse,
    VersioningInfo,
    WorkflowLinks,
)

__all__ = [
    "DATASET_ROLES",
    "ENTITY_ROLES",
    "ROLE_DESCRIPTIONS",
    "AccessSettingsModel",
    "AddLinkRequest",
    "AssociationInfo",
    "AuthRolesResponse",
    "CreateDomainInfo",
    "DatasetTemplateDomainInfo",
    "DeferredResource",
    "DefinedResource",
    "DescribeAccessResponse",
    "DescribedRole",
    "DomainInfo",
    "GetJobResponse",
    "HistoryEntry",
    "ItemCategory",
    "ItemSubType",
    "JobStatus",
    "JobStatusTable",
    "LineageResponse",
    "ListBatchRequest",
    "ListJobsRequest",
    "ListJobsResponse",
    "ListUserReviewingDatasetsRequest",
    "LockChangeRequest",
    "LockHistoryResponse",
    "LockStatusResponse",
    "ModelDomainInfo",
    "ModelRunDomainInfo",
    "ModelRunRecord",
    "ModelRunWorkflowTemplateDomainInfo",
    "OrganisationDomainInfo",
    "PersonDomainInfo",
    "PostUpdateModelRunInput",
    "PostUpdateModelRunResponse",
    "QueryResult",
    "QueryResults",
    "RecordType",
    "RegisterBatchModelRunRequest",
    "RegisterModelRunResponse",
    "SeededItem",
    "StudyDomainInfo",
    "SubtypeListRequest",
    "TemplateResource",
    "TemplatedDataset",
    "UserLinkUserLookupResponse",
    "VersionDomainInfo",
    "WorkflowRunCompletionStatus",
    "WorkflowTemplateAnnotations",
    "item_model",
]

_HTTP_URL: TypeAdapter[_AnyHttpUrl] = TypeAdapter(_AnyHttpUrl)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

ENTITY_ROLES: tuple[str, ...] = ("metadata-read", "metadata-write", "admin")
"""``ENTITY_BASE_ROLE_LIST``: the item roles of every non-dataset item type, in this order."""
DATASET_ROLES: tuple[str, ...] = (*ENTITY_ROLES, "dataset-data-read", "dataset-data-write")
"""``DATASET_ROLE_LIST``: the item roles of datasets, in this order."""


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        _HTTP_URL.validate_python(value)
    except ValidationError:
        raise ValueError("invalid or missing URL scheme") from None
    return value


class ItemCategory(StrEnum):
    ACTIVITY = "ACTIVITY"
    AGENT = "AGENT"
    ENTITY = "ENTITY"


class ItemSubType(StrEnum):
    WORKFLOW_RUN = "WORKFLOW_RUN"
    MODEL_RUN = "MODEL_RUN"
    STUDY = "STUDY"
    CREATE = "CREATE"
    VERSION = "VERSION"
    PERSON = "PERSON"
    ORGANISATION = "ORGANISATION"
    SOFTWARE = "SOFTWARE"
    MODEL = "MODEL"
    WORKFLOW_TEMPLATE = "WORKFLOW_TEMPLATE"
    MODEL_RUN_WORKFLOW_TEMPLATE = "MODEL_RUN_WORKFLOW_TEMPLATE"
    DATASET = "DATASET"
    DATASET_TEMPLATE = "DATASET_TEMPLATE"


class RecordType(StrEnum):
    SEED_ITEM = "SEED_ITEM"
    COMPLETE_ITEM = "COMPLETE_ITEM"


# --------------------------------------------------------------------------- access


class AccessSettingsModel(BaseModel):
    owner: str
    general: list[str]
    groups: dict[str, list[str]]


class DescribedRole(BaseModel):
    role_display_name: str
    role_name: str
    description: str
    also_grants: list[str]


ROLE_DESCRIPTIONS: dict[str, DescribedRole] = {
    "metadata-read": DescribedRole(
        role_display_name="Metadata Read",
        role_name="metadata-read",
        description="Enables visibility of a resource and it's metadata.",
        also_grants=[],
    ),
    "metadata-write": DescribedRole(
        role_display_name="Metadata Write",
        role_name="metadata-write",
        description="Enables the modification of a resource's metadata.",
        also_grants=["metadata-read"],
    ),
    "admin": DescribedRole(
        role_display_name="Admin",
        role_name="admin",
        description=(
            "Enables all actions on a resource and it's contents, including changes to access"
            " settings."
        ),
        also_grants=["metadata-read", "metadata-write", "dataset-data-read", "dataset-data-write"],
    ),
    "dataset-data-read": DescribedRole(
        role_display_name="Dataset Data Read",
        role_name="dataset-data-read",
        description="Enables the downloading of the contents of a dataset.",
        also_grants=["metadata-read"],
    ),
    "dataset-data-write": DescribedRole(
        role_display_name="Dataset Data Write",
        role_name="dataset-data-write",
        description="Enables the uploading, modification and deletion of dataset files.",
        also_grants=["metadata-read", "metadata-write", "dataset-data-read"],
    ),
}


class DescribeAccessResponse(BaseModel):
    roles: list[str]


class AuthRolesResponse(BaseModel):
    roles: list[DescribedRole]


class LockChangeRequest(BaseModel):
    id: str
    reason: str


class LockEventModel(BaseModel):
    action_type: Literal["LOCK", "UNLOCK"]
    username: str
    email: str | None = None
    reason: str
    timestamp: int


class LockHistoryResponse(StatusResponse):
    history: list[LockEventModel] | None = None


class LockStatusResponse(BaseModel):
    locked: bool


# --------------------------------------------------------------------------- item building blocks


class DomainInfo(BaseModel):
    """``DomainInfoBase``: what every item type's create body and history entries carry."""

    display_name: str
    user_metadata: dict[str, str] | None = None


DomainT = TypeVar("DomainT", bound=DomainInfo)


class HistoryEntry(BaseModel, Generic[DomainT]):
    id: int
    timestamp: int
    reason: str
    username: str
    item: DomainT


class RecordInfo(BaseModel):
    id: str
    owner_username: str
    created_timestamp: int
    updated_timestamp: int
    item_category: ItemCategory
    item_subtype: ItemSubType
    record_type: RecordType
    workflow_links: WorkflowLinks | None = None
    versioning_info: VersioningInfo | None = None


class SeededItem(RecordInfo):
    """An incomplete item (``record_type: SEED_ITEM``)."""


class _ItemTail(BaseModel, Generic[DomainT]):
    """The part of every complete item after its domain fields."""

    history: list[HistoryEntry[DomainT]]
    id: str
    owner_username: str
    created_timestamp: int
    updated_timestamp: int
    item_category: ItemCategory
    item_subtype: ItemSubType
    record_type: Literal[RecordType.COMPLETE_ITEM] = RecordType.COMPLETE_ITEM
    workflow_links: WorkflowLinks | None = None
    versioning_info: VersioningInfo | None = None

    @field_validator("history")
    @classmethod
    def _unique_history_ids(cls, value: list[HistoryEntry[DomainT]]) -> list[HistoryEntry[DomainT]]:
        ids = [entry.id for entry in value]
        if len(ids) != len(set(ids)):
            raise ValueError("Non unique ID list in item history")
        return value


# --------------------------------------------------------------------------- entities


class ModelDomainInfo(DomainInfo):
    name: str
    description: str
    documentation_url: str
    source_url: str

    @field_validator("documentation_url", "source_url")
    @classmethod
    def _urls(cls, value: str) -> str:
        checked = _http_url(value)
        assert checked is not None
        return checked


class ResourceUsageType(StrEnum):
    PARAMETER_FILE = "PARAMETER_FILE"
    CONFIG_FILE = "CONFIG_FILE"
    FORCING_DATA = "FORCING_DATA"
    GENERAL_DATA = "GENERAL_DATA"


class DefinedResource(BaseModel):
    path: str
    description: str
    usage_type: ResourceUsageType
    optional: bool | None = None
    is_folder: bool | None = None
    additional_metadata: dict[str, str] | None = None


class DeferredResource(BaseModel):
    key: str
    description: str
    usage_type: ResourceUsageType
    optional: bool | None = None
    is_folder: bool | None = None
    additional_metadata: dict[str, str] | None = None


class DatasetTemplateDomainInfo(DomainInfo):
    description: str | None = None
    defined_resources: list[DefinedResource] = Field(default_factory=list)
    deferred_resources: list[DeferredResource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_deferred_keys(self) -> DatasetTemplateDomainInfo:
        keys = [resource.key for resource in self.deferred_resources]
        if len(set(keys)) != len(keys):
            raise ValueError("Non unique resource_key properties in provided deferred resources.")
        return self


class TemplateResource(BaseModel):
    template_id: str
    optional: bool | None = None


class WorkflowTemplateAnnotations(BaseModel):
    required: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_keys(self) -> WorkflowTemplateAnnotations:
        if len(set(self.required) | set(self.optional)) != len(self.required) + len(self.optional):
            raise ValueError("Provided required and/or optional field keys are non-unique.")
        return self


class ModelRunWorkflowTemplateDomainInfo(DomainInfo):
    software_id: str
    input_templates: list[TemplateResource] = Field(default_factory=list)
    output_templates: list[TemplateResource] = Field(default_factory=list)
    annotations: WorkflowTemplateAnnotations | None = None

    @field_validator("input_templates", "output_templates")
    @classmethod
    def _no_duplicates(cls, value: list[TemplateResource]) -> list[TemplateResource]:
        ids = [template.template_id for template in value]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(
                "Cannot support duplicate templates being used twice in just input templates, or"
                f" twice in just output templates. Duplicates: {duplicates}."
            )
        return value


# --------------------------------------------------------------------------- agents


class PersonDomainInfo(DomainInfo):
    email: str
    first_name: str
    last_name: str
    orcid: str | None = None
    ethics_approved: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        if not _EMAIL.match(value):
            raise ValueError("value is not a valid email address")
        return value

    @field_validator("orcid")
    @classmethod
    def _orcid(cls, value: str | None) -> str | None:
        return _http_url(value)


class OrganisationDomainInfo(DomainInfo):
    name: str
    ror: str | None = None

    @field_validator("ror")
    @classmethod
    def _ror(cls, value: str | None) -> str | None:
        return _http_url(value)


# --------------------------------------------------------------------------- activities


class DatasetType(StrEnum):
    DATA_STORE = "DATA_STORE"


class TemplatedDataset(BaseModel):
    dataset_template_id: str
    dataset_id: str
    dataset_type: DatasetType
    resources: dict[str, str] | None = None


class AssociationInfo(BaseModel):
    modeller_id: str
    requesting_organisation_id: str | None = None


class ModelRunRecord(BaseModel):
    """What ``POST /model_run/register`` takes (``ProvenanceModels.ModelRunRecord``)."""

    workflow_template_id: str
    model_version: str | None = None
    inputs: list[TemplatedDataset]
    outputs: list[TemplatedDataset]
    annotations: dict[str, str] | None = None
    display_name: str
    description: str
    study_id: str | None = None
    associations: AssociationInfo
    start_time: int
    end_time: int

    @field_validator("display_name", "description")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if value == "":
            raise ValueError("string must not be empty")
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> ModelRunRecord:
        if self.start_time > self.end_time:
            raise ValueError(
                f"The 'start_time' value ({self.start_time}) must be smaller than or equal to the"
                f" 'end_time' value ({self.end_time})."
            )
        return self


class WorkflowRunCompletionStatus(StrEnum):
    INCOMPLETE = "INCOMPLETE"
    COMPLETE = "COMPLETE"
    LODGED = "LODGED"


class ModelRunDomainInfo(DomainInfo):
    record_status: WorkflowRunCompletionStatus
    record: ModelRunRecord
    prov_serialisation: str


class StudyDomainInfo(DomainInfo):
    title: str
    description: str
    study_alternative_id: str | None = None


class CreateDomainInfo(DomainInfo):
    created_item_id: str


class VersionDomainInfo(DomainInfo):
    reason: str
    from_item_id: str
    to_item_id: str
    new_version_number: int


# --------------------------------------------------------------------------- complete items


class ItemModel(_ItemTail[ModelDomainInfo], ModelDomainInfo):
    item_category: Literal[ItemCategory.ENTITY] = ItemCategory.ENTITY
    item_subtype: Literal[ItemSubType.MODEL] = ItemSubType.MODEL


class ItemDatasetTemplate(_ItemTail[DatasetTemplateDomainInfo], DatasetTemplateDomainInfo):
    item_category: Literal[ItemCategory.ENTITY] = ItemCategory.ENTITY
    item_subtype: Literal[ItemSubType.DATASET_TEMPLATE] = ItemSubType.DATASET_TEMPLATE


class ItemModelRunWorkflowTemplate(
    _ItemTail[ModelRunWorkflowTemplateDomainInfo], ModelRunWorkflowTemplateDomainInfo
):
    item_category: Literal[ItemCategory.ENTITY] = ItemCategory.ENTITY
    item_subtype: Literal[ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE] = (
        ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE
    )


class ItemPerson(_ItemTail[PersonDomainInfo], PersonDomainInfo):
    item_category: Literal[ItemCategory.AGENT] = ItemCategory.AGENT
    item_subtype: Literal[ItemSubType.PERSON] = ItemSubType.PERSON


class ItemOrganisation(_ItemTail[OrganisationDomainInfo], OrganisationDomainInfo):
    item_category: Literal[ItemCategory.AGENT] = ItemCategory.AGENT
    item_subtype: Literal[ItemSubType.ORGANISATION] = ItemSubType.ORGANISATION


class ItemStudy(_ItemTail[StudyDomainInfo], StudyDomainInfo):
    item_category: Literal[ItemCategory.ACTIVITY] = ItemCategory.ACTIVITY
    item_subtype: Literal[ItemSubType.STUDY] = ItemSubType.STUDY


class ItemCreate(_ItemTail[CreateDomainInfo], CreateDomainInfo):
    item_category: Literal[ItemCategory.ACTIVITY] = ItemCategory.ACTIVITY
    item_subtype: Literal[ItemSubType.CREATE] = ItemSubType.CREATE


class ItemVersion(_ItemTail[VersionDomainInfo], VersionDomainInfo):
    item_category: Literal[ItemCategory.ACTIVITY] = ItemCategory.ACTIVITY
    item_subtype: Literal[ItemSubType.VERSION] = ItemSubType.VERSION


class ItemModelRun(_ItemTail[ModelRunDomainInfo], ModelRunDomainInfo):
    item_category: Literal[ItemCategory.ACTIVITY] = ItemCategory.ACTIVITY
    item_subtype: Literal[ItemSubType.MODEL_RUN] = ItemSubType.MODEL_RUN


_ITEM_MODELS: dict[ItemSubType, tuple[type[BaseModel], type[DomainInfo]]] = {
    ItemSubType.MODEL: (ItemModel, ModelDomainInfo),
    ItemSubType.DATASET_TEMPLATE: (ItemDatasetTemplate, DatasetTemplateDomainInfo),
    ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE: (
        ItemModelRunWorkflowTemplate,
        ModelRunWorkflowTemplateDomainInfo,
    ),
    ItemSubType.PERSON: (ItemPerson, PersonDomainInfo),
    ItemSubType.ORGANISATION: (ItemOrganisation, OrganisationDomainInfo),
    ItemSubType.STUDY: (ItemStudy, StudyDomainInfo),
    ItemSubType.CREATE: (ItemCreate, CreateDomainInfo),
    ItemSubType.VERSION: (ItemVersion, VersionDomainInfo),
    ItemSubType.MODEL_RUN: (ItemModelRun, ModelRunDomainInfo),
}


def item_model(subtype: ItemSubType) -> tuple[type[BaseModel], type[DomainInfo]]:
    """``(complete item model, domain info model)`` of a non-dataset subtype."""
    return _ITEM_MODELS[subtype]


# --------------------------------------------------------------------------- registry requests


class QueryRecordTypes(StrEnum):
    ALL = "ALL"
    SEED_ONLY = "SEED_ONLY"
    COMPLETE_ONLY = "COMPLETE_ONLY"


class SubtypeFilterOptions(BaseModel):
    record_type: QueryRecordTypes = QueryRecordTypes.COMPLETE_ONLY


class SubtypeListRequest(BaseModel):
    filter_by: SubtypeFilterOptions | None = None
    sort_by: SortOptions | None = None
    pagination_key: dict[str, Any] | None = None
    page_size: int = 20


class ReleaseFilterOptions(BaseModel):
    record_type: QueryRecordTypes = QueryRecordTypes.COMPLETE_ONLY
    item_subtype: ItemSubType | None = None
    release_reviewer: str | None = None
    release_status: Literal["NOT_RELEASED", "PENDING", "RELEASED"] | None = None

    @model_validator(mode="after")
    def _one_filter(self) -> ReleaseFilterOptions:
        if self.item_subtype is not None and self.release_status is not None:
            raise ValueError("Cannot filter by both item_subtype and release_status")
        return self


class ListUserReviewingDatasetsRequest(BaseModel):
    pagination_key: dict[str, Any] | None = None
    page_size: int = 20
    sort_by: SortOptions | None = None
    filter_by: ReleaseFilterOptions


# --------------------------------------------------------------------------- prov API


class RegisterModelRunResponse(StatusResponse):
    session_id: str | None = None


class RegisterBatchModelRunRequest(BaseModel):
    records: list[ModelRunRecord]


class PostUpdateModelRunInput(BaseModel):
    model_run_id: str
    reason: str
    record: ModelRunRecord


class PostUpdateModelRunResponse(BaseModel):
    session_id: str


class LineageResponse(StatusResponse):
    record_count: int | None = None
    graph: dict[str, Any] | None = None


# --------------------------------------------------------------------------- job API


class JobStatus(StrEnum):
    PENDING = "PENDING"
    DEQUEUED = "DEQUEUED"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class JobStatusTable(BaseModel):
    session_id: str
    created_timestamp: int
    username: str
    batch_id: str | None = None
    payload: dict[str, Any]
    job_type: str
    job_sub_type: str
    gsi_status: str = "ok"
    status: JobStatus
    info: str | None = None
    result: dict[str, Any] | None = None


class GetJobResponse(BaseModel):
    job: JobStatusTable


class ListJobsRequest(BaseModel):
    pagination_key: dict[str, Any] | None = None
    limit: int = 10


class ListBatchRequest(ListJobsRequest):
    batch_id: str


class ListJobsResponse(BaseModel):
    jobs: list[JobStatusTable]
    pagination_key: dict[str, Any] | None = None


# --------------------------------------------------------------------------- search and auth APIs


class QueryResult(BaseModel):
    id: str
    score: float


class QueryResults(StatusResponse):
    results: list[QueryResult] | None = None
    warnings: list[str] | None = None


class UserLinkUserLookupResponse(BaseModel):
    person_id: str | None = None
    success: bool


class AddLinkRequest(BaseModel):
    """``UserLinkUserAssignRequest``: strings must not be empty."""

    person_id: str = Field(min_length=1)
