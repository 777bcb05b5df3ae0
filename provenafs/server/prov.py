"""Provena's prov API in the local store: model run registration, dataset activities, lineage.

``POST /model_run/register`` validates a ``ModelRunRecord`` as the caller sees the registry
(:mod:`run_validation`: the checks, order and messages of Provena's) and
queues a ``MODEL_RUN_PROV_LODGE`` job; the job mints the MODEL_RUN item, lodges the graph of
``model_run_to_graph`` and ends SUCCEEDED with ``result = {record: {id, prov_json, record}}``.
``/model_run/update`` and ``/model_run/register_batch`` are jobs too. Minting and versioning a
dataset (through the data store) queue the registry's Create / Version activity jobs, which
record the activity item and lodge its graph. ``/explore/*`` answers lineage from the lodged
graph (:mod:`lineage`) with Provena's depth rules. Routes this store does not serve (CSV
templates, reports, study links) answer 501 naming themselves.

Real Provena registers through service accounts and proxy routes; here the job acts with the
submitting user's own roles, which is what the proxy routes evaluate. This module must not
import from the mount side.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import uuid
from typing import Any

from fastapi import APIRouter
from pydantic import ValidationError

from provenafs.server.access import AccessSettings
from provenafs.server.app import Reader, Writer
from provenafs.server.datastore import Caller, DataStoreError
from provenafs.server.entities import ROUTE_BY_SUBTYPE, EntityRegistry
from provenafs.server.jobs import Job, JobHandler, JobOutcome, JobStore, failed
from provenafs.server.lineage import (
    CONTRIBUTING_AGENTS,
    CONTRIBUTING_DATASETS,
    DOWNSTREAM,
    EFFECTED_AGENTS,
    EFFECTED_DATASETS,
    UPSTREAM,
    LineageQuery,
    ProvGraph,
    create_to_graph,
    model_run_to_graph,
    version_to_graph,
)
from provenafs.server.models import Status
from provenafs.server.registry_models import (
    CreateDomainInfo,
    ItemSubType,
    JobStatus,
    LineageResponse,
    ModelRunDomainInfo,
    ModelRunRecord,
    PostUpdateModelRunInput,
    PostUpdateModelRunResponse,
    RegisterBatchModelRunRequest,
    RegisterModelRunResponse,
    VersionDomainInfo,
    WorkflowRunCompletionStatus,
    item_model,
)
from provenafs.server.run_validation import Invalid, RunValidator

__all__ = ["DEPTH_UPPER_LIMIT", "Provenance", "prov_router"]

DEPTH_UPPER_LIMIT = 10  # prov-api/config.py
DEPTH_DEFAULT = 2
DEPTH_SPECIAL_DEFAULT = 4
USER_INFO = "(encrypted user context: not kept by the local data store)"
LODGED_REASON = "Updating item to mark completion of provenance lodge."
DISPATCHED = "Job dispatched, monitor session ID using the job API to see progress."


@dataclasses.dataclass(frozen=True)
class JobUser:
    """The user a job acts for (the proxy routes' user context)."""

    username: str
    email: str | None
    roles: tuple[str, ...]
    token: str = dataclasses.field(default="", repr=False)


def _now() -> int:
    return int(time.time())


class Provenance:
    """Validation, the lodge jobs and lineage of the prov API."""

    def __init__(self, entities: EntityRegistry, jobs: JobStore, graph: ProvGraph) -> None:
        self.entities = entities
        self.jobs = jobs
        self.graph = graph
        self.registry = entities.registry
        self.validator = RunValidator(entities)

    def validate_for_route(self, record: ModelRunRecord, caller: Caller) -> None:
        try:
            self.validator.validate(record, caller)
        except Invalid as exc:
            raise DataStoreError(
                400, f"Failed to validate an entity's ID in the record, error: {exc}."
            ) from None

    # ----------------------------------------------------------------- submitting

    def submit(self, caller: Caller, sub_type: str, payload: dict[str, Any]) -> str:
        with self.registry.transaction() as db:
            return self.jobs.submit(
                db,
                username=caller.username,
                job_type="PROV_LODGE",
                job_sub_type=sub_type,
                payload=payload,
            )

    def dataset_created(self, username: str, handle: str, session_id: str, person: str) -> None:
        """The registry's Create activity job for a newly minted dataset (the data store's
        ``register_create_activity_session_id``)."""
        with self.registry.transaction() as db:
            self.jobs.submit(
                db,
                username=username,
                job_type="REGISTRY",
                job_sub_type="REGISTER_CREATE_ACTIVITY",
                payload={
                    "created_item_id": handle,
                    "created_item_subtype": ItemSubType.DATASET.value,
                    "linked_person_id": person,
                },
                session_id=session_id,
            )

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
    ) -> None:
        """The registry's Version activity job (the data store's ``version_job_session_id``)."""
        with self.registry.transaction() as db:
            self.jobs.submit(
                db,
                username=username,
                job_type="REGISTRY",
                job_sub_type="REGISTER_VERSION_ACTIVITY",
                payload={
                    "reason": reason,
                    "version_number": version,
                    "from_version_id": old,
                    "to_version_id": new,
                    "linked_person_id": person,
                    "item_subtype": ItemSubType.DATASET.value,
                },
                session_id=session_id,
            )

    # ----------------------------------------------------------------- job handlers

    def _job_user(self, job: Job) -> JobUser:
        account = self.registry.get_user(job.username)
        if account is None:
            return JobUser(job.username, None, ())
        return JobUser(account.username, account.email, account.realm_roles)

    def _revalidate(self, record: ModelRunRecord, job: Job) -> dict[str, Any] | JobOutcome:
        try:
            return self.validator.validate(record, self._job_user(job))
        except Invalid as exc:
            return JobOutcome(
                JobStatus.FAILED,
                info=f"Failed to validate an entity's ID in the record, error: {exc}.",
            )
        except DataStoreError as exc:
            return failed(
                "Unhandled exception during model run validation. Error: Status code:"
                f" {exc.status}, details: {exc.detail}.."
            )

    def _workflow(self, record: ModelRunRecord, job: Job) -> dict[str, Any]:
        workflow = self.validator.lookup(
            ItemSubType.MODEL_RUN_WORKFLOW_TEMPLATE,
            record.workflow_template_id,
            self._job_user(job),
        )
        if isinstance(workflow, str):
            raise ValueError(workflow)
        return workflow

    @staticmethod
    def _run_domain(record: ModelRunRecord, status: WorkflowRunCompletionStatus, prov: str) -> Any:
        return ModelRunDomainInfo(
            display_name=record.display_name,
            record_status=status,
            record=record,
            prov_serialisation=prov,
        ).model_dump(mode="json")

    def _lodge_new_run(
        self, db: sqlite3.Connection, job: Job, record: ModelRunRecord, model_id: str
    ) -> dict[str, Any]:
        """``register_and_lodge_provenance``: seed, complete, lodge, mark LODGED."""
        handle = self.registry.mint_handle(db)
        graph = model_run_to_graph(record, handle, model_id)
        prov = graph.prov_json()
        now = _now()
        complete = self._run_domain(record, WorkflowRunCompletionStatus.COMPLETE, prov)
        lodged = self._run_domain(record, WorkflowRunCompletionStatus.LODGED, prov)
        history = [
            {"id": 1, "timestamp": now, "reason": LODGED_REASON, "username": job.username,
             "item": lodged},
            {"id": 0, "timestamp": now, "reason": "Initial record creation",
             "username": job.username, "item": complete},
        ]  # fmt: skip
        document = (
            item_model(ItemSubType.MODEL_RUN)[0]
            .model_validate(
                {
                    **lodged,
                    "history": history,
                    "id": handle,
                    "owner_username": job.username,
                    "created_timestamp": now,
                    "updated_timestamp": now,
                }
            )
            .model_dump(mode="json")
        )
        self.registry.write_item(
            db, document, access=AccessSettings(job.username, ("metadata-read",), {})
        )
        self.graph.lodge(db, graph)
        return {
            "record": {"id": handle, "prov_json": prov, "record": record.model_dump(mode="json")}
        }

    def handle_lodge(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        try:
            record = ModelRunRecord.model_validate(job.payload["record"])
        except (KeyError, ValidationError) as exc:
            return failed(f"Failed to parse job payload from the event. Error: {exc}.")
        workflow: dict[str, Any] | JobOutcome
        if job.payload.get("revalidate"):
            workflow = self._revalidate(record, job)
            if isinstance(workflow, JobOutcome):
                return workflow
        try:
            workflow = self._workflow(record, job)
            result = self._lodge_new_run(db, job, record, str(workflow["software_id"]))
        except Exception as exc:  # noqa: BLE001 (reported in the job, as Provena does)
            return failed(f"An error occurred while lodging the provenance record. Error: {exc}.")
        return JobOutcome(JobStatus.SUCCEEDED, result=result)

    def handle_update(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        try:
            record = ModelRunRecord.model_validate(job.payload["updated_record"])
            run_id = str(job.payload["model_run_record_id"])
            reason = str(job.payload["reason"])
        except (KeyError, ValidationError) as exc:
            return failed(f"Failed to parse job payload from the event. Error: {exc}.")
        if job.payload.get("revalidate"):
            checked = self._revalidate(record, job)
            if isinstance(checked, JobOutcome):
                return checked
        try:
            result = self._update_run(db, job, run_id, reason, record)
        except Exception as exc:  # noqa: BLE001 (reported in the job, as Provena does)
            return failed(f"An error occurred while lodging the provenance record. Error: {exc}.")
        return JobOutcome(JobStatus.SUCCEEDED, result=result)

    def _update_run(
        self, db: sqlite3.Connection, job: Job, run_id: str, reason: str, record: ModelRunRecord
    ) -> dict[str, Any]:
        """``update_existing_model_run``: new history entries, the record's graph replaced."""
        existing = self.registry.item_document(db, run_id)
        if existing is None or existing.get("item_subtype") != ItemSubType.MODEL_RUN:
            raise ValueError(
                f"Status code: 400, details: Could not find the given key ({run_id}) in the"
                " registry or it is not a model run."
            )
        user = self._job_user(job)
        roles = self.entities.roles(run_id, user, ROUTE_BY_SUBTYPE[ItemSubType.MODEL_RUN].roles)
        if {"metadata-write", "admin"}.isdisjoint(roles):
            raise ValueError(
                f"Status code: 401, details: You are not authorised to edit the item"
                f" (id={run_id!r})."
            )
        workflow = self._workflow(record, job)
        graph = model_run_to_graph(record, run_id, str(workflow["software_id"]))
        prov = graph.prov_json()
        now = _now()
        history = list(existing["history"])
        for status, why in (
            (WorkflowRunCompletionStatus.COMPLETE, reason),
            (WorkflowRunCompletionStatus.LODGED, LODGED_REASON),
        ):
            domain = self._run_domain(record, status, prov)
            next_id = max(entry["id"] for entry in history) + 1
            history = [
                {"id": next_id, "timestamp": now, "reason": why, "username": job.username,
                 "item": domain},
                *history,
            ]  # fmt: skip
        document = (
            item_model(ItemSubType.MODEL_RUN)[0]
            .model_validate({**existing, **domain, "history": history, "updated_timestamp": now})
            .model_dump(mode="json")
        )
        self.registry.write_item(db, document)
        self.graph.lodge(db, graph, replace=True)
        return {
            "record": {"id": run_id, "prov_json": prov, "record": record.model_dump(mode="json")}
        }

    def handle_batch(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        records = job.payload.get("records") or []
        if not records:
            return failed("The batch contained no records to lodge")
        batch_id = str(uuid.uuid4())
        for record in records:
            self.jobs.submit(
                db,
                username=job.username,
                job_type="PROV_LODGE",
                job_sub_type="MODEL_RUN_PROV_LODGE",
                payload={"record": record, "revalidate": True, "user_info": USER_INFO},
                batch_id=batch_id,
            )
        return JobOutcome(
            JobStatus.SUCCEEDED,
            info="Successfully distributed batch jobs to queue.",
            result={"batch_id": batch_id},
        )

    def handle_register_create(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        created = str(job.payload["created_item_id"])
        domain = CreateDomainInfo(display_name=f"Created item {created}", created_item_id=created)
        activity = self.entities.new_activity(db, ItemSubType.CREATE, domain, job.username)
        lodge = self.jobs.submit(
            db,
            username=job.username,
            job_type="PROV_LODGE",
            job_sub_type="LODGE_CREATE_ACTIVITY",
            payload={
                "created_item_id": created,
                "creation_activity_id": activity,
                "linked_person_id": job.payload["linked_person_id"],
                "created_item_subtype": job.payload["created_item_subtype"],
            },
        )
        return JobOutcome(
            JobStatus.SUCCEEDED,
            result={"creation_activity_id": activity, "lodge_session_id": lodge},
        )

    def handle_register_version(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        payload = job.payload
        domain = VersionDomainInfo(
            display_name=f"(V{payload['version_number']}) Version from"
            f" {payload['from_version_id']} to {payload['to_version_id']}",
            reason=payload["reason"],
            from_item_id=payload["from_version_id"],
            to_item_id=payload["to_version_id"],
            new_version_number=payload["version_number"],
        )
        activity = self.entities.new_activity(db, ItemSubType.VERSION, domain, job.username)
        lodge = self.jobs.submit(
            db,
            username=job.username,
            job_type="PROV_LODGE",
            job_sub_type="LODGE_VERSION_ACTIVITY",
            payload={
                "from_version_id": payload["from_version_id"],
                "to_version_id": payload["to_version_id"],
                "version_activity_id": activity,
                "linked_person_id": payload["linked_person_id"],
                "item_subtype": payload["item_subtype"],
            },
        )
        return JobOutcome(
            JobStatus.SUCCEEDED,
            result={"lodge_session_id": lodge, "version_activity_id": activity},
        )

    def handle_lodge_create(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        payload = job.payload
        graph = create_to_graph(
            str(payload["created_item_id"]),
            ItemSubType(payload["created_item_subtype"]),
            str(payload["creation_activity_id"]),
            str(payload["linked_person_id"]),
        )
        self.graph.lodge(db, graph)
        return JobOutcome(JobStatus.SUCCEEDED, result={})

    def handle_lodge_version(self, db: sqlite3.Connection, job: Job) -> JobOutcome:
        payload = job.payload
        graph = version_to_graph(
            str(payload["from_version_id"]),
            str(payload["to_version_id"]),
            str(payload["version_activity_id"]),
            ItemSubType(payload["item_subtype"]),
            str(payload["linked_person_id"]),
        )
        self.graph.lodge(db, graph)
        return JobOutcome(JobStatus.SUCCEEDED, result={})

    def handlers(self) -> dict[str, JobHandler]:
        return {
            "MODEL_RUN_PROV_LODGE": self.handle_lodge,
            "MODEL_RUN_UPDATE": self.handle_update,
            "MODEL_RUN_BATCH_SUBMIT": self.handle_batch,
            "REGISTER_CREATE_ACTIVITY": self.handle_register_create,
            "REGISTER_VERSION_ACTIVITY": self.handle_register_version,
            "LODGE_CREATE_ACTIVITY": self.handle_lodge_create,
            "LODGE_VERSION_ACTIVITY": self.handle_lodge_version,
        }

    # ----------------------------------------------------------------- lineage

    def explore(
        self, starting_id: str, depth: int | None, query: LineageQuery, default: int, what: str
    ) -> LineageResponse:
        if not depth:  # prov-api: ``if not depth`` (so 0 also means the default)
            depth = default
        if depth > DEPTH_UPPER_LIMIT:
            raise DataStoreError(
                400, f"Depth provided is in excess of depth maximum: {DEPTH_UPPER_LIMIT}."
            )
        if depth < 0:
            raise DataStoreError(400, "Depth must not be negative.")
        if starting_id == "" or self.entities.document(starting_id) is None:
            # prov-api's unknown_validator: a 500 whose text keeps a line continuation's spaces
            raise DataStoreError(
                500,
                f"The provided id {starting_id} was not a valid registry"
                f"                item. Error from registry lookup: .",
            )
        graph = self.graph.explore(starting_id, depth, query)
        return LineageResponse(
            status=Status(
                success=True, details=f"Made {what} query (with depth {depth}) to neo4j backend."
            ),
            record_count=len(graph["nodes"]),
            graph=graph,
        )


def prov_router(prov: Provenance) -> APIRouter:
    """``/model_run/*``, ``/explore/*`` and ``/bulk/*`` of Provena's prov API."""
    router = APIRouter()

    @router.post("/model_run/register", response_model=RegisterModelRunResponse)
    def register(record: ModelRunRecord, caller: Writer) -> RegisterModelRunResponse:
        prov.validate_for_route(record, caller)
        session_id = prov.submit(
            caller,
            "MODEL_RUN_PROV_LODGE",
            {"record": record.model_dump(mode="json"), "revalidate": False, "user_info": USER_INFO},
        )
        return RegisterModelRunResponse(
            status=Status(success=True, details=DISPATCHED), session_id=session_id
        )

    @router.post("/model_run/register_batch", response_model=RegisterModelRunResponse)
    def register_batch(
        request: RegisterBatchModelRunRequest, caller: Writer
    ) -> RegisterModelRunResponse:
        session_id = prov.submit(
            caller,
            "MODEL_RUN_BATCH_SUBMIT",
            {
                "records": [record.model_dump(mode="json") for record in request.records],
                "user_info": USER_INFO,
            },
        )
        return RegisterModelRunResponse(
            status=Status(success=True, details=DISPATCHED), session_id=session_id
        )

    @router.post("/model_run/update", response_model=PostUpdateModelRunResponse)
    def update(request: PostUpdateModelRunInput, caller: Writer) -> PostUpdateModelRunResponse:
        prov.validate_for_route(request.record, caller)
        session_id = prov.submit(
            caller,
            "MODEL_RUN_UPDATE",
            {
                "model_run_record_id": request.model_run_id,
                "updated_record": request.record.model_dump(mode="json"),
                "reason": request.reason,
                "revalidate": True,
                "user_info": USER_INFO,
            },
        )
        return PostUpdateModelRunResponse(session_id=session_id)

    explorations = (
        ("/explore/upstream", UPSTREAM, DEPTH_DEFAULT, "lineage"),
        ("/explore/downstream", DOWNSTREAM, DEPTH_DEFAULT, "downstream"),
        ("/explore/special/contributing_datasets", CONTRIBUTING_DATASETS,
         DEPTH_SPECIAL_DEFAULT, "upstream contribution"),
        ("/explore/special/effected_datasets", EFFECTED_DATASETS,
         DEPTH_SPECIAL_DEFAULT, "downstream effect"),
        ("/explore/special/contributing_agents", CONTRIBUTING_AGENTS,
         DEPTH_SPECIAL_DEFAULT, "upstream contribution"),
        ("/explore/special/effected_agents", EFFECTED_AGENTS,
         DEPTH_SPECIAL_DEFAULT, "downstream effect"),
    )  # fmt: skip
    for path, query, default, what in explorations:
        _add_exploration(router, prov, path=path, query=query, default=default, what=what)

    not_served = (
        ("POST", "/model_run/edit/link_to_study", "linking a model run to a study"),
        ("GET", "/bulk/generate_template/csv", "CSV model run templates"),
        ("POST", "/bulk/convert_model_runs/csv", "CSV model run conversion"),
        ("POST", "/explore/generate/report", "provenance reports"),
    )
    for method, path, what in not_served:
        _add_not_served(router, method, path, what)
    return router


def _add_exploration(
    router: APIRouter,
    prov: Provenance,
    *,
    path: str,
    query: LineageQuery,
    default: int,
    what: str,
) -> None:
    @router.get(path, response_model=LineageResponse)
    def explore(starting_id: str, caller: Reader, depth: int | None = None) -> LineageResponse:
        return prov.explore(starting_id, depth, query, default, what)


def _add_not_served(router: APIRouter, method: str, path: str, what: str) -> None:
    @router.api_route(path, methods=[method])
    def not_served(caller: Reader) -> None:
        raise DataStoreError(501, f"The local data store does not serve {method} {path} ({what}).")
