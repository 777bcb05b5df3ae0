"""``ProvenanceClient``: the prov, job and registry entity routes a model run and lineage need.

Registering a model run (docs/API.md §14) answers a job session id; the job (§16) holds the new
MODEL_RUN handle. ``find_run_job`` finds a lodge job again by the ``provenafs.run_id``
annotation of its record, so a registration whose answer was lost is never sent twice.
Lineage (§15) answers ``LineageGraph`` records; registry items (§18) answer ``RegistryItem`` or
None when the caller may not fetch them (lineage is computed with a service account and can
name such items). ``create_generic_template`` makes the MODEL, the two DATASET_TEMPLATEs and
the MODEL_RUN_WORKFLOW_TEMPLATE of ``provenafs run --init-template``.

Every call goes through ``DataStoreClient.call`` (one client per service base URL: same token,
retries and error translation as the data store). Raw JSON never leaves this module except as
``RegistryItem.document``. The registration is not retry-safe: it is never re-sent here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from provenafs.api.client import DataStoreClient
from provenafs.api.errors import ApiError, InvalidRequestError, PermissionDeniedError
from provenafs.api.identity import linked_person
from provenafs.api.models import RegistryItem
from provenafs.api.prov_models import (
    JobState,
    LineageGraph,
    LineageLink,
    LineageNode,
    ModelRunRecord,
    WorkflowTemplate,
)
from provenafs.api.realm import TokenSource
from provenafs.api.service_clients import ServiceClients
from provenafs.api.services import ServiceUrls

__all__ = ["LINEAGE_QUERIES", "RUN_ID_ANNOTATION", "ProvenanceClient"]

log = logging.getLogger(__name__)

RUN_ID_ANNOTATION = "provenafs.run_id"
LINEAGE_QUERIES = {
    "upstream": "/explore/upstream",
    "downstream": "/explore/downstream",
    "contributing_datasets": "/explore/special/contributing_datasets",
    "effected_datasets": "/explore/special/effected_datasets",
}
_JOB_PAGE = 50
_PROVENAFS_URL = "https://github.com/provena/provena"


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _job(raw: Any) -> JobState:
    if not isinstance(raw, dict) or not isinstance(raw.get("session_id"), str):
        raise ValueError("a job has no session_id")
    result = raw.get("result")
    record = result.get("record") if isinstance(result, dict) else None
    payload = raw.get("payload")
    lodged = payload.get("record") if isinstance(payload, dict) else None
    annotations = lodged.get("annotations") if isinstance(lodged, dict) else None
    run_id = annotations.get(RUN_ID_ANNOTATION) if isinstance(annotations, dict) else None
    created = raw.get("created_timestamp")
    return JobState(
        session_id=raw["session_id"],
        status=str(raw.get("status")),
        job_sub_type=str(raw.get("job_sub_type")),
        created_timestamp=created if isinstance(created, int) else 0,
        info=_string(raw.get("info")),
        result_id=_string(record.get("id")) if isinstance(record, dict) else None,
        run_id=_string(run_id),
    )


def _graph(body: Any) -> LineageGraph:
    graph = body.get("graph") if isinstance(body, dict) else None
    if not isinstance(graph, dict):
        raise ValueError("the answer has no graph")
    nodes = tuple(
        LineageNode(str(n["id"]), str(n.get("item_category")), str(n.get("item_subtype")))
        for n in graph.get("nodes", [])
    )
    links = tuple(
        LineageLink(str(e["source"]), str(e["target"]), str(e.get("type")))
        for e in graph.get("links") or graph.get("edges") or []
    )
    return LineageGraph(nodes, links)


def _item(raw: Any) -> RegistryItem:
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str):
        raise ValueError("the item has no id")
    return RegistryItem(
        id=raw["id"],
        subtype=str(raw.get("item_subtype")),
        display_name=str(raw.get("display_name") or raw["id"]),
        document=raw,
    )


class ProvenanceClient:
    """The prov, job, registry and auth APIs of one data store, with the mount's token."""

    def __init__(
        self, urls: ServiceUrls, tokens: TokenSource, *, timeout: float = 30.0, retries: int = 4
    ) -> None:
        self.timeout = timeout
        self._services = ServiceClients(urls, tokens, timeout=timeout, retries=retries)

    def _service(self, key: str) -> DataStoreClient:
        return self._services.client(key)

    async def aclose(self) -> None:
        await self._services.aclose()

    @staticmethod
    def _parse(name: str, parse: Any, body: Any) -> Any:
        try:
            return parse(body)
        except (ValueError, TypeError, KeyError) as exc:
            raise ApiError(f"{name}: unexpected answer ({exc})") from None

    # -- identity ----------------------------------------------------------------------------

    async def linked_person(self) -> str | None:
        return await linked_person(self._service("auth_api"))

    # -- model runs and jobs -----------------------------------------------------------------

    async def register_model_run(self, record: ModelRunRecord) -> str:
        """``POST /model_run/register``: the job's session id. Never re-sent once it may have
        left (an ``UnavailableError`` means the outcome is unknown)."""
        body = await self._service("prov_api").call(
            "POST", "/model_run/register", name="register_model_run", retry_safe=False,
            json=record.to_json(),
        )  # fmt: skip
        return str(self._parse("register_model_run", lambda b: b["session_id"], body))

    async def job(self, session_id: str) -> JobState:
        body = await self._service("job_api").call(
            "GET", "/jobs/user/fetch", name="job_fetch", retry_safe=True,
            params={"session_id": session_id},
        )  # fmt: skip
        return self._parse("job_fetch", lambda b: _job(b["job"]), body)  # type: ignore[no-any-return]

    async def find_run_job(self, run_id: str, since: int) -> JobState | None:
        """The newest model run lodge job whose record carries ``provenafs.run_id = run_id``,
        looking back (newest first) to jobs created at *since* (Unix seconds)."""
        key: Any = None
        for _ in range(1000):
            body = await self._service("job_api").call(
                "POST", "/jobs/user/list", name="job_list", retry_safe=True,
                json={"pagination_key": key, "limit": _JOB_PAGE},
            )  # fmt: skip
            jobs = self._parse("job_list", lambda b: [_job(j) for j in b["jobs"]], body)
            for job in jobs:
                if job.run_id == run_id and job.job_sub_type == "MODEL_RUN_PROV_LODGE":
                    return job  # type: ignore[no-any-return]
            key = body.get("pagination_key") if isinstance(body, dict) else None
            if key is None or not jobs or min(j.created_timestamp for j in jobs) < since:
                return None
        return None

    # -- registry items ----------------------------------------------------------------------

    async def fetch_item(self, item_id: str) -> RegistryItem | None:
        """``GET /registry/general/fetch``: the item, or None when the caller may not fetch it
        (unknown, seed, or no metadata role)."""
        try:
            body = await self._service("registry_api").call(
                "GET", "/registry/general/fetch", name="general_fetch", retry_safe=True,
                params={"id": item_id},
            )  # fmt: skip
        except (InvalidRequestError, PermissionDeniedError):
            return None
        return self._parse("general_fetch", lambda b: _item(b["item"]), body)  # type: ignore[no-any-return]

    async def fetch_model_run(self, item_id: str) -> RegistryItem | None:
        """``GET /registry/activity/model_run/fetch``: the ItemModelRun, or None."""
        try:
            body = await self._service("registry_api").call(
                "GET", "/registry/activity/model_run/fetch", name="model_run_fetch",
                retry_safe=True, params={"id": item_id},
            )  # fmt: skip
        except (InvalidRequestError, PermissionDeniedError):
            return None
        return self._parse("model_run_fetch", lambda b: _item(b["item"]), body)  # type: ignore[no-any-return]

    async def workflow_template(self, template_id: str) -> WorkflowTemplate:
        body = await self._service("registry_api").call(
            "GET", "/registry/entity/model_run_workflow/fetch", name="workflow_fetch",
            retry_safe=True, params={"id": template_id},
        )  # fmt: skip

        def parse(b: Any) -> WorkflowTemplate:
            item = b["item"]
            annotations = item.get("annotations") or {}
            return WorkflowTemplate(
                id=str(item["id"]),
                input_template_ids=tuple(str(t["template_id"]) for t in item["input_templates"]),
                output_template_ids=tuple(str(t["template_id"]) for t in item["output_templates"]),
                required_annotations=tuple(str(k) for k in annotations.get("required") or ()),
            )

        return self._parse("workflow_fetch", parse, body)  # type: ignore[no-any-return]

    async def _create(self, kind: str, domain: Mapping[str, Any]) -> str:
        body = await self._service("registry_api").call(
            "POST", f"/registry/entity/{kind}/create", name=f"{kind}_create", retry_safe=False,
            json=dict(domain),
        )  # fmt: skip
        return str(self._parse(f"{kind}_create", lambda b: b["created_item"]["id"], body))

    async def create_generic_template(self) -> str:
        """A MODEL "provenafs run", DATASET_TEMPLATEs "any input" and "any output" (no deferred
        resources) and a MODEL_RUN_WORKFLOW_TEMPLATE taking both, optional: its handle."""
        model = await self._create(
            "model",
            {
                "display_name": "provenafs run",
                "name": "provenafs run",
                "description": "Any command run with provenafs run; inputs and outputs are "
                "observed through the mount.",
                "documentation_url": _PROVENAFS_URL,
                "source_url": _PROVENAFS_URL,
            },
        )
        templates = {}
        for side in ("input", "output"):
            templates[side] = await self._create(
                "dataset_template",
                {"display_name": f"any {side}", "description": f"Any dataset a run {side}s."},
            )
        return await self._create(
            "model_run_workflow",
            {
                "display_name": "provenafs run",
                "software_id": model,
                "input_templates": [{"template_id": templates["input"], "optional": True}],
                "output_templates": [{"template_id": templates["output"], "optional": True}],
                "annotations": {"required": [], "optional": []},
            },
        )

    # -- lineage -----------------------------------------------------------------------------

    async def explore(self, query: str, starting_id: str, depth: int) -> LineageGraph:
        """One lineage query (``upstream``, ``downstream``, ``contributing_datasets``,
        ``effected_datasets``) from *starting_id*, *depth* hops (1..10)."""
        body = await self._service("prov_api").call(
            "GET", LINEAGE_QUERIES[query], name=f"explore_{query}", retry_safe=True,
            params={"starting_id": starting_id, "depth": str(depth)},
        )  # fmt: skip
        return self._parse(f"explore_{query}", _graph, body)  # type: ignore[no-any-return]
